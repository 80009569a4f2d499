//! The business modules. They never import each other: what one needs from another is a trait
//! in its own folder, implemented and handed over by `main_app`.

pub mod intake;
pub mod integrations;
pub mod serving;
pub mod tracking;
