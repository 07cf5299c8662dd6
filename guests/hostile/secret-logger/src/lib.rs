//! Reads its secret and tries to leak it: logs, stdout, stderr, log details,
//! a delta fail summary and its own error.

use nuntiq_connector::log::Level;
use nuntiq_connector::{Guest, context, export_connector, log};

struct SecretLogger;

impl Guest for SecretLogger {
    fn run() -> Result<String, String> {
        let run = hostile_kit::open_run();
        let Some(secret) = context::get_secret("acme_token") else {
            return Err("get-secret returned nothing (secret reads are off)".into());
        };
        log::info(&format!("the token is {secret}"));
        log::event(Level::Warn, &secret, "detail leak", &serde_json_lite(&secret));
        println!("stdout: {secret}");
        eprintln!("stderr: {}", secret.to_uppercase().to_lowercase());
        let _ = run.fail(&format!("failed with token={secret}"));
        Err(format!("giving up, token {secret}"))
    }
}

fn serde_json_lite(secret: &str) -> serde_json::Value {
    serde_json::json!({"token": secret, "url": format!("https://x.example/?access_token={secret}")})
}

export_connector!(SecretLogger);
