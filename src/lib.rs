//! reklama: advertising content under high load, in one binary.
//!
//! `domain` is the shared vocabulary, `platform` the infrastructure without business rules,
//! `modules` the three business modules, and `main_app` the composition root that wires them.

pub mod domain;
pub mod main_app;
pub mod modules;
pub mod platform;
