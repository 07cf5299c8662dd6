//! PostgreSQL's supplier upsert: a batch of distinct suppliers in a handful of
//! statements sent together, whatever its size.
//!
//! Measured on a first load of 100 000 suppliers (server statement log): an
//! `INSERT … SELECT FROM unnest(…) ON CONFLICT` costs about twice a plain
//! insert of the same rows — each column array is materialised apart, and a
//! speculative insertion probes the key index twice. So the suppliers a batch
//! adds (its fingerprint probe found no stored row) are written by binary
//! `COPY` straight into the tables, under a savepoint; the changed ones by
//! array `UPDATE`s; the unchanged ones not at all. A key taken meanwhile (a
//! concurrent writer, or a location listed twice) makes a `COPY` fail whole:
//! the batch goes back to its savepoint and is written again by upserts.

use super::StoreError;
use super::postgres::PgConn;
use super::records::SupplierRecord;
use super::schema::now_utc;
use super::suppliers::SaveCounts;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
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
    replace_addresses: bool,
) -> Result<SaveCounts, StoreError> {
    if suppliers.is_empty() {
        return Ok(SaveCounts::default());
    }
    let fingerprints: Vec<[u8; 16]> = suppliers.iter().map(SupplierRecord::fingerprint).collect();
    let statements = Statements::prepare(conn).await?;
    let now = now_utc();
    let mut guess = conn.inserting;
    let mut copy = true;
    let counts = loop {
        let split = if guess {
            Split::all_new(suppliers, &fingerprints)
        } else {
            probe(conn, customer, suppliers, &fingerprints).await?
        };
        let batch = Batch {
            customer,
            now: &now,
            split: &split,
            replace_addresses,
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

/// A batch's suppliers by what the store holds of them; the unchanged are in neither list.
struct Split<'a> {
    new: Vec<(&'a SupplierRecord, [u8; 16])>,
    changed: Vec<(&'a SupplierRecord, [u8; 16])>,
}

impl<'a> Split<'a> {
    fn all_new(suppliers: &'a [SupplierRecord], fingerprints: &[[u8; 16]]) -> Self {
        Self {
            new: suppliers.iter().zip(fingerprints.iter().copied()).collect(),
            changed: Vec::new(),
        }
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
/// costs this one statement and returns nothing.
async fn probe<'a>(
    conn: &mut PgConn,
    customer: &str,
    suppliers: &'a [SupplierRecord],
    fingerprints: &[[u8; 16]],
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
    for row in conn
        .client()
        .query(&differing, &[&customer, &numbers, &orgs, &prints])
        .await?
    {
        let i = usize::try_from(row.get::<_, i64>(0) - 1).unwrap_or(usize::MAX);
        let (Some(s), Some(fingerprint)) = (suppliers.get(i), fingerprints.get(i)) else {
            continue;
        };
        if row.get::<_, bool>(1) {
            split.changed.push((s, *fingerprint));
        } else {
            split.new.push((s, *fingerprint));
        }
    }
    Ok(split)
}

/// The statements of a batch, prepared once per connection (cached after that).
struct Statements {
    copy_suppliers: Statement,
    copy_locations: Statement,
    copy_addresses: Statement,
    insert_suppliers: Statement,
    update_suppliers: Statement,
    update_locations: Statement,
    insert_locations: Statement,
    delete_addresses: Statement,
    insert_addresses: Statement,
}

impl Statements {
    async fn prepare(conn: &mut PgConn) -> Result<Self, StoreError> {
        Ok(Self {
            copy_suppliers: conn.prepared(COPY_SUPPLIERS).await?,
            copy_locations: conn.prepared(COPY_LOCATIONS).await?,
            copy_addresses: conn.prepared(COPY_ADDRESSES).await?,
            insert_suppliers: conn.prepared(INSERT_SUPPLIERS).await?,
            update_suppliers: conn.prepared(UPDATE_SUPPLIERS).await?,
            update_locations: conn.prepared(UPDATE_LOCATIONS).await?,
            insert_locations: conn.prepared(INSERT_LOCATIONS).await?,
            delete_addresses: conn.prepared(DELETE_ADDRESSES).await?,
            insert_addresses: conn.prepared(INSERT_ADDRESSES).await?,
        })
    }
}

/// What one attempt at a batch writes.
struct Batch<'a> {
    customer: &'a str,
    now: &'a String,
    split: &'a Split<'a>,
    replace_addresses: bool,
}

type PgParam<'a> = &'a (dyn ToSql + Sync);
type Written = Result<(), tokio_postgres::Error>;

impl Batch<'_> {
    /// The new suppliers copied, the changed ones updated, under a savepoint.
    /// Each copy is answered before the next starts (a copy sent behind one
    /// that failed desynchronised the driver); the changed suppliers'
    /// statements and the release are sent together.
    async fn copy_and_update(&self, client: &Client, st: &Statements) -> Written {
        let new: Vec<&SupplierRecord> = self.split.new.iter().map(|(s, _)| *s).collect();
        let changed = Changed::of(self, &self.split.changed);
        client.batch_execute("SAVEPOINT nuntiq_batch").await?;
        self.copy_suppliers(client, &st.copy_suppliers).await?;
        self.copy_locations(client, &st.copy_locations, &new).await?;
        if self.replace_addresses {
            self.copy_addresses(client, &st.copy_addresses, &new).await?;
        }
        let (updates, release) = futures_util::join!(
            changed.write(client, st),
            client.batch_execute("RELEASE SAVEPOINT nuntiq_batch"),
        );
        updates?;
        release
    }

    /// Every supplier written by upserts: the way that holds whatever another
    /// writer stored meanwhile.
    async fn upsert(&self, client: &Client, st: &Statements) -> Written {
        let new_columns = SupplierColumns::of(&self.split.new);
        let new_params = new_columns.params(&self.customer, self.now);
        let written: Vec<&SupplierRecord> = self.split.new.iter().map(|(s, _)| *s).collect();
        let locations = LocationColumns::of(&written);
        let location_params = locations.params(&self.customer, self.now);
        let addresses = AddressColumns::of(&written);
        let address_params = addresses.params(&self.customer);
        let changed = Changed::of(self, &self.split.changed);
        let (suppliers, locations, addresses, updates) = futures_util::join!(
            async {
                match new_columns.number.is_empty() {
                    true => Ok(0),
                    false => client.execute(&st.insert_suppliers, &new_params).await,
                }
            },
            async {
                match locations.len() {
                    0 => Ok(0),
                    _ => client.execute(&st.insert_locations, &location_params).await,
                }
            },
            async {
                // Of a supplier stored meanwhile, the addresses are replaced.
                match (self.replace_addresses, addresses.number.is_empty()) {
                    (true, false) => {
                        let keys: Vec<PgParam<'_>> =
                            vec![&self.customer, &locations.number, &locations.org, &locations.code];
                        client.execute(&st.delete_addresses, &keys).await?;
                        client.execute(&st.insert_addresses, &address_params).await
                    }
                    _ => Ok(0),
                }
            },
            changed.write(client, st),
        );
        suppliers?;
        locations?;
        addresses?;
        updates
    }

    async fn copy_suppliers(&self, client: &Client, statement: &Statement) -> Written {
        if self.split.new.is_empty() {
            return Ok(());
        }
        let sink = client.copy_in(statement).await?;
        let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, SUPPLIER_TYPES));
        for (s, fingerprint) in &self.split.new {
            let active = s.is_active.map_or(1, i64::from);
            let fingerprint: &[u8] = fingerprint;
            writer
                .as_mut()
                .write(&[
                    &self.customer,
                    &s.supplier_number,
                    &s.organization_key(),
                    &s.supplier_name,
                    &s.alternative_supplier_name,
                    &s.supplier_type,
                    &active,
                    &s.custom_field_1,
                    &s.custom_field_2,
                    &s.custom_field_3,
                    &s.custom_field_4,
                    &s.custom_field_5,
                    &fingerprint,
                    self.now,
                    self.now,
                ])
                .await?;
        }
        writer.finish().await.map(drop)
    }

    async fn copy_locations(&self, client: &Client, statement: &Statement, new: &[&SupplierRecord]) -> Written {
        if !new.iter().any(|s| !s.locations.is_empty()) {
            return Ok(());
        }
        let sink = client.copy_in(statement).await?;
        let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, LOCATION_TYPES));
        for s in new {
            for l in &s.locations {
                let active = l.is_active.map_or(1, i64::from);
                writer
                    .as_mut()
                    .write(&[
                        &self.customer,
                        &s.supplier_number,
                        &s.organization_key(),
                        &l.location_code,
                        &l.location_name,
                        &l.organization_code,
                        &l.default_currency_code,
                        &l.default_payment_term_code,
                        &l.default_payment_method,
                        &l.taxpayer_id,
                        &l.duns_number,
                        &active,
                        &l.custom_field_1,
                        &l.custom_field_2,
                        &l.custom_field_3,
                        &l.custom_field_4,
                        &l.custom_field_5,
                        self.now,
                        self.now,
                    ])
                    .await?;
            }
        }
        writer.finish().await.map(drop)
    }

    async fn copy_addresses(&self, client: &Client, statement: &Statement, new: &[&SupplierRecord]) -> Written {
        if !new.iter().any(|s| s.locations.iter().any(|l| !l.addresses.is_empty())) {
            return Ok(());
        }
        let sink = client.copy_in(statement).await?;
        let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, ADDRESS_TYPES));
        for s in new {
            for l in &s.locations {
                for (position, a) in l.addresses.iter().enumerate() {
                    let position = position as i64;
                    writer
                        .as_mut()
                        .write(&[
                            &self.customer,
                            &s.supplier_number,
                            &s.organization_key(),
                            &l.location_code,
                            &position,
                            &a.street,
                            &a.city,
                            &a.state,
                            &a.postal_code,
                            &a.country_code,
                            &a.custom_field_1,
                            &a.custom_field_2,
                            &a.custom_field_3,
                        ])
                        .await?;
                }
            }
        }
        writer.finish().await.map(drop)
    }
}

