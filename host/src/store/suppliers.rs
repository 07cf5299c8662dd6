//! The supplier store: upserts of suppliers with their locations and addresses.

use super::StoreError;
use super::schema::now_utc;
use crate::bindings::supplier_load::{Supplier, SupplierAddress, SupplierLocation};
use rusqlite::{Connection, Transaction, params};

/// The platform splits `save_all` into requests of 1000 rows; so do our transactions.
pub const SUPPLIERS_PER_TRANSACTION: usize = 1000;

/// A supplier with only its required fields set.
pub fn new_supplier(supplier_number: impl Into<String>, supplier_name: impl Into<String>) -> Supplier {
    Supplier {
        supplier_number: supplier_number.into(),
        supplier_name: supplier_name.into(),
        alternative_supplier_name: None,
        supplier_type: None,
        organization_code: None,
        is_active: None,
        custom_field_1: None,
        custom_field_2: None,
        custom_field_3: None,
        custom_field_4: None,
        custom_field_5: None,
        locations: Vec::new(),
    }
}

/// A location with only its code set.
pub fn new_location(location_code: impl Into<String>) -> SupplierLocation {
    SupplierLocation {
        location_code: location_code.into(),
        location_name: None,
        organization_code: None,
        default_currency_code: None,
        default_payment_term_code: None,
        default_payment_method: None,
        taxpayer_id: None,
        duns_number: None,
        is_active: None,
        custom_field_1: None,
        custom_field_2: None,
        custom_field_3: None,
        custom_field_4: None,
        custom_field_5: None,
        addresses: Vec::new(),
    }
}

/// An empty address.
pub fn new_address() -> SupplierAddress {
    SupplierAddress {
        street: None,
        city: None,
        state: None,
        postal_code: None,
        country_code: None,
        custom_field_1: None,
        custom_field_2: None,
        custom_field_3: None,
    }
}

pub fn save_suppliers(
    conn: &mut Connection,
    customer_number: &str,
    suppliers: &[Supplier],
) -> Result<usize, StoreError> {
    for chunk in suppliers.chunks(SUPPLIERS_PER_TRANSACTION) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        upsert_suppliers(&tx, customer_number, chunk)?;
        tx.commit()?;
    }
    Ok(suppliers.len())
}

