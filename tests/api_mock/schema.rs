//! The supplier schema on the wire (`POST /v1/supplier` and `/_mock/suppliers`), strict body
//! parsing whose errors name the field but never the row, and the batch validation rules.

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize};

/// A supplier as posted and as stored: absent and null both mean "not set".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Supplier {
    pub supplier_number: Option<String>,
    pub supplier_name: Option<String>,
    pub alternative_supplier_name: Option<String>,
    pub supplier_type: Option<String>,
    pub organization_code: Option<String>,
    pub is_active: Option<bool>,
    pub custom_field_1: Option<String>,
    pub custom_field_2: Option<String>,
    pub custom_field_3: Option<String>,
    pub custom_field_4: Option<String>,
    pub custom_field_5: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub supplier_location: Vec<Location>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub location_code: Option<String>,
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
    #[serde(default, deserialize_with = "null_as_empty")]
    pub supplier_address: Vec<Address>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub supplier_bank_account: Vec<BankAccount>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub street: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    pub country_code: Option<String>,
    pub custom_field_1: Option<String>,
    pub custom_field_2: Option<String>,
    pub custom_field_3: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankAccount {
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

/// The `POST /v1/supplier` body (the envelope the docs do not show; see the crate doc).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupplierPost {
    #[serde(default, deserialize_with = "null_as_default")]
    pub full_load: bool,
    #[serde(rename = "SupplierAddressInsertOnly", default, deserialize_with = "null_as_default")]
    pub address_insert_only: bool,
    #[serde(rename = "SupplierBankInsertOnly", default, deserialize_with = "null_as_default")]
    pub bank_insert_only: bool,
    pub items: Vec<Supplier>,
}

/// What the request log shows of a supplier POST that was not (or could not be) parsed strictly.
#[derive(Deserialize)]
pub struct LooseSupplierPost {
    full_load: Option<serde_json::Value>,
    items: Option<Vec<IgnoredAny>>,
}

impl LooseSupplierPost {
    /// `(items, full_load)` as far as the body shows them.
    pub fn peek(body: &[u8]) -> (Option<usize>, Option<bool>) {
        match serde_json::from_slice::<LooseSupplierPost>(body) {
            Ok(p) => (p.items.map(|i| i.len()), p.full_load.and_then(|v| v.as_bool())),
            Err(_) => (None, None),
        }
    }
}

fn null_as_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

fn null_as_default<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or_default())
}

/// Parses a JSON body strictly. The error names the field by its path without
/// array indices or positions (`items.supplier_location: unknown field ...`),
/// because the API does not say which row was wrong.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    // The plain parse is the fast path; only a refused body is parsed again to find the field.
    serde_json::from_slice(body).or_else(|_| parse_for_error(body))
}

fn parse_for_error<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path: Vec<String> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                serde_path_to_error::Segment::Seq { .. } | serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let inner = without_position(&e.inner().to_string());
        if path.is_empty() {
            inner
        } else {
            format!("{}: {inner}", path.join("."))
        }
    })?;
    de.end().map_err(|e| without_position(&e.to_string()))?;
    Ok(value)
}

fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Checks every item of a batch; the first failure refuses the whole batch.
/// Messages name the field, never the row or a value (a bank account number
/// must not travel back in an error).
pub fn validate(items: &[Supplier], poison: &[String]) -> Result<(), String> {
    for s in items {
        required(&s.supplier_number, "supplier_number")?;
        required(&s.supplier_name, "supplier_name")?;
        let number = s.supplier_number.as_deref().unwrap_or_default();
        if poison.iter().any(|p| number.starts_with(p.as_str())) {
            return Err("supplier_number is refused by the mock's poison rule".into());
        }
        no_nul(
            &[
                ("supplier_number", &s.supplier_number),
                ("supplier_name", &s.supplier_name),
                ("alternative_supplier_name", &s.alternative_supplier_name),
                ("supplier_type", &s.supplier_type),
                ("organization_code", &s.organization_code),
                ("custom_field_1", &s.custom_field_1),
                ("custom_field_2", &s.custom_field_2),
                ("custom_field_3", &s.custom_field_3),
                ("custom_field_4", &s.custom_field_4),
                ("custom_field_5", &s.custom_field_5),
            ],
            "",
        )?;
        for l in &s.supplier_location {
            required(&l.location_code, "supplier_location.location_code")?;
            no_nul(
                &[
                    ("location_code", &l.location_code),
                    ("location_name", &l.location_name),
                    ("organization_code", &l.organization_code),
                    ("default_currency_code", &l.default_currency_code),
                    ("default_payment_term_code", &l.default_payment_term_code),
                    ("default_payment_method", &l.default_payment_method),
                    ("taxpayer_id", &l.taxpayer_id),
                    ("duns_number", &l.duns_number),
                    ("custom_field_1", &l.custom_field_1),
                    ("custom_field_2", &l.custom_field_2),
                    ("custom_field_3", &l.custom_field_3),
                    ("custom_field_4", &l.custom_field_4),
                    ("custom_field_5", &l.custom_field_5),
                ],
                "supplier_location.",
            )?;
            for a in &l.supplier_address {
                if let Some(code) = &a.country_code
                    && !(code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()))
                {
                    return Err("supplier_location.supplier_address.country_code is not two ASCII letters".into());
                }
                no_nul(
                    &[
                        ("street", &a.street),
                        ("city", &a.city),
                        ("state", &a.state),
                        ("postal_code", &a.postal_code),
                        ("country_code", &a.country_code),
                        ("custom_field_1", &a.custom_field_1),
                        ("custom_field_2", &a.custom_field_2),
                        ("custom_field_3", &a.custom_field_3),
                    ],
                    "supplier_location.supplier_address.",
                )?;
            }
            for b in &l.supplier_bank_account {
                no_nul(
                    &[
                        ("bank_name", &b.bank_name),
                        ("bank_branch", &b.bank_branch),
                        ("bank_account_number", &b.bank_account_number),
                        ("bank_routing_number", &b.bank_routing_number),
                        ("swift_code", &b.swift_code),
                        ("account_currency", &b.account_currency),
                        ("custom_field_1", &b.custom_field_1),
                        ("custom_field_2", &b.custom_field_2),
                        ("custom_field_3", &b.custom_field_3),
                    ],
                    "supplier_location.supplier_bank_account.",
                )?;
            }
        }
    }
    Ok(())
}

fn required(value: &Option<String>, field: &str) -> Result<(), String> {
    match value.as_deref() {
        None => Err(format!("{field} is required")),
        Some("") => Err(format!("{field} is empty")),
        Some(_) => Ok(()),
    }
}

fn no_nul(fields: &[(&str, &Option<String>)], prefix: &str) -> Result<(), String> {
    match fields
        .iter()
        .find(|(_, v)| v.as_deref().is_some_and(|v| v.contains('\0')))
    {
        Some((name, _)) => Err(format!("{prefix}{name} contains a NUL character")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field_path_without_the_row() {
        let body = br#"{"items": [{"supplier_number": "1", "supplier_name": "a"},
            {"supplier_number": "2", "supplier_name": "b", "supplier_location": [{"location_code": "M", "colour": 1}]}]}"#;
        let err = parse::<SupplierPost>(body).unwrap_err();
        assert!(err.contains("unknown field `colour`"), "{err}");
        assert!(err.starts_with("items.supplier_location"), "{err}");
        assert!(!err.contains('[') && !err.contains("line"), "{err}");
        let err = parse::<SupplierPost>(br#"{"items": [{"is_active": "yes"}]}"#).unwrap_err();
        assert!(err.starts_with("items.is_active: invalid type"), "{err}");
    }

    #[test]
    fn a_nul_in_a_bank_account_number_is_named_without_its_value() {
        let post: SupplierPost = parse(
            br#"{"items": [{"supplier_number": "1", "supplier_name": "a", "supplier_location": [{"location_code": "M",
                "supplier_bank_account": [{"bank_account_number": "NL91\u0000ABNA"}]}]}]}"#,
        )
        .unwrap();
        let err = validate(&post.items, &[]).unwrap_err();
        assert_eq!(
            err,
            "supplier_location.supplier_bank_account.bank_account_number contains a NUL character"
        );
    }
}