/// The changed suppliers' column arrays: the supplier updated, its listed
/// locations updated or added, their addresses replaced.
struct Changed<'a> {
    customer: &'a str,
    now: &'a String,
    replace_addresses: bool,
    suppliers: SupplierColumns<'a>,
    locations: LocationColumns<'a>,
    addresses: AddressColumns<'a>,
}

impl<'a> Changed<'a> {
    fn of(batch: &Batch<'a>, changed: &'a [(&'a SupplierRecord, [u8; 16])]) -> Self {
        let records: Vec<&SupplierRecord> = changed.iter().map(|(s, _)| *s).collect();
        Self {
            customer: batch.customer,
            now: batch.now,
            replace_addresses: batch.replace_addresses,
            suppliers: SupplierColumns::of(changed),
            locations: LocationColumns::of(&records),
            addresses: AddressColumns::of(&records),
        }
    }

    /// Sent together; a batch without changed suppliers sends nothing.
    async fn write(&self, client: &Client, st: &Statements) -> Written {
        if self.suppliers.number.is_empty() {
            return Ok(());
        }
        let supplier_params = self.suppliers.params(&self.customer, self.now);
        let location_params = self.locations.params(&self.customer, self.now);
        let keys: Vec<PgParam<'_>> = vec![
            &self.customer,
            &self.locations.number,
            &self.locations.org,
            &self.locations.code,
        ];
        let address_params = self.addresses.params(&self.customer);
        let has_locations = self.locations.len() > 0;
        let replace = self.replace_addresses;
        let has_addresses = !self.addresses.number.is_empty();
        let (suppliers, updated, inserted, deleted, addresses) = futures_util::join!(
            client.execute(&st.update_suppliers, &supplier_params),
            // An absent is_active keeps the stored one; then the locations not stored yet.
            async {
                match has_locations {
                    true => client.execute(&st.update_locations, &location_params).await,
                    false => Ok(0),
                }
            },
            async {
                match has_locations {
                    true => client.execute(&st.insert_locations, &location_params).await,
                    false => Ok(0),
                }
            },
            async {
                match replace && has_locations {
                    true => client.execute(&st.delete_addresses, &keys).await,
                    false => Ok(0),
                }
            },
            async {
                match replace && has_addresses {
                    true => client.execute(&st.insert_addresses, &address_params).await,
                    false => Ok(0),
                }
            },
        );
        suppliers?;
        updated?;
        inserted?;
        deleted?;
        addresses.map(drop)
    }
}

const SUPPLIER_TYPES: &[Type] = &[
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::BYTEA,
    Type::TEXT,
    Type::TEXT,
];

const COPY_SUPPLIERS: &str = "COPY supplier
         (customer_number, supplier_number, organization_code, supplier_name, alternative_supplier_name,
          supplier_type, is_active, custom_field_1, custom_field_2, custom_field_3, custom_field_4,
          custom_field_5, fingerprint, created_at, updated_at)
     FROM STDIN (FORMAT binary)";

const LOCATION_TYPES: &[Type] = &[
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
];

const COPY_LOCATIONS: &str = "COPY supplier_location
         (customer_number, supplier_number, supplier_organization_code, location_code, location_name,
          organization_code, default_currency_code, default_payment_term_code, default_payment_method,
          taxpayer_id, duns_number, is_active, custom_field_1, custom_field_2, custom_field_3,
          custom_field_4, custom_field_5, created_at, updated_at)
     FROM STDIN (FORMAT binary)";

const ADDRESS_TYPES: &[Type] = &[
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
];

const COPY_ADDRESSES: &str = "COPY supplier_address
         (customer_number, supplier_number, supplier_organization_code, location_code, position,
          street, city, state, postal_code, country_code, custom_field_1, custom_field_2, custom_field_3)
     FROM STDIN (FORMAT binary)";

const INSERT_SUPPLIERS: &str = "INSERT INTO supplier
         (customer_number, supplier_number, organization_code, supplier_name, alternative_supplier_name,
          supplier_type, is_active, custom_field_1, custom_field_2, custom_field_3, custom_field_4,
          custom_field_5, fingerprint, created_at, updated_at)
     SELECT $1, t.number, t.org, t.name, t.alt, t.type, COALESCE(t.active, 1), t.c1, t.c2, t.c3, t.c4, t.c5,
            t.fp, $14, $14
     FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::text[],
                 $9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[])
          AS t(number, org, name, alt, type, active, c1, c2, c3, c4, c5, fp)
     ON CONFLICT (customer_number, supplier_number, organization_code) DO UPDATE SET
         supplier_name = excluded.supplier_name, alternative_supplier_name = excluded.alternative_supplier_name,
         supplier_type = excluded.supplier_type, is_active = excluded.is_active,
         custom_field_1 = excluded.custom_field_1, custom_field_2 = excluded.custom_field_2,
         custom_field_3 = excluded.custom_field_3, custom_field_4 = excluded.custom_field_4,
         custom_field_5 = excluded.custom_field_5, fingerprint = excluded.fingerprint,
         updated_at = excluded.updated_at";

