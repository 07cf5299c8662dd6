//! The platform logger: `log::info("…")`, or `log::event` with a step and a JSON detail.

pub use crate::bindings::nuntiq::connector::logger::Level;
use crate::logger;

/// A `debug` line (hidden unless the host runs with `--log-level debug`).
pub fn debug(message: &str) {
    logger::log(Level::Debug, message, None, None);
}

/// An `info` line: `log::info("Fetched page 1 (200 rows)")`.
pub fn info(message: &str) {
    logger::log(Level::Info, message, None, None);
}

/// A `warn` line.
pub fn warn(message: &str) {
    logger::log(Level::Warn, message, None, None);
}

/// An `error` line.
pub fn error(message: &str) {
    logger::log(Level::Error, message, None, None);
}

/// A line with a `step` (groups lines in the log viewer) and a JSON `detail`
/// (at most 8 KiB; the host prints it with `--log-format json`).
///
/// ```no_run
/// use nuntiq_connector::log::{self, Level};
/// log::event(Level::Info, "fetch", "Fetched page 1", &serde_json::json!({"page": 1, "count": 200}));
/// ```
pub fn event(level: Level, step: &str, message: &str, detail: &serde_json::Value) {
    logger::log(level, message, Some(step), Some(&detail.to_string()));
}
