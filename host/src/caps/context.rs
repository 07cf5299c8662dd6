//! `context`: the customer number and the settings' config, secrets and params.

use crate::bindings::{context, types::SettingValue};
use crate::settings::Settings;
use serde_json::Value;
use std::sync::Arc;

pub struct ContextCap {
    settings: Arc<Settings>,
    /// Operator switch: `get-secret` returns nothing, leaving only the host-side
    /// bearer injection.
    deny_secret_read: bool,
}

impl ContextCap {
    pub fn new(settings: Arc<Settings>, deny_secret_read: bool) -> Self {
        Self {
            settings,
            deny_secret_read,
        }
    }
}

/// Settings values cross the boundary as they stand in settings.json.
pub fn setting_value(value: &Value) -> SettingValue {
    match value {
        Value::String(s) => SettingValue::Text(s.clone()),
        Value::Bool(b) => SettingValue::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => SettingValue::Integer(i),
            // u64 beyond i64 would lose digits as a float: keep the JSON text.
            _ if n.is_u64() => SettingValue::Json(n.to_string()),
            (None, Some(f)) => SettingValue::Float(f),
            (None, None) => SettingValue::Json(n.to_string()),
        },
        other => SettingValue::Json(other.to_string()),
    }
}

impl context::Host for ContextCap {
    async fn customer_number(&mut self) -> wasmtime::Result<String> {
        Ok(self.settings.customer_number.clone())
    }

    async fn get_config(&mut self, key: String) -> wasmtime::Result<Option<SettingValue>> {
        Ok(self.settings.config.get(&key).map(setting_value))
    }

    async fn get_secret(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        if self.deny_secret_read {
            return Ok(None);
        }
        Ok(self
            .settings
            .secrets
            .get(&key)
            .and_then(Value::as_str)
            .map(str::to_owned))
    }

    async fn has_secret(&mut self, key: String) -> wasmtime::Result<bool> {
        Ok(self.settings.secrets.contains_key(&key))
    }

    async fn get_param(&mut self, key: String) -> wasmtime::Result<Option<SettingValue>> {
        Ok(self.settings.job_params.get(&key).map(setting_value))
    }
}

impl crate::bindings::types::Host for ContextCap {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_keep_their_json_shape() {
        assert!(matches!(setting_value(&json!("x")), SettingValue::Text(s) if s == "x"));
        assert!(matches!(setting_value(&json!(200)), SettingValue::Integer(200)));
        assert!(matches!(setting_value(&json!(-3)), SettingValue::Integer(-3)));
        assert!(matches!(setting_value(&json!(1.5)), SettingValue::Float(f) if f == 1.5));
        assert!(matches!(setting_value(&json!(true)), SettingValue::Boolean(true)));
        assert!(matches!(setting_value(&json!(u64::MAX)), SettingValue::Json(s) if s == u64::MAX.to_string()));
        assert!(matches!(setting_value(&json!({"a": [1]})), SettingValue::Json(s) if s == r#"{"a":[1]}"#));
        assert!(matches!(setting_value(&json!(null)), SettingValue::Json(s) if s == "null"));
    }
}
