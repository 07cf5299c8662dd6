//! The jobs file `serve` runs: one `[[job]]` table per connector instance,
//! its plugin and settings (paths relative to the file), its cadence, and
//! `run-plugin`'s per-job flags under the same names.
//!
//! ```toml
//! [[job]]
//! name = "acme_eu"
//! plugin = "dist/acme.wasm"
//! settings = "settings.json"        # or an inline [job.settings] table
//! every = "15m"                     # or cron = "*/15 * * * *"
//! allow_hosts = ["http://127.0.0.1:8080"]
//! timeout = "5m"
//! max_memory = "64MiB"
//! missed = "latest"                 # or "skip", "all": which slots run late (see MissedPolicy)
//!
//! [job.secrets]                     # over the settings' own; resolved where the slot runs
//! acme_token = { env = "NUNTIQ_SECRET_ACME_EU" }   # or { file = "/run/secrets/acme_eu" }
//! ```

use crate::flags::JobFlags;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// When a job runs.
#[derive(Debug, Clone)]
pub enum Cadence {
    /// Every period, aligned to the Unix epoch (15m: :00, :15, :30, :45).
    Every(Duration),
    Cron(Box<croner::Cron>),
}

impl Cadence {
    /// The slot `now` falls in: the latest scheduled moment at or before it.
    pub fn slot(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Cadence::Every(period) => {
                let period = period.as_millis().max(1) as i64;
                let at = now.timestamp_millis().div_euclid(period) * period;
                Utc.timestamp_millis_opt(at).single()
            }
            Cadence::Cron(cron) => cron.find_previous_occurrence(&now, true).ok(),
        }
    }

    /// The slot after `slot`, so the scheduler knows how long it may sleep.
    pub fn next(&self, slot: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Cadence::Every(period) => Some(slot + chrono::Duration::from_std(*period).ok()?),
            Cadence::Cron(cron) => cron.find_next_occurrence(&slot, false).ok(),
        }
    }
}

/// What happens to a job's slots whose time passed before they could start
/// (no room on any host, or the job's previous run still going). Every such
/// slot is recorded (`missed`, or `skipped` when its previous run was going)
/// unless it is run late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissedPolicy {
    /// The newest due slot runs as soon as there is room; older ones that
    /// never started are recorded and not replayed (the next run's cursor
    /// fetches what changed in between).
    #[default]
    Latest,
    /// A slot runs only on time: one not started within a quarter of its
    /// interval (at least 1 s, at most 1 minute) is recorded and not run.
    Skip,
    /// Every due slot runs, oldest first, up to [`MAX_BACKLOG`] behind; older
    /// ones are recorded as missed.
    All,
}

/// How many slots of one job `missed = "all"` keeps waiting to run.
pub const MAX_BACKLOG: usize = 100;

impl MissedPolicy {
    pub const NAMES: [&str; 3] = ["latest", "skip", "all"];

    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "latest" => Ok(Self::Latest),
            "skip" => Ok(Self::Skip),
            "all" => Ok(Self::All),
            other => Err(format!(
                "missed: {other:?} is not a policy; give one of {}",
                Self::NAMES.map(|n| format!("{n:?}")).join(", ")
            )),
        }
    }
}

/// A slot as the store keys it.
pub fn slot_key(slot: DateTime<Utc>) -> String {
    slot.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One job of the file, checked and with its paths resolved.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub plugin: PathBuf,
    /// The settings file, or (for inline settings) the jobs file, for messages.
    pub settings: PathBuf,
    pub inline_settings: Option<serde_json::Value>,
    /// `[job.secrets]`: each a value or a reference ([`crate::secrets::SecretSource`]),
    /// put over the settings' own.
    pub secrets: serde_json::Map<String, serde_json::Value>,
    pub params: Vec<String>,
    pub cadence: Cadence,
    pub missed: MissedPolicy,
    pub flags: JobFlags,
    /// With `serve --db nuntiq+https://…`: where this job's Customer API token
    /// comes from (`api_token_env`, or `api_token_file` relative to the jobs
    /// file; `NUNTIQ_API_TOKEN` when neither is given).
    pub api_token: crate::job::ApiTokenSource,
    /// The plugin's digest the job is pinned to: a file that differs is
    /// refused (named in the file, or recorded by `jobs apply`).
    pub sha256: Option<String>,
    /// The job's table as written, for `jobs apply` to store.
    pub table: toml::Table,
}

