//! settings.json: parsed in two stages (raw JSON, then validated types) so every
//! error names the file and the field.

use crate::secrets::{SecretPolicy, SecretSource};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use url::Url;

/// The platform's four bags, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub customer_number: String,
    /// Secrets by name: strings, or references ([`crate::secrets::SecretSource`])
    /// until [`Settings::resolve_secrets`] turns them into strings.
    pub secrets: Map<String, Value>,
    pub config: Map<String, Value>,
    /// `job_params` with every `--param` override applied.
    pub job_params: Map<String, Value>,
    /// `config.api_url`, parsed: its origin is the one host a connector may reach
    /// without an operator's `--allow-host`.
    pub api_url: Url,
    /// `config.connector_name`: the one connector whose streams this job may touch.
    /// `None` when settings name no connector: the job then has no delta state.
    pub connector_name: Option<String>,
}

/// What is wrong with settings.json (or a `--param`); the CLI exits 2.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{path}: not valid JSON: {source}")]
    Malformed { path: PathBuf, source: serde_json::Error },
    #[error("{path}: {field}: {problem}")]
    Field {
        path: PathBuf,
        field: String,
        problem: String,
    },
    #[error("--param {arg:?}: {problem}")]
    Param { arg: String, problem: String },
}

const TOP_LEVEL_KEYS: [&str; 4] = ["customer_number", "secrets", "config", "job_params"];

impl Settings {
    /// Reads and validates `path`, then applies `--param KEY=VALUE` overrides.
    pub fn load(path: &Path, params: &[String]) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        let raw: Value = serde_json::from_str(&text).map_err(|source| SettingsError::Malformed {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, raw, params)
    }

    /// Validates settings given as a value (a `serve` jobs file's inline
    /// `[job.settings]`); `source` names them in messages.
    pub fn parse(source: &Path, raw: Value, params: &[String]) -> Result<Self, SettingsError> {
        let mut settings = Self::from_value(source, raw)?;
        for arg in params {
            match parse_param(arg)? {
                // `--param KEY=null` removes the key: null means absent.
                (key, Value::Null) => settings.job_params.remove(&key),
                (key, value) => settings.job_params.insert(key, value),
            };
        }
        Ok(settings)
    }

    fn from_value(path: &Path, raw: Value) -> Result<Self, SettingsError> {
        let field_error = |field: &str, problem: String| SettingsError::Field {
            path: path.to_owned(),
            field: field.to_owned(),
            problem,
        };
        let Value::Object(mut top) = raw else {
            return Err(field_error(
                "(top level)",
                format!("expected an object with {}", TOP_LEVEL_KEYS.join(", ")),
            ));
        };
        if let Some(unknown) = top.keys().find(|k| !TOP_LEVEL_KEYS.contains(&k.as_str())) {
            return Err(field_error(
                unknown,
                format!("unknown key (expected one of {})", TOP_LEVEL_KEYS.join(", ")),
            ));
        }

        let customer_number = match top.remove("customer_number") {
            Some(Value::String(s)) if !s.trim().is_empty() => s,
            Some(Value::String(_)) => {
                return Err(field_error("customer_number", "must not be empty".into()));
            }
            Some(other) => {
                return Err(field_error(
                    "customer_number",
                    format!("must be a string such as \"10000001\", found {}", json_kind(&other)),
                ));
            }
            None => {
                return Err(field_error(
                    "customer_number",
                    "required: the tenant's customer number, e.g. \"10000001\"".into(),
                ));
            }
        };

        let mut bag = |name: &str| -> Result<Map<String, Value>, SettingsError> {
            match top.remove(name) {
                None | Some(Value::Null) => Ok(Map::new()),
                Some(Value::Object(map)) => Ok(map),
                Some(other) => Err(field_error(
                    name,
                    format!("must be an object, found {}", json_kind(&other)),
                )),
            }
        };
        let secrets = bag("secrets")?;
        // In config and job_params a JSON null means absent, as it does on the platform.
        let config = without_nulls(bag("config")?);
        let job_params = without_nulls(bag("job_params")?);

        for (name, value) in &secrets {
            SecretSource::parse(value).map_err(|problem| field_error(&format!("secrets.{name}"), problem))?;
        }

        let api_url = match config.get("api_url") {
            Some(Value::String(s)) => parse_api_url(s).map_err(|p| field_error("config.api_url", p))?,
            Some(other) => {
                return Err(field_error(
                    "config.api_url",
                    format!("must be a string URL, found {}", json_kind(other)),
                ));
            }
            None => {
                return Err(field_error(
                    "config.api_url",
                    "required: the connector's API base URL (e.g. \"https://api.acme-erp.com/v2\"); \
                     it is the one origin the connector may reach"
                        .into(),
                ));
            }
        };

        let connector_name = match config.get("connector_name") {
            None => None,
            Some(Value::String(name)) => Some(
                check_name(name)
                    .map_err(|p| field_error("config.connector_name", p))?
                    .to_owned(),
            ),
            Some(other) => {
                return Err(field_error(
                    "config.connector_name",
                    format!("must be a string such as \"acme_eu\", found {}", json_kind(other)),
                ));
            }
        };

        Ok(Settings {
            customer_number,
            secrets,
            config,
            job_params,
            api_url,
            connector_name,
        })
    }

