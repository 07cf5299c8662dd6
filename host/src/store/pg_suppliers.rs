//! PostgreSQL's supplier upsert: a batch of distinct suppliers in a handful of
//! statements sent together, whatever its size. A supplier is one row; its
//! locations, addresses and bank accounts are its JSON document
//! (`supplier_doc.rs`).
//!
//! The suppliers a batch adds (its probe found no stored row) are written by
//! binary `COPY` under a savepoint; the changed ones by one array `UPDATE`
//! with their documents merged in Rust; the unchanged ones not at all. A key
//! taken meanwhile (a concurrent writer) makes the `COPY` fail whole: the
//! batch goes back to its savepoint, is probed and written again, and if a
//! writer overtakes that probe too, written by an upsert whose document
//! replaces the one stored.

use super::StoreError;
use super::backend::LoadOptions;
use super::postgres::PgConn;
use super::records::SupplierRecord;
use super::schema::now_utc;
use super::supplier_doc::{self, Json};
use super::suppliers::SaveCounts;
use bytes::BufMut;
use futures_util::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

/// Upserts one batch of distinct suppliers inside the caller's transaction;
/// writes nothing for a supplier whose fingerprint the store already holds.
///
/// After a batch that only added suppliers (a first load) the next one is
/// copied without probing first: a key already stored fails the copy, and the
/// batch is probed and written again.
pub(super) async fn upsert(
    conn: &mut PgConn,
    customer: &str,
    suppliers: &[SupplierRecord],
    options: LoadOptions,
) -> Result<SaveCounts, StoreError> {
    if suppliers.is_empty() {
        return Ok(SaveCounts::default());
    }
    let fingerprints: Vec<[u8; 16]> = suppliers.iter().map(SupplierRecord::fingerprint).collect();
    let statements = Statements::prepare(conn).await?;
    let now = now_utc();
    let mut guess = conn.inserting;
    // A transaction not begun yet goes out with the copy's savepoint; a
    // probe must read inside it, so then it goes first. (Left pending until
    // it is sent: a batch refused before that has no transaction to end.)
    if !guess && let Some(sql) = conn.opening.take() {
        conn.client().batch_execute(sql).await?;
    }
    let mut copy = true;
    let counts = loop {
        let split = if guess {
            Split::all_new(suppliers, &fingerprints, customer, &now, options)?
        } else {
            probe(conn, customer, suppliers, &fingerprints, &now, options).await?
        };
        let batch = Batch {
            customer,
            now: &now,
            split: &split,
            opening: conn.opening.take(),
        };
        let written = if copy {
            batch.copy_and_update(conn.client(), &statements).await
        } else {
            batch.upsert(conn.client(), &statements).await
        };
        match written {
            Ok(()) => break split.counts(suppliers.len()),
            Err(e) if copy && e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                conn.client()
                    .batch_execute("ROLLBACK TO SAVEPOINT nuntiq_batch")
                    .await?;
                // A guess that was wrong is probed; a probe that was overtaken is upserted.
                if guess {
                    guess = false;
                } else {
                    copy = false;
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    conn.inserting = counts.inserted == suppliers.len() as u64;
    Ok(counts)
}

/// A batch's suppliers by what the store holds of them, each with the
/// document it is written with; the unchanged are in neither list.
struct Split<'a> {
    new: Vec<(&'a SupplierRecord, [u8; 16], Json)>,
    changed: Vec<(&'a SupplierRecord, [u8; 16], Json)>,
}

impl<'a> Split<'a> {
    fn all_new(
        suppliers: &'a [SupplierRecord],
        fingerprints: &[[u8; 16]],
        customer: &str,
        now: &'a str,
        options: LoadOptions,
    ) -> Result<Self, StoreError> {
        let mut new = Vec::with_capacity(suppliers.len());
        for (s, fingerprint) in suppliers.iter().zip(fingerprints) {
            new.push((s, *fingerprint, document(Vec::new(), s, customer, now, options)?));
        }
        Ok(Self {
            new,
            changed: Vec::new(),
        })
    }

    fn counts(&self, total: usize) -> SaveCounts {
        SaveCounts {
            inserted: self.new.len() as u64,
            updated: self.changed.len() as u64,
            unchanged: (total - self.new.len() - self.changed.len()) as u64,
            refused: 0,
        }
    }
}

/// Reads which suppliers of the batch are new and which differ from what the
/// store holds. Only what differs comes back: a batch the store already holds
/// costs this one statement, returns nothing and locks nothing.
///
/// The documents of the changed ones are then read again under a row lock,
/// in key order: a changed supplier's document is merged from the one its
/// update replaces, so another writer's change to a location this batch does
/// not list is kept, not overwritten from an older read. A changed supplier
/// deleted meanwhile is written as new.
async fn probe<'a>(
    conn: &mut PgConn,
    customer: &str,
    suppliers: &'a [SupplierRecord],
    fingerprints: &[[u8; 16]],
    now: &str,
    options: LoadOptions,
) -> Result<Split<'a>, StoreError> {
    let numbers: Vec<&str> = suppliers.iter().map(|s| s.supplier_number.as_str()).collect();
    let orgs: Vec<&str> = suppliers.iter().map(SupplierRecord::organization_key).collect();
    let prints: Vec<&[u8]> = fingerprints.iter().map(|f| f.as_slice()).collect();
    let differing = conn
        .prepared(
            // LATERAL … LIMIT 1: one index probe per key, whatever the table's
            // statistics say (a join may otherwise hash the customer's every supplier).
            "SELECT k.i, s.fingerprint IS NOT NULL
             FROM unnest($2::text[], $3::text[], $4::bytea[]) WITH ORDINALITY AS k(number, org, fp, i)
             LEFT JOIN LATERAL (
                 SELECT fingerprint FROM supplier
                 WHERE customer_number = $1 AND supplier_number = k.number AND organization_code = k.org
                 LIMIT 1
             ) s ON true
             WHERE s.fingerprint IS DISTINCT FROM k.fp",
        )
        .await?;
    let mut split = Split {
        new: Vec::new(),
        changed: Vec::new(),
    };
    let mut changed = Vec::new();
    for row in conn
        .client()
        .query(&differing, &[&customer, &numbers, &orgs, &prints])
        .await?
    {
        let i = usize::try_from(row.get::<_, i64>(0) - 1).unwrap_or(usize::MAX);
        let (Some(s), Some(fingerprint)) = (suppliers.get(i), fingerprints.get(i)) else {
            continue;
        };
        match row.get::<_, bool>(1) {
            true => changed.push((s, *fingerprint)),
            false => split.new.push((s, *fingerprint, document(Vec::new(), s, customer, now, options)?)),
        }
    }
    if changed.is_empty() {
        return Ok(split);
    }
    // Locked first, measured, and only then read: the documents are held
    // in the store's shared threads while the batch is merged and written.
    let lock = conn
        .prepared(
            "SELECT octet_length(s.locations::text) FROM supplier s
             JOIN unnest($2::text[], $3::text[]) AS k(number, org)
               ON s.supplier_number = k.number AND s.organization_code = k.org
             WHERE s.customer_number = $1
             ORDER BY s.supplier_number, s.organization_code
             FOR UPDATE OF s",
        )
        .await?;
    let numbers: Vec<&str> = changed.iter().map(|(s, _)| s.supplier_number.as_str()).collect();
    let orgs: Vec<&str> = changed.iter().map(|(s, _)| s.organization_key()).collect();
    let stored_bytes: i64 = conn
        .client()
        .query(&lock, &[&customer, &numbers, &orgs])
        .await?
        .iter()
        .map(|row| row.get::<_, Option<i32>>(0).map_or(0, i64::from))
        .sum();
    if stored_bytes > MAX_BATCH_DOCUMENT_BYTES {
        return Err(StoreError::Database(format!(
            "the {} suppliers this batch changes (customer {customer}) hold {stored_bytes} bytes of stored \
             locations together, over the {MAX_BATCH_DOCUMENT_BYTES} the host reads for one batch; save \
             fewer of them at a time (call save-all more often)",
            changed.len()
        )));
    }
    let locked = conn
        .prepared(
            "SELECT s.supplier_number, s.organization_code, s.locations::text FROM supplier s
             JOIN unnest($2::text[], $3::text[]) AS k(number, org)
               ON s.supplier_number = k.number AND s.organization_code = k.org
             WHERE s.customer_number = $1",
        )
        .await?;
    let mut stored: std::collections::HashMap<(String, String), String> = conn
        .client()
        .query(&locked, &[&customer, &numbers, &orgs])
        .await?
        .iter()
        .map(|row| ((row.get(0), row.get(1)), row.get(2)))
        .collect();
    for (s, fingerprint) in changed {
        let key = (s.supplier_number.clone(), s.organization_key().to_owned());
        let Some(text) = stored.remove(&key) else {
            split.new.push((s, fingerprint, document(Vec::new(), s, customer, now, options)?));
            continue;
        };
        let doc = supplier_doc::parse(&text).map_err(|e| {
            StoreError::Database(format!(
                "the stored locations of supplier {} (customer {customer}) are not a document this host \
                 reads ({e}); write the supplier with a full load to replace them",
                s.supplier_number
            ))
        })?;
        split.changed.push((s, fingerprint, document(doc, s, customer, now, options)?));
    }
    Ok(split)
}

/// The stored documents one batch reads at most, together: they are held
/// in the store's shared threads while the batch is merged and written.
const MAX_BATCH_DOCUMENT_BYTES: i64 = 64 * 1024 * 1024;

/// `s` merged over its stored locations, refused past
/// [`supplier_doc::MAX_DOCUMENT_BYTES`] naming the supplier.
fn document<'a>(
    stored: Vec<supplier_doc::LocationDoc<'a>>,
    s: &'a SupplierRecord,
    customer: &str,
    now: &'a str,
    options: LoadOptions,
) -> Result<Json, StoreError> {
    let doc = supplier_doc::merged(stored, s, now, options);
    if doc.len() > supplier_doc::MAX_DOCUMENT_BYTES {
        return Err(StoreError::Database(format!(
            "supplier {} (customer {customer}) would hold {} bytes of locations, addresses and bank \
             accounts, over the {} this host stores for one supplier; send fewer or smaller locations \
             (a full load replaces what earlier runs stored)",
            s.supplier_number,
            doc.len(),
            supplier_doc::MAX_DOCUMENT_BYTES
        )));
    }
    Ok(Json(doc))
}

/// The statements of a batch, prepared once per connection (cached after that).
struct Statements {
    copy_suppliers: Statement,
    insert_suppliers: Statement,
    update_suppliers: Statement,
}

impl Statements {
    async fn prepare(conn: &mut PgConn) -> Result<Self, StoreError> {
        Ok(Self {
            copy_suppliers: conn.prepared(COPY_SUPPLIERS).await?,
            insert_suppliers: conn.prepared(INSERT_SUPPLIERS).await?,
            update_suppliers: conn.prepared(UPDATE_SUPPLIERS).await?,
        })
    }
}

/// What one attempt at a batch writes.
struct Batch<'a> {
    customer: &'a str,
    now: &'a String,
    split: &'a Split<'a>,
    /// The transaction's `BEGIN`, sent before the savepoint when not sent yet.
    opening: Option<&'static str>,
}

