//! The supplier store: natural-key tables (no surrogate ids, no second
//! index), and an upsert that writes nothing for a supplier whose content
//! fingerprint is what the store already holds. Each engine writes its own
//! fastest way: SQLite one prepared statement per row (in-process, a row is
//! cheaper than a round trip), PostgreSQL a few array statements per batch
//! (`unnest`), so a batch of 1000 costs a handful of round trips.

use super::StoreError;
use super::backend::LoadOptions;
use super::children;
use super::pg_suppliers;
use super::postgres::PgConn;
use super::records::SupplierRecord;
use super::schema::now_utc;
use super::sql::{Conn, transaction_opened_by};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{OptionalExtension, ToSql, params};
use serde::Serialize;
use std::collections::HashSet;

/// The platform splits `save_all` into requests of 1000 rows; so do our transactions.
pub const SUPPLIERS_PER_TRANSACTION: usize = 1000;

/// What an upsert did, supplier by supplier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SaveCounts {
    pub inserted: u64,
    pub updated: u64,
    /// Equal to what the store held: nothing was written.
    pub unchanged: u64,
    /// Refused by the store one by one (the Customer API's validation) and
    /// set aside as rejected rows; the rest of their batch was written.
    #[serde(skip_serializing_if = "is_zero")]
    pub refused: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl SaveCounts {
    pub fn add(&mut self, other: SaveCounts) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.refused += other.refused;
    }

    pub fn total(&self) -> u64 {
        self.inserted + self.updated + self.unchanged
    }
}

/// Suppliers written by one run past which PostgreSQL's statistics are
/// refreshed at its end: plans made while a table was small (a first load)
/// would otherwise scan it whole for the next run's updates.
pub const ANALYZE_AFTER_WRITES: u64 = 5_000;

/// Refreshes the supplier tables' statistics (PostgreSQL; SQLite plans by its indexes).
pub async fn refresh_statistics(conn: &mut Conn) -> Result<(), StoreError> {
    if let Conn::Postgres(_) = conn {
        // The key columns only, from a sample of 3 000 rows (not 30 000):
        // every statement here finds rows by key, and that is enough to tell
        // the planner how customers and keys spread, at a fifth of the time.
        conn.batch(
            "BEGIN; SET LOCAL default_statistics_target = 10;
             ANALYZE supplier (customer_number, supplier_number, organization_code); COMMIT",
        )
        .await?;
    }
    Ok(())
}

/// Upserts `suppliers` in transactions of [`SUPPLIERS_PER_TRANSACTION`].
/// With `full_load`, the first transaction deletes the customer's other
/// suppliers first.
///
/// On PostgreSQL these commit without waiting for the WAL to reach the disk
/// (`synchronous_commit = off`, a flush per batch was a third of a first
/// load): the cursor is only ever committed by a transaction that waits, and
/// that wait flushes the WAL up to it, every earlier batch included. A server
/// crash can lose batches whose cursor was not committed yet, which the next
/// run fetches again — as SQLite's `synchronous=NORMAL` does on power loss.
pub async fn save_suppliers(
    conn: &mut Conn,
    customer_number: &str,
    suppliers: &[SupplierRecord],
    options: LoadOptions,
) -> Result<SaveCounts, StoreError> {
    let mut counts = SaveCounts::default();
    let mut options = options;
    for chunk in suppliers.chunks(SUPPLIERS_PER_TRANSACTION) {
        let written = match conn {
            Conn::Postgres(c) if !options.full_load => pg_batch(c, customer_number, chunk, options).await,
            _ => {
                transaction_opened_by(conn, Some(PG_BATCH_OPENING), async |tx: &mut Conn| {
                    upsert_suppliers(tx, customer_number, chunk, options).await
                })
                .await
            }
        };
        counts.add(written?);
        options.full_load = false;
    }
    Ok(counts)
}

/// How a PostgreSQL batch transaction begins (one round trip, or none of its
/// own when the upsert sends it with its first statements).
const PG_BATCH_OPENING: &str = "BEGIN; SET LOCAL synchronous_commit = off";

