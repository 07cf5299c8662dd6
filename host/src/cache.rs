//! The compiled-component cache: a scheduled run should not pay for Cranelift.
//!
//! An entry is native code that wasmtime loads without checking it, so the
//! cache trusts nothing it did not write itself:
//!
//! - each entry is framed with a MAC (keyed BLAKE3) over the plugin's SHA-256,
//!   the engine's compatibility hash and the payload, under a key kept outside
//!   the cache directory (`<config dir>/nuntiq-host/cache.key`, mode 0600): an
//!   entry of another plugin copied to this plugin's name, or a file someone
//!   planted, fails the check and is recompiled, never loaded;
//! - entries are opened without following symlinks and written atomically
//!   (temp file + rename);
//! - a cache directory or key file that another user could write is not used
//!   at all: the plugin is compiled and the log says how to fix it.

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 16] = b"NUNTIQ-CWASM\0v2\0";
const MAC_LEN: usize = 32;
/// Separates this MAC's inputs from any other use of the key.
const MAC_CONTEXT: &[u8] = b"nuntiq-host compile cache entry v2";

/// How a component was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from a valid entry.
    Hit,
    /// Compiled; `stored` says whether an entry was written.
    Compiled { stored: bool },
    /// The entry was unusable (the reason says why); compiled and replaced.
    Replaced(String),
    /// The cache directory or its key is not safe to use (the reason says why
    /// and how to fix it); compiled without the cache.
    Refused(String),
    /// Caching is off.
    Disabled,
}

/// A directory of compiled components and the key that authenticates them.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    key_file: PathBuf,
}

impl CompileCache {
    /// `$XDG_CACHE_HOME/nuntiq-host` (usually `~/.cache/nuntiq-host`).
    pub fn default_dir() -> Option<PathBuf> {
        dirs::cache_dir().map(|d| d.join("nuntiq-host"))
    }

    /// `$XDG_CONFIG_HOME/nuntiq-host/cache.key` (usually `~/.config/…`), or
    /// beside the cache directory when no config directory is known.
    pub fn default_key_file(dir: &Path) -> PathBuf {
        dirs::config_dir().map_or_else(
            || dir.with_extension("key"),
            |d| d.join("nuntiq-host").join("cache.key"),
        )
    }

    pub fn new(dir: PathBuf) -> Self {
        let key_file = Self::default_key_file(&dir);
        Self { dir, key_file }
    }

