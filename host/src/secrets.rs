//! Secret references. Each `secrets.NAME` of a job's settings (or of a jobs
//! file's `[job.secrets]`) is a value, or says where the value lives:
//!
//! ```json
//! "secrets": {
//!   "acme_token": {"env": "NUNTIQ_SECRET_ACME_TOKEN"},
//!   "erp_password": {"file": "/run/secrets/erp_password"},
//!   "legacy": {"sealed": "v1:…"},
//!   "dev_only": "t0ken"
//! }
//! ```
//!
//! References resolve on the host that runs the slot, when its run starts, so
//! the database that holds a job holds no secret value: `jobs apply` stores a
//! reference as it is and an inline value only sealed ([`seal_for_store`]).
//!
//! Where a reference may point is the host operator's choice, not the job's:
//! a job is tenant input, and must not read the host's own credentials
//! (`PGPASSWORD`, `NUNTIQ_SECRETS_KEY`, `/etc/…`). So an environment variable
//! needs an allowed prefix and a file must lie in an allowed directory
//! ([`SecretPolicy`]).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The environment variable that holds the key inline secrets are sealed with.
pub const KEY_ENV: &str = "NUNTIQ_SECRETS_KEY";
/// The prefix an `env` reference must carry unless the operator allows others.
pub const DEFAULT_ENV_PREFIX: &str = "NUNTIQ_SECRET_";
/// Where `file` references may point unless the operator allows others
/// (where Docker, Kubernetes and systemd-creds put secrets).
pub const DEFAULT_DIR: &str = "/run/secrets";
/// In a prefix or a directory: the job's customer number.
pub const CUSTOMER: &str = "{customer}";
/// Largest secret file read: a secret is a token or a key, not a data set.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;
const SEALED_VERSION: &str = "v1";
const FORMS: &str = "a string, or one of {\"env\": \"VAR\"}, {\"file\": \"/absolute/path\"}, {\"sealed\": \"v1:…\"}";

/// Where one secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The value itself (settings files on a developer's machine).
    Inline(String),
    /// An environment variable of the host that runs the slot.
    Env(String),
    /// A file on the host that runs the slot; one trailing newline is dropped.
    File(PathBuf),
    /// An inline value sealed with [`KEY_ENV`] when it was stored.
    Sealed(String),
}

impl SecretSource {
    /// Reads one `secrets.NAME` value; the error names the forms it may take.
    pub fn parse(value: &Value) -> Result<Self, String> {
        let Value::Object(map) = value else {
            return match value {
                Value::String(s) => Ok(Self::Inline(s.clone())),
                _ => Err(format!("must be {FORMS}")),
            };
        };
        let mut entries = map.iter();
        let (Some((kind, Value::String(target))), None) = (entries.next(), entries.next()) else {
            return Err(format!("must be {FORMS}"));
        };
        match kind.as_str() {
            "env" => {
                let valid = !target.is_empty() && target.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !valid {
                    return Err(format!(
                        "env {target:?} is not an environment variable name (letters, digits, _)"
                    ));
                }
                Ok(Self::Env(target.clone()))
            }
            "file" => {
                let path = PathBuf::from(target);
                if !path.is_absolute() {
                    return Err(format!(
                        "file {target:?} must be an absolute path (it is read on the host that runs the slot)"
                    ));
                }
                Ok(Self::File(path))
            }
            "sealed" => Ok(Self::Sealed(target.clone())),
            other => Err(format!("{other:?} is not a secret source; must be {FORMS}")),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Self::Inline(value) => Value::String(value.clone()),
            Self::Env(var) => json!({ "env": var }),
            Self::File(path) => json!({ "file": path }),
            Self::Sealed(text) => json!({ "sealed": text }),
        }
    }
}

/// Which environment variables and directories a job's references may read
/// on this host (`--secret-env-prefix`, `--secrets-dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretPolicy {
    pub env_prefixes: Vec<String>,
    pub dirs: Vec<PathBuf>,
}

impl Default for SecretPolicy {
    fn default() -> Self {
        Self {
            env_prefixes: vec![DEFAULT_ENV_PREFIX.to_owned()],
            dirs: vec![PathBuf::from(DEFAULT_DIR)],
        }
    }
}

