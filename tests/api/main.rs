//! One test binary for the whole HTTP API (faster to build and link than one per file).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod alerts;
mod breakdowns;
mod cli;
mod conversions;
mod counts;
mod creatives;
mod dashboard;
mod deadlines;
mod e2e;
mod events;
mod faults;
mod form;
mod health;
mod hostile;
mod intake_api;
mod invalid_traffic;
mod isolation;
mod keys;
mod limits;
mod mail;
mod manage;
mod observability;
mod offload;
mod openapi;
mod pacing;
mod placement_reports;
mod proxy;
mod reach;
mod security;
mod serving;
mod targeting;
mod tls;
mod tracking;
mod variants;
mod webhooks;