type PgParam<'a> = &'a (dyn ToSql + Sync);
type Written = Result<(), tokio_postgres::Error>;

impl Batch<'_> {
    /// The new suppliers copied and the changed ones updated, under a
    /// savepoint sent with the copy's start (one round trip). It is not
    /// released: the commit ends it, and a later batch of the transaction
    /// rolls back to its own savepoint of the same name.
    async fn copy_and_update(&self, client: &Client, st: &Statements) -> Written {
        let savepoint = match self.opening {
            Some(opening) => format!("{opening}; SAVEPOINT nuntiq_batch"),
            None => "SAVEPOINT nuntiq_batch".to_owned(),
        };
        let (savepoint, copied) = futures_util::join!(
            client.batch_execute(&savepoint),
            self.copy_suppliers(client, &st.copy_suppliers),
        );
        savepoint?;
        copied?;
        self.update_changed(client, st).await
    }

    /// Every supplier written by upserts: the way that holds whatever another
    /// writer stored meanwhile.
    async fn upsert(&self, client: &Client, st: &Statements) -> Written {
        let columns = SupplierColumns::of(&self.split.new);
        let (inserted, updated) = futures_util::join!(
            async {
                match columns.number.is_empty() {
                    true => Ok(0),
                    false => client.execute(&st.insert_suppliers, &columns.params(&self.customer, self.now)).await,
                }
            },
            self.update_changed(client, st),
        );
        inserted?;
        updated
    }

    async fn update_changed(&self, client: &Client, st: &Statements) -> Written {
        if self.split.changed.is_empty() {
            return Ok(());
        }
        let columns = SupplierColumns::of(&self.split.changed);
        client
            .execute(&st.update_suppliers, &columns.params(&self.customer, self.now))
            .await
            .map(drop)
    }

    /// The new suppliers as one binary `COPY`, encoded whole before it is
    /// sent: one write, where a writer flushing every 4 KiB woke the
    /// connection's task (and the server) ten thousand times a load.
    async fn copy_suppliers(&self, client: &Client, statement: &Statement) -> Written {
        if self.split.new.is_empty() {
            return Ok(());
        }
        // Each row's document, and room for its other fields.
        let bytes = self.split.new.iter().map(|(_, _, doc)| doc.0.len() + 256).sum();
        let mut rows = CopyRows::with_capacity(bytes);
        for (s, fingerprint, locations) in &self.split.new {
            rows.row(16);
            rows.text(Some(self.customer));
            rows.text(Some(&s.supplier_number));
            rows.text(Some(s.organization_key()));
            rows.text(Some(&s.supplier_name));
            rows.text(s.alternative_supplier_name.as_deref());
            rows.text(s.supplier_type.as_deref());
            rows.int8(s.is_active.map_or(1, i64::from));
            for custom in [
                &s.custom_field_1,
                &s.custom_field_2,
                &s.custom_field_3,
                &s.custom_field_4,
                &s.custom_field_5,
            ] {
                rows.text(custom.as_deref());
            }
            rows.bytes(fingerprint);
            rows.text(Some(self.now));
            rows.text(Some(self.now));
            rows.bytes(&locations.0);
        }
        let sink = client.copy_in::<_, bytes::Bytes>(statement).await?;
        let mut sink = std::pin::pin!(sink);
        sink.send(rows.finish()).await?;
        sink.finish().await.map(drop)
    }
}

