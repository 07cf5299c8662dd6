//! Suppliers as the store keeps them: the platform's fields, independent of
//! any contract version's generated types (each WIT version converts into
//! these at the edge).
//!
//! Every record knows what it costs the host in memory ([`SupplierRecord::host_bytes`])
//! so queues can be bounded in bytes, and its content fingerprint, so an
//! upsert of an unchanged supplier writes nothing.

/// A supplier with its locations (the platform's `Supplier` and `supplier_location[]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SupplierRecord {
    /// Required; with `organization_code` the upsert key.
    pub supplier_number: String,
    /// Required.
    pub supplier_name: String,
    pub alternative_supplier_name: Option<String>,
    pub supplier_type: Option<String>,
    /// Part of the upsert key; absent means "".
    pub organization_code: Option<String>,
    /// Defaults to true on new suppliers; absent keeps the stored value.
    pub is_active: Option<bool>,
    pub custom_field_1: Option<String>,
    pub custom_field_2: Option<String>,
    pub custom_field_3: Option<String>,
    pub custom_field_4: Option<String>,
    pub custom_field_5: Option<String>,
    /// Upserted by `location_code`; locations not listed are left alone.
    pub locations: Vec<LocationRecord>,
}

/// A supplier location; its addresses replace the stored ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocationRecord {
    /// Required; the key of the location inside its supplier.
    pub location_code: String,
    pub location_name: Option<String>,
    pub organization_code: Option<String>,
    pub default_currency_code: Option<String>,
    pub default_payment_term_code: Option<String>,
    pub default_payment_method: Option<String>,
    pub taxpayer_id: Option<String>,
    pub duns_number: Option<String>,
    pub is_active: Option<bool>,
    pub custom_field_1: Option<String>,
    pub custom_field_2: Option<String>,
    pub custom_field_3: Option<String>,
    pub custom_field_4: Option<String>,
    pub custom_field_5: Option<String>,
    pub addresses: Vec<AddressRecord>,
    /// The location's bank accounts (contract 0.3.0); they replace the stored ones.
    pub bank_accounts: Vec<BankAccountRecord>,
}

/// A postal address of a location.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddressRecord {
    pub street: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    pub country_code: Option<String>,
    pub custom_field_1: Option<String>,
    pub custom_field_2: Option<String>,
    pub custom_field_3: Option<String>,
}

/// A bank account of a location (the platform's `SupplierBankAccount`). Its
/// account number is never logged: see [`BankAccountRecord::masked`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BankAccountRecord {
    pub bank_name: Option<String>,
    pub bank_branch: Option<String>,
    pub bank_account_number: Option<String>,
    pub bank_routing_number: Option<String>,
    pub swift_code: Option<String>,
    pub account_currency: Option<String>,
    pub is_primary: Option<bool>,
    pub custom_field_1: Option<String>,
    pub custom_field_2: Option<String>,
    pub custom_field_3: Option<String>,
}

impl BankAccountRecord {
    fn text_fields(&self) -> [(&'static str, Option<&String>); 9] {
        [
            ("bank_name", self.bank_name.as_ref()),
            ("bank_branch", self.bank_branch.as_ref()),
            ("bank_account_number", self.bank_account_number.as_ref()),
            ("bank_routing_number", self.bank_routing_number.as_ref()),
            ("swift_code", self.swift_code.as_ref()),
            ("account_currency", self.account_currency.as_ref()),
            ("custom_field_1", self.custom_field_1.as_ref()),
            ("custom_field_2", self.custom_field_2.as_ref()),
            ("custom_field_3", self.custom_field_3.as_ref()),
        ]
    }

    /// The account number as messages may show it: its last four characters.
    pub fn masked(number: &str) -> String {
        let tail: String = number.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
        format!("…{tail}")
    }
}

impl SupplierRecord {
    /// A supplier with only its required fields set.
    pub fn new(supplier_number: impl Into<String>, supplier_name: impl Into<String>) -> Self {
        Self {
            supplier_number: supplier_number.into(),
            supplier_name: supplier_name.into(),
            ..Self::default()
        }
    }

    /// The key's organization code: absent is "".
    pub fn organization_key(&self) -> &str {
        self.organization_code.as_deref().unwrap_or("")
    }

