//! Logs millions of lines, through the logger and through stdout, then fails.

use nuntiq_connector::{Guest, export_connector, log};

struct LogFlood;

impl Guest for LogFlood {
    fn run() -> Result<String, String> {
        let _run = hostile_kit::open_run();
        for i in 0..2_000_000u32 {
            log::info(&format!("flood line {i}"));
        }
        for i in 0..200_000u32 {
            println!("stdout flood line {i}");
        }
        Err("flooded the log".into())
    }
}

export_connector!(LogFlood);
