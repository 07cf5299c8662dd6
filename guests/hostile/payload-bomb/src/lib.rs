//! Hands the host more than it should ever copy, in the mode `config.mode` names:
//!
//! - `queue-alias`: raw canonical-ABI `queue` calls whose 5 suppliers share one
//!   array of 1000 locations, which share one array of 100 addresses, whose
//!   strings all point at the same 8 bytes: a few kB of guest memory that
//!   would lift into hundreds of MB.
//! - `queue-accumulate`: many calls of aliased batches that each fit one call's
//!   budget, so only a queue bounded in bytes stops them.
//! - `detail-cut` / `detail-huge`: a 12 MiB / 40 MiB log `detail` (`[{},{},…]`).
//! - `result-big` / `result-huge`: a 1 MiB / 40 MiB result object.
//! - `query-alias`: one request with a million query pairs that alias one string.
//! - `query-many`: one request with 1000 small query pairs.
//! - `headers-many`: one request with 1000 small headers.
//! - `metadata-big`: 10 MiB of delta metadata.
//! - `pending-many`: starts background requests until the host refuses one,
//!   drops them, and starts and finishes as many again.
//! - `pending-bodies`: starts 4 requests for the same ~40 kB page, lets them
//!   all arrive, then finishes them: the bodies waiting at once share one limit.

use nuntiq_connector::bindings::nuntiq::connector::logger;
use nuntiq_connector::{Guest, export_connector, get_config, http, raw_http};

struct PayloadBomb;

const MIB: usize = 1 << 20;

impl Guest for PayloadBomb {
    fn run() -> Result<String, String> {
        let run = hostile_kit::open_run();
        let mode = get_config("mode").unwrap_or_default();
        match mode.as_str() {
            "queue-alias" => {
                let bomb = AliasedBatch::new(5, 1000, 100, false);
                for call in 0..100 {
                    bomb.queue().map_err(|e| format!("queue call {call}: {e}"))?;
                }
                Err("the host took 100 aliased batches".into())
            }
            "queue-accumulate" => {
                let bomb = AliasedBatch::new(1, 1000, 10, true);
                for call in 0..1000 {
                    bomb.queue().map_err(|e| format!("queue call {call}: {e}"))?;
                }
                Err("the host queued 1000 aliased batches".into())
            }
            "detail-cut" | "detail-huge" => {
                let size = if mode == "detail-cut" { 12 * MIB } else { 40 * MIB };
                logger::log(
                    logger::Level::Info,
                    "a line with a big detail",
                    Some("bomb"),
                    Some(&empty_objects(size)),
                );
                Err(format!("logged a {size}-byte detail"))
            }
            "result-big" => Ok(format!("{{\"padding\": \"{}\"}}", "x".repeat(MIB))),
            "result-huge" => Ok(format!("{{\"padding\": {}}}", empty_objects(40 * MIB))),
            "query-alias" => {
                let response = aliased_query(1_000_000);
                Err(format!("the host sent a million-pair query: {}", response.status))
            }
            "query-many" => {
                let mut request = http::get(get_config("api_url").unwrap_or_default() + "/suppliers");
                for i in 0..1000 {
                    request = request.query("k", i);
                }
                let e = request.send().err().map(|e| e.message()).unwrap_or_default();
                Err(format!("1000 query pairs: {e}"))
            }
            "headers-many" => {
                let mut request = http::get(get_config("api_url").unwrap_or_default() + "/suppliers");
                for i in 0..1000 {
                    request = request.header(&format!("x-h{i}"), "v");
                }
                let e = request.send().err().map(|e| e.message()).unwrap_or_default();
                Err(format!("1000 headers: {e}"))
            }
            "metadata-big" => {
                let padding = format!("{{\"padding\": \"{}\"}}", "x".repeat(10 * MIB));
                let e = run
                    .set_metadata(&padding)
                    .err()
                    .map(|e| e.message())
                    .unwrap_or_default();
                Err(format!("10 MiB of metadata: {e}"))
            }
            "pending-many" => {
                let page = |n: usize| {
                    http::get(get_config("api_url").unwrap_or_default() + "/suppliers")
                        .query("page", n)
                        .query("per_page", 1)
                        .bearer_secret("acme_token")
                };
                let mut held = Vec::new();
                let refusal = loop {
                    match page(held.len() + 1).start() {
                        Ok(pending) if held.len() < 1000 => held.push(pending),
                        Ok(_) => break "none".to_owned(),
                        Err(e) => break e.message(),
                    }
                };
                let started = held.len();
                // Dropping cancels them and frees their places.
                drop(held);
                let again: Vec<_> = (1..=started)
                    .map(|n| page(n).start().map_err(|e| format!("after dropping: {}", e.message())))
                    .collect::<Result<_, _>>()?;
                let statuses: Vec<u16> = again
                    .into_iter()
                    .map(|p| p.finish().map(|r| r.status).unwrap_or(0))
                    .collect();
                Err(format!(
                    "{started} started, the next refused: {refusal}; after dropping them, {} more finished with {statuses:?}",
                    statuses.len()
                ))
            }
            "pending-bodies" => {
                let pending: Vec<_> = (0..4)
                    .map(|_| {
                        http::get(get_config("api_url").unwrap_or_default() + "/suppliers")
                            .query("page", 1)
                            .query("per_page", 200)
                            .bearer_secret("acme_token")
                            .start()
                            .map_err(|e| e.message())
                    })
                    .collect::<Result<_, _>>()?;
                // Every response arrives while none is finished.
                std::thread::sleep(std::time::Duration::from_secs(2));
                let mut statuses = Vec::new();
                let mut refusal = String::new();
                for p in pending {
                    match p.finish() {
                        Ok(r) => statuses.push(r.status),
                        Err(e) => {
                            statuses.push(0);
                            refusal = e.message();
                        }
                    }
                }
                Err(format!("statuses {statuses:?}; refused: {refusal}"))
            }
            other => Err(format!("unknown mode {other:?}")),
        }
    }
}

