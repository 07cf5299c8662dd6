//! `nuntiq-host inspect`: what a plugin is and whether this host can run it —
//! its contract, imports and exports, size and SHA-256, and, when its
//! structure and imports check out, a full link against its world (compiled
//! through the cache, under the compile limits).

use crate::cache::CompileCache;
use crate::compile::CompileLimits;
use crate::limits::Limits;
use crate::plugin::{Contract, Metadata, Name};
use crate::runtime::{PluginError, Runtime, check_shape, check_structure, read_plugin};
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// What `inspect` found.
#[derive(Debug, Serialize)]
pub struct Inspection {
    pub plugin: String,
    pub size_bytes: u64,
    pub sha256: String,
    /// The contract its imports name, when they name one this host knows.
    pub contract: Option<Contract>,
    /// `nuntiq:connector/connector` at that version.
    pub world: Option<String>,
    pub imports: Vec<Name>,
    pub exports: Vec<Name>,
    /// Name, version, authors and source from its metadata sections.
    pub metadata: Metadata,
    pub compatible: bool,
    /// Why not, when it is not.
    pub problems: Vec<String>,
}

/// Inspects `plugin`; `Err` when it cannot be read at all, or when one of
/// the host's limits refuses it (its structure, or what compiling it took).
pub fn inspect(plugin: &Path, cache: Option<&CompileCache>, compile: CompileLimits) -> Result<Inspection, PluginError> {
    let shown = plugin.display().to_string();
    let bytes = read_plugin(plugin)?;
    // Before anything else reads it: a nesting bomb is refused in milliseconds.
    if let Err(refused @ PluginError::OverLimit { .. }) = check_structure(&shown, &bytes) {
        return Err(refused);
    }
    let shape = crate::plugin::scan(&bytes).map_err(|reason| PluginError::Invalid {
        path: shown.clone(),
        reason,
    });
    let mut inspection = Inspection {
        plugin: shown.clone(),
        size_bytes: bytes.len() as u64,
        sha256: crate::runtime::hex_sha256(&bytes),
        contract: None,
        world: None,
        imports: Vec::new(),
        exports: Vec::new(),
        metadata: Metadata::default(),
        compatible: false,
        problems: Vec::new(),
    };
    if let Ok(shape) = &shape {
        inspection.imports = shape.imports.clone();
        inspection.exports = shape.exports.clone();
        inspection.metadata = shape.metadata.clone();
        if let Some(contract) = shape.declared_contract() {
            inspection.contract = Some(contract);
            inspection.world = Some(format!("nuntiq:connector/connector@{}", contract.version()));
        }
    }
    // The same checks as run-plugin, in the same order: the cheap one first.
    let checked = check_shape(&shown, &bytes).and_then(|_| {
        let runtime = Runtime::new(&Limits::default(), compile).map_err(|e| PluginError::Invalid {
            path: shown.clone(),
            reason: format!("{e:#}"),
        })?;
        runtime.load(plugin, cache).map(|_| ())
    });
    match checked {
        Ok(()) => inspection.compatible = true,
        Err(e) if e.is_limit() => return Err(e),
        Err(e) => inspection.problems.push(e.to_string()),
    }
    Ok(inspection)
}

/// Prints an inspection for people.
pub fn print(inspection: &Inspection, out: &mut dyn Write) -> std::io::Result<()> {
    let i = inspection;
    writeln!(out, "plugin      {}", i.plugin)?;
    writeln!(
        out,
        "size        {} ({} bytes)",
        bytesize::ByteSize(i.size_bytes),
        i.size_bytes
    )?;
    writeln!(out, "sha256      {}", i.sha256)?;
    let m = &i.metadata;
    for (label, value) in [
        ("name", &m.name),
        ("version", &m.version),
        ("authors", &m.authors),
        ("source", &m.source),
        ("description", &m.description),
    ] {
        if let Some(value) = value {
            writeln!(out, "{label:<12}{}", crate::admin::esc(value))?;
        }
    }
    if m.is_empty() {
        writeln!(
            out,
            "name        (no metadata sections: `wasm-tools metadata add` writes them)"
        )?;
    }
    writeln!(
        out,
        "world       {}",
        i.world
            .as_deref()
            .unwrap_or("(not a nuntiq:connector contract this host knows)")
    )?;
    for (label, names) in [("imports", &i.imports), ("exports", &i.exports)] {
        let mut first = true;
        for name in names.iter() {
            writeln!(out, "{:<12}{}", if first { label } else { "" }, name.name)?;
            first = false;
        }
        if first {
            writeln!(out, "{label:<12}(none)")?;
        }
    }
    if i.compatible {
        writeln!(out, "compatible  yes: this host links every import and calls its `run`")?;
    } else {
        writeln!(out, "compatible  no")?;
        for problem in &i.problems {
            writeln!(out, "why         {problem}")?;
        }
    }
    Ok(())
}
