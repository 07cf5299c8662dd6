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
fn a_row_maps_to_a_supplier_and_a_malformed_one_is_refused() {
    let supplier = read(&json!({"id": "S-7", "name": "Northwind", "active": false})).unwrap();
    assert_eq!((supplier.supplier_number.as_str(), supplier.is_active), ("S-7", Some(false)));
    assert!(read(&json!({"id": "S-8", "active": "sometimes"})).is_err());
}

#[test]
fn a_first_run_follows_the_feed_and_sets_the_bad_row_aside() {
    let host = host();
    let result = run(&host).unwrap();
    assert_eq!(result["fetched"], 4);
    let numbers: Vec<String> = host.suppliers().into_iter().map(|s| s.supplier_number).collect();
    assert_eq!(numbers, ["S-1001", "S-1002", "S-1003"]);
    assert_eq!(host.rejected().len(), 1);
    assert_eq!(host.cursor(STREAM).as_deref(), Some("tok-3"));
}

#[test]
fn a_second_run_reads_from_the_committed_token() {
    let host = host();
    run(&host).unwrap();
    let second = run(&host).unwrap();
    assert_eq!(second["fetched"], 0);
    assert_eq!(host.cursor(STREAM).as_deref(), Some("tok-4"));
    assert!(host.requests().last().unwrap().ends_with("since=tok-3"), "{:?}", host.requests());
}

#[test]
fn the_same_token_twice_is_refused_as_the_host_refuses_it() {
    let host = host()
        .set_cursor(STREAM, nuntiq_connector::delta_state::CursorType::OpaqueToken, "tok-3")
        .respond("file:///v1/suppliers/changes?since=tok-3", 200, r#"{"data": [], "next_token": "tok-3"}"#);
    let refused = run(&host).unwrap_err();
    assert!(refused.contains("CURSOR_REGRESSION"), "{refused}");
    assert_eq!(host.cursor(STREAM).as_deref(), Some("tok-3"));
}
