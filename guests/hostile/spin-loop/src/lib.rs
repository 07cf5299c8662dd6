//! Spins forever without calling the host: only epoch interruption stops it.

use nuntiq_connector::{Guest, export_connector};

struct SpinLoop;

impl Guest for SpinLoop {
    fn run() -> Result<String, String> {
        let _run = hostile_kit::open_run();
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

export_connector!(SpinLoop);
