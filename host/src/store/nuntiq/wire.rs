//! The Customer API's JSON, in one place. The platform's pages give the paths,
//! the field names and the status codes (nuntiq-platform.md §4, §6–§8), not the
//! request envelopes: what they leave out is assumed here, written down below,
//! and pinned by the tests at the foot of this file, so that a correction
//! touches this file only.
//!
//! Assumed (not in the docs):
//! - `POST /v1/supplier` takes one object: `{"full_load": bool,
//!   "SupplierAddressInsertOnly": bool, "SupplierBankInsertOnly": bool,
//!   "items": [Supplier, …]}`, the suppliers in the schema's wire names
//!   (`supplier_location[]`, each with `supplier_address[]` and
//!   `supplier_bank_account[]`); a field the record does not set is left out.
//! - It answers 200 with `{"inserted", "updated", "unchanged"}` counts when it
//!   has them; a count it leaves out is taken as 0, and suppliers it does not
//!   account for at all as updated.
//! - A refusal carries `{"message"}` (and, for 422, `{"code"}`, e.g.
//!   `CURSOR_REGRESSION`); a 400 does not say which row, so the client splits
//!   the batch to find it.
//! - Delta-state bodies as the docs infer them: begin `{"cursor_type"}`,
//!   complete `{"new_cursor_value", "records_processed"?, "metadata"?}`, fail
//!   `{"error_summary"}`; each answers with the stream's `DeltaStreamState`.

use crate::store::backend::LoadOptions;
use crate::store::cursor::CursorType;
use crate::store::{
    AddressRecord, BankAccountRecord, Completion, LocationRecord, RunStatus, SaveCounts, StreamKey, StreamState,
    SupplierRecord,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The most suppliers one request carries (the platform splits `save_all` so).
pub const SUPPLIERS_PER_REQUEST: usize = 1000;

#[derive(Serialize)]
struct SupplierPost<'a> {
    full_load: bool,
    #[serde(rename = "SupplierAddressInsertOnly")]
    address_insert_only: bool,
    #[serde(rename = "SupplierBankInsertOnly")]
    bank_insert_only: bool,
    items: Vec<Supplier<'a>>,
}

/// Leaves an unset field out of the JSON.
macro_rules! wire {
    ($(#[$meta:meta])* struct $name:ident<'a> { $($(#[$f:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Serialize)]
        struct $name<'a> {
            $(
                $(#[$f])*
                #[serde(skip_serializing_if = "Skip::skip")]
                $field: $ty,
            )*
        }
    };
}

/// What counts as unset on the wire.
trait Skip {
    fn skip(&self) -> bool;
}

impl<T> Skip for Option<T> {
    fn skip(&self) -> bool {
        self.is_none()
    }
}

impl Skip for &str {
    fn skip(&self) -> bool {
        false
    }
}

impl<T> Skip for Vec<T> {
    fn skip(&self) -> bool {
        false
    }
}

wire! {
    struct Supplier<'a> {
        supplier_number: &'a str,
        supplier_name: &'a str,
        alternative_supplier_name: Option<&'a str>,
        supplier_type: Option<&'a str>,
        organization_code: Option<&'a str>,
        is_active: Option<bool>,
        custom_field_1: Option<&'a str>,
        custom_field_2: Option<&'a str>,
        custom_field_3: Option<&'a str>,
        custom_field_4: Option<&'a str>,
        custom_field_5: Option<&'a str>,
        supplier_location: Vec<Location<'a>>,
    }
}

wire! {
    struct Location<'a> {
        location_code: &'a str,
        location_name: Option<&'a str>,
        organization_code: Option<&'a str>,
        default_currency_code: Option<&'a str>,
        default_payment_term_code: Option<&'a str>,
        default_payment_method: Option<&'a str>,
        taxpayer_id: Option<&'a str>,
        duns_number: Option<&'a str>,
        is_active: Option<bool>,
        custom_field_1: Option<&'a str>,
        custom_field_2: Option<&'a str>,
        custom_field_3: Option<&'a str>,
        custom_field_4: Option<&'a str>,
        custom_field_5: Option<&'a str>,
        supplier_address: Vec<Address<'a>>,
        supplier_bank_account: Vec<BankAccount<'a>>,
    }
}

