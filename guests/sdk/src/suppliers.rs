//! `SupplierLoad`: the platform's BaseLoad pattern — queue suppliers, nothing is
//! written until `save_all` (or until the delta run completes).
//!
//! The records' fields, as the store keeps them (every text at most 4 KiB):
//!
//! | [`Supplier`] | |
//! |---|---|
//! | `supplier_number` | required; the stable external id; with `organization_code` the upsert key |
//! | `supplier_name` | required |
//! | `alternative_supplier_name`, `supplier_type` | optional text |
//! | `organization_code` | optional; part of the key (absent = empty) |
//! | `is_active` | defaults to true on a new supplier |
//! | `custom_field1` … `custom_field5` | optional text, the platform's free fields |
//! | `locations` | at most 1000; upserted by `location_code`, locations not listed are left alone |
//!
//! | [`SupplierLocation`] | |
//! |---|---|
//! | `location_code` | required; the key inside its supplier |
//! | `location_name`, `organization_code`, `default_currency_code`, `default_payment_term_code`, `default_payment_method`, `taxpayer_id`, `duns_number` | optional text |
//! | `is_active` | defaults to true |
//! | `custom_field1` … `custom_field5` | optional text |
//! | `addresses` | at most 100; replace the location's stored addresses (see [`LoadOptions`]) |
//! | `bank_accounts` | at most 100; replace the location's stored bank accounts (see [`LoadOptions`]) |
//!
//! | [`SupplierAddress`] | |
//! |---|---|
//! | `street`, `city`, `state`, `postal_code`, `country_code`, `custom_field1` … `custom_field3` | optional text |
//!
//! | [`SupplierBankAccount`] | |
//! |---|---|
//! | `bank_name`, `bank_branch`, `bank_account_number`, `bank_routing_number`, `swift_code`, `account_currency`, `custom_field1` … `custom_field3` | optional text; the host never logs `bank_account_number` |
//! | `is_primary` | optional |
//!
//! [`LoadOptions`] (set once, before the first `queue`, with [`set_options`]):
//! `full_load` replaces all of the customer's suppliers with the run's (the
//! run's first write deletes the rest; a run that fails after it leaves only
//! what it wrote, until the next full run); `address_insert_only` and
//! `bank_insert_only` add new addresses or bank accounts and never change the
//! stored ones.

pub use crate::supplier_load::{
    LoadError, LoadOptions, Supplier, SupplierAddress, SupplierBankAccount, SupplierLocation, set_options,
};

/// A supplier with only its required fields set.
pub fn supplier(supplier_number: impl Into<String>, supplier_name: impl Into<String>) -> Supplier {
    Supplier {
        supplier_number: supplier_number.into(),
        supplier_name: supplier_name.into(),
        alternative_supplier_name: None,
        supplier_type: None,
        organization_code: None,
        is_active: None,
        custom_field1: None,
        custom_field2: None,
        custom_field3: None,
        custom_field4: None,
        custom_field5: None,
        locations: Vec::new(),
    }
}

/// A location with only its code set.
pub fn location(location_code: impl Into<String>) -> SupplierLocation {
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
        custom_field1: None,
        custom_field2: None,
        custom_field3: None,
        custom_field4: None,
        custom_field5: None,
        addresses: Vec::new(),
        bank_accounts: Vec::new(),
    }
}

/// A bank account with nothing set.
pub fn bank_account() -> SupplierBankAccount {
    SupplierBankAccount {
        bank_name: None,
        bank_branch: None,
        bank_account_number: None,
        bank_routing_number: None,
        swift_code: None,
        account_currency: None,
        is_primary: None,
        custom_field1: None,
        custom_field2: None,
        custom_field3: None,
    }
}

/// An empty address.
pub fn address() -> SupplierAddress {
    SupplierAddress {
        street: None,
        city: None,
        state: None,
        postal_code: None,
        country_code: None,
        custom_field1: None,
        custom_field2: None,
        custom_field3: None,
    }
}

impl LoadError {
    /// What went wrong, for people (wit-bindgen's `Display` is the `Debug` form).
    pub fn message(&self) -> String {
        match self {
            LoadError::InvalidRecord(m) | LoadError::QueueFull(m) | LoadError::Store(m) => m.clone(),
        }
    }
}

/// Suppliers handed to the host per `queue` call.
const QUEUE_CALL_SUPPLIERS: usize = 500;

/// Suppliers built in the connector and handed to the host in batches.
///
/// ```no_run
/// use nuntiq_connector::{SupplierLoad, location, supplier};
///
/// let mut load = SupplierLoad::new();
/// let mut s = supplier("S-1", "Northwind Traders");
/// s.locations.push(location("MAIN"));
/// load.add(s);
/// let written = load.save_all().map_err(|e| e.message())?;
/// # Ok::<(), String>(())
/// ```
#[derive(Default)]
pub struct SupplierLoad {
    batch: Vec<Supplier>,
}

impl SupplierLoad {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a supplier to the batch.
    pub fn add(&mut self, supplier: Supplier) {
        self.batch.push(supplier);
    }

    /// Suppliers added since the last hand-over.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// Whether nothing was added since the last hand-over.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Hands the batch to the host's queue without writing it: a delta run's
    /// `complete` then writes it in the cursor's transaction. Large batches go
    /// over in several calls, each well within what the host copies per call.
    /// On an error, what the host did not take stays in the batch.
    pub fn queue(&mut self) -> Result<(), LoadError> {
        let mut sent = 0;
        while sent < self.batch.len() {
            let end = (sent + QUEUE_CALL_SUPPLIERS).min(self.batch.len());
            if let Err(e) = crate::supplier_load::queue(&self.batch[sent..end]) {
                self.batch.drain(..sent);
                return Err(e);
            }
            sent = end;
        }
        self.batch.clear();
        Ok(())
    }

    /// Hands the batch over and writes everything queued; returns how many
    /// suppliers were written.
    pub fn save_all(&mut self) -> Result<u32, LoadError> {
        self.queue()?;
        crate::supplier_load::save_all()
    }
}
