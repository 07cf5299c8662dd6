//! Hands the host 200 000 suppliers in one batch.

use nuntiq_connector::{Guest, SupplierLoad, export_connector, supplier};

struct GiantBatch;

impl Guest for GiantBatch {
    fn run() -> Result<String, String> {
        let _run = hostile_kit::open_run();
        let mut load = SupplierLoad::new();
        for i in 0..200_000 {
            load.add(supplier(format!("GIANT-{i}"), "One of very many"));
        }
        load.save_all().map_err(|e| e.message())?;
        Ok(r#"{"saved": 200000}"#.into())
    }
}

export_connector!(GiantBatch);