    pub fn with_key_file(mut self, key_file: PathBuf) -> Self {
        self.key_file = key_file;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry for this plugin under this engine's configuration.
    pub fn entry_path(&self, engine: &Engine, plugin_sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{plugin_sha256}-{:016x}.cwasm", engine_hash(engine)))
    }

    /// Loads the compiled component, or compiles it with `compile` and stores
    /// it. `compile` returns the engine's precompiled form of the plugin made
    /// by this binary (in a compile child, or `Engine::precompile_component`):
    /// it is loaded as such. A hit never calls it; a failed compile stores nothing.
    pub fn load_or_compile<E: From<wasmtime::Error>>(
        &self,
        engine: &Engine,
        plugin_sha256: &str,
        compile: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<(Component, CacheOutcome), E> {
        let key = match self.prepare() {
            Ok(key) => key,
            Err(why) => {
                let payload = compile()?;
                // SAFETY: made by this binary's compiler (see above), not read from the cache.
                let component = unsafe { Component::deserialize(engine, &payload)? };
                return Ok((component, CacheOutcome::Refused(why)));
            }
        };
        let path = self.entry_path(engine, plugin_sha256);
        let binding = Binding::new(plugin_sha256, engine);
        let problem = match read_entry(&path) {
            Ok(entry) => match verified_payload(&entry, &key, &binding) {
                // SAFETY: the MAC proves this host wrote these bytes from
                // `precompile_component` for this plugin and engine; wasmtime
                // re-checks the engine.
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
        let payload = compile()?;
        // SAFETY: just produced by this binary's compiler for this engine.
        let component = unsafe { Component::deserialize(engine, &payload)? };
        let stored = self.store(&path, &key, &binding, &payload).is_ok();
        let outcome = match (problem, stored) {
            (Some(why), true) => CacheOutcome::Replaced(why),
            (_, stored) => CacheOutcome::Compiled { stored },
        };
        Ok((component, outcome))
    }

    /// Makes sure the directory and the key are ours alone; returns the key.
    fn prepare(&self) -> Result<[u8; 32], String> {
        if let Err(e) = create_private_dir(&self.dir) {
            // An unwritable location still compiles; storing will fail and say so.
            if !self.dir.exists() {
                return Err(format!("{} cannot be created ({e})", self.dir.display()));
            }
        }
        check_private(&self.dir, "the compile cache directory", 0o022)?;
        load_or_create_key(&self.key_file, "the cache key")
    }

    /// Writes an entry atomically: a reader sees the old file, the new one, or none.
    fn store(&self, path: &Path, key: &[u8; 32], binding: &Binding, payload: &[u8]) -> std::io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(MAGIC)?;
        tmp.write_all(&mac(key, binding, payload))?;
        tmp.write_all(payload)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// What an entry is bound to besides its payload.
struct Binding {
    plugin_sha256: String,
    engine_hash: u64,
}

impl Binding {
    fn new(plugin_sha256: &str, engine: &Engine) -> Self {
        Self {
            plugin_sha256: plugin_sha256.to_owned(),
            engine_hash: engine_hash(engine),
        }
    }
}

fn engine_hash(engine: &Engine) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    hasher.finish()
}

fn mac(key: &[u8; 32], binding: &Binding, payload: &[u8]) -> [u8; MAC_LEN] {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(MAC_CONTEXT);
    hasher.update(binding.plugin_sha256.as_bytes());
    hasher.update(&binding.engine_hash.to_le_bytes());
    hasher.update(payload);
    *hasher.finalize().as_bytes()
}

/// Reads an entry without following a symlink to it.
fn read_entry(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::other("it is a symlink, which the cache never follows")
            } else {
                e
            }
        })?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("it is not a regular file"));
    }
    let mut entry = Vec::new();
    file.read_to_end(&mut entry)?;
    Ok(entry)
}

/// The payload of an entry whose frame and MAC check out for this binding.
fn verified_payload<'a>(entry: &'a [u8], key: &[u8; 32], binding: &Binding) -> Result<&'a [u8], String> {
    let header = MAGIC.len() + MAC_LEN;
    if entry.len() < header || &entry[..MAGIC.len()] != MAGIC {
        return Err("it is not a nuntiq-host cache entry".into());
    }
    let (tag, payload) = entry[MAGIC.len()..].split_at(MAC_LEN);
    // Constant-time comparison (blake3's Hash equality).
    if blake3::Hash::from_bytes(mac(key, binding, payload))
        != blake3::Hash::from_bytes(tag.try_into().expect("32 bytes"))
    {
        return Err(
            "its MAC does not match (corrupt, truncated, written for another plugin, or not written by this host)"
                .into(),
        );
    }
    Ok(payload)
}