/// One PostgreSQL batch transaction (not a full load) whose `BEGIN` the
/// upsert sends with its first statements; committed, or rolled back on error.
async fn pg_batch(
    c: &mut PgConn,
    customer_number: &str,
    suppliers: &[SupplierRecord],
    options: LoadOptions,
) -> Result<SaveCounts, StoreError> {
    c.opening = Some(PG_BATCH_OPENING);
    let written = upsert_postgres(c, customer_number, suppliers, options).await;
    // Still pending: nothing was sent, so there is no transaction to end.
    let begun = c.opening.take().is_none();
    match written {
        Ok(counts) if begun => c.commit().await.map(|()| counts),
        Ok(counts) => Ok(counts),
        Err(e) => {
            if begun {
                let _ = c.rollback().await;
            }
            Err(e)
        }
    }
}

/// Upserts on (customer_number, supplier_number, organization_code), inside
/// the caller's transaction: a new supplier is inserted with its locations
/// and addresses; a changed one is updated, each listed location upserted on
/// its code and its addresses replaced; an unchanged one (same fingerprint)
/// is left as it is. Of one supplier listed twice, the last wins. The load
/// options: `full_load` deletes the customer's suppliers first; insert-only
/// addresses and bank accounts are written by [`children`] on SQLite, and
/// merged into the supplier's document on PostgreSQL (`supplier_doc.rs`).
pub(super) async fn upsert_suppliers(
    conn: &mut Conn,
    customer_number: &str,
    suppliers: &[SupplierRecord],
    options: LoadOptions,
) -> Result<SaveCounts, StoreError> {
    if suppliers.is_empty() {
        return Ok(SaveCounts::default());
    }
    if options.full_load {
        children::delete_all(conn, customer_number).await?;
    }
    if let Conn::Postgres(c) = conn {
        return upsert_postgres(c, customer_number, suppliers, options).await;
    }
    let plan = children::plan(conn, customer_number, suppliers, options).await?;
    let counts = match conn {
        Conn::Sqlite(c) => {
            let replace_addresses = !options.address_insert_only;
            let counts = upsert_sqlite(&c.conn, customer_number, suppliers, c.inserting, replace_addresses)?;
            // The next batch guesses from this one: a first load inserts, a re-read finds.
            c.inserting = counts.inserted * 2 > counts.total();
            counts
        }
        Conn::Postgres(_) => unreachable!("PostgreSQL returned above"),
    };
    if let Some(plan) = plan {
        plan.apply(conn, customer_number, suppliers).await?;
    }
    Ok(counts)
}

/// PostgreSQL: batches of distinct suppliers; a repeat starts the next
/// batch, so it sees what the earlier one wrote.
async fn upsert_postgres(
    c: &mut PgConn,
    customer_number: &str,
    suppliers: &[SupplierRecord],
    options: LoadOptions,
) -> Result<SaveCounts, StoreError> {
    let mut counts = SaveCounts::default();
    let mut start = 0;
    let mut seen = HashSet::new();
    for (i, s) in suppliers.iter().enumerate() {
        if !seen.insert((s.supplier_number.as_str(), s.organization_key())) {
            counts.add(pg_suppliers::upsert(c, customer_number, &suppliers[start..i], options).await?);
            start = i;
            seen.clear();
            seen.insert((s.supplier_number.as_str(), s.organization_key()));
        }
    }
    counts.add(pg_suppliers::upsert(c, customer_number, &suppliers[start..], options).await?);
    Ok(counts)
}