    /// Secret values, for redaction (references once resolved).
    pub fn secret_values(&self) -> impl Iterator<Item = &str> {
        self.secrets.values().filter_map(Value::as_str)
    }

    /// Puts a jobs file's `[job.secrets]` over the settings' own; each is
    /// checked like the settings' own.
    pub fn merge_secrets(&mut self, source: &Path, job_secrets: &Map<String, Value>) -> Result<(), SettingsError> {
        for (name, value) in job_secrets {
            SecretSource::parse(value).map_err(|problem| SettingsError::Field {
                path: source.to_owned(),
                field: format!("secrets.{name}"),
                problem,
            })?;
            self.secrets.insert(name.clone(), value.clone());
        }
        Ok(())
    }

    /// Reads every referenced secret on this host, at the start of a run.
    /// The error names the secret and where it was looked for, never a value.
    pub fn resolve_secrets(&mut self, policy: &SecretPolicy) -> Result<(), String> {
        let policy = policy.for_customer(&self.customer_number);
        for (name, value) in self.secrets.iter_mut() {
            let source = SecretSource::parse(value).map_err(|p| format!("secrets.{name}: {p}"))?;
            if !matches!(source, SecretSource::Inline(_)) {
                *value = Value::String(policy.resolve(name, &source)?);
            }
        }
        Ok(())
    }
}

/// Longest connector or stream name accepted.
pub const MAX_NAME_BYTES: usize = 200;

/// A connector or stream name: not blank, at most [`MAX_NAME_BYTES`], no
/// control, bidi or invisible characters (names reach operators' terminals and logs).
pub fn check_name(name: &str) -> Result<&str, String> {
    if name.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_BYTES || name.chars().any(crate::log::is_unprintable) {
        return Err(format!(
            "must be at most {MAX_NAME_BYTES} bytes without control, bidi or invisible characters"
        ));
    }
    Ok(name)
}

fn without_nulls(mut map: Map<String, Value>) -> Map<String, Value> {
    map.retain(|_, v| !v.is_null());
    map
}

fn parse_api_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not an absolute URL ({e})"))?;
    if url.scheme() == "file" {
        // Offline development: answered from `--fixtures DIR`, never the file system at large.
        return Ok(url);
    }
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!(
            "{s:?} must be an https:// URL (or file:// for offline fixtures with --fixtures DIR)"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{s:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{s:?} carries credentials; put the token in secrets and let the host attach it"
        ));
    }
    Ok(url)
}

