//! `supplier-load`: validates and queues suppliers, and upserts them on `save-all`.
//! Whatever is still queued when a delta run completes is written in the
//! cursor's transaction (see `caps::delta`).
//!
//! The queue is bounded in suppliers and in bytes of host memory: what one
//! call may hand over is already bounded by the store's hostcall fuel, and the
//! byte budget stops a queue from growing across calls.

use super::RunCtx;
use crate::bindings::supplier_load::{self, LoadError, Supplier};
use crate::budget::{Charge, Resource, RunBudget};
use crate::limits::LimitHit;
use crate::meter::Section;
use crate::store::records::{self, RecordLimits};
use crate::store::backend::LoadOptions;
use crate::store::{AddressRecord, BankAccountRecord, Batch, LocationRecord, Store, SupplierRecord};
use std::sync::Arc;
use std::time::Instant;

/// Host limits on what a connector may hand over.
#[derive(Debug, Clone)]
pub struct SupplierConfig {
    /// Suppliers queued and not yet saved; past it `queue` fails with `queue-full`.
    pub max_queued: usize,
    /// Host memory the queued suppliers may take, likewise.
    pub max_queued_bytes: usize,
    pub records: RecordLimits,
}

impl Default for SupplierConfig {
    fn default() -> Self {
        Self {
            max_queued: 10_000,
            max_queued_bytes: 32 << 20,
            records: RecordLimits::default(),
        }
    }
}

/// Suppliers queued by the connector and not yet written, charged to the
/// run's host memory until the store has written them.
pub struct SupplierQueue {
    pending: Vec<SupplierRecord>,
    bytes: usize,
    charge: Charge,
    /// The run's load options (`set-options`).
    options: LoadOptions,
    /// Whether a batch of this run went to the store: only the first carries
    /// `full-load`, or each batch would delete the one before.
    handed_over: bool,
}

impl SupplierQueue {
    pub fn new(budget: &Arc<RunBudget>) -> Self {
        Self {
            pending: Vec::new(),
            bytes: 0,
            charge: budget.empty(),
            options: LoadOptions::default(),
            handed_over: false,
        }
    }

    /// Everything queued, with its charge.
    pub fn take(&mut self) -> Batch {
        self.bytes = 0;
        let fresh = self.charge.empty_like();
        let options = LoadOptions {
            full_load: self.options.full_load && !self.handed_over,
            ..self.options
        };
        self.handed_over |= !self.pending.is_empty();
        Batch {
            records: std::mem::take(&mut self.pending),
            held: std::mem::replace(&mut self.charge, fresh),
            options,
        }
    }