/// Upserts on (customer_number, supplier_number, organization_code), then each
/// location on (supplier, location_code), replacing the location's addresses.
pub(super) fn upsert_suppliers(
    tx: &Transaction<'_>,
    customer_number: &str,
    suppliers: &[Supplier],
) -> rusqlite::Result<()> {
    if suppliers.is_empty() {
        return Ok(());
    }
    let now = now_utc();
    let mut upsert_supplier = tx.prepare_cached(
        "INSERT INTO supplier
             (customer_number, supplier_number, organization_code, supplier_name, alternative_supplier_name,
              supplier_type, is_active, custom_field_1, custom_field_2, custom_field_3, custom_field_4,
              custom_field_5, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, COALESCE(?7, 1), ?8, ?9, ?10, ?11, ?12, ?13, ?13)
         ON CONFLICT (customer_number, supplier_number, organization_code) DO UPDATE SET
             supplier_name = excluded.supplier_name,
             alternative_supplier_name = excluded.alternative_supplier_name,
             supplier_type = excluded.supplier_type,
             is_active = COALESCE(?7, supplier.is_active),
             custom_field_1 = excluded.custom_field_1, custom_field_2 = excluded.custom_field_2,
             custom_field_3 = excluded.custom_field_3, custom_field_4 = excluded.custom_field_4,
             custom_field_5 = excluded.custom_field_5, updated_at = excluded.updated_at
         RETURNING supplier_id",
    )?;
    let mut upsert_location = tx.prepare_cached(
        "INSERT INTO supplier_location
             (supplier_id, location_code, location_name, organization_code, default_currency_code,
              default_payment_term_code, default_payment_method, taxpayer_id, duns_number, is_active,
              custom_field_1, custom_field_2, custom_field_3, custom_field_4, custom_field_5, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, COALESCE(?10, 1), ?11, ?12, ?13, ?14, ?15, ?16, ?16)
         ON CONFLICT (supplier_id, location_code) DO UPDATE SET
             location_name = excluded.location_name, organization_code = excluded.organization_code,
             default_currency_code = excluded.default_currency_code,
             default_payment_term_code = excluded.default_payment_term_code,
             default_payment_method = excluded.default_payment_method,
             taxpayer_id = excluded.taxpayer_id, duns_number = excluded.duns_number,
             is_active = COALESCE(?10, supplier_location.is_active),
             custom_field_1 = excluded.custom_field_1, custom_field_2 = excluded.custom_field_2,
             custom_field_3 = excluded.custom_field_3, custom_field_4 = excluded.custom_field_4,
             custom_field_5 = excluded.custom_field_5, updated_at = excluded.updated_at
         RETURNING supplier_location_id",
    )?;
    let mut delete_addresses = tx.prepare_cached("DELETE FROM supplier_address WHERE supplier_location_id = ?1")?;
    let mut insert_address = tx.prepare_cached(
        "INSERT INTO supplier_address
             (supplier_location_id, street, city, state, postal_code, country_code,
              custom_field_1, custom_field_2, custom_field_3)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;

    for s in suppliers {
        let supplier_id: i64 = upsert_supplier.query_row(
            params![
                customer_number,
                s.supplier_number,
                s.organization_code.as_deref().unwrap_or(""),
                s.supplier_name,
                s.alternative_supplier_name,
                s.supplier_type,
                s.is_active,
                s.custom_field_1,
                s.custom_field_2,
                s.custom_field_3,
                s.custom_field_4,
                s.custom_field_5,
                now
            ],
            |r| r.get(0),
        )?;
        for l in &s.locations {
            let location_id = upsert_location_row(&mut upsert_location, supplier_id, l, &now)?;
            delete_addresses.execute([location_id])?;
            for a in &l.addresses {
                insert_address.execute(params![
                    location_id,
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
    Ok(())
}

fn upsert_location_row(
    stmt: &mut rusqlite::CachedStatement<'_>,
    supplier_id: i64,
    l: &SupplierLocation,
    now: &str,
) -> rusqlite::Result<i64> {
    stmt.query_row(
        params![
            supplier_id,
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
        ],
        |r| r.get(0),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::schema::open;

    /// A supplier with a MAIN location in `city` (or none).
    pub(crate) fn supplier(number: &str, name: &str, city: Option<&str>) -> Supplier {
        let mut s = new_supplier(number, name);
        s.is_active = Some(true);
        if let Some(city) = city {
            let mut location = new_location("MAIN");
            location.location_name = Some("Headquarters".into());
            location.is_active = Some(true);
            let mut address = new_address();
            address.street = Some("1 Main St".into());
            address.city = Some(city.into());
            address.country_code = Some("NL".into());
            location.addresses.push(address);
            s.locations.push(location);
        }
        s
    }

    pub(crate) fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("t.db")).unwrap();
        (dir, conn)
    }

    #[test]
    fn upsert_replaces_in_place_without_duplicates() {
        let (_dir, mut conn) = db();
        save_suppliers(
            &mut conn,
            "c1",
            &[supplier("S1", "One", Some("Utrecht")), supplier("S2", "Two", None)],
        )
        .unwrap();
        save_suppliers(&mut conn, "c1", &[supplier("S1", "One renamed", Some("Delft"))]).unwrap();
        assert_eq!(count(&conn, "supplier"), 2);
        assert_eq!(count(&conn, "supplier_location"), 1);
        assert_eq!(count(&conn, "supplier_address"), 1);
        let (name, city): (String, String) = conn
            .query_row(
                "SELECT s.supplier_name, a.city FROM supplier s JOIN supplier_location l USING (supplier_id)
                 JOIN supplier_address a USING (supplier_location_id) WHERE s.supplier_number = 'S1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((name.as_str(), city.as_str()), ("One renamed", "Delft"));
        // Another tenant's S1 is another row.
        save_suppliers(&mut conn, "c2", &[supplier("S1", "Theirs", None)]).unwrap();
        assert_eq!(count(&conn, "supplier"), 3);
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
        let (name, city): (String, String) = conn
            .query_row(
                "SELECT s.supplier_name, a.city FROM supplier s JOIN supplier_location l USING (supplier_id)
                 JOIN supplier_address a USING (supplier_location_id)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((name.as_str(), city.as_str()), ("Last version", "Gouda"));
    }
}