/// The cache holds native code: only this user may write there.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Refuses a path that is a symlink, belongs to another user, or whose mode
/// has any bit of `forbidden` set.
fn check_private(path: &Path, what: &str, forbidden: u32) -> Result<(), String> {
    let meta =
        std::fs::symlink_metadata(path).map_err(|e| format!("{what} {} cannot be read ({e})", path.display()))?;
    if meta.file_type().is_symlink() {
        return Err(format!(
            "{what} {} is a symlink; point --cache-dir at the real directory",
            path.display()
        ));
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    if meta.uid() != uid {
        return Err(format!(
            "{what} {} belongs to user {}, not to this user ({uid}); use a directory of your own",
            path.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & forbidden != 0 {
        return Err(format!(
            "{what} {} has mode {mode:03o}, so other users could plant code or read the key; \
             fix it with `chmod {:03o} {}`",
            path.display(),
            mode & !forbidden,
            path.display()
        ));
    }
    Ok(())
}

/// A host's own key (`what`: "the cache key", "the secrets key"): read from
/// `path`, or created there (mode 0600) on first use.
pub(crate) fn load_or_create_key(path: &Path, what: &str) -> Result<[u8; 32], String> {
    let shown = path.display();
    if !path.exists() {
        if let Some(parent) = path.parent() {
            create_private_dir(parent).map_err(|e| format!("{what}'s directory cannot be created ({e})"))?;
        }
        let mut seed = Vec::with_capacity(64);
        for _ in 0..4 {
            seed.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        let key = *blake3::hash(&seed).as_bytes();
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| f.write_all(&key).and_then(|_| f.sync_all()));
        match written {
            Ok(()) => return Ok(key),
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("{what} {shown} cannot be written ({e})")),
        }
    }
    check_private(path, what, 0o077)?;
    let bytes = read_entry(path).map_err(|e| format!("{what} {shown} cannot be read ({e})"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{what} {shown} is not 32 bytes; delete it and a new one is made"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn engine() -> Engine {
        Engine::default()
    }

    /// The smallest component.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    /// Compiles the smallest component in this process.
    fn compile(engine: &Engine) -> impl FnOnce() -> wasmtime::Result<Vec<u8>> + '_ {
        || engine.precompile_component(EMPTY_COMPONENT)
    }

    fn cache(dir: &Path) -> CompileCache {
        CompileCache::new(dir.join("c")).with_key_file(dir.join("config").join("cache.key"))
    }

    #[test]
    fn second_load_is_a_hit_and_everything_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        let e = engine();
        let (_, first) = cache.load_or_compile(&e, "abc", compile(&e)).unwrap();
        assert_eq!(first, CacheOutcome::Compiled { stored: true });
        let (_, second) = cache.load_or_compile(&e, "abc", compile(&e)).unwrap();
        assert_eq!(second, CacheOutcome::Hit);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(cache.dir()), 0o700);
        assert_eq!(mode(&dir.path().join("config/cache.key")), 0o600);
    }

    #[test]
    fn corrupt_truncated_foreign_and_unkeyed_entries_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        let e = engine();
        cache.load_or_compile(&e, "abc", compile(&e)).unwrap();
        let path = cache.entry_path(&e, "abc");
        let good = std::fs::read(&path).unwrap();

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        std::fs::write(&path, &flipped).unwrap();
        let (_, outcome) = cache.load_or_compile(&e, "abc", compile(&e)).unwrap();
        assert!(
            matches!(&outcome, CacheOutcome::Replaced(why) if why.contains("MAC does not match")),
            "{outcome:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), good, "rewritten");

        std::fs::write(&path, &good[..good.len() / 2]).unwrap();
        let (_, outcome) = cache.load_or_compile(&e, "abc", compile(&e)).unwrap();
        assert!(matches!(outcome, CacheOutcome::Replaced(_)));

        // Framed like ours, with an unkeyed digest: someone without the key wrote it.
        let garbage = b"definitely not a compiled component";
        let mut forged = MAGIC.to_vec();
        forged.extend_from_slice(blake3::hash(garbage).as_bytes());
        forged.extend_from_slice(garbage);
        std::fs::write(&path, &forged).unwrap();
        let (_, outcome) = cache.load_or_compile(&e, "abc", compile(&e)).unwrap();
        assert!(
            matches!(&outcome, CacheOutcome::Replaced(why) if why.contains("MAC does not match")),
            "{outcome:?}"
        );

        std::fs::write(&path, b"x").unwrap();
        let (_, outcome) = cache.load_or_compile(&e, "abc", compile(&e)).unwrap();
        assert!(matches!(&outcome, CacheOutcome::Replaced(why) if why.contains("not a nuntiq-host cache entry")));
        let (_, outcome) = cache.load_or_compile(&e, "abc", compile(&e)).unwrap();
        assert_eq!(outcome, CacheOutcome::Hit);
    }

    #[test]
    fn another_plugins_entry_under_this_plugins_name_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        let e = engine();
        cache.load_or_compile(&e, "other", compile(&e)).unwrap();
        std::fs::copy(cache.entry_path(&e, "other"), cache.entry_path(&e, "mine")).unwrap();
        let (_, outcome) = cache.load_or_compile(&e, "mine", compile(&e)).unwrap();
        assert!(
            matches!(&outcome, CacheOutcome::Replaced(why) if why.contains("written for another plugin")),
            "{outcome:?}"
        );
    }

    #[test]
    fn symlinked_entries_and_shared_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        let e = engine();
        cache.load_or_compile(&e, "other", compile(&e)).unwrap();
        let path = cache.entry_path(&e, "mine");
        std::os::unix::fs::symlink(cache.entry_path(&e, "other"), &path).unwrap();
        let (_, outcome) = cache.load_or_compile(&e, "mine", compile(&e)).unwrap();
        assert!(
            matches!(&outcome, CacheOutcome::Replaced(why) if why.contains("symlink")),
            "{outcome:?}"
        );

        std::fs::set_permissions(cache.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let (_, outcome) = cache.load_or_compile(&e, "mine", compile(&e)).unwrap();
        assert!(
            matches!(&outcome, CacheOutcome::Refused(why) if why.contains("has mode 777") && why.contains("chmod 755")),
            "{outcome:?}"
        );
    }

    #[test]
    fn an_unwritable_cache_still_compiles() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let cache = CompileCache::new(blocker.join("sub")).with_key_file(dir.path().join("k"));
        let e = engine();
        let (_, outcome) = cache.load_or_compile(&e, "abc", compile(&e)).unwrap();
        assert!(matches!(outcome, CacheOutcome::Refused(_)), "{outcome:?}");
    }

    #[test]
    fn a_hit_never_compiles_and_a_failed_compile_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        let e = engine();
        let failed = cache.load_or_compile(&e, "abc", || Err(wasmtime::Error::msg("out of memory")));
        assert!(failed.is_err());
        assert!(!cache.entry_path(&e, "abc").exists(), "nothing stored");
        cache.load_or_compile(&e, "abc", compile(&e)).unwrap();
        let (_, outcome) = cache
            .load_or_compile(&e, "abc", || -> wasmtime::Result<Vec<u8>> { panic!("a hit compiled") })
            .unwrap();
        assert_eq!(outcome, CacheOutcome::Hit);
    }
}

