//! Returns success without completing its delta run: with `config.leak_handle`
//! it keeps the handle alive past `run`, otherwise it lets go of it.

use nuntiq_connector::{Guest, SettingValue, context, export_connector};

struct NoCommit;

impl Guest for NoCommit {
    fn run() -> Result<String, String> {
        let run = hostile_kit::open_run();
        if matches!(context::get_config("leak_handle"), Some(SettingValue::Boolean(true))) {
            std::mem::forget(run);
        }
        Ok(r#"{"fetched": 1, "cursor_committed": "2999-01-01T00:00:00Z"}"#.into())
    }
}

export_connector!(NoCommit);
