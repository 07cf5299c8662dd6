//! SQLite: the rows a location owns besides its addresses' bulk path: bank
//! accounts (contract 0.3.0), and addresses under `address-insert-only`. They
//! are written statement by statement after the batch's suppliers and
//! locations, and only for the suppliers the batch changed. Most loads carry
//! neither, and then this costs one query per batch. (PostgreSQL merges them
//! into the supplier's document by the same rules: `supplier_doc.rs`.)
//!
//! Insert-only follows the Customer API: an address is new when no stored
//! address of its location is equal to it; a bank account is new when no stored
//! account of its location has its account number.

use super::backend::LoadOptions;
use super::sql::{Conn, Param, Row, params};
use super::{AddressRecord, BankAccountRecord, LocationRecord, StoreError, SupplierRecord};
use std::collections::HashMap;

/// What a batch leaves to this module: the stored fingerprint of each of its
/// suppliers, read before the bulk upsert, to tell the ones it changed.
pub(super) struct Plan {
    stored: HashMap<(String, String), Option<Vec<u8>>>,
    addresses: bool,
    bank_accounts: bool,
    bank_insert_only: bool,
}

/// Deletes every supplier of `customer` with its locations, addresses and bank
/// accounts: the start of a full load. On PostgreSQL these are the
/// supplier's document (`supplier_doc.rs`), gone with its row.
pub(super) async fn delete_all(conn: &mut Conn, customer: &str) -> Result<(), StoreError> {
    if conn.engine() == super::sql::Engine::Postgres {
        conn.execute("DELETE FROM supplier WHERE customer_number = ?1", &params![customer])
            .await?;
        return Ok(());
    }
    for table in [
        "supplier_bank_account",
        "supplier_address",
        "supplier_location",
        "supplier",
    ] {
        conn.execute(&format!("DELETE FROM {table} WHERE customer_number = ?1"), &params![customer])
            .await?;
    }
    Ok(())
}

/// Reads what [`Plan::apply`] needs, before the bulk upsert; `None` when the
/// batch has no bank accounts, the customer has none stored and addresses are
/// replaced in bulk.
pub(super) async fn plan(
    conn: &mut Conn,
    customer: &str,
    suppliers: &[SupplierRecord],
    options: LoadOptions,
) -> Result<Option<Plan>, StoreError> {
    let listed = suppliers
        .iter()
        .any(|s| s.locations.iter().any(|l| !l.bank_accounts.is_empty()));
    // Stored accounts of a supplier listed without any are replaced by none.
    let bank_accounts = listed
        || conn
            .query_opt(
                "SELECT 1 FROM supplier_bank_account WHERE customer_number = ?1 LIMIT 1",
                &params![customer],
            )
            .await?
            .is_some();
    if !bank_accounts && !options.address_insert_only {
        return Ok(None);
    }
    let mut stored = HashMap::new();
    for s in suppliers {
        let key = (s.supplier_number.clone(), s.organization_key().to_owned());
        if stored.contains_key(&key) {
            continue;
        }
        let fingerprint = conn
            .query_opt(
                "SELECT fingerprint FROM supplier
                 WHERE customer_number = ?1 AND supplier_number = ?2 AND organization_code = ?3",
                &params![customer, &key.0, &key.1],
            )
            .await?
            .map(|row| row.blob(0));
        stored.insert(key, fingerprint);
    }
    Ok(Some(Plan {
        stored,
        addresses: options.address_insert_only,
        bank_accounts,
        bank_insert_only: options.bank_insert_only,
    }))
}

