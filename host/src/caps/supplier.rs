//! `supplier-load`: validates and queues suppliers, and upserts them on `save-all`.
//! Whatever is still queued when a delta run completes is written in the
//! cursor's transaction (see `caps::delta`).

use crate::bindings::supplier_load::{self, LoadError, Supplier};
use crate::limits::LimitHit;
use crate::store::Store;

/// Host limits on what a connector may hand over.
#[derive(Debug, Clone)]
pub struct SupplierConfig {
    /// Suppliers queued and not yet saved; past it `queue` fails with `queue-full`.
    pub max_queued: usize,
    pub max_locations_per_supplier: usize,
    pub max_addresses_per_location: usize,
    /// Longest value of any one field, in bytes.
    pub max_field_bytes: usize,
}

impl Default for SupplierConfig {
    fn default() -> Self {
        Self {
            max_queued: 10_000,
            max_locations_per_supplier: 1_000,
            max_addresses_per_location: 100,
            max_field_bytes: 4 * 1024,
        }
    }
}

/// Suppliers queued by the connector and not yet written.
#[derive(Default)]
pub struct SupplierQueue {
    pending: Vec<Supplier>,
}

impl SupplierQueue {
    pub fn take(&mut self) -> Vec<Supplier> {
        std::mem::take(&mut self.pending)
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
    /// Set when the queue limit refused a batch.
    pub limit_hit: Option<LimitHit>,
}

impl SupplierCap {
    pub fn new(customer_number: String, store: Store, config: SupplierConfig) -> Self {
        Self {
            customer_number,
            store,
            config,
            queue: SupplierQueue::default(),
            limit_hit: None,
        }
    }
}

/// Checks one batch; the error names the record (its position in the batch and
/// its supplier_number) and the field.
pub fn validate(batch: &[Supplier], config: &SupplierConfig) -> Result<(), String> {
    for (i, s) in batch.iter().enumerate() {
        let record = if s.supplier_number.trim().is_empty() {
            format!("supplier #{} of the batch", i + 1)
        } else {
            format!("supplier #{} (supplier_number {:?})", i + 1, s.supplier_number)
        };
        let fail = |field: &str, problem: &str| Err(format!("{record}: {field} {problem}"));
        if s.supplier_number.trim().is_empty() {
            return fail("supplier_number", "is required");
        }
        if s.supplier_name.trim().is_empty() {
            return fail("supplier_name", "is required");
        }
        if s.locations.len() > config.max_locations_per_supplier {
            return fail(
                "locations",
                &format!(
                    "has {} entries; at most {} are allowed",
                    s.locations.len(),
                    config.max_locations_per_supplier
                ),
            );
        }
        let supplier_fields = [
            ("supplier_number", Some(&s.supplier_number)),
            ("supplier_name", Some(&s.supplier_name)),
            ("alternative_supplier_name", s.alternative_supplier_name.as_ref()),
            ("supplier_type", s.supplier_type.as_ref()),
            ("organization_code", s.organization_code.as_ref()),
            ("custom_field_1", s.custom_field_1.as_ref()),
            ("custom_field_2", s.custom_field_2.as_ref()),
            ("custom_field_3", s.custom_field_3.as_ref()),
            ("custom_field_4", s.custom_field_4.as_ref()),
            ("custom_field_5", s.custom_field_5.as_ref()),
        ];
        check_sizes(&supplier_fields, config).or_else(|(f, p)| fail(f, &p))?;
        let mut codes = std::collections::HashSet::new();
        for (j, l) in s.locations.iter().enumerate() {
            let field = |name: &str| format!("locations[{j}].{name}");
            if l.location_code.trim().is_empty() {
                return fail(&field("location_code"), "is required");
            }
            if !codes.insert(l.location_code.as_str()) {
                return fail(&field("location_code"), &format!("{:?} appears twice", l.location_code));
            }
            if l.addresses.len() > config.max_addresses_per_location {
                return fail(
                    &field("addresses"),
                    &format!(
                        "has {} entries; at most {} are allowed",
                        l.addresses.len(),
                        config.max_addresses_per_location
                    ),
                );
            }
            let location_fields = [
                ("location_code", Some(&l.location_code)),
                ("location_name", l.location_name.as_ref()),
                ("organization_code", l.organization_code.as_ref()),
                ("default_currency_code", l.default_currency_code.as_ref()),
                ("default_payment_term_code", l.default_payment_term_code.as_ref()),
                ("default_payment_method", l.default_payment_method.as_ref()),
                ("taxpayer_id", l.taxpayer_id.as_ref()),
                ("duns_number", l.duns_number.as_ref()),
                ("custom_field_1", l.custom_field_1.as_ref()),
                ("custom_field_2", l.custom_field_2.as_ref()),
                ("custom_field_3", l.custom_field_3.as_ref()),
                ("custom_field_4", l.custom_field_4.as_ref()),
                ("custom_field_5", l.custom_field_5.as_ref()),
            ];
            check_sizes(&location_fields, config).or_else(|(f, p)| fail(&field(f), &p))?;
            for (k, a) in l.addresses.iter().enumerate() {
                let address_fields = [
                    ("street", a.street.as_ref()),
                    ("city", a.city.as_ref()),
                    ("state", a.state.as_ref()),
                    ("postal_code", a.postal_code.as_ref()),
                    ("country_code", a.country_code.as_ref()),
                    ("custom_field_1", a.custom_field_1.as_ref()),
                    ("custom_field_2", a.custom_field_2.as_ref()),
                    ("custom_field_3", a.custom_field_3.as_ref()),
                ];
                check_sizes(&address_fields, config)
                    .or_else(|(f, p)| fail(&format!("locations[{j}].addresses[{k}].{f}"), &p))?;
            }
        }
    }
    Ok(())
}

fn check_sizes<'a>(fields: &[(&'a str, Option<&String>)], config: &SupplierConfig) -> Result<(), (&'a str, String)> {
    for (name, value) in fields {
        if let Some(v) = value
            && v.len() > config.max_field_bytes
        {
            return Err((
                name,
                format!("is {} bytes; at most {} are allowed", v.len(), config.max_field_bytes),
            ));
        }
    }
    Ok(())
}