/// SQLite: a statement per row, prepared once per connection. With
/// `inserting` (the last batch was mostly new suppliers) each supplier is
/// inserted first and looked up only when its key is taken; otherwise looked
/// up first and inserted only when absent — one statement for the common
/// case either way.
fn upsert_sqlite(
    tx: &rusqlite::Connection,
    customer_number: &str,
    suppliers: &[SupplierRecord],
    inserting: bool,
    replace_addresses: bool,
) -> rusqlite::Result<SaveCounts> {
    let mut counts = SaveCounts::default();
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
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, COALESCE(?7, 1), ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)
         ON CONFLICT (customer_number, supplier_number, organization_code) DO NOTHING",
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
        let stored = |statement: &mut rusqlite::CachedStatement<'_>| {
            statement
                .query_row(params![customer_number, s.supplier_number, org], |r| {
                    r.get::<_, Vec<u8>>(0)
                })
                .optional()
        };
        let held = if inserting {
            if execute_sparse(&mut insert_supplier, supplier_params)? == 1 {
                None
            } else {
                stored(&mut stored_fingerprint)?
            }
        } else {
            match stored(&mut stored_fingerprint)? {
                None => {
                    execute_sparse(&mut insert_supplier, supplier_params)?;
                    None
                }
                held => held,
            }
        };
        let is_new = match held {
            None => {
                counts.inserted += 1;
                true
            }
            Some(held) if held.as_slice() == fingerprint.as_slice() => {
                counts.unchanged += 1;
                continue;
            }
            Some(_) => {
                execute_sparse(&mut update_supplier, supplier_params)?;
                counts.updated += 1;
                false
            }
        };
        for l in &s.locations {
            execute_sparse(
                &mut upsert_location,
                params![
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
                ],
            )?;
            if !replace_addresses {
                continue;
            }
            // A new supplier has no addresses to replace.
            if !is_new {
                execute_sparse(
                    &mut delete_addresses,
                    params![customer_number, s.supplier_number, org, l.location_code],
                )?;
            }
            for (position, a) in l.addresses.iter().enumerate() {
                execute_sparse(
                    &mut insert_address,
                    params![
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
                    ],
                )?;
            }
        }
    }
    Ok(counts)
}

