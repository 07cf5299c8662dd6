//! The connector against the SDK's in-process host: the fixtures answer its
//! requests, and the host keeps suppliers, rejected rows and the cursor
//! between runs as `nuntiq-host run-plugin --fixtures fixtures` would.

use super::*;
use nuntiq_connector::testing::TestHost;

fn host() -> TestHost {
    TestHost::from_settings("settings.example.json").fixtures("fixtures")
}

fn run(host: &TestHost) -> Result<Value, String> {
    host.run(<Connector as Guest>::run)
}

#[test]
fn a_row_maps_to_a_supplier_and_a_nameless_one_is_refused() {
    let supplier = read(&json!({"id": 7, "name": "Northwind", "active": false})).unwrap();
    assert_eq!((supplier.supplier_number.as_str(), supplier.is_active), ("S-7", Some(false)));
    assert!(read(&json!({"id": 8, "name": " "})).unwrap_err().contains("no name"));
    assert!(read(&json!({"id": "nine", "name": "x"})).is_err());
}

#[test]
fn a_first_run_loads_every_row_and_sets_the_bad_one_aside() {
    let host = host();
    let result = run(&host).unwrap();
    assert_eq!(result["fetched"], 4);
    let numbers: Vec<String> = host.suppliers().into_iter().map(|s| s.supplier_number).collect();
    assert_eq!(numbers, ["S-1001", "S-1002", "S-1004"]);
    assert_eq!(host.rejected().len(), 1);
    assert_eq!(host.cursor(STREAM).as_deref(), Some("1004"));
}

#[test]
fn a_second_run_asks_only_for_ids_after_the_cursor() {
    let host = host();
    run(&host).unwrap();
    let host = host.respond(
        "file:///v1/suppliers?after_id=1004",
        200,
        r#"{"data": [{"id": 1005, "name": "Litware"}]}"#,
    );
    let second = run(&host).unwrap();
    assert_eq!(second["fetched"], 1);
    assert_eq!(host.cursor(STREAM).as_deref(), Some("1005"));
    assert!(host.requests().last().unwrap().contains("after_id=1004"), "{:?}", host.requests());
    assert_eq!(host.suppliers().len(), 4);
}