impl Plan {
    /// Writes the bank accounts (and insert-only addresses) of every supplier
    /// the batch changed, in order: of a supplier listed twice, the last wins.
    pub(super) async fn apply(
        mut self,
        conn: &mut Conn,
        customer: &str,
        suppliers: &[SupplierRecord],
    ) -> Result<(), StoreError> {
        for s in suppliers {
            let fingerprint = s.fingerprint().to_vec();
            let key = (s.supplier_number.clone(), s.organization_key().to_owned());
            let held = self.stored.insert(key, Some(fingerprint.clone())).flatten();
            if held.as_ref() == Some(&fingerprint) {
                // Unchanged: the bulk path wrote nothing, and neither does this.
                continue;
            }
            let is_new = held.is_none();
            for l in &s.locations {
                let at = Location {
                    customer,
                    supplier: &s.supplier_number,
                    org: s.organization_key(),
                    code: &l.location_code,
                };
                if self.addresses {
                    at.add_new_addresses(conn, l).await?;
                }
                if self.bank_accounts {
                    if self.bank_insert_only {
                        at.add_new_bank_accounts(conn, &l.bank_accounts).await?;
                    } else {
                        at.replace_bank_accounts(conn, &l.bank_accounts, is_new).await?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One stored location's key.
struct Location<'a> {
    customer: &'a str,
    supplier: &'a str,
    org: &'a str,
    code: &'a str,
}

const WHERE_LOCATION: &str =
    "customer_number = ?1 AND supplier_number = ?2 AND supplier_organization_code = ?3 AND location_code = ?4";

impl Location<'_> {
    fn key(&self) -> [Param<'_>; 4] {
        [
            self.customer.into(),
            self.supplier.into(),
            self.org.into(),
            self.code.into(),
        ]
    }

    /// The next free position and the stored rows of `table`'s `columns`.
    async fn stored(&self, conn: &mut Conn, table: &str, columns: &str) -> Result<(i64, Vec<Row>), StoreError> {
        let rows = conn
            .query(
                &format!("SELECT position, {columns} FROM {table} WHERE {WHERE_LOCATION}"),
                &self.key(),
            )
            .await?;
        let next = rows.iter().map(|r| r.int(0) + 1).max().unwrap_or(0);
        Ok((next, rows))
    }

    async fn add_new_addresses(&self, conn: &mut Conn, l: &LocationRecord) -> Result<(), StoreError> {
        let (mut next, rows) = self.stored(conn, "supplier_address", ADDRESS_COLUMNS).await?;
        let mut known: Vec<[Option<String>; 8]> =
            rows.iter().map(|r| std::array::from_fn(|i| r.opt_text(i + 1))).collect();
        for a in &l.addresses {
            let fields = address_fields(a);
            if known.contains(&fields) {
                continue;
            }
            self.insert_address(conn, next, a).await?;
            known.push(fields);
            next += 1;
        }
        Ok(())
    }

    async fn insert_address(&self, conn: &mut Conn, position: i64, a: &AddressRecord) -> Result<(), StoreError> {
        let [c, s, o, l] = self.key();
        conn.execute(
            &format!(
                "INSERT INTO supplier_address
                     (customer_number, supplier_number, supplier_organization_code, location_code, position,
                      {ADDRESS_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ),
            &[
                c,
                s,
                o,
                l,
                position.into(),
                (&a.street).into(),
                (&a.city).into(),
                (&a.state).into(),
                (&a.postal_code).into(),
                (&a.country_code).into(),
                (&a.custom_field_1).into(),
                (&a.custom_field_2).into(),
                (&a.custom_field_3).into(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn replace_bank_accounts(
        &self,
        conn: &mut Conn,
        accounts: &[BankAccountRecord],
        is_new: bool,
    ) -> Result<(), StoreError> {
        if !is_new {
            conn.execute(
                &format!("DELETE FROM supplier_bank_account WHERE {WHERE_LOCATION}"),
                &self.key(),
            )
            .await?;
        }
        for (position, b) in accounts.iter().enumerate() {
            self.insert_bank_account(conn, position as i64, b).await?;
        }
        Ok(())
    }

    async fn add_new_bank_accounts(&self, conn: &mut Conn, accounts: &[BankAccountRecord]) -> Result<(), StoreError> {
        let (mut next, rows) = self
            .stored(conn, "supplier_bank_account", "bank_account_number")
            .await?;
        let mut known: Vec<Option<String>> = rows.iter().map(|r| r.opt_text(1)).collect();
        for b in accounts {
            if known.contains(&b.bank_account_number) {
                continue;
            }
            self.insert_bank_account(conn, next, b).await?;
            known.push(b.bank_account_number.clone());
            next += 1;
        }
        Ok(())
    }

    async fn insert_bank_account(&self, conn: &mut Conn, position: i64, b: &BankAccountRecord) -> Result<(), StoreError> {
        let [c, s, o, l] = self.key();
        conn.execute(
            "INSERT INTO supplier_bank_account
                 (customer_number, supplier_number, supplier_organization_code, location_code, position,
                  bank_name, bank_branch, bank_account_number, bank_routing_number, swift_code, account_currency,
                  is_primary, custom_field_1, custom_field_2, custom_field_3)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            &[
                c,
                s,
                o,
                l,
                position.into(),
                (&b.bank_name).into(),
                (&b.bank_branch).into(),
                (&b.bank_account_number).into(),
                (&b.bank_routing_number).into(),
                (&b.swift_code).into(),
                (&b.account_currency).into(),
                b.is_primary.map(i64::from).into(),
                (&b.custom_field_1).into(),
                (&b.custom_field_2).into(),
                (&b.custom_field_3).into(),
            ],
        )
        .await?;
        Ok(())
    }
}

const ADDRESS_COLUMNS: &str =
    "street, city, state, postal_code, country_code, custom_field_1, custom_field_2, custom_field_3";

fn address_fields(a: &AddressRecord) -> [Option<String>; 8] {
    [
        a.street.clone(),
        a.city.clone(),
        a.state.clone(),
        a.postal_code.clone(),
        a.country_code.clone(),
        a.custom_field_1.clone(),
        a.custom_field_2.clone(),
        a.custom_field_3.clone(),
    ]
}
