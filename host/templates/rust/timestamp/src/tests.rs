//! The connector against the SDK's in-process host: the fixtures answer its
//! requests, and the host keeps suppliers, rejected rows and the cursor
//! between runs as `nuntiq-host run-plugin --fixtures fixtures` would.

use super::*;
use nuntiq_connector::testing::{DeltaCall, TestHost};

fn host() -> TestHost {
    TestHost::from_settings("settings.example.json").fixtures("fixtures")
}

fn run(host: &TestHost) -> Result<Value, String> {
    host.run(<Connector as Guest>::run)
}

#[test]
fn a_row_maps_to_a_supplier_and_a_bad_date_is_refused() {
    let raw = json!({"id": "S-1", "name": "Northwind", "active": false, "updated_at": "2024-05-01T11:00:00+02:00"});
    let (updated_at, supplier) = read(&raw).unwrap();
    assert_eq!(updated_at, "2024-05-01T09:00:00Z");
    assert_eq!((supplier.supplier_number.as_str(), supplier.is_active), ("S-1", Some(false)));
    let bad = read(&json!({"id": "S-2", "name": "x", "updated_at": "yesterday"})).unwrap_err();
    assert!(bad.contains("not a timestamp"), "{bad}");
}

#[test]
fn a_first_run_loads_every_page_and_sets_the_bad_row_aside() {
    let host = host().param("since_override", "2024-01-01T00:00:00Z");
    let result = run(&host).unwrap();
    assert_eq!(result["fetched"], 4);
    let numbers: Vec<String> = host.suppliers().into_iter().map(|s| s.supplier_number).collect();
    assert_eq!(numbers, ["S-1001", "S-1002", "S-1003"]);
    assert_eq!(host.rejected().len(), 1);
    assert_eq!(host.cursor(STREAM).as_deref(), Some("2024-05-02T10:15:00Z"));
}

#[test]
fn a_second_run_starts_a_second_before_the_committed_cursor() {
    let host = host().param("since_override", "2024-01-01T00:00:00Z");
    run(&host).unwrap();
    let host = host
        .param("since_override", serde_json::Value::Null)
        .respond(
            "file:///v1/suppliers?updated_after=2024-05-02T10:14:59Z&page=1",
            200,
            r#"{"data": [{"id": "S-1002", "name": "Contoso", "updated_at": "2024-05-03T08:00:00Z"}], "next_page": null}"#,
        );
    let second = run(&host).unwrap();
    assert_eq!(second["fetched"], 1);
    assert_eq!(host.cursor(STREAM).as_deref(), Some("2024-05-03T08:00:00Z"));
    assert_eq!(host.supplier("S-1002").unwrap().supplier_name, "Contoso");
    let completes: Vec<DeltaCall> = host.calls().into_iter().filter(|c| matches!(c, DeltaCall::Complete(_))).collect();
    assert_eq!(completes.len(), 2, "each run commits once");
}