/// PostgreSQL's binary `COPY` format: a header, then per row its field
/// count and each field's length (-1 for NULL) and bytes, then a trailer.
struct CopyRows(bytes::BytesMut);

impl CopyRows {
    fn with_capacity(bytes: usize) -> Self {
        let mut buf = bytes::BytesMut::with_capacity(bytes);
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0); // flags
        buf.put_i32(0); // header extension length
        Self(buf)
    }

    fn row(&mut self, fields: i16) {
        self.0.put_i16(fields);
    }

    fn bytes(&mut self, value: &[u8]) {
        self.0.put_i32(i32::try_from(value.len()).unwrap_or(i32::MAX));
        self.0.put_slice(value);
    }

    fn text(&mut self, value: Option<&str>) {
        match value {
            Some(text) => self.bytes(text.as_bytes()),
            None => self.0.put_i32(-1),
        }
    }

    fn int8(&mut self, value: i64) {
        self.0.put_i32(8);
        self.0.put_i64(value);
    }

    fn finish(mut self) -> bytes::Bytes {
        self.0.put_i16(-1);
        self.0.freeze()
    }
}


const COPY_SUPPLIERS: &str = "COPY supplier
         (customer_number, supplier_number, organization_code, supplier_name, alternative_supplier_name,
          supplier_type, is_active, custom_field_1, custom_field_2, custom_field_3, custom_field_4,
          custom_field_5, fingerprint, created_at, updated_at, locations)
     FROM STDIN (FORMAT binary)";

