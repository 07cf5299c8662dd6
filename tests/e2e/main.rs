//! End-to-end tests: the real `nuntiq-host` binary, the real mock API on
//! 127.0.0.1, and a real SQLite file per test. `make build` first.

mod acme;
mod admin;
mod api_mock;
mod authors;
mod budget;
mod bad_input;
mod cache;
mod compile;
mod containment;
mod delivery;
mod hostile;
mod output;
mod secrets;
mod scheduler;
mod serve;
mod stopping;
mod wasi_http;

/// The mock API binary of this package.
pub const MOCK: &str = env!("CARGO_BIN_EXE_acme-mock");

/// The Customer API mock binary of this package.
pub const API_MOCK: &str = env!("CARGO_BIN_EXE_nuntiq-api-mock");
