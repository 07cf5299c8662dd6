//! One module per WIT interface. Each owns its per-job state and its `Host`
//! implementation; the runtime wires them into the store (see `runtime.rs`).

pub mod context;
pub mod delta;
pub mod http;
pub mod logger;
pub mod offline;
pub mod supplier;
pub mod v0_1;
pub mod wasi_http;
