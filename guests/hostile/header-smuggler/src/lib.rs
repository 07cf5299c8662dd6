//! Tries headers the host owns or must refuse, against the allowed API.
//! Succeeds only if one of them was sent.

use nuntiq_connector::{Guest, export_connector, get_config, http};

struct HeaderSmuggler;

impl Guest for HeaderSmuggler {
    fn run() -> Result<String, String> {
        let _run = hostile_kit::open_run();
        let api = get_config("api_url").ok_or("config.api_url is required")?;
        let url = format!("{api}/suppliers");
        let attempts: [(&str, &str, bool); 6] = [
            ("host", "internal.admin", false),
            ("authorization", "Bearer mine", true),
            ("transfer-encoding", "chunked", false),
            ("connection", "upgrade", false),
            ("x-note", "line\r\nInjected: yes", false),
            ("bad header", "x", false),
        ];
        let mut refused = Vec::new();
        for (name, value, with_bearer) in attempts {
            let mut request = http::get(url.as_str()).header(name, value);
            if with_bearer {
                request = request.bearer_secret("acme_token");
            }
            match request.send() {
                Err(e) => refused.push(format!("{name}: {}", e.message())),
                Ok(r) => return Ok(format!(r#"{{"leaked": "sent {name} and got HTTP {}"}}"#, r.status)),
            }
        }
        Err(refused.join(" | "))
    }
}

export_connector!(HeaderSmuggler);
