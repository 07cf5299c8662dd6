//! Allocates a mebibyte at a time, touching each, until something stops it.

use nuntiq_connector::{Guest, export_connector};

struct MemoryHog;

impl Guest for MemoryHog {
    fn run() -> Result<String, String> {
        let _run = hostile_kit::open_run();
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![0xA5; 1 << 20]));
        }
    }
}

export_connector!(MemoryHog);