    /// Puts back a batch a failed complete did not write, ahead of anything
    /// queued since, with its charge.
    pub fn restore(&mut self, batch: Batch) {
        let Batch {
            mut records,
            held,
            options,
        } = batch;
        // Not written, so the full load still has to start.
        if options.full_load {
            self.handed_over = false;
        }
        self.bytes += records.iter().map(SupplierRecord::host_bytes).sum::<usize>();
        self.charge.absorb(held);
        records.append(&mut self.pending);
        self.pending = records;
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

pub struct SupplierCap {
    customer_number: String,
    store: Store,
    config: SupplierConfig,
    pub queue: SupplierQueue,
    pub(super) ctx: RunCtx,
}

impl SupplierCap {
    pub fn new(customer_number: String, store: Store, config: SupplierConfig, ctx: RunCtx) -> Self {
        Self {
            customer_number,
            store,
            config,
            queue: SupplierQueue::new(&ctx.budget),
            ctx,
        }
    }

    fn queue_full(&mut self, message: String) -> Result<u32, LoadError> {
        self.ctx.refusals.refused(LimitHit {
            kind: "batch_too_large",
            message: message.clone(),
        });
        Err(LoadError::QueueFull(message))
    }
}

/// `From` impls for one contract version's supplier records (their custom
/// fields are spelled differently per version).
macro_rules! records_from_wit {
    (@banks none, $l:ident) => {
        // Contracts before 0.3.0 have none.
        Vec::new()
    };
    (@banks listed, $l:ident) => {
        $l.bank_accounts.into_iter().map(Into::into).collect()
    };
    ($wit:ident, $banks:ident, $c1:ident, $c2:ident, $c3:ident, $c4:ident, $c5:ident) => {
        impl From<$wit::Supplier> for SupplierRecord {
            fn from(s: $wit::Supplier) -> Self {
                Self {
                    supplier_number: s.supplier_number,
                    supplier_name: s.supplier_name,
                    alternative_supplier_name: s.alternative_supplier_name,
                    supplier_type: s.supplier_type,
                    organization_code: s.organization_code,
                    is_active: s.is_active,
                    custom_field_1: s.$c1,
                    custom_field_2: s.$c2,
                    custom_field_3: s.$c3,
                    custom_field_4: s.$c4,
                    custom_field_5: s.$c5,
                    locations: s.locations.into_iter().map(Into::into).collect(),
                }
            }
        }

        impl From<$wit::SupplierLocation> for LocationRecord {
            fn from(l: $wit::SupplierLocation) -> Self {
                Self {
                    location_code: l.location_code,
                    location_name: l.location_name,
                    organization_code: l.organization_code,
                    default_currency_code: l.default_currency_code,
                    default_payment_term_code: l.default_payment_term_code,
                    default_payment_method: l.default_payment_method,
                    taxpayer_id: l.taxpayer_id,
                    duns_number: l.duns_number,
                    is_active: l.is_active,
                    custom_field_1: l.$c1,
                    custom_field_2: l.$c2,
                    custom_field_3: l.$c3,
                    custom_field_4: l.$c4,
                    custom_field_5: l.$c5,
                    addresses: l.addresses.into_iter().map(Into::into).collect(),
                    bank_accounts: records_from_wit!(@banks $banks, l),
                }
            }
        }

        impl From<$wit::SupplierAddress> for AddressRecord {
            fn from(a: $wit::SupplierAddress) -> Self {
                Self {
                    street: a.street,
                    city: a.city,
                    state: a.state,
                    postal_code: a.postal_code,
                    country_code: a.country_code,
                    custom_field_1: a.$c1,
                    custom_field_2: a.$c2,
                    custom_field_3: a.$c3,
                }
            }
        }
    };
}

use crate::bindings::v0_1::supplier_load as wit_v0_1;
use crate::bindings::v0_2::supplier_load as wit_v0_2;
use crate::bindings::v0_3::supplier_load as wit_v0_3;

records_from_wit!(
    wit_v0_3,
    listed,
    custom_field1,
    custom_field2,
    custom_field3,
    custom_field4,
    custom_field5
);
records_from_wit!(
    wit_v0_2,
    none,
    custom_field1,
    custom_field2,
    custom_field3,
    custom_field4,
    custom_field5
);
records_from_wit!(
    wit_v0_1,
    none,
    custom_field_1,
    custom_field_2,
    custom_field_3,
    custom_field_4,
    custom_field_5
);

impl From<wit_v0_3::SupplierBankAccount> for BankAccountRecord {
    fn from(b: wit_v0_3::SupplierBankAccount) -> Self {
        Self {
            bank_name: b.bank_name,
            bank_branch: b.bank_branch,
            bank_account_number: b.bank_account_number,
            bank_routing_number: b.bank_routing_number,
            swift_code: b.swift_code,
            account_currency: b.account_currency,
            is_primary: b.is_primary,
            custom_field_1: b.custom_field1,
            custom_field_2: b.custom_field2,
            custom_field_3: b.custom_field3,
        }
    }
}

impl SupplierCap {
    /// Queues a batch already converted to records (every contract version's
    /// `queue` ends here).
    pub fn queue_records(&mut self, batch: Vec<SupplierRecord>) -> Result<u32, LoadError> {
        if self.queue.len() + batch.len() > self.config.max_queued {
            let message = format!(
                "{} suppliers are queued and {} more would pass the limit of {} (--max-queued-suppliers); \
                 call save-all more often (the platform flushes every 500)",
                self.queue.len(),
                batch.len(),
                self.config.max_queued
            );
            return self.queue_full(message);
        }
        let bytes: usize = batch.iter().map(SupplierRecord::host_bytes).sum();
        if self.queue.bytes + bytes > self.config.max_queued_bytes {
            let message = format!(
                "the queued suppliers take {} bytes of host memory and this batch {} more, past the \
                 limit of {} (--max-queued-bytes); call save-all more often",
                self.queue.bytes, bytes, self.config.max_queued_bytes
            );
            return self.queue_full(message);
        }
        self.ctx.refusals.answered();
        if let Err(problem) = records::validate(&batch, &self.config.records) {
            return Err(LoadError::InvalidRecord(format!(
                "{problem}; nothing of this batch was queued"
            )));
        }
        if let Err(exceeded) = self.queue.charge.grow(bytes as u64, "queued suppliers") {
            return Err(LoadError::QueueFull(exceeded.to_string()));
        }
        self.queue.pending.extend(batch);
        self.queue.bytes += bytes;
        Ok(self.queue.len() as u32)
    }
}

impl SupplierCap {
    /// `set-options`: the run's load options, for every later write.
    pub fn set_options(&mut self, options: LoadOptions) -> Result<(), LoadError> {
        self.ctx.refusals.answered();
        let started = self.queue.handed_over || !self.queue.is_empty();
        if started && options.full_load != self.queue.options.full_load {
            return Err(LoadError::InvalidRecord(
                "set-options: full-load can only be chosen before the run's first queue call; call \
                 set-options first"
                    .into(),
            ));
        }
        self.queue.options = options;
        Ok(())
    }
}

impl supplier_load::Host for SupplierCap {
    async fn set_options(&mut self, options: supplier_load::LoadOptions) -> wasmtime::Result<Result<(), LoadError>> {
        Ok(self.set_options(LoadOptions {
            full_load: options.full_load,
            address_insert_only: options.address_insert_only,
            bank_insert_only: options.bank_insert_only,
        }))
    }

    async fn queue(&mut self, suppliers: Vec<Supplier>) -> wasmtime::Result<Result<u32, LoadError>> {
        let started = Instant::now();
        let queued = self.queue_records(suppliers.into_iter().map(Into::into).collect());
        self.ctx.counters.add(Section::Queue, started);
        Ok(queued)
    }

    async fn save_all(&mut self) -> wasmtime::Result<Result<u32, LoadError>> {
        self.ctx.refusals.answered();
        if self.queue.is_empty() {
            return Ok(Ok(0));
        }
        let batch = self.queue.take();
        if let Err(exceeded) = spend_stored(&self.ctx.budget, &batch.records) {
            return Ok(Err(LoadError::Store(exceeded.to_string())));
        }
        let customer = self.customer_number.clone();
        let started = Instant::now();
        let saved = self.store.save_suppliers(customer, batch, self.ctx.stop.clone()).await;
        self.ctx.counters.add(Section::StoreWait, started);
        match saved {
            Ok(n) => Ok(Ok(n as u32)),
            Err(e) => Ok(Err(LoadError::Store(format!("failed to save suppliers: {e}")))),
        }
    }
}

/// Counts a batch handed to the store against the run's stored rows and bytes.
pub(super) fn spend_stored(budget: &RunBudget, records: &[SupplierRecord]) -> Result<(), crate::budget::Exceeded> {
    let bytes: usize = records.iter().map(SupplierRecord::host_bytes).sum();
    budget.spend(
        Resource::StoredRows,
        records.len() as u64,
        "suppliers handed to the store",
    )?;
    budget.spend(Resource::StoredBytes, bytes as u64, "suppliers handed to the store")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::tests::supplier;

    #[test]
    fn a_restored_batch_goes_first_and_keeps_its_bytes_and_charge() {
        let budget = RunBudget::unlimited();
        let mut q = SupplierQueue::new(&budget);
        q.pending.push(supplier("LATER", "Later", None));
        let first = vec![supplier("FIRST", "First", Some("Delft"))];
        let bytes = first[0].host_bytes() as u64;
        let charge = budget.hold(Resource::HostMemory, bytes, "test").unwrap();
        q.restore(Batch {
            records: first,
            held: charge,
            options: LoadOptions::default(),
        });
        assert!(q.bytes > 0);
        assert_eq!(
            budget.used(Resource::HostMemory),
            bytes,
            "the charge came back with the batch"
        );
        let taken = q.take();
        let numbers: Vec<&str> = taken.records.iter().map(|s| s.supplier_number.as_str()).collect();
        assert_eq!(numbers, ["FIRST", "LATER"]);
        assert_eq!(q.bytes, 0);
        drop(taken);
        assert_eq!(
            budget.used(Resource::HostMemory),
            0,
            "written or dropped, the batch gives its charge back"
        );
    }

    #[test]
    fn only_the_first_batch_of_a_full_load_carries_it_until_it_is_written() {
        let budget = RunBudget::unlimited();
        let mut q = SupplierQueue::new(&budget);
        q.options = LoadOptions {
            full_load: true,
            bank_insert_only: true,
            ..LoadOptions::default()
        };
        assert!(q.take().options.full_load, "an empty take does not start the load");
        q.pending.push(supplier("A", "A", None));
        let first = q.take();
        assert!(first.options.full_load && first.options.bank_insert_only);
        q.pending.push(supplier("B", "B", None));
        let second = q.take();
        assert!(!second.options.full_load && second.options.bank_insert_only);
        // The first batch came back unwritten: the next one starts the load.
        q.restore(first);
        assert!(q.take().options.full_load);
    }
}