wire! {
    struct Address<'a> {
        street: Option<&'a str>,
        city: Option<&'a str>,
        state: Option<&'a str>,
        postal_code: Option<&'a str>,
        country_code: Option<&'a str>,
        custom_field_1: Option<&'a str>,
        custom_field_2: Option<&'a str>,
        custom_field_3: Option<&'a str>,
    }
}

wire! {
    struct BankAccount<'a> {
        bank_name: Option<&'a str>,
        bank_branch: Option<&'a str>,
        bank_account_number: Option<&'a str>,
        bank_routing_number: Option<&'a str>,
        swift_code: Option<&'a str>,
        account_currency: Option<&'a str>,
        is_primary: Option<bool>,
        custom_field_1: Option<&'a str>,
        custom_field_2: Option<&'a str>,
        custom_field_3: Option<&'a str>,
    }
}

impl<'a> From<&'a SupplierRecord> for Supplier<'a> {
    fn from(s: &'a SupplierRecord) -> Self {
        Self {
            supplier_number: &s.supplier_number,
            supplier_name: &s.supplier_name,
            alternative_supplier_name: s.alternative_supplier_name.as_deref(),
            supplier_type: s.supplier_type.as_deref(),
            organization_code: s.organization_code.as_deref(),
            is_active: s.is_active,
            custom_field_1: s.custom_field_1.as_deref(),
            custom_field_2: s.custom_field_2.as_deref(),
            custom_field_3: s.custom_field_3.as_deref(),
            custom_field_4: s.custom_field_4.as_deref(),
            custom_field_5: s.custom_field_5.as_deref(),
            supplier_location: s.locations.iter().map(Location::from).collect(),
        }
    }
}

impl<'a> From<&'a LocationRecord> for Location<'a> {
    fn from(l: &'a LocationRecord) -> Self {
        Self {
            location_code: &l.location_code,
            location_name: l.location_name.as_deref(),
            organization_code: l.organization_code.as_deref(),
            default_currency_code: l.default_currency_code.as_deref(),
            default_payment_term_code: l.default_payment_term_code.as_deref(),
            default_payment_method: l.default_payment_method.as_deref(),
            taxpayer_id: l.taxpayer_id.as_deref(),
            duns_number: l.duns_number.as_deref(),
            is_active: l.is_active,
            custom_field_1: l.custom_field_1.as_deref(),
            custom_field_2: l.custom_field_2.as_deref(),
            custom_field_3: l.custom_field_3.as_deref(),
            custom_field_4: l.custom_field_4.as_deref(),
            custom_field_5: l.custom_field_5.as_deref(),
            supplier_address: l.addresses.iter().map(Address::from).collect(),
            supplier_bank_account: l.bank_accounts.iter().map(BankAccount::from).collect(),
        }
    }
}

impl<'a> From<&'a AddressRecord> for Address<'a> {
    fn from(a: &'a AddressRecord) -> Self {
        Self {
            street: a.street.as_deref(),
            city: a.city.as_deref(),
            state: a.state.as_deref(),
            postal_code: a.postal_code.as_deref(),
            country_code: a.country_code.as_deref(),
            custom_field_1: a.custom_field_1.as_deref(),
            custom_field_2: a.custom_field_2.as_deref(),
            custom_field_3: a.custom_field_3.as_deref(),
        }
    }
}

impl<'a> From<&'a BankAccountRecord> for BankAccount<'a> {
    fn from(b: &'a BankAccountRecord) -> Self {
        Self {
            bank_name: b.bank_name.as_deref(),
            bank_branch: b.bank_branch.as_deref(),
            bank_account_number: b.bank_account_number.as_deref(),
            bank_routing_number: b.bank_routing_number.as_deref(),
            swift_code: b.swift_code.as_deref(),
            account_currency: b.account_currency.as_deref(),
            is_primary: b.is_primary,
            custom_field_1: b.custom_field_1.as_deref(),
            custom_field_2: b.custom_field_2.as_deref(),
            custom_field_3: b.custom_field_3.as_deref(),
        }
    }
}

/// The body of one `POST /v1/supplier`.
pub fn supplier_post(batch: &[SupplierRecord], options: LoadOptions) -> Vec<u8> {
    let post = SupplierPost {
        full_load: options.full_load,
        address_insert_only: options.address_insert_only,
        bank_insert_only: options.bank_insert_only,
        items: batch.iter().map(Supplier::from).collect(),
    };
    serde_json::to_vec(&post).expect("suppliers serialize")
}

