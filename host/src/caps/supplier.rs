//! `supplier-load`: validates and queues suppliers, and upserts them on `save-all`.
//! Whatever is still queued when a delta run completes is written in the
//! cursor's transaction (see `caps::delta`).
//!
//! The queue is bounded in suppliers and in bytes of host memory: what one
//! call may hand over is already bounded by the store's hostcall fuel, and the
//! byte budget stops a queue from growing across calls.

use crate::bindings::supplier_load::{self, LoadError, Supplier};
use crate::limits::{LimitHit, Refusals, Stop};
use crate::meter::{Counters, Section};
use crate::store::records::{self, RecordLimits};
use crate::store::{AddressRecord, LocationRecord, Store, SupplierRecord};
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

/// Suppliers queued by the connector and not yet written.
#[derive(Default)]
pub struct SupplierQueue {
    pending: Vec<SupplierRecord>,
    bytes: usize,
}

impl SupplierQueue {
    pub fn take(&mut self) -> Vec<SupplierRecord> {
        self.bytes = 0;
        std::mem::take(&mut self.pending)
    }

    /// Puts back a batch a failed complete did not write, ahead of anything
    /// queued since.
    pub fn restore(&mut self, mut batch: Vec<SupplierRecord>) {
        self.bytes += batch.iter().map(SupplierRecord::host_bytes).sum::<usize>();
        batch.append(&mut self.pending);
        self.pending = batch;
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
    stop: Arc<Stop>,
    pub queue: SupplierQueue,
    refusals: Refusals,
    pub(super) counters: Arc<Counters>,
}

impl SupplierCap {
    pub fn new(
        customer_number: String,
        store: Store,
        config: SupplierConfig,
        stop: Arc<Stop>,
        refusals: Refusals,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            customer_number,
            store,
            config,
            stop,
            queue: SupplierQueue::default(),
            refusals,
            counters,
        }
    }

    fn queue_full(&mut self, message: String) -> Result<u32, LoadError> {
        self.refusals.refused(LimitHit {
            kind: "batch_too_large",
            message: message.clone(),
        });
        Err(LoadError::QueueFull(message))
    }
}

/// `From` impls for one contract version's supplier records (their custom
/// fields are spelled differently per version).
macro_rules! records_from_wit {
    ($wit:ident, $c1:ident, $c2:ident, $c3:ident, $c4:ident, $c5:ident) => {
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

records_from_wit!(
    wit_v0_2,
    custom_field1,
    custom_field2,
    custom_field3,
    custom_field4,
    custom_field5
);
records_from_wit!(
    wit_v0_1,
    custom_field_1,
    custom_field_2,
    custom_field_3,
    custom_field_4,
    custom_field_5
);

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
        self.refusals.answered();
        if let Err(problem) = records::validate(&batch, &self.config.records) {
            return Err(LoadError::InvalidRecord(format!(
                "{problem}; nothing of this batch was queued"
            )));
        }
        self.queue.pending.extend(batch);
        self.queue.bytes += bytes;
        Ok(self.queue.len() as u32)
    }
}

impl supplier_load::Host for SupplierCap {
    async fn queue(&mut self, suppliers: Vec<Supplier>) -> wasmtime::Result<Result<u32, LoadError>> {
        let started = Instant::now();
        let queued = self.queue_records(suppliers.into_iter().map(Into::into).collect());
        self.counters.add(Section::Queue, started);
        Ok(queued)
    }

    async fn save_all(&mut self) -> wasmtime::Result<Result<u32, LoadError>> {
        self.refusals.answered();
        let batch = self.queue.take();
        if batch.is_empty() {
            return Ok(Ok(0));
        }
        let customer = self.customer_number.clone();
        let started = Instant::now();
        let saved = self.store.save_suppliers(customer, batch, self.stop.clone()).await;
        self.counters.add(Section::StoreWait, started);
        match saved {
            Ok(n) => Ok(Ok(n as u32)),
            Err(e) => Ok(Err(LoadError::Store(format!("failed to save suppliers: {e}")))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::tests::supplier;

    #[test]
    fn a_restored_batch_goes_first_and_keeps_its_bytes() {
        let mut q = SupplierQueue::default();
        q.pending.push(supplier("LATER", "Later", None));
        q.restore(vec![supplier("FIRST", "First", Some("Delft"))]);
        assert!(q.bytes > 0);
        let taken = q.take();
        let numbers: Vec<&str> = taken.iter().map(|s| s.supplier_number.as_str()).collect();
        assert_eq!(numbers, ["FIRST", "LATER"]);
        assert_eq!(q.bytes, 0);
    }
}
