//! The supplier store in SQLite: natural-key tables (no surrogate ids, no
//! second index), and an upsert that writes nothing for a supplier whose
//! content fingerprint is what the store already holds.

use super::StoreError;
use super::records::SupplierRecord;
use super::schema::now_utc;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

/// The platform splits `save_all` into requests of 1000 rows; so do our transactions.
pub const SUPPLIERS_PER_TRANSACTION: usize = 1000;

/// What an upsert did, supplier by supplier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SaveCounts {
    pub inserted: u64,
    pub updated: u64,
    /// Equal to what the store held: nothing was written.
    pub unchanged: u64,
}

impl SaveCounts {
    pub fn add(&mut self, other: SaveCounts) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
    }

    pub fn total(&self) -> u64 {
        self.inserted + self.updated + self.unchanged
    }
}

/// Upserts `suppliers` in transactions of [`SUPPLIERS_PER_TRANSACTION`].
pub fn save_suppliers(
    conn: &mut Connection,
    customer_number: &str,
    suppliers: &[SupplierRecord],
) -> Result<SaveCounts, StoreError> {
    let mut counts = SaveCounts::default();
    for chunk in suppliers.chunks(SUPPLIERS_PER_TRANSACTION) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        counts.add(upsert_suppliers(&tx, customer_number, chunk)?);
        tx.commit()?;
    }
    Ok(counts)
}

