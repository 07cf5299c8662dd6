//! PostgreSQL keeps a supplier's locations, with their addresses and bank
//! accounts, as one JSON document on the supplier's row (`supplier.locations`);
//! the views `supplier_location`, `supplier_address` and
//! `supplier_bank_account` show them as SQLite's tables. One row per supplier
//! instead of three: a first load of 100 000 suppliers made the server insert
//! 300 000 rows into three natural-key indexes, and that was most of its time.
//!
//! This module is the document and the upsert rules on it, without SQL:
//! a listed location is upserted on its code (an unlisted one is kept), its
//! addresses and bank accounts replaced, or — with the insert-only options —
//! added when no stored one equals them (an address) or has their account
//! number (a bank account). SQLite applies the same rules row by row
//! (`suppliers.rs`, `children.rs`); the tests of both engines hold them equal.

use super::backend::LoadOptions;
use super::records::{AddressRecord, BankAccountRecord, LocationRecord, SupplierRecord};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

type Text<'a> = Option<Cow<'a, str>>;

/// One location in `supplier.locations`. Absent fields are left out of the
/// document; the keys are the view's column names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct LocationDoc<'a> {
    location_code: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    location_name: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    organization_code: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_currency_code: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_payment_term_code: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_payment_method: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    taxpayer_id: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duns_number: Text<'a>,
    #[serde(default = "active")]
    is_active: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custom_field_1: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custom_field_2: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custom_field_3: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custom_field_4: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custom_field_5: Text<'a>,
    #[serde(default)]
    created_at: Cow<'a, str>,
    #[serde(default)]
    updated_at: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    addresses: Vec<AddressDoc<'a>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    bank_accounts: Vec<BankDoc<'a>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AddressDoc<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    street: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    city: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    postal_code: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    country_code: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custom_field_1: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custom_field_2: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custom_field_3: Text<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BankDoc<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bank_name: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bank_branch: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bank_account_number: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bank_routing_number: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    swift_code: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account_currency: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    is_primary: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custom_field_1: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custom_field_2: Text<'a>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custom_field_3: Text<'a>,
}

/// A location written by hand without `is_active` is active, as a new one is.
fn active() -> i64 {
    1
}

fn text(value: &Option<String>) -> Text<'_> {
    value.as_deref().map(Cow::Borrowed)
}

impl<'a> AddressDoc<'a> {
    fn of(a: &'a AddressRecord) -> Self {
        Self {
            street: text(&a.street),
            city: text(&a.city),
            state: text(&a.state),
            postal_code: text(&a.postal_code),
            country_code: text(&a.country_code),
            custom_field_1: text(&a.custom_field_1),
            custom_field_2: text(&a.custom_field_2),
            custom_field_3: text(&a.custom_field_3),
        }
    }
}

impl<'a> BankDoc<'a> {
    fn of(b: &'a BankAccountRecord) -> Self {
        Self {
            bank_name: text(&b.bank_name),
            bank_branch: text(&b.bank_branch),
            bank_account_number: text(&b.bank_account_number),
            bank_routing_number: text(&b.bank_routing_number),
            swift_code: text(&b.swift_code),
            account_currency: text(&b.account_currency),
            is_primary: b.is_primary.map(i64::from),
            custom_field_1: text(&b.custom_field_1),
            custom_field_2: text(&b.custom_field_2),
            custom_field_3: text(&b.custom_field_3),
        }
    }
}

impl<'a> LocationDoc<'a> {
    /// A location not stored yet: active unless it says otherwise, no
    /// addresses or bank accounts until [`Self::merge_children`] adds them.
    fn new(l: &'a LocationRecord, now: &'a str) -> Self {
        let mut doc = Self {
            location_code: Cow::Borrowed(&l.location_code),
            location_name: None,
            organization_code: None,
            default_currency_code: None,
            default_payment_term_code: None,
            default_payment_method: None,
            taxpayer_id: None,
            duns_number: None,
            is_active: l.is_active.map_or(1, i64::from),
            custom_field_1: None,
            custom_field_2: None,
            custom_field_3: None,
            custom_field_4: None,
            custom_field_5: None,
            created_at: Cow::Borrowed(now),
            updated_at: Cow::Borrowed(now),
            addresses: Vec::new(),
            bank_accounts: Vec::new(),
        };
        doc.set_fields(l, now);
        doc
    }