const UPDATE_SUPPLIERS: &str = "UPDATE supplier s SET supplier_name = t.name, alternative_supplier_name = t.alt,
         supplier_type = t.type, is_active = COALESCE(t.active, s.is_active), custom_field_1 = t.c1,
         custom_field_2 = t.c2, custom_field_3 = t.c3, custom_field_4 = t.c4, custom_field_5 = t.c5,
         fingerprint = t.fp, updated_at = $14
     FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::text[],
                 $9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[])
          AS t(number, org, name, alt, type, active, c1, c2, c3, c4, c5, fp)
     WHERE s.customer_number = $1 AND s.supplier_number = t.number AND s.organization_code = t.org";

const UPDATE_LOCATIONS: &str = "UPDATE supplier_location l SET location_name = t.name, organization_code = t.org_code,
         default_currency_code = t.currency, default_payment_term_code = t.term,
         default_payment_method = t.method, taxpayer_id = t.taxpayer, duns_number = t.duns,
         is_active = COALESCE(t.active, l.is_active), custom_field_1 = t.c1, custom_field_2 = t.c2,
         custom_field_3 = t.c3, custom_field_4 = t.c4, custom_field_5 = t.c5, updated_at = $18
     FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                 $8::text[], $9::text[], $10::text[], $11::text[], $12::int8[], $13::text[],
                 $14::text[], $15::text[], $16::text[], $17::text[])
          AS t(number, org, code, name, org_code, currency, term, method, taxpayer, duns, active,
               c1, c2, c3, c4, c5)
     WHERE l.customer_number = $1 AND l.supplier_number = t.number
       AND l.supplier_organization_code = t.org AND l.location_code = t.code";

