//! Infrastructure without business rules: database, cloud store, job queue, authentication,
//! HTTP plumbing, e-mail, telemetry.

pub mod auth;
pub mod client_addr;
pub mod cloud;
pub mod cpu;
pub mod db;
pub mod deadline;
pub mod edge;
pub mod events;
pub mod hll;
pub mod http;
pub mod jobs;
pub mod limits;
pub mod mail;
pub mod redis;
pub mod request_id;
pub mod session;
pub mod shared_loads;
pub mod table;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub mod urls;
pub mod viewers;
pub mod window_counts;