    /// The listed location's fields over the stored ones; an absent
    /// `is_active` keeps the stored one, `created_at` stays.
    fn set_fields(&mut self, l: &'a LocationRecord, now: &'a str) {
        self.location_name = text(&l.location_name);
        self.organization_code = text(&l.organization_code);
        self.default_currency_code = text(&l.default_currency_code);
        self.default_payment_term_code = text(&l.default_payment_term_code);
        self.default_payment_method = text(&l.default_payment_method);
        self.taxpayer_id = text(&l.taxpayer_id);
        self.duns_number = text(&l.duns_number);
        if let Some(active) = l.is_active {
            self.is_active = i64::from(active);
        }
        self.custom_field_1 = text(&l.custom_field_1);
        self.custom_field_2 = text(&l.custom_field_2);
        self.custom_field_3 = text(&l.custom_field_3);
        self.custom_field_4 = text(&l.custom_field_4);
        self.custom_field_5 = text(&l.custom_field_5);
        self.updated_at = Cow::Borrowed(now);
    }

    /// The listed addresses and bank accounts: replacing the stored ones, or
    /// (insert-only) added when none equal to them is stored.
    fn merge_children(&mut self, l: &'a LocationRecord, options: LoadOptions) {
        if options.address_insert_only {
            for a in l.addresses.iter().map(AddressDoc::of) {
                if !self.addresses.contains(&a) {
                    self.addresses.push(a);
                }
            }
        } else {
            self.addresses = l.addresses.iter().map(AddressDoc::of).collect();
        }
        if options.bank_insert_only {
            for b in l.bank_accounts.iter().map(BankDoc::of) {
                if !self
                    .bank_accounts
                    .iter()
                    .any(|stored| stored.bank_account_number == b.bank_account_number)
                {
                    self.bank_accounts.push(b);
                }
            }
        } else {
            self.bank_accounts = l.bank_accounts.iter().map(BankDoc::of).collect();
        }
    }
}

/// The locations document of `s` written over `stored` (empty for a new
/// supplier), in stored order with new locations after; as JSON text.
pub(super) fn merged<'a>(
    stored: Vec<LocationDoc<'a>>,
    s: &'a SupplierRecord,
    now: &'a str,
    options: LoadOptions,
) -> Vec<u8> {
    let mut docs = stored;
    // By code, once: a supplier may list a thousand locations.
    let mut at: std::collections::HashMap<String, usize> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.location_code.to_string(), i))
        .collect();
    for l in &s.locations {
        let i = match at.get(l.location_code.as_str()) {
            Some(&i) => {
                docs[i].set_fields(l, now);
                i
            }
            None => {
                docs.push(LocationDoc::new(l, now));
                at.insert(l.location_code.clone(), docs.len() - 1);
                docs.len() - 1
            }
        };
        docs[i].merge_children(l, options);
    }
    serde_json::to_vec(&docs).unwrap_or_else(|_| b"[]".to_vec())
}

/// The largest locations document the host writes for one supplier. A
/// supplier's document is read whole when it changes, in the store's shared
/// threads, so it is bounded: far above any real supplier (a hundred
/// locations with their addresses and accounts take tens of KiB).
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// The stored document of a supplier, as the probe read it.
pub(super) fn parse(stored: &str) -> Result<Vec<LocationDoc<'static>>, serde_json::Error> {
    serde_json::from_str(stored)
}

/// A JSON text sent as `json` (its binary form is the text).
#[derive(Debug)]
pub(super) struct Json(pub Vec<u8>);

impl tokio_postgres::types::ToSql for Json {
    fn to_sql(
        &self,
        _: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::JSON
    }

    tokio_postgres::types::to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::tests::supplier;
    use serde_json::{Value, json};

    fn doc(stored: &str, s: &SupplierRecord, options: LoadOptions) -> Value {
        serde_json::from_slice(&merged(parse(stored).unwrap(), s, "NOW", options)).unwrap()
    }