impl SecretPolicy {
    /// The policy from the flags; either list left empty keeps its default.
    pub fn new(env_prefixes: Vec<String>, dirs: Vec<PathBuf>) -> Self {
        let default = Self::default();
        Self {
            env_prefixes: if env_prefixes.is_empty() {
                default.env_prefixes
            } else {
                env_prefixes
            },
            dirs: if dirs.is_empty() { default.dirs } else { dirs },
        }
    }

    /// This policy for one customer's job: `{customer}` in a prefix or a
    /// directory becomes its customer number, so one tenant's job cannot
    /// name another's secrets (`--secrets-dir /run/secrets/{customer}`). A
    /// customer number that is not a safe name (letters, digits, `_`, `-`)
    /// gets no scoped source at all.
    pub fn for_customer(&self, customer: &str) -> Self {
        let safe = !customer.is_empty() && customer.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        let scope = |template: &str| match template.contains(CUSTOMER) {
            false => Some(template.to_owned()),
            true if safe => Some(template.replace(CUSTOMER, customer)),
            true => None,
        };
        Self {
            env_prefixes: self.env_prefixes.iter().filter_map(|p| scope(p)).collect(),
            dirs: self
                .dirs
                .iter()
                .filter_map(|d| scope(&d.to_string_lossy()).map(PathBuf::from))
                .collect(),
        }
    }

    /// The value of secret `name`. The error names the secret and where it
    /// was looked for, never a value.
    pub fn resolve(&self, name: &str, source: &SecretSource) -> Result<String, String> {
        let fail = |problem: String| format!("secrets.{name}: {problem}");
        match source {
            SecretSource::Inline(value) => Ok(value.clone()),
            SecretSource::Env(var) => {
                let allowed = var != KEY_ENV && self.env_prefixes.iter().any(|p| var.starts_with(p.as_str()));
                if !allowed {
                    return Err(fail(format!(
                        "environment variable {var} is not one a job may read: its name must start with {} \
                         (the host's operator allows other prefixes with --secret-env-prefix)",
                        self.env_prefixes.join(" or ")
                    )));
                }
                match std::env::var(var) {
                    Ok(value) if !value.is_empty() => Ok(value),
                    Ok(_) => Err(fail(format!("environment variable {var} is empty on this host"))),
                    Err(std::env::VarError::NotPresent) => Err(fail(format!(
                        "environment variable {var} is not set on this host; set it in the environment of the \
                         process that runs the job"
                    ))),
                    Err(std::env::VarError::NotUnicode(_)) => {
                        Err(fail(format!("environment variable {var} is not valid UTF-8")))
                    }
                }
            }
            SecretSource::File(path) => self.read_file(path).map_err(fail),
            SecretSource::Sealed(text) => {
                let key = SealKey::for_host(false)?.ok_or_else(|| {
                    fail(format!(
                        "it is sealed, and this host has neither {KEY_ENV} nor a secrets key file to open it: give it \
                         the key of the host that applied the job"
                    ))
                })?;
                key.open(name, text).map_err(fail)
            }
        }
    }

    fn read_file(&self, path: &Path) -> Result<String, String> {
        let shown = path.display();
        // Canonical, so neither `..` nor a symbolic link leads out of the allowed directories.
        let real = path.canonicalize().map_err(|e| format!("cannot read {shown}: {e}"))?;
        let inside = self
            .dirs
            .iter()
            .filter_map(|dir| dir.canonicalize().ok())
            .any(|dir| real.starts_with(dir));
        if !inside {
            return Err(format!(
                "{shown} is not in a directory jobs may read secrets from ({}; the host's operator allows \
                 others with --secrets-dir)",
                self.dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let file = std::fs::File::open(&real).map_err(|e| format!("cannot read {shown}: {e}"))?;
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(format!("{shown} is not a regular file"));
        }
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {shown}: {e}"))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(format!(
                "{shown} is over {} KiB; a secret file holds one value",
                MAX_FILE_BYTES / 1024
            ));
        }
        let mut text = String::from_utf8(bytes).map_err(|_| format!("{shown} is not UTF-8 text"))?;
        // `echo token > file` adds a newline no one means as part of the secret.
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        if text.is_empty() {
            return Err(format!("{shown} is empty"));
        }
        Ok(text)
    }
}

/// The key inline secrets are sealed with: 32 random bytes, base64, in
/// [`KEY_ENV`] (`head -c 32 /dev/urandom | base64`).
pub struct SealKey {
    cipher: XChaCha20Poly1305,
    /// For [`SealKey::keyed_digest`]: derived, so the sealing key itself is never a MAC key.
    digest_key: [u8; 32],
    /// Names the key in a sealed value, so a wrong key is told apart from a damaged value.
    id: String,
}

