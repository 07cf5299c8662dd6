//! The platform logger: `log::info("…")`, or `log::event` with a step and a JSON detail.

use crate::bindings::nuntiq::connector::logger;
pub use crate::bindings::nuntiq::connector::logger::Level;

pub fn debug(message: &str) {
    logger::log(Level::Debug, message, None, None);
}

pub fn info(message: &str) {
    logger::log(Level::Info, message, None, None);
}

pub fn warn(message: &str) {
    logger::log(Level::Warn, message, None, None);
}

pub fn error(message: &str) {
    logger::log(Level::Error, message, None, None);
}

/// A line with a `step` (groups lines in the log viewer) and a JSON `detail`.
pub fn event(level: Level, step: &str, message: &str, detail: &serde_json::Value) {
    logger::log(level, message, Some(step), Some(&detail.to_string()));
}
