//! Reaches for what is not its own, in the mode `config.mode` names:
//!
//! - `other-connector`: reads and begins `config.victim`'s stream.
//! - `many-streams`: begins streams of its own connector until refused.
//! - `many-streams-spin`: begins 100 streams, then spins until stopped.
//! - `poison-timestamp` / `poison-numeric`: offers cursors that would poison a stream.
//! - `complete-retry`: queues 10 suppliers, completes with a regressing cursor,
//!   then again with a valid one.
//! - `records-max`: reports u64::MAX records processed.
//! - `limit-then-other`: hits the body limit, handles it, then fails on a 404.
//! - `slow-complete`: queues `config.count` suppliers with many addresses,
//!   waits `config.pause_ms` and completes (a test holds the store's lock then,
//!   so the deadline comes while `complete` is inside the store).

use nuntiq_connector::delta_state::{CursorType, DeltaRun};
use nuntiq_connector::{Guest, SupplierLoad, address, context, export_connector, get_config, http, location, supplier};

struct Trespasser;

impl Guest for Trespasser {
    fn run() -> Result<String, String> {
        let own = get_config("connector_name").unwrap_or_default();
        match get_config("mode").unwrap_or_default().as_str() {
            "other-connector" => {
                let victim = get_config("victim").unwrap_or_else(|| "acme_eu".into());
                let read = match nuntiq_connector::delta_state::get_state(&victim, "suppliers") {
                    Ok(state) => format!("read cursor {:?}", state.committed_cursor_value),
                    Err(e) => format!("get-state refused: {}", e.message()),
                };
                let begin = match DeltaRun::begin(&victim, "suppliers", CursorType::TimestampUtc) {
                    Ok(run) => {
                        run.set_new_cursor("2099-01-01T00:00:00Z").map_err(|e| e.message())?;
                        run.complete().map_err(|e| e.message())?;
                        "begin and complete succeeded".to_owned()
                    }
                    Err(e) => format!("begin refused: {}", e.message()),
                };
                Err(format!("{read}; {begin}"))
            }
            "many-streams" | "many-streams-spin" => {
                let spin = get_config("mode").as_deref() == Some("many-streams-spin");
                let mut runs = Vec::new();
                for i in 0..200 {
                    if spin && i == 100 {
                        break;
                    }
                    match DeltaRun::begin(&own, &format!("stream-{i}"), CursorType::OpaqueToken) {
                        Ok(run) => runs.push(run),
                        Err(e) => return Err(format!("stream {i} refused: {}", e.message())),
                    }
                }
                if spin {
                    let mut x: u64 = 1;
                    loop {
                        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                    }
                }
                Err(format!("opened {} streams", runs.len()))
            }
            "poison-timestamp" => offer(
                &own,
                "suppliers",
                CursorType::TimestampUtc,
                &[
                    "9999-12-31T23:59:59Z",
                    "9999-12-31T23:59:59-23:59",
                    "2099-01-01T00:00:00Z",
                ],
            ),
            "poison-numeric" => offer(
                &own,
                "ids",
                CursorType::NumericId,
                &[
                    "1e300",
                    "99999999999999999999999999999999999999999999",
                    " 5 ",
                    "+5",
                    "-0",
                    "5.0",
                ],
            ),
            "complete-retry" => {
                let run = DeltaRun::begin(&own, "suppliers", CursorType::TimestampUtc).map_err(|e| e.message())?;
                let mut load = SupplierLoad::new();
                for i in 0..10 {
                    load.add(supplier(format!("RETRY-{i}"), "Queued before a failed complete"));
                }
                load.queue().map_err(|e| e.message())?;
                run.set_new_cursor("2000-01-01T00:00:00Z").map_err(|e| e.message())?;
                let first = run
                    .complete()
                    .err()
                    .map(|e| e.message())
                    .unwrap_or_else(|| "it succeeded".into());
                run.set_new_cursor(&hostile_kit::ahead()).map_err(|e| e.message())?;
                run.complete()
                    .map_err(|e| format!("the second complete failed: {}", e.message()))?;
                Ok(serde_json::json!({"first_complete": first}).to_string())
            }
            "records-max" => {
                let run = DeltaRun::begin(&own, "suppliers", CursorType::TimestampUtc).map_err(|e| e.message())?;
                run.set_records_processed(u64::MAX);
                run.set_new_cursor(&hostile_kit::ahead()).map_err(|e| e.message())?;
                run.complete().map_err(|e| e.message())?;
                Ok("{}".into())
            }
            "limit-then-other" => {
                let _run = hostile_kit::open_run();
                let api = get_config("api_url").unwrap_or_default();
                let first = http::get(format!("{api}/suppliers"))
                    .query("updated_after", "2000-01-01T00:00:00Z")
                    .bearer_secret("acme_token")
                    .send();
                let Err(limit) = first else {
                    return Err("the first page fit".into());
                };
                nuntiq_connector::log::warn(&format!("skipping a page: {}", limit.message()));
                let second = http::get(format!("{api}/no-such-endpoint"))
                    .bearer_secret("acme_token")
                    .send();
                Err(format!(
                    "the endpoint is missing: {}",
                    second.err().map(|e| e.message()).unwrap_or_default()
                ))
            }
            "slow-complete" => {
                let run = DeltaRun::begin(&own, "suppliers", CursorType::TimestampUtc).map_err(|e| e.message())?;
                let count = context::get_config("count").and_then(|v| v.as_i64()).unwrap_or(10) as usize;
                let mut load = SupplierLoad::new();
                for i in 0..count {
                    let mut s = supplier(format!("SLOW-{i}"), "Written inside complete");
                    for l in 0..10 {
                        let mut loc = location(format!("L{l}"));
                        for a in 0..10 {
                            let mut addr = address();
                            addr.street = Some(format!("{a} Long Street"));
                            loc.addresses.push(addr);
                        }
                        s.locations.push(loc);
                    }
                    load.add(s);
                }
                load.queue().map_err(|e| e.message())?;
                run.set_new_cursor(&hostile_kit::ahead()).map_err(|e| e.message())?;
                let pause = context::get_config("pause_ms").and_then(|v| v.as_i64()).unwrap_or(0);
                std::thread::sleep(std::time::Duration::from_millis(pause as u64));
                nuntiq_connector::log::info("completing");
                run.complete().map_err(|e| e.message())?;
                Ok("{}".into())
            }
            other => Err(format!("unknown mode {other:?}")),
        }
    }
}

/// Begins `stream` and offers each value as its new cursor; fails with what the host said.
fn offer(connector: &str, stream: &str, cursor_type: CursorType, values: &[&str]) -> Result<String, String> {
    let run = DeltaRun::begin(connector, stream, cursor_type).map_err(|e| e.message())?;
    let mut answers = Vec::new();
    for value in values {
        match run.set_new_cursor(value) {
            Ok(()) => {
                answers.push(format!("{value:?} accepted"));
                if run.complete().is_ok() {
                    return Err(format!("{value:?} was committed"));
                }
            }
            Err(e) => answers.push(format!("{value:?} refused: {}", e.message())),
        }
    }
    Err(answers.join("; "))
}

export_connector!(Trespasser);