/// Shows the key's id, never the key.
impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey({})", self.id)
    }
}

impl SealKey {
    /// The key from the environment; `None` when it is not set.
    pub fn from_env() -> Result<Option<Self>, String> {
        match std::env::var(KEY_ENV) {
            Ok(text) => Self::parse(&text).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{KEY_ENV} is not base64 text")),
        }
    }

    /// The key this host seals and opens with: [`KEY_ENV`] when it is set,
    /// else the host's own key file ([`host_key_file`]), made on first use
    /// when `create` (one machine needs no setup; hosts sharing a database
    /// share the key through [`KEY_ENV`]).
    pub fn for_host(create: bool) -> Result<Option<Self>, String> {
        if let Some(key) = Self::from_env()? {
            return Ok(Some(key));
        }
        let Some(path) = host_key_file() else {
            return Ok(None);
        };
        if !create && !path.exists() {
            return Ok(None);
        }
        let bytes = crate::cache::load_or_create_key(&path, "the secrets key")?;
        Ok(Some(Self::from_bytes(&bytes)))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let bytes: [u8; 32] = STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                format!("{KEY_ENV} must be 32 random bytes in base64; make one with: head -c 32 /dev/urandom | base64")
            })?;
        Ok(Self::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8; 32]) -> Self {
        let id = Sha256::digest(bytes)[..4].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            cipher: XChaCha20Poly1305::new(bytes.into()),
            digest_key: blake3::derive_key("nuntiq-host 2026-12 keyed digest of stored definitions", bytes),
            id,
        }
    }

    /// A digest of `text` (which may hold secrets) that tells a change
    /// without letting anyone who lacks the key guess what it holds: keyed
    /// BLAKE3 under a key derived from this one.
    pub fn keyed_digest(&self, text: &str) -> String {
        blake3::keyed_hash(&self.digest_key, text.as_bytes()).to_hex().to_string()
    }

    /// `v1:KEYID:base64url(nonce ‖ ciphertext)`; the secret's name is bound
    /// in, so a sealed value moved to another name does not open.
    pub fn seal(&self, name: &str, value: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: value.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals any length a secret has");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{SEALED_VERSION}:{}:{}", self.id, URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn open(&self, name: &str, text: &str) -> Result<String, String> {
        let mut parts = text.splitn(3, ':');
        let (Some(SEALED_VERSION), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!(
                "the sealed value is not of the form {SEALED_VERSION}:KEYID:DATA"
            ));
        };
        if id != self.id {
            return Err(format!(
                "it was sealed with key {id}, and this host's key ({KEY_ENV} or its key file) is {}: give this host the key it was \
                 sealed with, or apply the job again",
                self.id
            ));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| "the sealed value is damaged (not base64)".to_owned())?;
        if bytes.len() < 24 {
            return Err("the sealed value is damaged (too short)".into());
        }
        let (nonce, sealed) = bytes.split_at(24);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| {
                "the sealed value does not open: it was damaged, or sealed for another secret name".to_owned()
            })?;
        String::from_utf8(plain).map_err(|_| "the sealed value is not UTF-8".into())
    }
}

/// `$XDG_CONFIG_HOME/nuntiq-host/secrets.key` (usually `~/.config/…`), mode
/// 0600: the key of a host that has no [`KEY_ENV`].
pub fn host_key_file() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("nuntiq-host").join("secrets.key"))
}

/// Makes a job's settings fit to store in a database: each inline secret is
/// sealed with this host's key ([`SealKey::for_host`]), references stay as
/// they are. Without a key (no [`KEY_ENV`] and no config directory for a key
/// file) an inline secret is refused, naming it: it would be stored in clear.
pub fn seal_for_store(settings: &mut Value) -> Result<(), String> {
    seal_with(settings, SealKey::for_host(true)?.as_ref())
}

