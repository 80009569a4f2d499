//! One test binary for the whole HTTP API (faster to build and link than one per file).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod cli;
mod faults;
mod form;
mod health;
mod intake_api;
mod manage;
mod offload;
mod proxy;
mod serving;
mod tls;
mod tracking;