/// One supplier as a rejected row keeps it: its wire JSON, with every bank
/// account number masked (they never reach logs, messages or rejected rows).
pub fn rejected_row(supplier: &SupplierRecord) -> String {
    let mut value = serde_json::to_value(Supplier::from(supplier)).expect("a supplier serializes");
    for location in value["supplier_location"].as_array_mut().into_iter().flatten() {
        for account in location["supplier_bank_account"].as_array_mut().into_iter().flatten() {
            if let Some(number) = account["bank_account_number"].as_str() {
                account["bank_account_number"] = BankAccountRecord::masked(number).into();
            }
        }
    }
    value.to_string()
}

/// What a supplier POST says it did.
#[derive(Debug, Default, Deserialize)]
struct ImportResult {
    inserted: Option<u64>,
    updated: Option<u64>,
    unchanged: Option<u64>,
}

/// The counts of a supplier POST's answer for a batch of `sent`.
pub fn import_counts(body: &[u8], sent: usize) -> SaveCounts {
    let result: ImportResult = serde_json::from_slice(body).unwrap_or_default();
    let known = [result.inserted, result.updated, result.unchanged];
    let accounted: u64 = known.iter().flatten().sum();
    SaveCounts {
        inserted: result.inserted.unwrap_or(0),
        updated: result.updated.unwrap_or(0) + (sent as u64).saturating_sub(accounted),
        unchanged: result.unchanged.unwrap_or(0),
        refused: 0,
    }
}

/// A refusal's `{"code", "message"}`.
#[derive(Debug, Default, Deserialize)]
pub struct Refusal {
    pub code: Option<String>,
    pub message: Option<String>,
}

impl Refusal {
    pub fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_else(|_| Refusal {
            code: None,
            message: Some(String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned()),
        })
    }
}

pub fn begin_body(cursor_type: CursorType) -> Vec<u8> {
    json!({ "cursor_type": cursor_type.as_str() }).to_string().into_bytes()
}

pub fn complete_body(completion: &Completion) -> Vec<u8> {
    let mut body = json!({ "new_cursor_value": completion.new_cursor_value });
    if let Some(n) = completion.records_processed {
        body["records_processed"] = n.into();
    }
    if let Some(metadata) = &completion.metadata {
        body["metadata"] = metadata.clone();
    }
    body.to_string().into_bytes()
}

pub fn fail_body(error_summary: &str) -> Vec<u8> {
    json!({ "error_summary": error_summary }).to_string().into_bytes()
}

/// `DeltaStreamState` as the API writes it.
#[derive(Debug, Deserialize)]
struct WireState {
    cursor_type: Option<String>,
    committed_cursor_value: Option<Value>,
    committed_at_utc: Option<String>,
    status: Option<String>,
    started_at_utc: Option<String>,
    completed_at_utc: Option<String>,
    records_processed: Option<u64>,
    error_summary: Option<String>,
    metadata: Option<Value>,
    updated_at_utc: Option<String>,
    updated_by: Option<String>,
}

