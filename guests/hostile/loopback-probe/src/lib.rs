//! Probes every URL in `config.targets` (loopback addresses the operator did
//! not allow, in many spellings). Succeeds only if one of them answered.

use nuntiq_connector::{Guest, SettingValue, context, export_connector, http};

struct LoopbackProbe;

impl Guest for LoopbackProbe {
    fn run() -> Result<String, String> {
        let _run = hostile_kit::open_run();
        let Some(SettingValue::Json(targets)) = context::get_config("targets") else {
            return Err("config.targets must be an array of URLs".into());
        };
        let targets: Vec<String> = targets
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|t| t.trim().trim_matches('"').to_owned())
            .collect();
        let mut refused = Vec::new();
        for target in &targets {
            match http::get(target.as_str()).send() {
                Ok(r) => return Ok(format!(r#"{{"leaked": "{target} answered HTTP {}"}}"#, r.status)),
                Err(e) => refused.push(format!("{target}: {}", e.message())),
            }
        }
        Err(refused.join(" | "))
    }
}

export_connector!(LoopbackProbe);
