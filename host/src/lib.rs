//! The Nuntiq connector host: runs untrusted tenant connectors, compiled to
//! wasm32-wasip2 components, in a sandbox that owns the network, the secrets,
//! the delta-state cursor and the supplier store.
//!
//! `main.rs` is only the CLI; [`job::run_plugin`] is one `run-plugin` job.

pub mod admin;
pub mod bindings;
pub mod budget;
pub mod cache;
pub mod caps;
pub mod compile;
pub mod flags;
pub mod inspect;
pub mod job;
pub mod jobs_admin;
pub mod limits;
pub mod log;
pub mod meter;
pub mod plugin;
pub mod policy;
pub mod redact;
pub mod runtime;
pub mod scaffold;
pub mod secrets;
pub mod serve;
pub mod settings;
pub mod store;
pub mod trace;