/// Runs `statement` binding only the values that are not NULL: its bindings
/// are cleared first, so an absent value costs no bind call (most of a
/// supplier's optional columns are absent).
fn execute_sparse(statement: &mut rusqlite::CachedStatement<'_>, values: &[&dyn ToSql]) -> rusqlite::Result<usize> {
    statement.clear_bindings();
    for (i, value) in values.iter().enumerate() {
        match value.to_sql()? {
            ToSqlOutput::Borrowed(ValueRef::Null) | ToSqlOutput::Owned(Value::Null) => {}
            value => statement.raw_bind_parameter(i + 1, value)?,
        }
    }
    statement.raw_execute()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::records::tests::supplier;
    use crate::store::sql::params;
    use crate::store::testing::{count, on_both_engines};

    async fn name_and_city(conn: &mut Conn, number: &str) -> (String, String) {
        let row = conn
            .query_opt(
                "SELECT s.supplier_name, a.city FROM supplier s
                 JOIN supplier_address a ON a.customer_number = s.customer_number
                  AND a.supplier_number = s.supplier_number AND a.supplier_organization_code = s.organization_code
                 WHERE s.supplier_number = ?1",
                params![number],
            )
            .await
            .unwrap()
            .unwrap();
        (row.text(0), row.text(1))
    }

    /// Something that changes whenever any supplier row is written: SQLite's
    /// change counter, PostgreSQL's row versions.
    async fn writes(conn: &mut Conn) -> String {
        match conn {
            Conn::Sqlite(c) => c.conn.total_changes().to_string(),
            // Locations, addresses and bank accounts live in the supplier's row.
            Conn::Postgres(_) => {
                let mut versions = String::new();
                for row in conn
                    .query("SELECT xmin::text FROM supplier ORDER BY 1", params![])
                    .await
                    .unwrap()
                {
                    versions.push_str(&row.text(0));
                    versions.push(',');
                }
                versions
            }
        }
    }

    async fn upsert_replaces_in_place_without_duplicates(conn: &mut Conn) {
        let counts = save_suppliers(
            conn,
            "c1",
            &[supplier("S1", "One", Some("Utrecht")), supplier("S2", "Two", None)],
        Default::default())
        .await
        .unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (2, 0, 0));
        let counts = save_suppliers(conn, "c1", &[supplier("S1", "One renamed", Some("Delft"))], Default::default())
            .await
            .unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (0, 1, 0));
        assert_eq!(count(conn, "supplier").await, 2);
        assert_eq!(count(conn, "supplier_location").await, 1);
        assert_eq!(count(conn, "supplier_address").await, 1);
        assert_eq!(name_and_city(conn, "S1").await, ("One renamed".into(), "Delft".into()));
        // Another tenant's S1 is another row.
        save_suppliers(conn, "c2", &[supplier("S1", "Theirs", None)], Default::default())
            .await
            .unwrap();
        assert_eq!(count(conn, "supplier").await, 3);
    }

    async fn unchanged_suppliers_are_not_rewritten(conn: &mut Conn) {
        let batch = [supplier("S1", "One", Some("Utrecht")), supplier("S2", "Two", None)];
        save_suppliers(conn, "c1", &batch, Default::default()).await.unwrap();
        let before = writes(conn).await;
        let counts = save_suppliers(conn, "c1", &batch, Default::default()).await.unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (0, 0, 2));
        assert_eq!(writes(conn).await, before, "not one row was written");
        let mut renamed = batch.to_vec();
        renamed[1].supplier_name = "Two renamed".into();
        renamed.push(supplier("S3", "Three", None));
        let counts = save_suppliers(conn, "c1", &renamed, Default::default()).await.unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (1, 1, 1));
        assert_ne!(writes(conn).await, before, "the check sees a write");
        // SQLite looks suppliers up first after a batch of mostly known ones
        // and inserts first after a batch of mostly new ones: both count alike.
        let mut mixed = renamed.clone();
        mixed[0].supplier_name = "One renamed".into();
        mixed.extend((4..8).map(|n| supplier(&format!("S{n}"), "New", None)));
        let counts = save_suppliers(conn, "c1", &mixed, Default::default()).await.unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (4, 1, 2));
        mixed[1].supplier_name = "Two again".into();
        mixed.push(supplier("S8", "Eight", None));
        let counts = save_suppliers(conn, "c1", &mixed, Default::default()).await.unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (1, 1, 6));
    }

    async fn locations_not_listed_are_left_alone(conn: &mut Conn) {
        let mut two = supplier("S1", "One", Some("Utrecht"));
        let mut branch = two.locations[0].clone();
        branch.location_code = "BRANCH".into();
        two.locations.push(branch);
        save_suppliers(conn, "c1", &[two], Default::default()).await.unwrap();
        save_suppliers(conn, "c1", &[supplier("S1", "One", Some("Delft"))], Default::default())
            .await
            .unwrap();
        assert_eq!(count(conn, "supplier_location").await, 2);
        let cities: Vec<String> = conn
            .query("SELECT city FROM supplier_address ORDER BY location_code", params![])
            .await
            .unwrap()
            .iter()
            .map(|r| r.text(0))
            .collect();
        assert_eq!(cities, ["Utrecht", "Delft"], "BRANCH kept, MAIN replaced");
    }

    async fn a_value_never_leaks_into_the_next_rows_absent_one(conn: &mut Conn) {
        let mut full = supplier("S1", "One", Some("Utrecht"));
        full.custom_field_1 = Some("c1".into());
        full.alternative_supplier_name = Some("Alt".into());
        full.locations[0].taxpayer_id = Some("NL123".into());
        full.locations[0].addresses[0].postal_code = Some("3511".into());
        let bare = supplier("S2", "Two", Some("Delft"));
        save_suppliers(conn, "c1", &[full, bare], Default::default()).await.unwrap();
        let absent = conn
            .query(
                "SELECT s.custom_field_1, s.alternative_supplier_name, l.taxpayer_id, a.postal_code
                 FROM supplier s
                 JOIN supplier_location l ON l.supplier_number = s.supplier_number
                 JOIN supplier_address a ON a.supplier_number = s.supplier_number
                 WHERE s.supplier_number = 'S2'",
                params![],
            )
            .await
            .unwrap();
        assert_eq!(absent.len(), 1);
        for i in 0..4 {
            assert_eq!(absent[0].opt_text(i), None, "column {i} of S2 is absent");
        }
    }

    async fn an_absent_is_active_keeps_the_stored_one(conn: &mut Conn) {
        let mut off = supplier("S1", "One", Some("Utrecht"));
        off.is_active = Some(false);
        off.locations[0].is_active = Some(false);
        save_suppliers(conn, "c1", &[off.clone()], Default::default()).await.unwrap();
        let mut silent = off.clone();
        silent.supplier_name = "One renamed".into();
        silent.is_active = None;
        silent.locations[0].is_active = None;
        save_suppliers(conn, "c1", &[silent], Default::default()).await.unwrap();
        let row = conn
            .query_opt(
                "SELECT s.is_active, l.is_active FROM supplier s JOIN supplier_location l
                   ON l.customer_number = s.customer_number AND l.supplier_number = s.supplier_number",
                params![],
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!((row.int(0), row.int(1)), (0, 0));
        let mut fresh = supplier("S2", "Two", Some("Gouda"));
        fresh.is_active = None;
        fresh.locations[0].is_active = None;
        save_suppliers(conn, "c1", &[fresh], Default::default()).await.unwrap();
        let row = conn
            .query_opt("SELECT is_active FROM supplier WHERE supplier_number = 'S2'", params![])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.int(0), 1, "a new supplier is active unless it says otherwise");
    }

    async fn organization_code_is_part_of_the_key(conn: &mut Conn) {
        let mut other_org = supplier("S1", "One in org B", None);
        other_org.organization_code = Some("B".into());
        save_suppliers(conn, "c1", &[supplier("S1", "One", None), other_org], Default::default())
            .await
            .unwrap();
        assert_eq!(count(conn, "supplier").await, 2);
    }

    async fn duplicates_in_one_batch_collapse_to_the_last(conn: &mut Conn) {
        let batch = [
            supplier("S1", "First version", Some("Delft")),
            supplier("S1", "Last version", Some("Gouda")),
        ];
        save_suppliers(conn, "c1", &batch, Default::default()).await.unwrap();
        assert_eq!(count(conn, "supplier").await, 1);
        assert_eq!(count(conn, "supplier_address").await, 1);
        assert_eq!(name_and_city(conn, "S1").await, ("Last version".into(), "Gouda".into()));
    }

    /// After a batch of new suppliers PostgreSQL copies the next one without
    /// probing: a supplier in it that is stored already fails the copy, and
    /// the batch is probed and written again.
    async fn a_stored_supplier_after_a_batch_of_new_ones_is_updated(conn: &mut Conn) {
        let first = [supplier("S1", "One", Some("Utrecht")), supplier("S2", "Two", None)];
        let counts = save_suppliers(conn, "c1", &first, Default::default()).await.unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (2, 0, 0));
        let next = [
            supplier("S3", "Three", Some("Gouda")),
            supplier("S1", "One renamed", Some("Delft")),
        ];
        let counts = save_suppliers(conn, "c1", &next, Default::default()).await.unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (1, 1, 0));
        assert_eq!(count(conn, "supplier").await, 3);
        assert_eq!(count(conn, "supplier_location").await, 2);
        assert_eq!(count(conn, "supplier_address").await, 2);
        assert_eq!(name_and_city(conn, "S1").await, ("One renamed".into(), "Delft".into()));
        assert_eq!(name_and_city(conn, "S3").await, ("Three".into(), "Gouda".into()));
        let counts = save_suppliers(conn, "c1", &next, Default::default()).await.unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (0, 0, 2));
    }

    /// Insert-only addresses leave the addresses to `children`, not the
    /// suppliers and locations: those are written as without the option.
    async fn address_insert_only_still_writes_suppliers_and_locations(conn: &mut Conn) {
        let options = LoadOptions {
            address_insert_only: true,
            ..LoadOptions::default()
        };
        let counts = save_suppliers(conn, "c1", &[supplier("S1", "One", Some("Utrecht"))], options)
            .await
            .unwrap();
        assert_eq!(counts.inserted, 1);
        assert_eq!(count(conn, "supplier").await, 1);
        assert_eq!(count(conn, "supplier_location").await, 1);
        assert_eq!(count(conn, "supplier_address").await, 1);
        save_suppliers(conn, "c1", &[supplier("S1", "One renamed", Some("Delft"))], options)
            .await
            .unwrap();
        let names: Vec<String> = conn
            .query("SELECT supplier_name FROM supplier", params![])
            .await
            .unwrap()
            .iter()
            .map(|r| r.text(0))
            .collect();
        assert_eq!(names, ["One renamed"]);
        assert_eq!(count(conn, "supplier_address").await, 2, "Delft added, Utrecht kept");
    }

    /// Another writer adds a location to a supplier while this batch is
    /// written: the batch's update waits for it and merges over what it
    /// committed, so the location it did not list is kept.
    #[tokio::test]
    async fn postgres_keeps_a_location_another_writer_added_meanwhile() {
        let db = crate::store::testing::postgres_db().await;
        let pool = crate::store::postgres::PgPool::open(&db.url()).await.unwrap();
        let mut conn = Conn::Postgres(pool.conn().await.unwrap());
        // Twice: after a batch with nothing new the next one is probed, not copied blindly.
        for _ in 0..2 {
            save_suppliers(&mut conn, "c1", &[supplier("S1", "One", Some("Delft"))], Default::default())
                .await
                .unwrap();
        }

        let (other, connection) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        other
            .batch_execute(
                "BEGIN; UPDATE supplier SET locations = (locations::jsonb ||
                    '[{\"location_code\": \"BRANCH\", \"is_active\": 1, \"created_at\": \"T\", \"updated_at\": \"T\"}]')::json
                 WHERE supplier_number = 'S1'",
            )
            .await
            .unwrap();
        let writing = tokio::spawn(async move {
            let renamed = [supplier("S1", "One renamed", Some("Gouda"))];
            save_suppliers(&mut conn, "c1", &renamed, Default::default()).await.map(|c| (c, conn))
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!writing.is_finished(), "the batch waits for the other writer's transaction");
        other.batch_execute("COMMIT").await.unwrap();
        let (counts, mut conn) = writing.await.unwrap().unwrap();
        assert_eq!(counts.updated, 1);
        let locations: Vec<String> = conn
            .query("SELECT location_code FROM supplier_location ORDER BY 1", params![])
            .await
            .unwrap()
            .iter()
            .map(|r| r.text(0))
            .collect();
        assert_eq!(locations, ["BRANCH", "MAIN"]);
        assert_eq!(name_and_city(&mut conn, "S1").await, ("One renamed".into(), "Gouda".into()));
    }

    /// A supplier's document on PostgreSQL is bounded: one past it fails the
    /// batch naming the supplier and the bound, and nothing is written.
    #[tokio::test]
    async fn postgres_refuses_a_supplier_document_past_its_bound() {
        let (_db, mut conn) = crate::store::testing::postgres().await;
        let mut big = supplier("S1", "One", None);
        big.locations = (0..1000)
            .map(|n| {
                let mut l = crate::store::LocationRecord::new(format!("L{n}"));
                l.location_name = Some("x".repeat(4500));
                l
            })
            .collect();
        let err = save_suppliers(&mut conn, "c1", &[big, supplier("S2", "Two", None)], Default::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("supplier S1") && err.contains("4194304"), "{err}");
        assert_eq!(count(&mut conn, "supplier").await, 0);
    }

    /// The stored documents a batch of changed suppliers reads are bounded
    /// together: past it the batch fails naming the bound, and writes nothing.
    #[tokio::test]
    async fn postgres_refuses_a_batch_whose_stored_documents_are_too_large_together() {
        let (_db, mut conn) = crate::store::testing::postgres().await;
        let big = |n: usize, name: &str| {
            let mut s = supplier(&format!("S{n:02}"), name, None);
            s.locations = (0..1000)
                .map(|l| {
                    let mut l = crate::store::LocationRecord::new(format!("L{l}"));
                    l.location_name = Some("x".repeat(3900));
                    l
                })
                .collect();
            s
        };
        let first: Vec<SupplierRecord> = (0..17).map(|n| big(n, "One")).collect();
        save_suppliers(&mut conn, "c1", &first, Default::default()).await.unwrap();
        let changed: Vec<SupplierRecord> = (0..17).map(|n| big(n, "Renamed")).collect();
        let err = save_suppliers(&mut conn, "c1", &changed, Default::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("17 suppliers") && err.contains("67108864"), "{err}");
        let renamed = conn
            .query_opt("SELECT count(*) FROM supplier WHERE supplier_name = 'Renamed'", params![])
            .await
            .unwrap()
            .unwrap()
            .int(0);
        assert_eq!(renamed, 0);
        // A few at a time, the same changes go through.
        for few in changed.chunks(8) {
            save_suppliers(&mut conn, "c1", few, Default::default()).await.unwrap();
        }
    }

    on_both_engines!(
        a_stored_supplier_after_a_batch_of_new_ones_is_updated,
        address_insert_only_still_writes_suppliers_and_locations,
        upsert_replaces_in_place_without_duplicates,
        unchanged_suppliers_are_not_rewritten,
        locations_not_listed_are_left_alone,
        an_absent_is_active_keeps_the_stored_one,
        a_value_never_leaks_into_the_next_rows_absent_one,
        organization_code_is_part_of_the_key,
        duplicates_in_one_batch_collapse_to_the_last,
    );
}