impl JobSpec {
    /// The job's settings as one value: the settings file's content (or the
    /// inline table) with `[job.secrets]` over its own secrets. Its secrets
    /// may still be inline values: seal them before storing it anywhere
    /// ([`crate::secrets::seal_for_store`]).
    pub fn settings_value(&self) -> Result<serde_json::Value, String> {
        let mut value = match &self.inline_settings {
            Some(value) => value.clone(),
            None => {
                let text = std::fs::read_to_string(&self.settings)
                    .map_err(|e| format!("cannot read {}: {e}", self.settings.display()))?;
                serde_json::from_str(&text).map_err(|e| format!("{}: not valid JSON: {e}", self.settings.display()))?
            }
        };
        crate::secrets::merge(&mut value, &self.secrets);
        Ok(value)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    job: Vec<toml::Table>,
}

/// A job's own keys, besides [`JobFlags::KEYS`].
const JOB_KEYS: [&str; 11] = [
    "name",
    "sha256",
    "plugin",
    "settings",
    "every",
    "cron",
    "params",
    "missed",
    "api_token_env",
    "api_token_file",
    "secrets",
];

#[derive(Deserialize)]
struct RawJob {
    name: String,
    plugin: PathBuf,
    settings: Option<SettingsSource>,
    sha256: Option<String>,
    every: Option<String>,
    cron: Option<String>,
    missed: Option<String>,
    #[serde(default)]
    params: toml::Table,
    #[serde(default)]
    secrets: toml::Table,
    api_token_env: Option<String>,
    api_token_file: Option<PathBuf>,
    #[serde(flatten)]
    flags: JobFlags,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SettingsSource {
    Path(PathBuf),
    Inline(toml::Table),
}

/// Longest job name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// A job's name keys its slots and labels its metrics and log lines, so it
/// holds only characters no exposition format, log line or terminal gives a
/// meaning to.
pub fn check_name(name: &str) -> Result<(), String> {
    let safe = name.len() <= MAX_NAME_BYTES
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if safe {
        Ok(())
    } else {
        Err(format!(
            "name must be 1 to {MAX_NAME_BYTES} ASCII letters, digits, '_', '-' and '.', starting with a letter \
             or digit (it keys the job's slots and labels its metrics and log lines)"
        ))
    }
}

/// Reads and checks the jobs file: every job named once, a plugin, settings,
/// one cadence, and only known keys (a misspelt limit would silently not apply).
pub fn load(path: &Path) -> Result<Vec<JobSpec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: File = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut jobs: Vec<JobSpec> = Vec::new();
    for (index, table) in file.job.into_iter().enumerate() {
        let named = table
            .get("name")
            .and_then(|n| n.as_str())
            .map_or_else(|| format!("job {}", index + 1), |n| format!("job {n:?}"));
        let fail = |problem: String| format!("{}: {named}: {problem}", path.display());
        let spec = parse_job(table, base, path, None).map_err(fail)?;
        if jobs.iter().any(|j| j.name == spec.name) {
            return Err(fail(
                "two jobs have this name; a name keys the job's slots, so it must be unique".into(),
            ));
        }
        jobs.push(spec);
    }
    if jobs.is_empty() {
        return Err(format!(
            "{}: no [[job]] tables; see nuntiq-host serve --help",
            path.display()
        ));
    }
    Ok(jobs)
}

/// Checks one `[[job]]` table; paths in it are relative to `base`. With
/// `stored_settings`, the table has no `settings` key: they are given (a
/// job read back from the database, its settings' content stored at apply).
pub fn parse_job(
    table: toml::Table,
    base: &Path,
    file: &Path,
    stored_settings: Option<serde_json::Value>,
) -> Result<JobSpec, String> {
    // Checked by hand: serde cannot refuse unknown keys next to flattened ones.
    if let Some(key) = table
        .keys()
        .find(|k| !JOB_KEYS.contains(&k.as_str()) && !JobFlags::KEYS.contains(&k.as_str()))
    {
        return Err(format!(
            "unknown key {key:?} (the keys are {}, and run-plugin's per-job flags with _ for -: {})",
            JOB_KEYS.join(", "),
            JobFlags::KEYS.join(", ")
        ));
    }
    if table.contains_key("max_stack") {
        return Err("max_stack is set for the whole process (serve --max-stack): its jobs share one engine".into());
    }
    let kept = table.clone();
    let raw: RawJob = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| e.to_string())?;
    check_name(&raw.name)?;
    let cadence = match (&raw.every, &raw.cron) {
        (Some(every), None) => {
            let period = crate::limits::parse_duration(every).map_err(|e| format!("every: {e}"))?;
            if period < Duration::from_secs(1) {
                return Err("every must be at least 1s".into());
            }
            Cadence::Every(period)
        }
        (None, Some(cron)) => Cadence::Cron(Box::new(parse_cron(cron)?)),
        _ => return Err("give exactly one of every = \"15m\" or cron = \"*/15 * * * *\"".into()),
    };
    let missed = raw.missed.as_deref().map_or(Ok(MissedPolicy::Latest), MissedPolicy::parse)?;
    let sha256 = raw.sha256.map(|digest| check_sha256(&digest)).transpose()?;
    let params = raw
        .params
        .iter()
        .map(|(k, v)| {
            serde_json::to_value(v)
                .map(|json| format!("{k}={json}"))
                .map_err(|e| format!("params.{k}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (settings, inline_settings) = match (raw.settings, stored_settings) {
        (_, Some(stored)) => (
            PathBuf::from(format!("the settings of job {} stored by jobs apply", raw.name)),
            Some(stored),
        ),
        (Some(SettingsSource::Path(p)), None) => (base.join(p), None),
        (Some(SettingsSource::Inline(table)), None) => (
            PathBuf::from(format!("{} [job.settings of {}]", file.display(), raw.name)),
            Some(serde_json::to_value(table).map_err(|e| format!("settings: {e}"))?),
        ),
        (None, None) => return Err("settings is missing: a path to a settings file, or a [job.settings] table".into()),
    };
    let secrets = match serde_json::to_value(&raw.secrets) {
        Ok(serde_json::Value::Object(secrets)) => secrets,
        _ => return Err("secrets: must be a table".into()),
    };
    for (key, value) in &secrets {
        crate::secrets::SecretSource::parse(value).map_err(|e| format!("secrets.{key}: {e}"))?;
    }
    let api_token = match (raw.api_token_env, raw.api_token_file) {
        (Some(_), Some(_)) => return Err("give at most one of api_token_env and api_token_file".into()),
        (Some(name), None) => crate::job::ApiTokenSource::Env(name),
        (None, Some(file)) => crate::job::ApiTokenSource::File(base.join(file)),
        (None, None) => crate::job::ApiTokenSource::default(),
    };
    Ok(JobSpec {
        api_token,
        name: raw.name,
        plugin: base.join(raw.plugin),
        settings,
        inline_settings,
        secrets,
        params,
        cadence,
        missed,
        sha256,
        flags: raw.flags,
        table: kept,
    })
}

/// A `sha256` key: 64 hex digits, compared in lower case.
fn check_sha256(digest: &str) -> Result<String, String> {
    if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(digest.to_ascii_lowercase())
    } else {
        Err(format!(
            "sha256: {digest:?} is not a SHA-256 digest (64 hex digits; `nuntiq-host inspect PLUGIN` prints it)"
        ))
    }
}

/// The ranges of a cron expression's fields: five (minute first) or six
/// (second first).
const CRON_FIELDS: [(&str, u32); 6] = [
    ("second", 60),
    ("minute", 60),
    ("hour", 24),
    ("day of month", 31),
    ("month", 12),
    ("day of week", 7),
];

/// Parses a cron expression and refuses what would silently misbehave: a
/// step wider than its field (`*/61` would fire once an hour, not every 61
/// minutes) and an expression that never fires (`0 0 31 2 *`).
pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    let cron: croner::Cron = text.parse().map_err(|e| format!("cron {text:?}: {e}"))?;
    let fields: Vec<&str> = text.split_whitespace().collect();
    let names = if fields.len() == 6 { &CRON_FIELDS[..] } else { &CRON_FIELDS[1..] };
    for (field, (name, range)) in fields.iter().zip(names) {
        for part in field.split(',') {
            if let Some((_, step)) = part.split_once('/') {
                let step: u32 = step.parse().map_err(|_| format!("cron {text:?}: {name} step {step:?} is not a number"))?;
                if step == 0 || step > *range {
                    return Err(format!(
                        "cron {text:?}: the {name} step /{step} is outside 1..={range}, so it would not fire every \
                         {step}; write the times out instead"
                    ));
                }
            }
        }
    }
    // Within the next few years: croner searches forward, and a date that never exists
    // (February 31st) is never found.
    let now = Utc::now();
    match cron.find_next_occurrence(&now, false) {
        Ok(next) if next < now + chrono::Duration::days(5 * 366) => Ok(cron),
        _ => Err(format!(
            "cron {text:?} never fires (no time matches it in the next five years); check the day and month"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn jobs_read_with_paths_relative_to_the_file() {
        let (dir, path) = write(
            r#"
            [[job]]
            name = "acme_eu"
            plugin = "dist/acme.wasm"
            settings = "settings.json"
            every = "15m"
            allow_hosts = ["http://127.0.0.1:8080"]
            timeout = "5m"
            max_memory = "64MiB"
            params = { lookback_days = 3 }

            [[job]]
            name = "inline"
            plugin = "/abs/acme.wasm"
            cron = "*/15 * * * *"
            [job.settings]
            customer_number = "1"
            config = { api_url = "https://api.example" }
            "#,
        );
        let jobs = load(&path).unwrap();
        assert_eq!(jobs[0].plugin, dir.path().join("dist/acme.wasm"));
        assert_eq!(jobs[0].settings, dir.path().join("settings.json"));
        assert_eq!(jobs[0].flags.max_memory, Some(64 << 20));
        assert_eq!(jobs[0].flags.timeout, Some(Duration::from_secs(300)));
        assert_eq!(jobs[0].params, ["lookback_days=3"]);
        assert_eq!(jobs[1].plugin, PathBuf::from("/abs/acme.wasm"));
        assert_eq!(jobs[1].inline_settings.as_ref().unwrap()["customer_number"], "1");
    }

    #[test]
    fn the_readmes_jobs_file_reads() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("```toml\n# jobs.toml").expect("README shows a jobs file") + "```toml\n".len();
        let text = &readme[start..][..readme[start..].find("```").unwrap()];
        let (_dir, path) = write(text);
        let jobs = load(&path).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            jobs[1].inline_settings.as_ref().unwrap()["config"]["connector_name"],
            "acme_us"
        );
        assert_eq!(jobs[1].params, ["lookback_days=3"]);
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                "name = \"a\"\nplugin = \"p\"\nsettings = \"s\"\nevery = \"1m\"\nmax_memroy = \"1MiB\"",
                "unknown key \"max_memroy\"",
            ),
            ("name = \"a\"\nplugin = \"p\"\nsettings = \"s\"", "exactly one of every"),
            (
                "name = \"a\"\nplugin = \"p\"\nsettings = \"s\"\nevery = \"soon\"",
                "every:",
            ),
            (
                "name = \"a\"\nplugin = \"p\"\nsettings = \"s\"\ncron = \"nope\"",
                "cron \"nope\"",
            ),
            (
                "name = \"a\"\nplugin = \"p\"\nsettings = \"s\"\nevery = \"1m\"\ntimeout = \"x\"",
                "job \"a\"",
            ),
        ];
        for (job, expected) in cases {
            let (_dir, path) = write(&format!("[[job]]\n{job}\n"));
            let err = load(&path).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
        let (_dir, path) = write(
            "[[job]]\nname = \"a\"\nplugin = \"p\"\nsettings = \"s\"\nevery = \"1m\"\n\
             [[job]]\nname = \"a\"\nplugin = \"p\"\nsettings = \"s\"\nevery = \"1m\"\n",
        );
        assert!(load(&path).unwrap_err().contains("two jobs have this name"));
    }

    #[test]
    fn a_name_outside_the_safe_set_is_refused_naming_the_job_and_the_rule() {
        for name in ["trail\\", "x\"} 99999 # fake", "two\nlines", "", "-leading", "é", &"a".repeat(129)] {
            let quoted = serde_json::to_string(name).unwrap();
            let (_dir, path) = write(&format!(
                "[[job]]\nname = {quoted}\nplugin = \"p\"\nsettings = \"s\"\nevery = \"1m\"\n"
            ));
            let err = load(&path).unwrap_err();
            assert!(err.contains(&format!("job {name:?}: name must be 1 to 128 ASCII letters")), "{err}");
        }
        for name in ["acme_eu", "acme-us.2", "9lives", &"a".repeat(128)] {
            assert_eq!(check_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn crons_that_never_fire_or_step_past_their_field_and_unknown_policies_are_refused() {
        for (cron, expected) in [
            ("0 0 31 2 *", "never fires"),
            ("*/61 * * * *", "the minute step /61 is outside 1..=60"),
            ("0 */25 * * *", "the hour step /25"),
            ("*/0 * * * *", "cron \"*/0 * * * *\""),
        ] {
            let (_dir, path) = write(&format!(
                "[[job]]\nname = \"a\"\nplugin = \"p\"\nsettings = \"s\"\ncron = \"{cron}\"\n"
            ));
            let err = load(&path).unwrap_err();
            assert!(err.contains("job \"a\"") && err.contains(expected), "{cron}: {err}");
        }
        for cron in ["*/15 * * * *", "0 0 29 2 *", "*/60 * * * *", "5,35 */2 * * 1-5"] {
            assert!(parse_cron(cron).is_ok(), "{cron}");
        }
        let (_dir, path) = write(
            "[[job]]\nname = \"a\"\nplugin = \"p\"\nsettings = \"s\"\nevery = \"1m\"\nmissed = \"some\"\n",
        );
        let err = load(&path).unwrap_err();
        assert!(err.contains("missed: \"some\" is not a policy"), "{err}");
        let (_dir, path) = write(
            "[[job]]\nname = \"a\"\nplugin = \"p\"\nsettings = \"s\"\nevery = \"1m\"\nmissed = \"all\"\n",
        );
        assert_eq!(load(&path).unwrap()[0].missed, MissedPolicy::All);
    }

    #[test]
    fn slots_align_to_the_cadence() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let every = Cadence::Every(Duration::from_secs(900));
        assert_eq!(every.slot(at("2026-05-01T10:22:31Z")), Some(at("2026-05-01T10:15:00Z")));
        assert_eq!(every.next(at("2026-05-01T10:15:00Z")), Some(at("2026-05-01T10:30:00Z")));
        let cron = Cadence::Cron(Box::new("5 * * * *".parse().unwrap()));
        assert_eq!(cron.slot(at("2026-05-01T10:22:31Z")), Some(at("2026-05-01T10:05:00Z")));
        assert_eq!(cron.slot(at("2026-05-01T10:05:00Z")), Some(at("2026-05-01T10:05:00Z")));
        assert_eq!(cron.next(at("2026-05-01T10:05:00Z")), Some(at("2026-05-01T11:05:00Z")));
        assert_eq!(slot_key(at("2026-05-01T10:05:00Z")), "2026-05-01T10:05:00Z");
    }
}