/// `[{},{},…]` of `size` bytes.
fn empty_objects(size: usize) -> String {
    let mut text = String::with_capacity(size + 2);
    text.push('[');
    while text.len() + 4 < size {
        text.push_str("{},");
    }
    text.push_str("{}]");
    text
}

/// A request whose query pairs all alias one 8-byte string: the guest holds
/// one string and a table of pointers to it.
fn aliased_query(pairs: usize) -> raw_http::Response {
    let shared = String::from("AAAAAAAA");
    let query: Vec<(String, String)> = (0..pairs)
        .map(|_| {
            // SAFETY: never dropped (forgotten below), never written: only read
            // by the lowering, which copies the pointer.
            unsafe {
                (
                    String::from_raw_parts(shared.as_ptr() as *mut u8, shared.len(), shared.len()),
                    String::from_raw_parts(shared.as_ptr() as *mut u8, shared.len(), shared.len()),
                )
            }
        })
        .collect();
    let request = raw_http::Request {
        url: get_config("api_url").unwrap_or_default() + "/suppliers",
        query,
        headers: Vec::new(),
        timeout_ms: None,
        bearer_secret: None,
    };
    let result = raw_http::get_with_retry(&request, None);
    std::mem::forget(request);
    match result {
        Ok(r) => r,
        Err(e) => panic!("{}", e.message()),
    }
}

#[link(wasm_import_module = "nuntiq:connector/supplier-load@0.3.0")]
unsafe extern "C" {
    /// `queue: func(suppliers: list<supplier>) -> result<u32, load-error>`,
    /// lowered by hand: (list pointer, list length, return area).
    #[link_name = "queue"]
    fn raw_queue(suppliers: *const u8, len: usize, ret: *mut u8);
}

/// Canonical-ABI sizes of the records (all aligned to 4).
const ADDRESS_SIZE: usize = 96; // 8 × option<string> (12 bytes each)
// 164 bytes of 0.2 fields, then `bank-accounts: list<…>` (left empty: pointer 0, length 0).
const LOCATION_SIZE: usize = 172;
const SUPPLIER_SIZE: usize = 124;

