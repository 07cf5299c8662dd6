//! Tries to make the host hold, open or write for it more than its budget,
//! in the mode `config.mode` names (`config.count` times):
//! - `refused-flood`: wasi:http requests to `config.url`, which the policy
//!   refuses, each future dropped at once without yielding (the host keeps a
//!   task for each until its thread yields);
//! - `socket-hoard`: wasi:http requests to `config.url` (allowed, slow), every
//!   future kept, then waited for: a socket each, if the host let it;
//! - `begin-fail`: begins and fails a delta run, again and again;
//! - `rebegin-reject`: begins the stream again and again, setting
//!   `config.rows` rows of 64 KiB aside each time, then completes it.

use nuntiq_connector::delta_state::{CursorType, DeltaRun};
use nuntiq_connector::{Guest, export_connector, get_config};
use serde_json::json;

mod wasi_http {
    wit_bindgen::generate!({
        inline: "
            package nuntiq:host-hog;
            world hog {
                import wasi:http/outgoing-handler@0.2.12;
            }
        ",
        path: [
            "../../../wit/deps/io-0.2.12",
            "../../../wit/deps/clocks-0.2.12",
            "../../../wit/deps/random-0.2.12",
            "../../../wit/deps/filesystem-0.2.12",
            "../../../wit/deps/sockets-0.2.12",
            "../../../wit/deps/cli-0.2.12",
            "../../../wit/deps/http-0.2.12",
        ],
        world: "nuntiq:host-hog/hog",
        generate_all,
    });
}

use wasi_http::wasi::http::outgoing_handler;
use wasi_http::wasi::http::types::{Fields, OutgoingRequest, Scheme};

struct HostHog;

impl Guest for HostHog {
    fn run() -> Result<String, String> {
        let count: u64 = get_config("count").and_then(|c| c.parse().ok()).unwrap_or(1000);
        let url = get_config("url").unwrap_or_default();
        match get_config("mode").unwrap_or_default().as_str() {
            "refused-flood" => {
                let mut refused_at_once = 0u64;
                for _ in 0..count {
                    match outgoing_handler::handle(request(&url), None) {
                        Ok(future) => drop(future),
                        Err(_) => refused_at_once += 1,
                    }
                }
                Ok(json!({"sent": count, "refused_at_once": refused_at_once}).to_string())
            }
            "socket-hoard" => {
                let futures: Vec<_> = (0..count)
                    .filter_map(|_| outgoing_handler::handle(request(&url), None).ok())
                    .collect();
                let (mut answered, mut failed) = (0u64, 0u64);
                let mut responses = Vec::new();
                for future in &futures {
                    future.subscribe().block();
                    match future.get() {
                        // Kept, body unread: the socket stays the run's.
                        Some(Ok(Ok(response))) => {
                            answered += 1;
                            responses.push(response);
                        }
                        _ => failed += 1,
                    }
                }
                Ok(json!({"answered": answered, "failed": failed}).to_string())
            }
            "begin-fail" => {
                let connector = get_config("connector_name").unwrap_or_default();
                for i in 0..count {
                    let run = DeltaRun::begin(&connector, "suppliers", CursorType::TimestampUtc)
                        .map_err(|e| format!("begin {i}: {}", e.message()))?;
                    run.fail("again").map_err(|e| format!("fail {i}: {}", e.message()))?;
                }
                Ok(json!({"begun": count}).to_string())
            }
            "rebegin-reject" => {
                let connector = get_config("connector_name").unwrap_or_default();
                let rows: u64 = get_config("rows").and_then(|c| c.parse().ok()).unwrap_or(10);
                let row = "r".repeat(64 * 1024 - 64);
                for i in 0..count {
                    let run = DeltaRun::begin(&connector, "suppliers", CursorType::TimestampUtc)
                        .map_err(|e| format!("begin {i}: {}", e.message()))?;
                    for j in 0..rows {
                        // Ignores refusals: a hostile connector keeps going.
                        let _ = run.reject(&format!("{i}-{j}{row}"), "unmappable");
                    }
                    run.set_new_cursor("2024-01-01T00:00:00Z").map_err(|e| e.message())?;
                    run.complete().map_err(|e| format!("complete {i}: {}", e.message()))?;
                }
                Ok(json!({"begun": count}).to_string())
            }
            other => Err(format!("unknown mode {other:?}")),
        }
    }
}

/// A GET of `url` (`http://host[:port]/path`).
fn request(url: &str) -> OutgoingRequest {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&if scheme == "https" { Scheme::Https } else { Scheme::Http }));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    request
}

export_connector!(HostHog);
