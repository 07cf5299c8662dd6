//! Recurses without end: the wasm stack limit must trap it cleanly.

use nuntiq_connector::{Guest, export_connector};

struct DeepRecursion;

#[inline(never)]
#[allow(unconditional_recursion)]
fn descend(depth: u64, pad: [u64; 8]) -> u64 {
    let pad = std::hint::black_box(pad);
    descend(depth + 1, pad).wrapping_add(pad[(depth % 8) as usize])
}

impl Guest for DeepRecursion {
    fn run() -> Result<String, String> {
        let _run = hostile_kit::open_run();
        Ok(descend(0, [1; 8]).to_string())
    }
}

export_connector!(DeepRecursion);