const INSERT_LOCATIONS: &str = "INSERT INTO supplier_location
         (customer_number, supplier_number, supplier_organization_code, location_code, location_name,
          organization_code, default_currency_code, default_payment_term_code, default_payment_method,
          taxpayer_id, duns_number, is_active, custom_field_1, custom_field_2, custom_field_3,
          custom_field_4, custom_field_5, created_at, updated_at)
     SELECT $1, t.number, t.org, t.code, t.name, t.org_code, t.currency, t.term, t.method, t.taxpayer,
            t.duns, COALESCE(t.active, 1), t.c1, t.c2, t.c3, t.c4, t.c5, $18, $18
     FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                 $8::text[], $9::text[], $10::text[], $11::text[], $12::int8[], $13::text[],
                 $14::text[], $15::text[], $16::text[], $17::text[])
          AS t(number, org, code, name, org_code, currency, term, method, taxpayer, duns, active,
               c1, c2, c3, c4, c5)
     ON CONFLICT (customer_number, supplier_number, supplier_organization_code, location_code) DO NOTHING";

const DELETE_ADDRESSES: &str = "DELETE FROM supplier_address a
     USING unnest($2::text[], $3::text[], $4::text[]) AS t(number, org, code)
     WHERE a.customer_number = $1 AND a.supplier_number = t.number
       AND a.supplier_organization_code = t.org AND a.location_code = t.code";

