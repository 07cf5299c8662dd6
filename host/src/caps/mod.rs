//! One module per WIT interface. Each owns its per-job state and its `Host`
//! implementation; the runtime wires them into the store (see `runtime.rs`).

pub mod context;
pub mod delta;
pub mod http;
pub mod logger;
pub mod offline;
pub mod supplier;
pub mod v0_1;
pub mod v0_2;
pub mod wasi_http;

use crate::budget::RunBudget;
use crate::limits::{Refusals, Stop};
use crate::log::LogSink;
use crate::meter::Counters;
use std::sync::Arc;

/// What every capability of one run shares: its log, the record of the last
/// limit that refused a call, its time and traffic counters, its deadline and
/// cancellation, and its budget.
#[derive(Clone)]
pub struct RunCtx {
    pub log: Arc<LogSink>,
    pub refusals: Refusals,
    pub counters: Arc<Counters>,
    pub stop: Arc<Stop>,
    pub budget: Arc<RunBudget>,
}

impl RunCtx {
    /// A run's context with a fresh refusals record and counters.
    pub fn new(log: Arc<LogSink>, stop: Arc<Stop>, budget: Arc<RunBudget>) -> Self {
        Self {
            log,
            refusals: Refusals::default(),
            counters: Arc::default(),
            stop,
            budget,
        }
    }
}