/// `KEY=VALUE`; VALUE is JSON when it parses as a JSON number, boolean, null,
/// object or array (or a quoted string), and a plain string otherwise.
pub fn parse_param(arg: &str) -> Result<(String, Value), SettingsError> {
    let problem = |p: &str| SettingsError::Param {
        arg: arg.to_owned(),
        problem: p.to_owned(),
    };
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| problem("expected KEY=VALUE, e.g. since_override=2024-01-01T00:00:00Z"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(problem("the key is empty; expected KEY=VALUE"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((key.to_owned(), value))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Settings, SettingsError> {
        Settings::from_value(Path::new("settings.json"), v)
    }

    fn valid() -> Value {
        json!({
            "customer_number": "10000001",
            "secrets": {"acme_token": "t0ken"},
            "config": {"connector_name": "acme_eu", "api_url": "https://api.acme-erp.com/v2"},
            "job_params": {"lookback_days": 7}
        })
    }

    #[test]
    fn valid_settings_parse() {
        let s = parse(valid()).unwrap();
        assert_eq!(s.customer_number, "10000001");
        assert_eq!(s.api_url.host_str(), Some("api.acme-erp.com"));
        assert_eq!(s.secret_values().collect::<Vec<_>>(), ["t0ken"]);
    }

    #[test]
    fn missing_customer_number_names_the_field() {
        let mut v = valid();
        v.as_object_mut().unwrap().remove("customer_number");
        let e = parse(v).unwrap_err().to_string();
        assert!(e.starts_with("settings.json: customer_number: required"), "{e}");
    }

    #[test]
    fn numeric_customer_number_is_refused() {
        let mut v = valid();
        v["customer_number"] = json!(10000001);
        let e = parse(v).unwrap_err().to_string();
        assert!(e.contains("customer_number: must be a string"), "{e}");
    }

    #[test]
    fn unknown_top_level_key_is_refused() {
        let mut v = valid();
        v["secret"] = json!({});
        let e = parse(v).unwrap_err().to_string();
        assert!(e.contains("secret: unknown key"), "{e}");
    }

    #[test]
    fn api_url_is_required_and_absolute() {
        let mut v = valid();
        v["config"].as_object_mut().unwrap().remove("api_url");
        assert!(
            parse(v.clone())
                .unwrap_err()
                .to_string()
                .contains("config.api_url: required")
        );
        v["config"]["api_url"] = json!("/v2");
        assert!(
            parse(v.clone())
                .unwrap_err()
                .to_string()
                .contains("not an absolute URL")
        );
        v["config"]["api_url"] = json!("ftp://x.example/v2");
        assert!(
            parse(v.clone())
                .unwrap_err()
                .to_string()
                .contains("must be an https:// URL (or file://")
        );
        v["config"]["api_url"] = json!("https://user:pw@x.example/v2");
        assert!(parse(v).unwrap_err().to_string().contains("carries credentials"));
    }

    #[test]
    fn null_means_absent_in_config_and_params() {
        let mut v = valid();
        v["config"]["page_size"] = Value::Null;
        v["job_params"]["since_override"] = Value::Null;
        let s = parse(v).unwrap();
        assert!(!s.config.contains_key("page_size"));
        assert!(!s.job_params.contains_key("since_override"));
    }

    #[test]
    fn connector_name_is_checked_when_present() {
        assert_eq!(parse(valid()).unwrap().connector_name.as_deref(), Some("acme_eu"));
        let mut v = valid();
        v["config"].as_object_mut().unwrap().remove("connector_name");
        assert_eq!(parse(v.clone()).unwrap().connector_name, None);
        v["config"]["connector_name"] = json!("evil\u{1b}[2J");
        let e = parse(v.clone()).unwrap_err().to_string();
        assert!(e.contains("config.connector_name: must be at most 200 bytes"), "{e}");
        // Names that look like another connector's: invisible and bidi characters.
        for lookalike in [
            "acme_eu\u{200b}",
            "acme\u{ad}_eu",
            "\u{202e}ue_emca",
            "acme_eu\u{e0041}",
        ] {
            v["config"]["connector_name"] = json!(lookalike);
            let e = parse(v.clone()).unwrap_err().to_string();
            assert!(
                e.contains("without control, bidi or invisible characters"),
                "{lookalike:?}: {e}"
            );
        }
        v["config"]["connector_name"] = json!(7);
        let e = parse(v).unwrap_err().to_string();
        assert!(e.contains("config.connector_name: must be a string"), "{e}");
    }

    #[test]
    fn non_string_secret_is_refused() {
        let mut v = valid();
        v["secrets"]["acme_token"] = json!(12);
        let e = parse(v).unwrap_err().to_string();
        assert!(e.contains("secrets.acme_token: must be a string, or one of"), "{e}");
    }

    #[test]
    fn params_parse_as_json_or_string() {
        assert_eq!(
            parse_param("since_override=2024-01-01T00:00:00Z").unwrap().1,
            json!("2024-01-01T00:00:00Z")
        );
        assert_eq!(parse_param("lookback_days=3").unwrap().1, json!(3));
        assert_eq!(parse_param("x=\"3\"").unwrap().1, json!("3"));
        assert_eq!(parse_param("empty=").unwrap().1, json!(""));
        assert!(parse_param("novalue").is_err());
        assert!(parse_param("=3").is_err());
    }
}