/// One file of the cache directory, as `cache list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEntry {
    pub file: PathBuf,
    /// The plugin's SHA-256, from the entry's name.
    pub plugin_sha256: String,
    pub size_bytes: u64,
    pub written: std::time::SystemTime,
    /// Written by this build of the host for this engine (others are never loaded).
    pub current: bool,
}

/// The entries of `dir` (`<sha256>-<engine>.cwasm`, never following a symlink), oldest first.
pub fn entries(dir: &Path, engine: &Engine) -> std::io::Result<Vec<ListedEntry>> {
    let suffix = format!("-{:016x}.cwasm", engine_hash(engine));
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".cwasm") else {
            continue;
        };
        let meta = std::fs::symlink_metadata(entry.path())?;
        if !meta.is_file() {
            continue;
        }
        found.push(ListedEntry {
            file: entry.path(),
            plugin_sha256: stem.split('-').next().unwrap_or_default().to_owned(),
            size_bytes: meta.len(),
            written: meta.modified()?,
            current: name.ends_with(&suffix),
        });
    }
    found.sort_by_key(|e| e.written);
    Ok(found)
}

/// The engine every run of this build compiles for.
fn this_engine() -> Result<Engine, String> {
    let settings = crate::runtime::EngineSettings::of(&crate::limits::Limits::default());
    Engine::new(&crate::runtime::engine_config(&settings)).map_err(|e| format!("failed to create the wasm engine: {e:#}"))
}

