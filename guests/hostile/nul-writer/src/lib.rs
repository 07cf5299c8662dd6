//! Hands the host NUL bytes wherever a connector can — a supplier's name, an
//! address deep inside one, a rejected row and its reason, an opaque cursor —
//! and one rejected row a test's trigger makes the store refuse
//! (`store-refuses`), then completes honestly. Returns what each call answered.

use nuntiq_connector::delta_state::{CursorType, DeltaRun};
use nuntiq_connector::{Guest, address, export_connector, get_config, location, supplier, supplier_load};
use serde_json::{Value, json};

struct NulWriter;

/// `"ok"`, or the error's message.
fn answer<E: std::fmt::Debug>(result: Result<impl Sized, E>, message: impl Fn(&E) -> String) -> Value {
    match result {
        Ok(_) => json!("ok"),
        Err(e) => json!(message(&e)),
    }
}

impl Guest for NulWriter {
    fn run() -> Result<String, String> {
        let own = get_config("connector_name").unwrap_or_default();
        let run = DeltaRun::begin(&own, "suppliers", CursorType::TimestampUtc).map_err(|e| e.message())?;
        let queued = |s| answer(supplier_load::queue(&[s]), |e| e.message());

        let name = queued(supplier("NUL-1", "Null\0Name"));
        let mut nested = supplier("NUL-2", "Nested");
        let mut main = location("MAIN");
        let mut at = address();
        at.city = Some("Del\0ft".into());
        main.addresses.push(at);
        nested.locations.push(main);
        let city = queued(nested);

        let reject = answer(run.reject("{\"name\": \"a\0b\"}", "name holds a NUL\0"), |e| e.message());
        let refused = answer(run.reject("store-refuses this row", "set aside"), |e| e.message());
        let kept = answer(run.reject("{\"name\": \"kept\"}", "an honest reject"), |e| e.message());

        let tokens = DeltaRun::begin(&own, "tokens", CursorType::OpaqueToken).map_err(|e| e.message())?;
        let token = answer(tokens.set_new_cursor("tok\0en"), |e| e.message());
        tokens.set_new_cursor("token-1").map_err(|e| e.message())?;
        tokens.complete().map_err(|e| e.message())?;

        supplier_load::queue(&[supplier("NUL-OK", "Plain Name")]).map_err(|e| e.message())?;
        run.set_new_cursor("2020-01-01T00:00:00Z").map_err(|e| e.message())?;
        run.complete().map_err(|e| e.message())?;
        Ok(json!({
            "answers": {
                "name": name,
                "city": city,
                "reject": reject,
                "refused": refused,
                "kept": kept,
                "token": token,
            }
        })
        .to_string())
    }
}

export_connector!(NulWriter);