impl supplier_load::Host for SupplierCap {
    async fn queue(&mut self, suppliers: Vec<Supplier>) -> wasmtime::Result<Result<u32, LoadError>> {
        if self.queue.len() + suppliers.len() > self.config.max_queued {
            let message = format!(
                "{} suppliers are queued and {} more would pass the limit of {} (--max-queued-suppliers); \
                 call save-all more often (the platform flushes every 500)",
                self.queue.len(),
                suppliers.len(),
                self.config.max_queued
            );
            self.limit_hit = Some(LimitHit {
                kind: "batch_too_large",
                message: message.clone(),
            });
            return Ok(Err(LoadError::QueueFull(message)));
        }
        if let Err(problem) = validate(&suppliers, &self.config) {
            return Ok(Err(LoadError::InvalidRecord(format!(
                "{problem}; nothing of this batch was queued"
            ))));
        }
        self.queue.pending.extend(suppliers);
        Ok(Ok(self.queue.len() as u32))
    }

    async fn save_all(&mut self) -> wasmtime::Result<Result<u32, LoadError>> {
        let batch = self.queue.take();
        if batch.is_empty() {
            return Ok(Ok(0));
        }
        match self.store.save_suppliers(self.customer_number.clone(), batch).await {
            Ok(n) => Ok(Ok(n as u32)),
            Err(e) => Ok(Err(LoadError::Store(format!("failed to save suppliers: {e}")))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suppliers::tests::supplier;

    #[test]
    fn valid_batches_pass() {
        assert!(
            validate(
                &[supplier("S1", "One", Some("Delft")), supplier("S2", "Two", None)],
                &SupplierConfig::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn errors_name_the_record_and_field() {
        let config = SupplierConfig::default();
        let e = validate(&[supplier("S1", "One", None), supplier("", "Two", None)], &config).unwrap_err();
        assert_eq!(e, "supplier #2 of the batch: supplier_number is required");
        let e = validate(&[supplier("S7", " ", None)], &config).unwrap_err();
        assert_eq!(e, "supplier #1 (supplier_number \"S7\"): supplier_name is required");
        let mut s = supplier("S8", "Eight", Some("Delft"));
        s.locations[0].location_code = String::new();
        let e = validate(&[s], &config).unwrap_err();
        assert_eq!(
            e,
            "supplier #1 (supplier_number \"S8\"): locations[0].location_code is required"
        );
    }

    #[test]
    fn oversized_fields_and_duplicate_locations_are_refused() {
        let config = SupplierConfig::default();
        let mut s = supplier("S1", "One", Some("Delft"));
        s.locations[0].addresses[0].city = Some("x".repeat(5000));
        let e = validate(&[s], &config).unwrap_err();
        assert!(e.contains("locations[0].addresses[0].city is 5000 bytes"), "{e}");
        let mut s = supplier("S1", "One", Some("Delft"));
        s.locations.push(s.locations[0].clone());
        let e = validate(&[s], &config).unwrap_err();
        assert!(e.contains("locations[1].location_code \"MAIN\" appears twice"), "{e}");
    }
}