    fn cities(location: &Value) -> Vec<&str> {
        location["addresses"]
            .as_array()
            .map(|a| a.iter().filter_map(|a| a["city"].as_str()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_new_supplier_is_its_listed_locations_with_absent_fields_left_out() {
        let mut s = supplier("S1", "One", Some("Delft"));
        s.locations[0].is_active = None;
        s.locations[0].bank_accounts.push(BankAccountRecord {
            bank_account_number: Some("NL01".into()),
            is_primary: Some(true),
            ..Default::default()
        });
        let d = doc("[]", &s, LoadOptions::default());
        assert_eq!(d[0]["location_code"], s.locations[0].location_code.as_str());
        assert_eq!(d[0]["is_active"], 1, "a new location is active unless it says otherwise");
        assert_eq!((d[0]["created_at"].as_str(), d[0]["updated_at"].as_str()), (Some("NOW"), Some("NOW")));
        assert_eq!(d[0]["addresses"], json!([{"street": "1 Main St", "city": "Delft", "country_code": "NL"}]));
        assert_eq!(d[0]["bank_accounts"], json!([{"bank_account_number": "NL01", "is_primary": 1}]));
        assert!(d[0].get("taxpayer_id").is_none(), "absent is left out: {d}");
    }

    #[test]
    fn a_listed_location_is_updated_in_place_and_an_unlisted_one_kept() {
        let stored = r#"[{"location_code":"BRANCH","is_active":1,"created_at":"T0","updated_at":"T0","addresses":[{"city":"Utrecht"}]},
                         {"location_code":"MAIN","location_name":"Old","is_active":0,"created_at":"T0","updated_at":"T0",
                          "addresses":[{"city":"Gouda"}],"bank_accounts":[{"bank_account_number":"NL01"}]}]"#;
        let mut s = supplier("S1", "One", Some("Delft"));
        s.locations[0].location_code = "MAIN".into();
        s.locations[0].is_active = None;
        let d = doc(stored, &s, LoadOptions::default());
        assert_eq!(cities(&d[0]), ["Utrecht"], "BRANCH is not listed: kept");
        assert_eq!(d[1]["location_name"], "Headquarters", "MAIN's fields are the listed ones");
        assert_eq!(d[1]["is_active"], 0, "an absent is_active keeps the stored one");
        assert_eq!((d[1]["created_at"].as_str(), d[1]["updated_at"].as_str()), (Some("T0"), Some("NOW")));
        assert_eq!(cities(&d[1]), ["Delft"], "replaced");
        assert!(d[1].get("bank_accounts").is_none(), "listed without any: replaced by none");
    }

    #[test]
    fn insert_only_adds_what_is_not_stored_yet() {
        let stored = r#"[{"location_code":"MAIN","is_active":1,"created_at":"T0","updated_at":"T0",
                          "addresses":[{"city":"Gouda"}],"bank_accounts":[{"bank_account_number":"NL01","bank_name":"Old"}]}]"#;
        let mut s = supplier("S1", "One", Some("Delft"));
        s.locations[0].location_code = "MAIN".into();
        s.locations[0].addresses.push(AddressRecord {
            city: Some("Gouda".into()),
            ..Default::default()
        });
        s.locations[0].bank_accounts = ["NL01", "NL02"]
            .map(|n| BankAccountRecord {
                bank_account_number: Some(n.into()),
                bank_name: Some("New".into()),
                ..Default::default()
            })
            .to_vec();
        let options = LoadOptions {
            address_insert_only: true,
            bank_insert_only: true,
            ..LoadOptions::default()
        };
        let d = doc(stored, &s, options);
        assert_eq!(
            cities(&d[0]),
            ["Gouda", "Delft"],
            "the listed Gouda equals the stored one; Delft is added after it"
        );
        assert_eq!(
            d[0]["bank_accounts"],
            json!([{"bank_account_number": "NL01", "bank_name": "Old"}, {"bank_account_number": "NL02", "bank_name": "New"}]),
            "an account is known by its number, and the stored one is not changed"
        );
    }

    #[test]
    fn text_that_json_escapes_comes_back_equal() {
        let mut s = supplier("S1", "One", Some("Dé\"lft\\\n☃"));
        s.locations[0].location_name = Some("tab\there".into());
        let text = String::from_utf8(merged(Vec::new(), &s, "NOW", LoadOptions::default())).unwrap();
        let back = parse(&text).unwrap();
        assert_eq!(back[0].addresses[0].city.as_deref(), Some("Dé\"lft\\\n☃"));
        assert_eq!(back[0].location_name.as_deref(), Some("tab\there"));
    }
}
