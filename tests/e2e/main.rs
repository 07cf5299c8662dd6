//! End-to-end tests: the real `nuntiq-host` binary, the real mock API on
//! 127.0.0.1, and a real SQLite file per test. `make build` first.

/// Runs `test` on a SQLite file and on a PostgreSQL schema of its own.
macro_rules! on_both_engines {
    ($sqlite:ident, $postgres:ident, $test:ident) => {
        #[test]
        fn $sqlite() {
            let work = nuntiq_e2e::Workdir::new();
            $test(&work.db());
        }

        #[test]
        fn $postgres() {
            let schema = nuntiq_e2e::PgSchema::new();
            $test(std::path::Path::new(&schema.url()));
        }
    };
}

mod acme;
mod admin;
mod api_mock;
mod authors;
mod budget;
mod bad_input;
mod cache;
mod compile;
mod containment;
mod customer_api;
mod delivery;
mod hostile;
mod jobs;
mod load_options;
mod otlp;
mod outage;
mod output;
mod pg_tls;
mod secret_refs;
mod secrets;
mod scheduler;
mod serve;
mod stopping;
mod store_copy;
mod wasi_http;

/// The mock API binary of this package.
pub const MOCK: &str = env!("CARGO_BIN_EXE_acme-mock");

/// The Customer API mock binary of this package.
pub const API_MOCK: &str = env!("CARGO_BIN_EXE_nuntiq-api-mock");