const INSERT_SUPPLIERS: &str = "INSERT INTO supplier
         (customer_number, supplier_number, organization_code, supplier_name, alternative_supplier_name,
          supplier_type, is_active, custom_field_1, custom_field_2, custom_field_3, custom_field_4,
          custom_field_5, fingerprint, created_at, updated_at, locations)
     SELECT $1, t.number, t.org, t.name, t.alt, t.type, COALESCE(t.active, 1), t.c1, t.c2, t.c3, t.c4, t.c5,
            t.fp, $14, $14, t.locations
     FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::text[],
                 $9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[], $15::json[])
          AS t(number, org, name, alt, type, active, c1, c2, c3, c4, c5, fp, locations)
     ON CONFLICT (customer_number, supplier_number, organization_code) DO UPDATE SET
         supplier_name = excluded.supplier_name, alternative_supplier_name = excluded.alternative_supplier_name,
         supplier_type = excluded.supplier_type, is_active = excluded.is_active,
         custom_field_1 = excluded.custom_field_1, custom_field_2 = excluded.custom_field_2,
         custom_field_3 = excluded.custom_field_3, custom_field_4 = excluded.custom_field_4,
         custom_field_5 = excluded.custom_field_5, fingerprint = excluded.fingerprint,
         updated_at = excluded.updated_at, locations = excluded.locations";