/// Suppliers laid out in memory by hand, sharing their arrays and strings.
struct AliasedBatch {
    suppliers: Vec<u8>,
    count: usize,
    // Kept alive: the layout points into them.
    _text: Vec<u8>,
    _codes: Vec<u8>,
    _locations: Vec<u8>,
    _addresses: Vec<u8>,
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_string(buf: &mut [u8], at: usize, ptr: *const u8, len: usize) {
    put_u32(buf, at, ptr as u32);
    put_u32(buf, at + 4, len as u32);
}

fn put_some_string(buf: &mut [u8], at: usize, ptr: *const u8, len: usize) {
    buf[at] = 1;
    put_string(buf, at + 4, ptr, len);
}

impl AliasedBatch {
    /// `suppliers` suppliers sharing `locations` locations sharing `addresses`
    /// addresses. With `distinct_codes`, each location gets its own code (so
    /// the batch passes validation); otherwise every string is the same 8 bytes.
    fn new(suppliers: usize, locations: usize, addresses: usize, distinct_codes: bool) -> Self {
        let text = b"ABCDEFGH".to_vec();
        let t = text.as_ptr();
        let codes: Vec<u8> = (0..locations).flat_map(|i| format!("{i:06}").into_bytes()).collect();

        let mut address_array = vec![0u8; ADDRESS_SIZE * addresses];
        for a in 0..addresses {
            for field in 0..8 {
                put_some_string(&mut address_array, a * ADDRESS_SIZE + field * 12, t, 8);
            }
        }
        let mut location_array = vec![0u8; LOCATION_SIZE * locations];
        for l in 0..locations {
            let base = l * LOCATION_SIZE;
            let code = if distinct_codes { codes[l * 6..].as_ptr() } else { t };
            put_string(&mut location_array, base, code, if distinct_codes { 6 } else { 8 });
            for field in 0..7 {
                put_some_string(&mut location_array, base + 8 + field * 12, t, 8);
            }
            location_array[base + 92] = 1; // is-active: some(true)
            location_array[base + 93] = 1;
            for field in 0..5 {
                put_some_string(&mut location_array, base + 96 + field * 12, t, 8);
            }
            put_u32(&mut location_array, base + 156, address_array.as_ptr() as u32);
            put_u32(&mut location_array, base + 160, addresses as u32);
        }
        let mut supplier_array = vec![0u8; SUPPLIER_SIZE * suppliers];
        for s in 0..suppliers {
            let base = s * SUPPLIER_SIZE;
            put_string(&mut supplier_array, base, t, 8); // supplier-number
            put_string(&mut supplier_array, base + 8, t, 8); // supplier-name
            for field in 0..3 {
                put_some_string(&mut supplier_array, base + 16 + field * 12, t, 8);
            }
            supplier_array[base + 52] = 1;
            supplier_array[base + 53] = 1;
            for field in 0..5 {
                put_some_string(&mut supplier_array, base + 56 + field * 12, t, 8);
            }
            put_u32(&mut supplier_array, base + 116, location_array.as_ptr() as u32);
            put_u32(&mut supplier_array, base + 120, locations as u32);
        }
        Self {
            suppliers: supplier_array,
            count: suppliers,
            _text: text,
            _codes: codes,
            _locations: location_array,
            _addresses: address_array,
        }
    }

    /// One raw `queue` call; `Err` carries the host's load-error message.
    fn queue(&self) -> Result<u32, String> {
        let mut ret = [0u32; 4];
        // SAFETY: the pointers above stay valid for the call; the return area
        // is 16 bytes, aligned to 4, as the canonical ABI lays out the result.
        unsafe { raw_queue(self.suppliers.as_ptr(), self.count, ret.as_mut_ptr().cast()) };
        let bytes: &[u8; 16] = unsafe { &*(ret.as_ptr().cast()) };
        if bytes[0] == 0 {
            return Ok(ret[1]);
        }
        let (ptr, len) = (ret[2] as usize, ret[3] as usize);
        // SAFETY: the host lowered the error's message into our memory there.
        let message = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
        Err(String::from_utf8_lossy(message).into_owned())
    }
}

export_connector!(PayloadBomb);