    fn text_fields(&self) -> [(&'static str, Option<&String>); 10] {
        [
            ("supplier_number", Some(&self.supplier_number)),
            ("supplier_name", Some(&self.supplier_name)),
            ("alternative_supplier_name", self.alternative_supplier_name.as_ref()),
            ("supplier_type", self.supplier_type.as_ref()),
            ("organization_code", self.organization_code.as_ref()),
            ("custom_field_1", self.custom_field_1.as_ref()),
            ("custom_field_2", self.custom_field_2.as_ref()),
            ("custom_field_3", self.custom_field_3.as_ref()),
            ("custom_field_4", self.custom_field_4.as_ref()),
            ("custom_field_5", self.custom_field_5.as_ref()),
        ]
    }

    /// Roughly what this record costs in host memory: the structs, every
    /// string's bytes and an allocator's overhead per string and list. Queues
    /// are bounded by this, so aliased or tiny strings cannot outgrow a budget.
    pub fn host_bytes(&self) -> usize {
        const PER_ALLOCATION: usize = 32;
        let text = |fields: &[(&str, Option<&String>)]| -> usize {
            fields
                .iter()
                .filter_map(|(_, v)| v.map(|s| s.len() + PER_ALLOCATION))
                .sum()
        };
        let mut bytes = size_of::<Self>() + text(&self.text_fields()) + PER_ALLOCATION;
        for l in &self.locations {
            bytes += size_of::<LocationRecord>() + text(&l.text_fields()) + PER_ALLOCATION;
            for a in &l.addresses {
                bytes += size_of::<AddressRecord>() + text(&a.text_fields());
            }
            for b in &l.bank_accounts {
                bytes += size_of::<BankAccountRecord>() + text(&b.text_fields());
            }
        }
        bytes
    }

    /// A digest of everything an upsert of this record writes: equal
    /// fingerprints mean the upsert would change nothing. (XXH3-128 over an
    /// unambiguous encoding: fast, and a connector that forged a collision
    /// would only keep its own supplier from updating.)
    pub fn fingerprint(&self) -> [u8; 16] {
        thread_local! {
            static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(1024));
        }
        BUFFER.with_borrow_mut(|buf| {
            buf.clear();
            let mut h = Fingerprint(buf);
            h.fields(&self.text_fields());
            h.flag(self.is_active);
            h.count(self.locations.len());
            for l in &self.locations {
                h.fields(&l.text_fields());
                h.flag(l.is_active);
                h.count(l.addresses.len());
                for a in &l.addresses {
                    h.fields(&a.text_fields());
                }
                // Only when there are any: suppliers stored before bank
                // accounts existed keep their fingerprints.
                if !l.bank_accounts.is_empty() {
                    h.count(l.bank_accounts.len());
                    for b in &l.bank_accounts {
                        h.fields(&b.text_fields());
                        h.flag(b.is_primary);
                    }
                }
            }
            xxhash_rust::xxh3::xxh3_128(buf).to_le_bytes()
        })
    }
}

impl LocationRecord {
    /// A location with only its code set.
    pub fn new(location_code: impl Into<String>) -> Self {
        Self {
            location_code: location_code.into(),
            ..Self::default()
        }
    }

    fn text_fields(&self) -> [(&'static str, Option<&String>); 13] {
        [
            ("location_code", Some(&self.location_code)),
            ("location_name", self.location_name.as_ref()),
            ("organization_code", self.organization_code.as_ref()),
            ("default_currency_code", self.default_currency_code.as_ref()),
            ("default_payment_term_code", self.default_payment_term_code.as_ref()),
            ("default_payment_method", self.default_payment_method.as_ref()),
            ("taxpayer_id", self.taxpayer_id.as_ref()),
            ("duns_number", self.duns_number.as_ref()),
            ("custom_field_1", self.custom_field_1.as_ref()),
            ("custom_field_2", self.custom_field_2.as_ref()),
            ("custom_field_3", self.custom_field_3.as_ref()),
            ("custom_field_4", self.custom_field_4.as_ref()),
            ("custom_field_5", self.custom_field_5.as_ref()),
        ]
    }
}

impl AddressRecord {
    fn text_fields(&self) -> [(&'static str, Option<&String>); 8] {
        [
            ("street", self.street.as_ref()),
            ("city", self.city.as_ref()),
            ("state", self.state.as_ref()),
            ("postal_code", self.postal_code.as_ref()),
            ("country_code", self.country_code.as_ref()),
            ("custom_field_1", self.custom_field_1.as_ref()),
            ("custom_field_2", self.custom_field_2.as_ref()),
            ("custom_field_3", self.custom_field_3.as_ref()),
        ]
    }
}

/// An unambiguous encoding of a record: absent and empty differ, and no two
/// field sequences encode alike (lengths prefix the text).
struct Fingerprint<'a>(&'a mut Vec<u8>);

impl Fingerprint<'_> {
    fn fields(&mut self, fields: &[(&str, Option<&String>)]) {
        for (_, value) in fields {
            match value {
                None => self.0.push(0),
                Some(s) => {
                    self.0.push(1);
                    self.count(s.len());
                    self.0.extend_from_slice(s.as_bytes());
                }
            }
        }
    }