fn seal_with(settings: &mut Value, key: Option<&SealKey>) -> Result<(), String> {
    let Some(secrets) = settings.get_mut("secrets") else {
        return Ok(());
    };
    let Value::Object(secrets) = secrets else {
        return Err(format!("secrets: must be an object of {FORMS}"));
    };
    for (name, value) in secrets.iter_mut() {
        match SecretSource::parse(value).map_err(|p| format!("secrets.{name}: {p}"))? {
            SecretSource::Inline(plain) => {
                let key = key.ok_or_else(|| {
                    format!(
                        "secrets.{name}: an inline value would be stored in the database in clear; give it as \
                         {{ env = \"{DEFAULT_ENV_PREFIX}…\" }} or {{ file = \"{DEFAULT_DIR}/…\" }}, or set {KEY_ENV} \
                         where you apply to store it sealed"
                    )
                })?;
                *value = SecretSource::Sealed(key.seal(name, &plain)).to_value();
            }
            source => *value = source.to_value(),
        }
    }
    Ok(())
}

/// Puts a jobs file's `[job.secrets]` over the settings' own `secrets`.
pub fn merge(settings: &mut Value, job_secrets: &Map<String, Value>) {
    if job_secrets.is_empty() {
        return;
    }
    if let Value::Object(top) = settings {
        let secrets = top.entry("secrets").or_insert_with(|| Value::Object(Map::new()));
        if !secrets.is_object() {
            *secrets = Value::Object(Map::new());
        }
        if let Value::Object(secrets) = secrets {
            secrets.extend(job_secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn sources_parse_and_bad_ones_name_the_forms() {
        assert_eq!(
            SecretSource::parse(&json!("x")).unwrap(),
            SecretSource::Inline("x".into())
        );
        assert_eq!(
            SecretSource::parse(&json!({"env": "NUNTIQ_SECRET_A"})).unwrap(),
            SecretSource::Env("NUNTIQ_SECRET_A".into())
        );
        assert_eq!(
            SecretSource::parse(&json!({"file": "/run/secrets/a"})).unwrap(),
            SecretSource::File("/run/secrets/a".into())
        );
        for bad in [
            json!(1),
            json!({}),
            json!({"env": "A", "file": "/b"}),
            json!({"vault": "x"}),
            json!({"env": 3}),
        ] {
            assert!(SecretSource::parse(&bad).is_err(), "{bad}");
        }
        assert!(
            SecretSource::parse(&json!({"file": "relative"}))
                .unwrap_err()
                .contains("absolute")
        );
        assert!(
            SecretSource::parse(&json!({"env": "A B"}))
                .unwrap_err()
                .contains("not an environment variable")
        );
    }

    #[test]
    fn env_references_need_an_allowed_prefix() {
        let policy = SecretPolicy::default();
        let e = policy
            .resolve("db", &SecretSource::Env("PGPASSWORD".into()))
            .unwrap_err();
        assert!(e.contains("secrets.db") && e.contains("NUNTIQ_SECRET_"), "{e}");
        // The sealing key is never a job's, whatever prefixes are allowed.
        let wide = SecretPolicy::new(vec!["NUNTIQ_".into()], vec![]);
        assert!(wide.resolve("k", &SecretSource::Env(KEY_ENV.into())).is_err());
        let e = policy
            .resolve("t", &SecretSource::Env("NUNTIQ_SECRET_SURELY_UNSET_1234".into()))
            .unwrap_err();
        assert!(e.contains("is not set on this host"), "{e}");
    }

    #[test]
    fn a_customer_scope_keeps_each_tenant_to_its_own_secrets() {
        let root = tempfile::tempdir().unwrap();
        for customer in ["C1", "C2"] {
            std::fs::create_dir(root.path().join(customer)).unwrap();
            std::fs::write(root.path().join(customer).join("token"), customer).unwrap();
        }
        let policy = SecretPolicy::new(
            vec!["NUNTIQ_SECRET_{customer}_".into()],
            vec![root.path().join("{customer}")],
        );
        let c1 = policy.for_customer("C1");
        assert_eq!(c1.resolve("t", &SecretSource::File(root.path().join("C1/token"))).unwrap(), "C1");
        let e = c1.resolve("t", &SecretSource::File(root.path().join("C2/token"))).unwrap_err();
        assert!(e.contains("not in a directory jobs may read"), "{e}");
        let e = c1.resolve("t", &SecretSource::Env("NUNTIQ_SECRET_C2_TOKEN".into())).unwrap_err();
        assert!(e.contains("NUNTIQ_SECRET_C1_"), "{e}");
        // A customer number that could walk out of its directory gets none.
        let odd = policy.for_customer("../C2");
        assert!(odd.dirs.is_empty() && odd.env_prefixes.is_empty(), "{odd:?}");
        assert!(odd.resolve("t", &SecretSource::File(root.path().join("C2/token"))).is_err());
    }

    #[test]
    fn files_are_read_only_inside_allowed_directories() {
        let allowed = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(allowed.path().join("token"), "s3cret\n").unwrap();
        std::fs::write(outside.path().join("other"), "nope").unwrap();
        std::os::unix::fs::symlink(outside.path().join("other"), allowed.path().join("link")).unwrap();
        let policy = SecretPolicy::new(vec![], vec![allowed.path().to_owned()]);
        assert_eq!(
            policy
                .resolve("t", &SecretSource::File(allowed.path().join("token")))
                .unwrap(),
            "s3cret"
        );
        for escape in [
            outside.path().join("other"),
            allowed.path().join("link"),
            allowed
                .path()
                .join("../")
                .join(outside.path().file_name().unwrap())
                .join("other"),
        ] {
            let e = policy.resolve("t", &SecretSource::File(escape.clone())).unwrap_err();
            assert!(
                e.contains("not in a directory jobs may read secrets from"),
                "{escape:?}: {e}"
            );
        }
        std::fs::write(allowed.path().join("big"), vec![b'a'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let e = policy
            .resolve("t", &SecretSource::File(allowed.path().join("big")))
            .unwrap_err();
        assert!(e.contains("KiB"), "{e}");
        assert!(!e.contains("aaaa"));
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_name() {
        let key = SealKey::parse(KEY).unwrap();
        let sealed = key.seal("acme_token", "t0ken");
        assert!(!sealed.contains("t0ken"));
        assert_ne!(sealed, key.seal("acme_token", "t0ken"), "a fresh nonce each time");
        assert_eq!(key.open("acme_token", &sealed).unwrap(), "t0ken");
        assert!(
            key.open("other_name", &sealed)
                .unwrap_err()
                .contains("another secret name")
        );
        let other = SealKey::parse(&STANDARD.encode([7u8; 32])).unwrap();
        let e = other.open("acme_token", &sealed).unwrap_err();
        assert!(e.contains("sealed with key") && e.contains(&key.id), "{e}");
        assert!(SealKey::parse("c2hvcnQ=").unwrap_err().contains("32 random bytes"));
        // The keyed digest tells texts apart and depends on the key.
        assert_eq!(key.keyed_digest("x"), key.keyed_digest("x"));
        assert_ne!(key.keyed_digest("x"), key.keyed_digest("y"));
        assert_ne!(key.keyed_digest("x"), other.keyed_digest("x"));
    }

    #[test]
    fn storing_seals_inline_values_and_keeps_references() {
        let key = SealKey::parse(KEY).unwrap();
        let mut settings = json!({"secrets": {"inline": "t0ken", "env": {"env": "NUNTIQ_SECRET_X"}}});
        let e = seal_with(&mut settings.clone(), None).unwrap_err();
        assert!(
            e.contains("secrets.inline") && e.contains(KEY_ENV) && !e.contains("t0ken"),
            "{e}"
        );
        seal_with(&mut settings, Some(&key)).unwrap();
        assert!(!settings.to_string().contains("t0ken"), "{settings}");
        assert_eq!(settings["secrets"]["env"], json!({"env": "NUNTIQ_SECRET_X"}));
        let sealed = settings["secrets"]["inline"]["sealed"].as_str().unwrap();
        assert_eq!(key.open("inline", sealed).unwrap(), "t0ken");
        // Sealing again leaves a sealed value as it is.
        let before = settings.clone();
        seal_with(&mut settings, Some(&key)).unwrap();
        assert_eq!(settings, before);
        assert!(
            seal_with(&mut json!({"secrets": {"bad": 1}}), Some(&key))
                .unwrap_err()
                .contains("secrets.bad")
        );
    }

    #[test]
    fn merge_puts_job_secrets_over_the_settings_own() {
        let mut settings = json!({"customer_number": "1", "secrets": {"a": "1", "b": "2"}});
        let job = json!({"b": {"env": "NUNTIQ_SECRET_B"}, "c": "3"});
        merge(&mut settings, job.as_object().unwrap());
        assert_eq!(
            settings["secrets"],
            json!({"a": "1", "b": {"env": "NUNTIQ_SECRET_B"}, "c": "3"})
        );
        let mut bare = json!({"customer_number": "1"});
        merge(&mut bare, job.as_object().unwrap());
        assert_eq!(bare["secrets"]["c"], "3");
    }
}