/// Upserts on (customer_number, supplier_number, organization_code): a new
/// supplier is inserted with its locations and addresses; a changed one is
/// updated, each listed location upserted on its code and its addresses
/// replaced; an unchanged one (same fingerprint) is left as it is.
pub(super) fn upsert_suppliers(
    tx: &Transaction<'_>,
    customer_number: &str,
    suppliers: &[SupplierRecord],
) -> rusqlite::Result<SaveCounts> {
    let mut counts = SaveCounts::default();
    if suppliers.is_empty() {
        return Ok(counts);
    }
    let now = now_utc();
    let mut stored_fingerprint = tx.prepare_cached(
        "SELECT fingerprint FROM supplier
         WHERE customer_number = ?1 AND supplier_number = ?2 AND organization_code = ?3",
    )?;
    let mut insert_supplier = tx.prepare_cached(
        "INSERT INTO supplier
             (customer_number, supplier_number, organization_code, supplier_name, alternative_supplier_name,
              supplier_type, is_active, custom_field_1, custom_field_2, custom_field_3, custom_field_4,
              custom_field_5, fingerprint, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, COALESCE(?7, 1), ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)",
    )?;
    let mut update_supplier = tx.prepare_cached(
        "UPDATE supplier SET supplier_name = ?4, alternative_supplier_name = ?5, supplier_type = ?6,
             is_active = COALESCE(?7, is_active), custom_field_1 = ?8, custom_field_2 = ?9, custom_field_3 = ?10,
             custom_field_4 = ?11, custom_field_5 = ?12, fingerprint = ?13, updated_at = ?14
         WHERE customer_number = ?1 AND supplier_number = ?2 AND organization_code = ?3",
    )?;
    let mut upsert_location = tx.prepare_cached(
        "INSERT INTO supplier_location
             (customer_number, supplier_number, supplier_organization_code, location_code, location_name,
              organization_code, default_currency_code, default_payment_term_code, default_payment_method,
              taxpayer_id, duns_number, is_active, custom_field_1, custom_field_2, custom_field_3, custom_field_4,
              custom_field_5, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, COALESCE(?12, 1), ?13, ?14, ?15, ?16, ?17, ?18, ?18)
         ON CONFLICT (customer_number, supplier_number, supplier_organization_code, location_code) DO UPDATE SET
             location_name = excluded.location_name, organization_code = excluded.organization_code,
             default_currency_code = excluded.default_currency_code,
             default_payment_term_code = excluded.default_payment_term_code,
             default_payment_method = excluded.default_payment_method,
             taxpayer_id = excluded.taxpayer_id, duns_number = excluded.duns_number,
             is_active = COALESCE(?12, supplier_location.is_active),
             custom_field_1 = excluded.custom_field_1, custom_field_2 = excluded.custom_field_2,
             custom_field_3 = excluded.custom_field_3, custom_field_4 = excluded.custom_field_4,
             custom_field_5 = excluded.custom_field_5, updated_at = excluded.updated_at",
    )?;
    let mut delete_addresses = tx.prepare_cached(
        "DELETE FROM supplier_address
         WHERE customer_number = ?1 AND supplier_number = ?2 AND supplier_organization_code = ?3
           AND location_code = ?4",
    )?;
    let mut insert_address = tx.prepare_cached(
        "INSERT INTO supplier_address
             (customer_number, supplier_number, supplier_organization_code, location_code, position,
              street, city, state, postal_code, country_code, custom_field_1, custom_field_2, custom_field_3)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;

    for s in suppliers {
        let org = s.organization_key();
        let fingerprint = s.fingerprint();
        let stored: Option<Vec<u8>> = stored_fingerprint
            .query_row(params![customer_number, s.supplier_number, org], |r| r.get(0))
            .optional()?;
        let is_new = match &stored {
            Some(stored) if stored.as_slice() == fingerprint.as_slice() => {
                counts.unchanged += 1;
                continue;
            }
            Some(_) => false,
            None => true,
        };
        let supplier_params = params![
            customer_number,
            s.supplier_number,
            org,
            s.supplier_name,
            s.alternative_supplier_name,
            s.supplier_type,
            s.is_active,
            s.custom_field_1,
            s.custom_field_2,
            s.custom_field_3,
            s.custom_field_4,
            s.custom_field_5,
            fingerprint.as_slice(),
            now
        ];
        if is_new {
            insert_supplier.execute(supplier_params)?;
            counts.inserted += 1;
        } else {
            update_supplier.execute(supplier_params)?;
            counts.updated += 1;
        }
        for l in &s.locations {
            upsert_location.execute(params![
                customer_number,
                s.supplier_number,
                org,
                l.location_code,
                l.location_name,
                l.organization_code,
                l.default_currency_code,
                l.default_payment_term_code,
                l.default_payment_method,
                l.taxpayer_id,
                l.duns_number,
                l.is_active,
                l.custom_field_1,
                l.custom_field_2,
                l.custom_field_3,
                l.custom_field_4,
                l.custom_field_5,
                now
            ])?;
            // A new supplier has no addresses to replace.
            if !is_new {
                delete_addresses.execute(params![customer_number, s.supplier_number, org, l.location_code])?;
            }
            for (position, a) in l.addresses.iter().enumerate() {
                insert_address.execute(params![
                    customer_number,
                    s.supplier_number,
                    org,
                    l.location_code,
                    position as i64,
                    a.street,
                    a.city,
                    a.state,
                    a.postal_code,
                    a.country_code,
                    a.custom_field_1,
                    a.custom_field_2,
                    a.custom_field_3
                ])?;
            }
        }
    }
    Ok(counts)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::records::tests::supplier;
    use crate::store::schema::open;

    pub(crate) fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("t.db")).unwrap();
        (dir, conn)
    }

    fn name_and_city(conn: &Connection, number: &str) -> (String, String) {
        conn.query_row(
            "SELECT s.supplier_name, a.city FROM supplier s
             JOIN supplier_address a ON a.customer_number = s.customer_number
              AND a.supplier_number = s.supplier_number AND a.supplier_organization_code = s.organization_code
             WHERE s.supplier_number = ?1",
            [number],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    }

    #[test]
    fn upsert_replaces_in_place_without_duplicates() {
        let (_dir, mut conn) = db();
        let counts = save_suppliers(
            &mut conn,
            "c1",
            &[supplier("S1", "One", Some("Utrecht")), supplier("S2", "Two", None)],
        )
        .unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (2, 0, 0));
        let counts = save_suppliers(&mut conn, "c1", &[supplier("S1", "One renamed", Some("Delft"))]).unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (0, 1, 0));
        assert_eq!(count(&conn, "supplier"), 2);
        assert_eq!(count(&conn, "supplier_location"), 1);
        assert_eq!(count(&conn, "supplier_address"), 1);
        assert_eq!(name_and_city(&conn, "S1"), ("One renamed".into(), "Delft".into()));
        // Another tenant's S1 is another row.
        save_suppliers(&mut conn, "c2", &[supplier("S1", "Theirs", None)]).unwrap();
        assert_eq!(count(&conn, "supplier"), 3);
    }

    #[test]
    fn unchanged_suppliers_are_not_rewritten() {
        let (_dir, mut conn) = db();
        let batch = [supplier("S1", "One", Some("Utrecht")), supplier("S2", "Two", None)];
        save_suppliers(&mut conn, "c1", &batch).unwrap();
        let stamp = |conn: &Connection| -> String {
            conn.query_row(
                "SELECT updated_at FROM supplier WHERE supplier_number = 'S1'",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        let before = stamp(&conn);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let changes_before = conn.total_changes();
        let counts = save_suppliers(&mut conn, "c1", &batch).unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (0, 0, 2));
        assert_eq!(conn.total_changes(), changes_before, "not one row was written");
        assert_eq!(stamp(&conn), before);
    }

    #[test]
    fn locations_not_listed_are_left_alone() {
        let (_dir, mut conn) = db();
        let mut two = supplier("S1", "One", Some("Utrecht"));
        let mut branch = two.locations[0].clone();
        branch.location_code = "BRANCH".into();
        two.locations.push(branch);
        save_suppliers(&mut conn, "c1", &[two]).unwrap();
        save_suppliers(&mut conn, "c1", &[supplier("S1", "One", Some("Delft"))]).unwrap();
        assert_eq!(count(&conn, "supplier_location"), 2);
        let cities: Vec<String> = conn
            .prepare("SELECT city FROM supplier_address ORDER BY location_code")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(cities, ["Utrecht", "Delft"], "BRANCH kept, MAIN replaced");
    }

    #[test]
    fn organization_code_is_part_of_the_key() {
        let (_dir, mut conn) = db();
        let mut other_org = supplier("S1", "One in org B", None);
        other_org.organization_code = Some("B".into());
        save_suppliers(&mut conn, "c1", &[supplier("S1", "One", None), other_org]).unwrap();
        assert_eq!(count(&conn, "supplier"), 2);
    }

    #[test]
    fn duplicates_in_one_batch_collapse_to_the_last() {
        let (_dir, mut conn) = db();
        let batch = [
            supplier("S1", "First version", Some("Delft")),
            supplier("S1", "Last version", Some("Gouda")),
        ];
        save_suppliers(&mut conn, "c1", &batch).unwrap();
        assert_eq!(count(&conn, "supplier"), 1);
        assert_eq!(count(&conn, "supplier_address"), 1);
        assert_eq!(name_and_city(&conn, "S1"), ("Last version".into(), "Gouda".into()));
    }
}