/// `nuntiq-host cache list`.
pub fn list(dir: &Path, out: &mut dyn Write) -> Result<(), String> {
    let found = match entries(dir, &this_engine()?) {
        Ok(found) => found,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("cannot read the compile cache {} ({e})", dir.display())),
    };
    let total: u64 = found.iter().map(|e| e.size_bytes).sum();
    let print = |out: &mut dyn Write| -> std::io::Result<()> {
        for e in &found {
            let written = chrono::DateTime::<chrono::Utc>::from(e.written).format("%Y-%m-%d %H:%M UTC");
            let whose = if e.current {
                "this host"
            } else {
                "another build (never loaded; prune removes it)"
            };
            writeln!(
                out,
                "{}  {:>10}  {written}  {whose}",
                e.plugin_sha256,
                bytesize::ByteSize(e.size_bytes).to_string()
            )?;
        }
        writeln!(
            out,
            "{} entries, {} in {}",
            found.len(),
            bytesize::ByteSize(total),
            dir.display()
        )
    };
    print(out).or_else(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Ok(())
        } else {
            Err(e.to_string())
        }
    })
}

/// `nuntiq-host cache prune [--older-than D]`: removes entries this build
/// cannot load and those written longer than `older_than` ago (every entry
/// without it); a run recompiles what it needs.
pub fn prune(dir: &Path, older_than: Option<std::time::Duration>, out: &mut dyn Write) -> Result<(), String> {
    let found = match entries(dir, &this_engine()?) {
        Ok(found) => found,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("cannot read the compile cache {} ({e})", dir.display())),
    };
    let now = std::time::SystemTime::now();
    let (mut removed, mut freed, mut kept) = (0usize, 0u64, 0usize);
    for e in found {
        let old = match older_than {
            None => true,
            Some(d) => now.duration_since(e.written).is_ok_and(|age| age > d),
        };
        if !e.current || old {
            std::fs::remove_file(&e.file).map_err(|err| format!("cannot remove {} ({err})", e.file.display()))?;
            removed += 1;
            freed += e.size_bytes;
        } else {
            kept += 1;
        }
    }
    writeln!(
        out,
        "removed {removed} entries ({}), kept {kept} in {}",
        bytesize::ByteSize(freed),
        dir.display()
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod listing_tests {
    use super::*;

    #[test]
    fn prune_removes_old_and_foreign_entries_and_keeps_fresh_ones() {
        let dir = tempfile::tempdir().unwrap();
        let engine = this_engine().unwrap();
        let cache = CompileCache::new(dir.path().join("c")).with_key_file(dir.path().join("key"));
        let wasm = wat_component();
        cache
            .load_or_compile(&engine, "aa11", || engine.precompile_component(&wasm))
            .unwrap();
        let foreign = cache.dir().join("bb22-0000000000000000.cwasm");
        std::fs::write(&foreign, b"from another build").unwrap();
        let listed = entries(cache.dir(), &engine).unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(listed.iter().any(|e| e.plugin_sha256 == "aa11" && e.current));
        assert!(listed.iter().any(|e| e.plugin_sha256 == "bb22" && !e.current));
        let mut out = Vec::new();
        list(cache.dir(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("2 entries"), "{text}");

        let mut out = Vec::new();
        prune(cache.dir(), Some(std::time::Duration::from_secs(3600)), &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("removed 1 entries"));
        assert!(!foreign.exists(), "an entry this build never loads goes");
        assert_eq!(entries(cache.dir(), &engine).unwrap().len(), 1, "a fresh entry stays");
        prune(cache.dir(), None, &mut Vec::new()).unwrap();
        assert!(entries(cache.dir(), &engine).unwrap().is_empty());
        // A cache that was never made is empty, not an error.
        prune(&dir.path().join("none"), None, &mut Vec::new()).unwrap();
    }

    /// The smallest component there is.
    fn wat_component() -> Vec<u8> {
        b"\0asm\x0d\0\x01\0".to_vec()
    }
}