    fn flag(&mut self, value: Option<bool>) {
        self.0.push(match value {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
    }

    fn count(&mut self, n: usize) {
        self.0.extend_from_slice(&(n as u32).to_le_bytes());
    }
}

/// Host limits on one supplier record.
#[derive(Debug, Clone)]
pub struct RecordLimits {
    pub max_locations_per_supplier: usize,
    pub max_addresses_per_location: usize,
    /// Longest value of any one field, in bytes.
    pub max_field_bytes: usize,
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self {
            max_locations_per_supplier: 1_000,
            max_addresses_per_location: 100,
            max_field_bytes: 4 * 1024,
        }
    }
}

/// Checks one batch; the error names the record (its position in the batch and
/// its supplier_number) and the field.
pub fn validate(batch: &[SupplierRecord], limits: &RecordLimits) -> Result<(), String> {
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
        if s.locations.len() > limits.max_locations_per_supplier {
            return fail(
                "locations",
                &format!(
                    "has {} entries; at most {} are allowed",
                    s.locations.len(),
                    limits.max_locations_per_supplier
                ),
            );
        }
        check_sizes(&s.text_fields(), limits).or_else(|(f, p)| fail(f, &p))?;
        let mut codes = std::collections::HashSet::new();
        for (j, l) in s.locations.iter().enumerate() {
            let field = |name: &str| format!("locations[{j}].{name}");
            if l.location_code.trim().is_empty() {
                return fail(&field("location_code"), "is required");
            }
            if !codes.insert(l.location_code.as_str()) {
                return fail(&field("location_code"), &format!("{:?} appears twice", l.location_code));
            }
            if l.addresses.len() > limits.max_addresses_per_location {
                return fail(
                    &field("addresses"),
                    &format!(
                        "has {} entries; at most {} are allowed",
                        l.addresses.len(),
                        limits.max_addresses_per_location
                    ),
                );
            }
            check_sizes(&l.text_fields(), limits).or_else(|(f, p)| fail(&field(f), &p))?;
            for (k, a) in l.addresses.iter().enumerate() {
                check_sizes(&a.text_fields(), limits)
                    .or_else(|(f, p)| fail(&format!("locations[{j}].addresses[{k}].{f}"), &p))?;
            }
            if l.bank_accounts.len() > limits.max_addresses_per_location {
                return fail(
                    &field("bank_accounts"),
                    &format!(
                        "has {} entries; at most {} are allowed",
                        l.bank_accounts.len(),
                        limits.max_addresses_per_location
                    ),
                );
            }
            for (k, b) in l.bank_accounts.iter().enumerate() {
                // A size error must not print the account number: it names the field only.
                check_sizes(&b.text_fields(), limits)
                    .or_else(|(f, p)| fail(&format!("locations[{j}].bank_accounts[{k}].{f}"), &p))?;
            }
        }
    }
    Ok(())
}

fn check_sizes<'a>(fields: &[(&'a str, Option<&String>)], limits: &RecordLimits) -> Result<(), (&'a str, String)> {
    for (name, value) in fields {
        if let Some(v) = value
            && v.len() > limits.max_field_bytes
        {
            return Err((
                name,
                format!("is {} bytes; at most {} are allowed", v.len(), limits.max_field_bytes),
            ));
        }
        // PostgreSQL cannot store one and SQLite can: one rule for both engines.
        if value.is_some_and(|v| v.contains('\0')) {
            return Err((name, "holds a NUL byte (U+0000), which the store does not keep".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A supplier with a MAIN location in `city` (or none).
    pub(crate) fn supplier(number: &str, name: &str, city: Option<&str>) -> SupplierRecord {
        let mut s = SupplierRecord::new(number, name);
        s.is_active = Some(true);
        if let Some(city) = city {
            let mut location = LocationRecord::new("MAIN");
            location.location_name = Some("Headquarters".into());
            location.is_active = Some(true);
            location.addresses.push(AddressRecord {
                street: Some("1 Main St".into()),
                city: Some(city.into()),
                country_code: Some("NL".into()),
                ..AddressRecord::default()
            });
            s.locations.push(location);
        }
        s
    }

    #[test]
    fn valid_batches_pass() {
        assert!(
            validate(
                &[supplier("S1", "One", Some("Delft")), supplier("S2", "Two", None)],
                &RecordLimits::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn errors_name_the_record_and_field() {
        let limits = RecordLimits::default();
        let e = validate(&[supplier("S1", "One", None), supplier("", "Two", None)], &limits).unwrap_err();
        assert_eq!(e, "supplier #2 of the batch: supplier_number is required");
        let e = validate(&[supplier("S7", " ", None)], &limits).unwrap_err();
        assert_eq!(e, "supplier #1 (supplier_number \"S7\"): supplier_name is required");
        let mut s = supplier("S8", "Eight", Some("Delft"));
        s.locations[0].location_code = String::new();
        let e = validate(&[s], &limits).unwrap_err();
        assert_eq!(
            e,
            "supplier #1 (supplier_number \"S8\"): locations[0].location_code is required"
        );
    }

    #[test]
    fn oversized_fields_and_duplicate_locations_are_refused() {
        let limits = RecordLimits::default();
        let mut s = supplier("S1", "One", Some("Delft"));
        s.locations[0].addresses[0].city = Some("x".repeat(5000));
        let e = validate(&[s], &limits).unwrap_err();
        assert!(e.contains("locations[0].addresses[0].city is 5000 bytes"), "{e}");
        let mut s = supplier("S1", "One", Some("Delft"));
        s.locations.push(s.locations[0].clone());
        let e = validate(&[s], &limits).unwrap_err();
        assert!(e.contains("locations[1].location_code \"MAIN\" appears twice"), "{e}");
    }

    #[test]
    fn a_nul_byte_in_any_field_is_refused_naming_the_record_and_field() {
        let limits = RecordLimits::default();
        let e = validate(&[supplier("S1", "Null\0Name", None)], &limits).unwrap_err();
        assert_eq!(
            e,
            "supplier #1 (supplier_number \"S1\"): supplier_name holds a NUL byte (U+0000), which the store does not keep"
        );
        let mut s = supplier("S\u{0}2", "Two", Some("Delft"));
        s.locations[0].addresses[0].city = Some("Del\0ft".into());
        let e = validate(&[supplier("S1", "One", None), s.clone()], &limits).unwrap_err();
        assert!(
            e.starts_with("supplier #2 (supplier_number \"S\\02\"): supplier_number holds a NUL"),
            "{e}"
        );
        s.supplier_number = "S2".into();
        let e = validate(&[s], &limits).unwrap_err();
        assert!(e.contains("locations[0].addresses[0].city holds a NUL byte"), "{e}");
    }

    #[test]
    fn fingerprints_see_every_field_and_tell_absent_from_empty() {
        let base = supplier("S1", "One", Some("Delft"));
        assert_eq!(base.fingerprint(), base.clone().fingerprint());
        let mut renamed = base.clone();
        renamed.locations[0].addresses[0].city = Some("Gouda".into());
        assert_ne!(base.fingerprint(), renamed.fingerprint());
        let mut empty = base.clone();
        empty.custom_field_5 = Some(String::new());
        assert_ne!(base.fingerprint(), empty.fingerprint());
        let mut inactive = base.clone();
        inactive.is_active = None;
        assert_ne!(base.fingerprint(), inactive.fingerprint());
        // Moving text between neighbouring fields changes the digest.
        let mut a = SupplierRecord::new("S1", "ab");
        a.alternative_supplier_name = Some("c".into());
        let mut b = SupplierRecord::new("S1", "a");
        b.alternative_supplier_name = Some("bc".into());
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn host_bytes_count_every_string_even_tiny_ones() {
        let mut s = SupplierRecord::new("S", "N");
        let one = s.host_bytes();
        let mut location = LocationRecord::new("L");
        location.addresses = vec![
            AddressRecord {
                street: Some("x".into()),
                ..AddressRecord::default()
            };
            100
        ];
        s.locations = vec![location; 10];
        assert!(
            s.host_bytes() >= one + 1000 * (size_of::<AddressRecord>() + 33),
            "{}",
            s.host_bytes()
        );
    }
}
