//! Saves part of its work, then panics with the delta run still open.

use nuntiq_connector::{Guest, SupplierLoad, export_connector, supplier};

struct PanicMidRun;

impl Guest for PanicMidRun {
    fn run() -> Result<String, String> {
        let _run = hostile_kit::begin();
        let mut load = SupplierLoad::new();
        load.add(supplier("HOSTILE-SAVED", "Saved before the panic"));
        load.save_all().map_err(|e| e.message())?;
        hostile_kit::queue_doomed();
        let rows: Vec<u32> = std::hint::black_box(Vec::new());
        let page = std::hint::black_box(3);
        panic!("page {page} had {} rows: index out of range", rows.len());
    }
}

export_connector!(PanicMidRun);