/// The API's `DeltaStreamState` for `key`; `Err` says what does not read.
pub fn stream_state(key: &StreamKey, body: &[u8]) -> Result<StreamState, String> {
    let w: WireState = serde_json::from_slice(body).map_err(|e| format!("its DeltaStreamState does not read: {e}"))?;
    let cursor_type = match w.cursor_type.as_deref() {
        None => None,
        Some(t) => Some(CursorType::parse(t).ok_or_else(|| format!("cursor_type {t:?} is not one the host knows"))?),
    };
    Ok(StreamState {
        connector_name: key.connector_name.clone(),
        stream_name: key.stream_name.clone(),
        cursor_type,
        // Always a string in the docs; a number is read as its text.
        committed_cursor_value: w.committed_cursor_value.and_then(|v| match v {
            Value::String(s) => Some(s),
            Value::Null => None,
            other => Some(other.to_string()),
        }),
        committed_at_utc: w.committed_at_utc,
        status: RunStatus::parse(w.status.as_deref().unwrap_or("idle")),
        started_at_utc: w.started_at_utc,
        completed_at_utc: w.completed_at_utc,
        records_processed: w.records_processed,
        error_summary: w.error_summary,
        metadata: w.metadata.filter(|m| !m.is_null()),
        updated_at_utc: w.updated_at_utc,
        updated_by: w.updated_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_supplier() -> SupplierRecord {
        let mut s = SupplierRecord::new("S-1", "Acme BV");
        s.organization_code = Some("NL01".into());
        s.is_active = Some(true);
        s.custom_field_3 = Some("c3".into());
        let mut l = LocationRecord::new("MAIN");
        l.location_name = Some("Headquarters".into());
        l.addresses.push(AddressRecord {
            street: Some("1 Main St".into()),
            country_code: Some("NL".into()),
            ..AddressRecord::default()
        });
        l.bank_accounts.push(BankAccountRecord {
            bank_name: Some("ABN".into()),
            bank_account_number: Some("NL91ABNA0417164300".into()),
            is_primary: Some(true),
            ..BankAccountRecord::default()
        });
        s.locations.push(l);
        s
    }

    /// The contract: the exact JSON a supplier POST sends. A correction of the
    /// assumed envelope changes this test and this file, nothing else.
    #[test]
    fn a_supplier_post_is_pinned() {
        let options = LoadOptions {
            full_load: true,
            address_insert_only: false,
            bank_insert_only: true,
        };
        let body: Value = serde_json::from_slice(&supplier_post(&[full_supplier()], options)).unwrap();
        assert_eq!(
            body,
            json!({
                "full_load": true,
                "SupplierAddressInsertOnly": false,
                "SupplierBankInsertOnly": true,
                "items": [{
                    "supplier_number": "S-1",
                    "supplier_name": "Acme BV",
                    "organization_code": "NL01",
                    "is_active": true,
                    "custom_field_3": "c3",
                    "supplier_location": [{
                        "location_code": "MAIN",
                        "location_name": "Headquarters",
                        "supplier_address": [{"street": "1 Main St", "country_code": "NL"}],
                        "supplier_bank_account": [{
                            "bank_name": "ABN",
                            "bank_account_number": "NL91ABNA0417164300",
                            "is_primary": true
                        }]
                    }]
                }]
            })
        );
    }

    #[test]
    fn delta_bodies_and_the_state_are_pinned() {
        let completion = Completion {
            cursor_type: CursorType::NumericId,
            new_cursor_value: "42".into(),
            records_processed: Some(7),
            metadata: Some(json!({"pages": 2})),
            updated_by: "x".into(),
            max_cursor_skew: std::time::Duration::from_secs(60),
        };
        let read = |b: Vec<u8>| serde_json::from_slice::<Value>(&b).unwrap();
        assert_eq!(
            read(begin_body(CursorType::TimestampUtc)),
            json!({"cursor_type": "timestamp_utc"})
        );
        assert_eq!(
            read(complete_body(&completion)),
            json!({"new_cursor_value": "42", "records_processed": 7, "metadata": {"pages": 2}})
        );
        assert_eq!(read(fail_body("boom")), json!({"error_summary": "boom"}));
        let key = StreamKey {
            customer_number: "1".into(),
            connector_name: "sap_eu".into(),
            stream_name: "suppliers".into(),
        };
        let state = stream_state(
            &key,
            br#"{"connector_name": "sap_eu", "stream_name": "suppliers", "cursor_type": "numeric_id",
                "committed_cursor_value": "41", "status": "running", "started_at_utc": "2026-01-01T00:00:00Z",
                "metadata": null}"#,
        )
        .unwrap();
        assert_eq!(state.cursor_type, Some(CursorType::NumericId));
        assert_eq!(state.committed_cursor_value.as_deref(), Some("41"));
        assert_eq!(state.status, RunStatus::Running);
        assert_eq!(state.metadata, None);
        let idle = stream_state(&key, br#"{"status": "idle", "cursor_type": null}"#).unwrap();
        assert_eq!((idle.status, idle.cursor_type), (RunStatus::Idle, None));
    }

    #[test]
    fn counts_the_answer_leaves_out_are_taken_as_updated() {
        let counts = import_counts(br#"{"message": "Import result", "inserted": 3, "updated": 1}"#, 5);
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (3, 2, 0));
        let counts = import_counts(b"inserted successfully", 4);
        assert_eq!((counts.inserted, counts.updated), (0, 4));
    }

    #[test]
    fn a_rejected_row_never_shows_a_bank_account_number() {
        let row = rejected_row(&full_supplier());
        assert!(!row.contains("0417164300"), "{row}");
        assert!(row.contains("…4300"), "{row}");
    }
}
