//! The compiled-component cache: a scheduled run should not pay for Cranelift.
//!
//! Entries are keyed by the plugin's SHA-256 and the engine's compatibility
//! hash, written atomically (temp file + rename), and framed with a magic and
//! a BLAKE3 digest of the payload. wasmtime's deserialisation trusts its input,
//! so an entry is only handed to it after the digest matches; anything
//! corrupt, truncated or foreign is removed and recompiled, never loaded.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 16] = b"NUNTIQ-CWASM\0v1\0";
const DIGEST_LEN: usize = 32;

/// How a component was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from a valid entry.
    Hit,
    /// Compiled; `stored` says whether an entry was written.
    Compiled { stored: bool },
    /// The entry was unusable (the reason says why); compiled and replaced.
    Replaced(String),
    /// Caching is off.
    Disabled,
}

/// A directory of compiled components.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// `$XDG_CACHE_HOME/nuntiq-host` (usually `~/.cache/nuntiq-host`).
    pub fn default_dir() -> Option<PathBuf> {
        dirs::cache_dir().map(|d| d.join("nuntiq-host"))
    }

    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry for this plugin under this engine's configuration.
    pub fn entry_path(&self, engine: &Engine, plugin_sha256: &str) -> PathBuf {
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        self.dir.join(format!("{plugin_sha256}-{:016x}.cwasm", hasher.finish()))
    }

    /// Loads the compiled component, or compiles and stores it.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        plugin_sha256: &str,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.entry_path(engine, plugin_sha256);
        let problem = match std::fs::read(&path) {
            Ok(entry) => match verified_payload(&entry) {
                // SAFETY: the digest proves these are the bytes this host wrote
                // from `precompile_component`; wasmtime re-checks the engine.
                Ok(payload) => match unsafe { Component::deserialize(engine, payload) } {
                    Ok(component) => return Ok((component, CacheOutcome::Hit)),
                    Err(e) => Some(format!("it was built for another engine ({e})")),
                },
                Err(why) => Some(why),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(format!("it cannot be read ({e})")),
        };
        if problem.is_some() {
            let _ = std::fs::remove_file(&path);
        }
        let payload = engine.precompile_component(wasm)?;
        // SAFETY: just produced by this engine.
        let component = unsafe { Component::deserialize(engine, &payload)? };
        let stored = self.store(&path, &payload).is_ok();
        let outcome = match (problem, stored) {
            (Some(why), true) => CacheOutcome::Replaced(why),
            (_, stored) => CacheOutcome::Compiled { stored },
        };
        Ok((component, outcome))
    }

    /// Writes an entry atomically: a reader sees the old file, the new one, or none.
    fn store(&self, path: &Path, payload: &[u8]) -> std::io::Result<()> {
        create_private_dir(&self.dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(MAGIC)?;
        tmp.write_all(blake3::hash(payload).as_bytes())?;
        tmp.write_all(payload)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The payload of an entry whose frame and digest check out.
fn verified_payload(entry: &[u8]) -> Result<&[u8], String> {
    let header = MAGIC.len() + DIGEST_LEN;
    if entry.len() < header || &entry[..MAGIC.len()] != MAGIC {
        return Err("it is not a nuntiq-host cache entry".into());
    }
    let (digest, payload) = entry[MAGIC.len()..].split_at(DIGEST_LEN);
    if blake3::hash(payload).as_bytes() != digest {
        return Err("its checksum does not match (corrupt or truncated)".into());
    }
    Ok(payload)
}

/// The cache holds native code: only this user may write there.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        Engine::default()
    }

    /// The smallest component.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn second_load_is_a_hit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path().join("c"));
        let e = engine();
        let (_, first) = cache.load_or_compile(&e, EMPTY_COMPONENT, "abc").unwrap();
        assert_eq!(first, CacheOutcome::Compiled { stored: true });
        let (_, second) = cache.load_or_compile(&e, EMPTY_COMPONENT, "abc").unwrap();
        assert_eq!(second, CacheOutcome::Hit);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cache.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn corrupt_truncated_and_foreign_entries_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path().to_owned());
        let e = engine();
        cache.load_or_compile(&e, EMPTY_COMPONENT, "abc").unwrap();
        let path = cache.entry_path(&e, "abc");
        let good = std::fs::read(&path).unwrap();

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        std::fs::write(&path, &flipped).unwrap();
        let (_, outcome) = cache.load_or_compile(&e, EMPTY_COMPONENT, "abc").unwrap();
        assert!(
            matches!(&outcome, CacheOutcome::Replaced(why) if why.contains("checksum")),
            "{outcome:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), good, "rewritten");

        std::fs::write(&path, &good[..good.len() / 2]).unwrap();
        let (_, outcome) = cache.load_or_compile(&e, EMPTY_COMPONENT, "abc").unwrap();
        assert!(matches!(outcome, CacheOutcome::Replaced(_)));

        // A well-framed entry whose payload is not this engine's code.
        let garbage = b"definitely not a compiled component";
        let mut foreign = MAGIC.to_vec();
        foreign.extend_from_slice(blake3::hash(garbage).as_bytes());
        foreign.extend_from_slice(garbage);
        std::fs::write(&path, &foreign).unwrap();
        let (_, outcome) = cache.load_or_compile(&e, EMPTY_COMPONENT, "abc").unwrap();
        assert!(
            matches!(&outcome, CacheOutcome::Replaced(why) if why.contains("another engine")),
            "{outcome:?}"
        );

        std::fs::write(&path, b"x").unwrap();
        let (_, outcome) = cache.load_or_compile(&e, EMPTY_COMPONENT, "abc").unwrap();
        assert!(matches!(&outcome, CacheOutcome::Replaced(why) if why.contains("not a nuntiq-host cache entry")));
        let (_, outcome) = cache.load_or_compile(&e, EMPTY_COMPONENT, "abc").unwrap();
        assert_eq!(outcome, CacheOutcome::Hit);
    }

    #[test]
    fn an_unwritable_cache_still_compiles() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let cache = CompileCache::new(blocker.join("sub"));
        let (_, outcome) = cache.load_or_compile(&engine(), EMPTY_COMPONENT, "abc").unwrap();
        assert_eq!(outcome, CacheOutcome::Compiled { stored: false });
    }
}