const UPDATE_SUPPLIERS: &str = "UPDATE supplier s SET supplier_name = t.name, alternative_supplier_name = t.alt,
         supplier_type = t.type, is_active = COALESCE(t.active, s.is_active), custom_field_1 = t.c1,
         custom_field_2 = t.c2, custom_field_3 = t.c3, custom_field_4 = t.c4, custom_field_5 = t.c5,
         fingerprint = t.fp, updated_at = $14, locations = t.locations
     FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::text[],
                 $9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[], $15::json[])
          AS t(number, org, name, alt, type, active, c1, c2, c3, c4, c5, fp, locations)
     WHERE s.customer_number = $1 AND s.supplier_number = t.number AND s.organization_code = t.org";

/// Suppliers as column arrays (one array per column, a row per index), their documents last.
#[derive(Default)]
struct SupplierColumns<'a> {
    number: Vec<&'a str>,
    org: Vec<&'a str>,
    name: Vec<&'a str>,
    alt: Vec<Option<&'a str>>,
    kind: Vec<Option<&'a str>>,
    active: Vec<Option<i64>>,
    custom: [Vec<Option<&'a str>>; 5],
    fingerprint: Vec<&'a [u8]>,
    locations: Vec<&'a Json>,
}

impl<'a> SupplierColumns<'a> {
    fn of(rows: &'a [(&'a SupplierRecord, [u8; 16], Json)]) -> Self {
        let mut c = Self::default();
        for (s, fingerprint, locations) in rows {
            c.number.push(&s.supplier_number);
            c.org.push(s.organization_key());
            c.name.push(&s.supplier_name);
            c.alt.push(s.alternative_supplier_name.as_deref());
            c.kind.push(s.supplier_type.as_deref());
            c.active.push(s.is_active.map(i64::from));
            for (column, value) in c.custom.iter_mut().zip([
                &s.custom_field_1,
                &s.custom_field_2,
                &s.custom_field_3,
                &s.custom_field_4,
                &s.custom_field_5,
            ]) {
                column.push(value.as_deref());
            }
            c.fingerprint.push(fingerprint);
            c.locations.push(locations);
        }
        c
    }

    fn params(&'a self, customer: &'a &'a str, now: &'a String) -> Vec<PgParam<'a>> {
        vec![
            customer,
            &self.number,
            &self.org,
            &self.name,
            &self.alt,
            &self.kind,
            &self.active,
            &self.custom[0],
            &self.custom[1],
            &self.custom[2],
            &self.custom[3],
            &self.custom[4],
            &self.fingerprint,
            now,
            &self.locations,
        ]
    }
}