const INSERT_ADDRESSES: &str = "INSERT INTO supplier_address
         (customer_number, supplier_number, supplier_organization_code, location_code, position,
          street, city, state, postal_code, country_code, custom_field_1, custom_field_2, custom_field_3)
     SELECT $1, t.* FROM unnest($2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[],
                                $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[])
          AS t";

/// Suppliers as column arrays (one array per column, a row per index).
#[derive(Default)]
struct SupplierColumns<'a> {
    number: Vec<&'a str>,
    org: Vec<&'a str>,
    name: Vec<&'a str>,
    alt: Vec<Option<&'a str>>,
    kind: Vec<Option<&'a str>>,
    active: Vec<Option<i64>>,
    custom: [Vec<Option<&'a str>>; 5],
    fingerprint: Vec<Vec<u8>>,
}

impl<'a> SupplierColumns<'a> {
    fn of(rows: &[(&'a SupplierRecord, [u8; 16])]) -> Self {
        let mut c = Self::default();
        for (s, fingerprint) in rows {
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
            c.fingerprint.push(fingerprint.to_vec());
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
        ]
    }
}

/// The locations of some suppliers as column arrays.
#[derive(Default)]
struct LocationColumns<'a> {
    number: Vec<&'a str>,
    org: Vec<&'a str>,
    code: Vec<&'a str>,
    text: [Vec<Option<&'a str>>; 7],
    active: Vec<Option<i64>>,
    custom: [Vec<Option<&'a str>>; 5],
}

impl<'a> LocationColumns<'a> {
    fn of(suppliers: &[&'a SupplierRecord]) -> Self {
        let mut c = Self::default();
        for s in suppliers {
            for l in &s.locations {
                c.number.push(&s.supplier_number);
                c.org.push(s.organization_key());
                c.code.push(&l.location_code);
                for (column, value) in c.text.iter_mut().zip([
                    &l.location_name,
                    &l.organization_code,
                    &l.default_currency_code,
                    &l.default_payment_term_code,
                    &l.default_payment_method,
                    &l.taxpayer_id,
                    &l.duns_number,
                ]) {
                    column.push(value.as_deref());
                }
                c.active.push(l.is_active.map(i64::from));
                for (column, value) in c.custom.iter_mut().zip([
                    &l.custom_field_1,
                    &l.custom_field_2,
                    &l.custom_field_3,
                    &l.custom_field_4,
                    &l.custom_field_5,
                ]) {
                    column.push(value.as_deref());
                }
            }
        }
        c
    }

    fn len(&self) -> usize {
        self.number.len()
    }

    fn params(&'a self, customer: &'a &'a str, now: &'a String) -> Vec<PgParam<'a>> {
        let mut p: Vec<PgParam<'a>> = vec![customer, &self.number, &self.org, &self.code];
        p.extend(self.text.iter().map(|c| c as PgParam<'a>));
        p.push(&self.active);
        p.extend(self.custom.iter().map(|c| c as PgParam<'a>));
        p.push(now);
        p
    }
}

/// The addresses of some suppliers' locations as column arrays, with their positions.
#[derive(Default)]
struct AddressColumns<'a> {
    number: Vec<&'a str>,
    org: Vec<&'a str>,
    code: Vec<&'a str>,
    position: Vec<i64>,
    fields: [Vec<Option<&'a str>>; 8],
}

impl<'a> AddressColumns<'a> {
    fn of(suppliers: &[&'a SupplierRecord]) -> Self {
        let mut c = Self::default();
        for s in suppliers {
            for l in &s.locations {
                for (position, a) in l.addresses.iter().enumerate() {
                    c.number.push(&s.supplier_number);
                    c.org.push(s.organization_key());
                    c.code.push(&l.location_code);
                    c.position.push(position as i64);
                    for (column, value) in c.fields.iter_mut().zip([
                        &a.street,
                        &a.city,
                        &a.state,
                        &a.postal_code,
                        &a.country_code,
                        &a.custom_field_1,
                        &a.custom_field_2,
                        &a.custom_field_3,
                    ]) {
                        column.push(value.as_deref());
                    }
                }
            }
        }
        c
    }

    fn params(&'a self, customer: &'a &'a str) -> Vec<PgParam<'a>> {
        let mut p: Vec<PgParam<'a>> = vec![customer, &self.number, &self.org, &self.code, &self.position];
        p.extend(self.fields.iter().map(|c| c as PgParam<'a>));
        p
    }
}
