//! The supplier table of one customer and the upsert `POST /v1/supplier` applies to it.

use crate::schema::{Location, Supplier, SupplierPost};
use serde::Serialize;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

/// Suppliers by their upsert key (`supplier_number`, `organization_code` with absent = "").
pub type Table = BTreeMap<(String, String), Supplier>;

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Counts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
}

/// Applies a validated batch: `full_load` empties the table first; each item is
/// then upserted in order (a key listed twice is inserted, then updated).
pub fn apply(table: &mut Table, post: SupplierPost) -> Counts {
    let mut counts = Counts::default();
    if post.full_load {
        table.clear();
    }
    let options = (post.address_insert_only, post.bank_insert_only);
    for item in post.items {
        let key = (
            item.supplier_number.clone().unwrap_or_default(),
            item.organization_code.clone().unwrap_or_default(),
        );
        match table.entry(key) {
            Entry::Vacant(e) => {
                e.insert(merge(&Supplier::default(), item, options));
                counts.inserted += 1;
            }
            Entry::Occupied(mut e) => {
                let merged = merge(e.get(), item, options);
                if merged == *e.get() {
                    counts.unchanged += 1;
                } else {
                    e.insert(merged);
                    counts.updated += 1;
                }
            }
        }
    }
    counts
}

/// The stored supplier after `item`: its own fields replaced, its listed
/// locations upserted by `location_code`, the others left alone.
fn merge(old: &Supplier, mut item: Supplier, (address_insert_only, bank_insert_only): (bool, bool)) -> Supplier {
    let mut locations = old.supplier_location.clone();
    for listed in std::mem::take(&mut item.supplier_location) {
        match locations.iter_mut().find(|l| l.location_code == listed.location_code) {
            Some(stored) => *stored = merge_location(stored, listed, address_insert_only, bank_insert_only),
            None => {
                let merged = merge_location(&Location::default(), listed, address_insert_only, bank_insert_only);
                locations.push(merged);
            }
        }
    }
    // serde grows each list to at least 4 slots; 100 000 stored suppliers should not keep them.
    locations.shrink_to_fit();
    Supplier {
        supplier_location: locations,
        ..item
    }
}

/// A listed location: its fields replaced; its addresses and bank accounts
/// replaced by the listed ones, or (insert-only) only the new ones added.
fn merge_location(old: &Location, mut listed: Location, address_insert_only: bool, bank_insert_only: bool) -> Location {
    let mut addresses = std::mem::take(&mut listed.supplier_address);
    if address_insert_only {
        let mut kept = old.supplier_address.clone();
        for a in addresses {
            if !kept.contains(&a) {
                kept.push(a);
            }
        }
        addresses = kept;
    }
    let mut accounts = std::mem::take(&mut listed.supplier_bank_account);
    if bank_insert_only {
        let mut kept = old.supplier_bank_account.clone();
        for b in accounts {
            if !kept.iter().any(|k| k.bank_account_number == b.bank_account_number) {
                kept.push(b);
            }
        }
        accounts = kept;
    }
    addresses.shrink_to_fit();
    accounts.shrink_to_fit();
    Location {
        supplier_address: addresses,
        supplier_bank_account: accounts,
        ..listed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::parse;

    fn post(body: &str) -> SupplierPost {
        parse(body.as_bytes()).unwrap()
    }

    #[test]
    fn same_number_in_two_organizations_is_two_suppliers_and_absent_is_empty() {
        let mut t = Table::new();
        let c = apply(
            &mut t,
            post(
                r#"{"items": [{"supplier_number": "1", "supplier_name": "a"},
                {"supplier_number": "1", "supplier_name": "b", "organization_code": "EU"},
                {"supplier_number": "1", "supplier_name": "c", "organization_code": ""}]}"#,
            ),
        );
        assert_eq!(
            c,
            Counts {
                inserted: 2,
                updated: 1,
                unchanged: 0
            }
        );
        assert_eq!(t[&("1".into(), "".into())].supplier_name.as_deref(), Some("c"));
        assert_eq!(t[&("1".into(), "EU".into())].supplier_name.as_deref(), Some("b"));
    }

    #[test]
    fn bank_insert_only_keeps_an_account_with_the_same_number() {
        let mut t = Table::new();
        let body = |name: &str, number: &str, insert_only: bool| {
            post(&format!(
                r#"{{"SupplierBankInsertOnly": {insert_only}, "items": [{{"supplier_number": "1", "supplier_name": "a",
                "supplier_location": [{{"location_code": "M", "supplier_bank_account":
                [{{"bank_name": "{name}", "bank_account_number": "{number}"}}]}}]}}]}}"#
            ))
        };
        apply(&mut t, body("Old", "111", false));
        let c = apply(&mut t, body("New", "111", true));
        assert_eq!(c.unchanged, 1);
        apply(&mut t, body("Other", "222", true));
        let names: Vec<_> = t[&("1".into(), "".into())].supplier_location[0]
            .supplier_bank_account
            .iter()
            .map(|b| b.bank_name.clone().unwrap())
            .collect();
        assert_eq!(names, ["Old", "Other"]);
        apply(&mut t, body("New", "111", false));
        assert_eq!(
            t[&("1".into(), "".into())].supplier_location[0]
                .supplier_bank_account
                .len(),
            1
        );
    }
}
