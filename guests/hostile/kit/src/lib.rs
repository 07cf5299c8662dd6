//! Shared set-up for hostile test guests: each opens a delta run on the
//! stream a test committed a cursor for, asks for a cursor ahead of it (as far
//! as the host allows) and queues a supplier — none of which may survive the attack.

use nuntiq_connector::delta_state::{CursorType, DeltaRun};
use nuntiq_connector::{get_config, supplier, supplier_load};

/// The supplier number a failed run must never leave in the store.
pub const MUST_NOT_BE_STORED: &str = "HOSTILE-1";

/// Begins a run of `<config.connector_name>/suppliers`, sets a new cursor half
/// an hour ahead and queues one supplier.
pub fn open_run() -> DeltaRun {
    let run = begin();
    queue_doomed();
    run
}

/// Begins the run and sets the far-future cursor.
pub fn begin() -> DeltaRun {
    let connector = get_config("connector_name").unwrap_or_else(|| "acme_eu".into());
    let run = DeltaRun::begin(&connector, "suppliers", CursorType::TimestampUtc).expect("begin a delta run");
    run.set_new_cursor(&ahead()).expect("a valid cursor");
    run
}

/// Queues [`MUST_NOT_BE_STORED`] without saving it.
pub fn queue_doomed() {
    supplier_load::queue(&[supplier(MUST_NOT_BE_STORED, "Must never be stored")]).expect("queue a supplier");
}

/// Half an hour from now: later than any honest cursor, within the host's skew.
pub fn ahead() -> String {
    (chrono::Utc::now() + chrono::Duration::minutes(30)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
