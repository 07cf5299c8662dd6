//! A job as the database keeps it: what `jobs apply` checks and stores from
//! a jobs file, and how `serve` reads it back.
//!
//! Everything a host needs to run the job is in the stored definition, so
//! every host runs the same job: the plugin's absolute path and the digest
//! recorded at apply (a file replaced without a new apply is refused), the
//! settings' content read at apply time (never a path another host would
//! read differently), with inline secrets sealed, the cadence and the flags.

use super::jobs::{self, JobSpec};
use crate::job::JobOptions;
use crate::settings::Settings;
use crate::store::Db;
use crate::store::jobs::{JobRow, NewJob};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// A jobs file, checked and ready to store.
pub struct Checked {
    pub jobs: Vec<NewJob>,
    /// The jobs as `serve` runs them (for a `serve JOBS_FILE` start's checks).
    pub specs: Vec<JobSpec>,
    pub file: PathBuf,
    pub file_sha256: String,
}

/// Reads and checks every job of the file, reads each plugin and settings
/// file, and builds what is stored; any mistake is an error naming the file,
/// the job and the key, before anything is written.
pub fn check_file(path: &Path) -> Result<Checked, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let specs = jobs::load(path)?;
    let mut stored = Vec::new();
    let mut runnable = Vec::new();
    for spec in specs {
        let name = spec.name.clone();
        let (job, spec) = check_job(spec).map_err(|e| format!("{}: job {name:?}: {e}", path.display()))?;
        stored.push(job);
        runnable.push(spec);
    }
    Ok(Checked {
        jobs: stored,
        specs: runnable,
        file: std::path::absolute(path).unwrap_or_else(|_| path.to_owned()),
        file_sha256: crate::runtime::hex_sha256(&bytes),
    })
}

/// One job: its plugin read and its digest checked against a pinned one,
/// its settings read and checked, its definition built.
fn check_job(mut spec: JobSpec) -> Result<(NewJob, JobSpec), String> {
    let plugin = std::path::absolute(&spec.plugin).map_err(|e| format!("plugin: {e}"))?;
    let bytes = crate::runtime::read_plugin(&plugin).map_err(|e| format!("plugin: {e}"))?;
    let digest = crate::runtime::hex_sha256(&bytes);
    if let Some(pinned) = &spec.sha256
        && *pinned != digest
    {
        return Err(digest_mismatch(&plugin, pinned, &digest));
    }
    crate::runtime::check_shape(&plugin.display().to_string(), &bytes).map_err(|e| format!("plugin: {e}"))?;
    // Read now: what is stored is the content, the same for every host, with
    // `[job.secrets]` merged over the settings' own.
    let mut settings_value = spec.settings_value().map_err(|e| format!("settings: {e}"))?;
    let settings =
        Settings::parse(&spec.settings, settings_value.clone(), &spec.params).map_err(|e| format!("settings: {e}"))?;
    crate::job::check_network(&options_for_check(&spec), &settings)
        .map_err(|e| format!("{e} (set the job's allow_hosts key, or change its settings' config.api_url)"))?;
    let mut definition = Map::new();
    // `[job.secrets]` is stored merged into the settings.
    for (key, value) in spec.table.iter().filter(|(key, _)| *key != "secrets") {
        let value = serde_json::to_value(value).map_err(|e| format!("{key}: {e}"))?;
        definition.insert(key.clone(), value);
    }
    definition.insert("plugin".into(), Value::String(plugin.display().to_string()));
    definition.insert("sha256".into(), Value::String(digest.clone()));
    if let crate::job::ApiTokenSource::File(file) = &spec.api_token {
        let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
        definition.insert("api_token_file".into(), Value::String(file.display().to_string()));
    }
    // The digest of what the operator wrote tells a change; the stored copy
    // has its inline secrets sealed with a fresh nonce every time.
    definition.insert("settings".into(), settings_value.clone());
    let unsealed = canonical(&Value::Object(definition.clone()));
    seal(&mut settings_value)?;
    let sealed_any = definition.get("settings") != Some(&settings_value);
    definition.insert("settings".into(), settings_value);
    let definition_digest = if sealed_any {
        keyed_digest(&unsealed)?
    } else {
        crate::runtime::hex_sha256(unsealed.as_bytes())
    };
    let job = NewJob {
        name: spec.name.clone(),
        customer_number: settings.customer_number.clone(),
        connector_name: settings.connector_name.clone(),
        definition: Value::Object(definition),
        definition_digest,
        plugin_sha256: digest.clone(),
    };
    spec.plugin = plugin;
    spec.sha256 = Some(digest);
    spec.secrets.clear();
    spec.inline_settings = definition_settings(&job.definition);
    Ok((job, spec))
}

/// The stored (sealed) settings of a definition.
fn definition_settings(definition: &Value) -> Option<Value> {
    definition.get("settings").cloned()
}

/// What `jobs apply` and `serve` say when a plugin is not the one pinned.
pub fn digest_mismatch(plugin: &Path, expected: &str, found: &str) -> String {
    format!(
        "the plugin {} has SHA-256 {found}, not the {expected} the job is pinned to; put the pinned plugin \
         back, or change the job's sha256 and run jobs apply",
        plugin.display()
    )
}

/// The run-plugin options the job's flags give, for checks before a run.
pub fn options_for_check(spec: &JobSpec) -> JobOptions {
    let mut options = JobOptions::new(spec.plugin.clone(), spec.settings.clone(), Db::Sqlite("check".into()));
    spec.flags.apply(&mut options);
    options.inline_settings = spec.inline_settings.clone();
    options
}

/// Turns every inline secret of the settings into a sealed value, so no
/// secret is stored in clear.
fn seal(settings: &mut Value) -> Result<(), String> {
    crate::secrets::seal_for_store(settings).map_err(|e| format!("settings: {e}"))
}

/// A digest of a definition holding secrets, keyed by the host's seal key
/// so that the stored digest cannot be used to guess a secret.
fn keyed_digest(text: &str) -> Result<String, String> {
    let key = crate::secrets::SealKey::for_host(true)?
        .ok_or("settings: no key to seal inline secrets with (set NUNTIQ_SECRETS_KEY)")?;
    Ok(key.keyed_digest(text))
}

/// JSON with every object's keys sorted: one text per value.
fn canonical(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&map[k]))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// A stored job as `serve` runs it.
pub fn from_row(row: &JobRow) -> Result<JobSpec, String> {
    let Value::Object(definition) = &row.definition else {
        return Err("its stored definition is not a JSON object".into());
    };
    let mut table = definition.clone();
    let settings = table.remove("settings").unwrap_or(Value::Null);
    let table: toml::Table =
        serde_json::from_value(Value::Object(table)).map_err(|e| format!("its stored definition: {e}"))?;
    let spec = jobs::parse_job(table, Path::new("/"), Path::new("the database"), Some(settings))?;
    if spec.name != row.name {
        return Err(format!("its stored definition names another job, {:?}", spec.name));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_any_order_give_one_text() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"d": [1, {"z": 1, "y": 2}], "c": 2}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a": {"c": 2, "d": [1, {"y": 2, "z": 1}]}, "b": 1}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(canonical(&a), r#"{"a":{"c":2,"d":[1,{"y":2,"z":1}]},"b":1}"#);

    }
}
