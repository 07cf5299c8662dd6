//! What a plugin file is, read before anything is compiled: its top-level
//! imports and exports (with their versions), which contract it targets, and
//! whether this host can link it — so a plugin the host cannot run is refused
//! in milliseconds, naming the import, the version it wants and what the host
//! offers, and nothing is compiled or cached.

use std::fmt;

/// A contract version this host links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Contract {
    #[serde(rename = "nuntiq:connector@0.1.0")]
    V0_1,
    #[serde(rename = "nuntiq:connector@0.2.1")]
    V0_2,
    #[serde(rename = "nuntiq:connector@0.3.0")]
    V0_3,
}

impl Contract {
    /// Every contract this host links, oldest first: the one list the host's
    /// imports, `--version` and messages are made from.
    pub const ALL: [Contract; 3] = [Contract::V0_1, Contract::V0_2, Contract::V0_3];

    /// What `nuntiq-host new` builds against and the SDK carries.
    pub const CURRENT: Contract = Contract::V0_3;

    pub fn version(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.1",
            Contract::V0_3 => "0.3.0",
        }
    }

    /// The released versions a connector may have been built against and run
    /// on this contract's bindings (earlier patch versions link by semver).
    pub fn runs(self) -> &'static [&'static str] {
        match self {
            Contract::V0_1 => &["0.1.0"],
            Contract::V0_2 => &["0.2.0", "0.2.1"],
            Contract::V0_3 => &["0.3.0"],
        }
    }

    /// Every contract version this host runs: `0.1.0, 0.2.0, 0.2.1, 0.3.0`.
    pub fn all_runnable() -> Vec<&'static str> {
        Self::ALL.iter().flat_map(|c| c.runs().iter().copied()).collect()
    }
}

impl fmt::Display for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nuntiq:connector@{}", self.version())
    }
}

/// The Nuntiq interfaces of both contracts.
const NUNTIQ_INTERFACES: [&str; 6] = ["types", "context", "logger", "http", "delta-state", "supplier-load"];

/// The WASI p2 interfaces the host links (wasi:cli/imports), at this version.
pub const WASI_VERSION: &str = "0.2.12";
const WASI_INTERFACES: [&str; 22] = [
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
];
/// Further socket interfaces (all denied at run time, but linked).
const WASI_SOCKET_INTERFACES: [&str; 5] = [
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// wasi:http's outgoing side, sent under the network policy (no incoming handler).
const WASI_HTTP_INTERFACES: [&str; 2] = ["wasi:http/types", "wasi:http/outgoing-handler"];

/// Every interface this host links, as `name@version`.
pub fn offered() -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for contract in Contract::ALL {
        for iface in NUNTIQ_INTERFACES {
            names.push(format!("nuntiq:connector/{iface}@{}", contract.version()));
        }
    }
    for iface in WASI_INTERFACES
        .iter()
        .chain(&WASI_SOCKET_INTERFACES)
        .chain(&WASI_HTTP_INTERFACES)
    {
        names.push(format!("{iface}@{WASI_VERSION}"));
    }
    names
}

/// A name as the component model writes it: `ns:pkg/iface@version`, or a
/// plain name (`run`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Name {
    pub name: String,
    /// `ns:pkg/iface` without the version.
    #[serde(skip)]
    pub unversioned: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Name {
    fn parse(name: &str) -> Self {
        let (unversioned, version) = match name.rsplit_once('@') {
            Some((base, version)) if base.contains('/') => (base.to_owned(), Some(version.to_owned())),
            _ => (name.to_owned(), None),
        };
        Self {
            name: name.to_owned(),
            unversioned,
            version,
        }
    }
}

/// What a component says about itself in its metadata sections (as
/// `wasm-tools metadata add` writes them: `component-name`, `version`,
/// `authors`, `source`, `description`). The component's own sections win;
/// a Rust connector's come from its core module, where the SDK writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Metadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authors: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Longest metadata value kept, in bytes (it is shown and stored).
const MAX_METADATA_VALUE: usize = 512;

impl Metadata {
    pub fn is_empty(&self) -> bool {
        *self == Metadata::default()
    }

    /// Takes a metadata section's value, unless one nearer the top was found.
    fn take(&mut self, section: &str, data: &[u8]) {
        let slot = match section {
            "component-name" => &mut self.name,
            "version" => &mut self.version,
            "authors" => &mut self.authors,
            "source" => &mut self.source,
            "description" => &mut self.description,
            _ => return,
        };
        if slot.is_some() {
            return;
        }
        let text = if section == "component-name" {
            component_name(data)
        } else {
            std::str::from_utf8(data).ok().map(str::to_owned)
        };
        // A connector's text is hostile to the views that show it: no control characters, bounded.
        *slot = text
            .map(|t| t.chars().filter(|c| !c.is_control()).collect::<String>())
            .map(|t| t.trim().chars().take(MAX_METADATA_VALUE).collect::<String>())
            .filter(|t| !t.is_empty());
    }
}

/// The name in a `component-name` section: subsection 0 holds it.
fn component_name(data: &[u8]) -> Option<String> {
    let mut reader = wasmparser::BinaryReader::new(data, 0);
    while !reader.eof() {
        let id = reader.read_u8().ok()?;
        let size = reader.read_var_u32().ok()? as usize;
        let body = reader.read_bytes(size).ok()?;
        if id == 0 {
            return wasmparser::BinaryReader::new(body, 0)
                .read_string()
                .ok()
                .map(str::to_owned);
        }
    }
    None
}

/// What [`scan`] found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Shape {
    pub imports: Vec<Name>,
    pub exports: Vec<Name>,
    /// Name, version, authors, source from its metadata sections.
    pub metadata: Metadata,
    /// The first component-model async construct found, if any.
    #[serde(skip)]
    pub uses_async: Option<String>,
}

/// Why a plugin cannot be linked, found before compiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// An import the host does not provide in any compatible version.
    MissingImport {
        import: String,
        /// The versions of the same interface the host has, if any.
        offered: Vec<String>,
    },
    /// The plugin imports more than one contract version.
    MixedContracts,
    /// No `run` export.
    NoRun,
    /// Component-model async (which this host's engine does not run).
    ComponentModelAsync(String),
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::MissingImport { import, offered } if offered.is_empty() => write!(
                f,
                "it imports {import}, which this host does not provide (it offers nuntiq:connector@0.1.0, \
                 @0.2.1 and @0.3.0, and WASI {WASI_VERSION}: wasi:cli/imports and wasi:http/outgoing-handler); see `nuntiq-host inspect`"
            ),
            Mismatch::MissingImport { import, offered } => write!(
                f,
                "it imports {import}, but this host provides {}; rebuild the connector against one of those",
                offered.join(" and ")
            ),
            Mismatch::MixedContracts => {
                f.write_str("it imports more than one nuntiq:connector version (of 0.1.0, 0.2.x, 0.3.x); build it against one contract version")
            }
            Mismatch::ComponentModelAsync(what) => write!(
                f,
                "it uses component-model async ({what}), which this host does not run; build it without: \
                 jco's QuickJS backend needs --backend-qjs-disable-async, and any toolchain's sync ABI works"
            ),
            Mismatch::NoRun => f.write_str(
                "it does not export `run: func() -> result<string, string>`, so it is not a connector \
                 (world nuntiq:connector/connector@0.3.0, or @0.2.1, @0.1.0)",
            ),
        }
    }
}

/// Reads the top-level imports and exports of a component (nested modules
/// and components are skipped). Cheap: no validation, no compilation.
pub fn scan(bytes: &[u8]) -> Result<Shape, String> {
    use wasmparser::{Parser, Payload};
    let mut shape = Shape {
        imports: Vec::new(),
        exports: Vec::new(),
        metadata: Metadata::default(),
        uses_async: None,
    };
    // Metadata nested in a module counts only where the component has none of its own.
    let mut nested = Metadata::default();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| e.to_string())? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    shape
                        .imports
                        .push(Name::parse(import.map_err(|e| e.to_string())?.name.name));
                }
            }
            Payload::ComponentExportSection(section) if depth == 0 => {
                for export in section {
                    shape
                        .exports
                        .push(Name::parse(export.map_err(|e| e.to_string())?.name.name));
                }
            }
            Payload::CustomSection(section) if depth == 0 => shape.metadata.take(section.name(), section.data()),
            Payload::CustomSection(section) => nested.take(section.name(), section.data()),
            Payload::ComponentCanonicalSection(section) if shape.uses_async.is_none() => {
                for function in section {
                    if let Some(what) = async_construct(&function.map_err(|e| e.to_string())?) {
                        shape.uses_async = Some(what);
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    let own = &mut shape.metadata;
    own.name = own.name.take().or(nested.name);
    own.version = own.version.take().or(nested.version);
    own.authors = own.authors.take().or(nested.authors);
    own.source = own.source.take().or(nested.source);
    own.description = own.description.take().or(nested.description);
    Ok(shape)
}

/// The component-model async construct a canonical function is, if it is one:
/// an `async` lift or lower, or a task, subtask, stream or future built-in.
fn async_construct(function: &wasmparser::CanonicalFunction) -> Option<String> {
    use wasmparser::{CanonicalFunction as F, CanonicalOption as O};
    let async_option = |options: &[O]| options.iter().any(|o| matches!(o, O::Async | O::Callback(_)));
    match function {
        F::Lift { options, .. } if async_option(options) => Some("an async export".into()),
        F::Lower { options, .. } if async_option(options) => Some("an async import".into()),
        F::Lift { .. } | F::Lower { .. } | F::ResourceNew { .. } | F::ResourceDrop { .. } | F::ResourceRep { .. } => {
            None
        }
        other => {
            // TaskCancel → `task.cancel`, StreamCancelRead → `stream.cancel-read`
            let debug = format!("{other:?}");
            let name = debug.split([' ', '{', '(']).next().unwrap_or("");
            let mut dotted = String::new();
            for (i, c) in name.char_indices() {
                if c.is_uppercase() && i > 0 {
                    dotted.push(if dotted.contains('.') { '-' } else { '.' });
                }
                dotted.push(c.to_ascii_lowercase());
            }
            Some(format!("`{dotted}`"))
        }
    }
}

/// Whether a host at `offered` satisfies a guest import at `wanted`, by
/// wasmtime's semver rule: the same major version (for 0.x, the same minor;
/// for 0.0.x, the same patch).
pub fn compatible(wanted: &str, offered: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let core = v.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        Some((parts.next()??, parts.next()??, parts.next()??))
    };
    match (parse(wanted), parse(offered)) {
        (Some((0, 0, a)), Some((0, 0, b))) => a == b,
        (Some((0, a, _)), Some((0, b, _))) => a == b,
        (Some((a, _, _)), Some((b, _, _))) => a == b,
        _ => wanted == offered,
    }
}

impl Shape {
    /// The contract the plugin targets, from its Nuntiq imports (a plugin that
    /// imports none runs as the current contract).
    pub fn contract(&self) -> Result<Contract, Mismatch> {
        let mut found = None;
        for import in &self.imports {
            if !import.unversioned.starts_with("nuntiq:connector/") {
                continue;
            }
            let contract = match import.version.as_deref() {
                Some(v) if compatible(v, "0.1.0") => Contract::V0_1,
                Some(v) if compatible(v, "0.2.0") => Contract::V0_2,
                Some(v) if compatible(v, "0.3.0") => Contract::V0_3,
                _ => continue,
            };
            match found {
                Some(other) if other != contract => return Err(Mismatch::MixedContracts),
                _ => found = Some(contract),
            }
        }
        Ok(found.unwrap_or(Contract::CURRENT))
    }

    /// The contract its Nuntiq imports name, only when they all name one this
    /// host knows (for reports; running uses [`Shape::contract`]).
    pub fn declared_contract(&self) -> Option<Contract> {
        let nuntiq: Vec<&Name> = self
            .imports
            .iter()
            .filter(|i| i.unversioned.starts_with("nuntiq:connector/"))
            .collect();
        let known = |i: &&Name| {
            i.version
                .as_deref()
                .is_some_and(|v| Contract::ALL.iter().any(|c| compatible(v, c.version())))
        };
        if nuntiq.is_empty() || !nuntiq.iter().all(known) {
            return None;
        }
        self.contract().ok()
    }

    /// Every way the plugin cannot be linked here, by name and version.
    pub fn mismatches(&self) -> Vec<Mismatch> {
        let offered = offered();
        let mut out = Vec::new();
        for import in &self.imports {
            let same_interface: Vec<&String> = offered
                .iter()
                .filter(|o| o.rsplit_once('@').is_some_and(|(base, _)| base == import.unversioned))
                .collect();
            let ok = match &import.version {
                Some(v) => same_interface
                    .iter()
                    .any(|o| o.rsplit_once('@').is_some_and(|(_, ov)| compatible(v, ov))),
                None => false,
            };
            if !ok {
                out.push(Mismatch::MissingImport {
                    import: import.name.clone(),
                    offered: same_interface.into_iter().cloned().collect(),
                });
            }
        }
        if let Err(mixed) = self.contract() {
            out.push(mixed);
        }
        if !self.exports.iter().any(|e| e.name == "run") {
            out.push(Mismatch::NoRun);
        }
        if let Some(what) = &self.uses_async {
            out.push(Mismatch::ComponentModelAsync(what.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(imports: &[&str], exports: &[&str]) -> Shape {
        Shape {
            imports: imports.iter().map(|n| Name::parse(n)).collect(),
            exports: exports.iter().map(|n| Name::parse(n)).collect(),
            metadata: Metadata::default(),
            uses_async: None,
        }
    }

    #[test]
    fn versions_match_by_wasmtimes_semver_rule() {
        assert!(compatible("0.2.0", "0.2.12"));
        assert!(compatible("0.2.20", "0.2.12"));
        assert!(!compatible("0.3.0", "0.2.12"));
        assert!(!compatible("0.1.0", "0.2.0"));
        assert!(compatible("1.4.0", "1.0.0"));
        assert!(!compatible("0.0.1", "0.0.2"));
    }

    #[test]
    fn the_contract_comes_from_the_nuntiq_imports() {
        let v1 = shape(&["nuntiq:connector/context@0.1.0", "wasi:io/poll@0.2.6"], &["run"]);
        assert_eq!(v1.contract(), Ok(Contract::V0_1));
        assert!(v1.mismatches().is_empty(), "{:?}", v1.mismatches());
        let v2 = shape(&["nuntiq:connector/logger@0.2.0"], &["run"]);
        assert_eq!(v2.contract(), Ok(Contract::V0_2));
        // What StarlingMonkey (jco's default JS engine) writes for fetch().
        let fetching = shape(
            &[
                "nuntiq:connector/logger@0.2.0",
                "wasi:http/types@0.2.10",
                "wasi:http/outgoing-handler@0.2.10",
            ],
            &["run"],
        );
        assert!(fetching.mismatches().is_empty(), "{:?}", fetching.mismatches());
        let mixed = shape(
            &["nuntiq:connector/logger@0.2.0", "nuntiq:connector/context@0.1.0"],
            &["run"],
        );
        assert_eq!(mixed.contract(), Err(Mismatch::MixedContracts));
    }

    /// A custom section, as wasm-tools and the templates write one.
    fn custom(name: &str, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![name.len() as u8];
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(payload);
        let mut out = vec![0, body.len() as u8];
        out.extend(body);
        out
    }

    #[test]
    fn metadata_comes_from_the_component_before_its_modules_and_is_cleaned() {
        // A component holding one core module with its own sections, then the component's.
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        module.extend(custom("version", b"0.0.1-module"));
        module.extend(custom("authors", b"Module Author"));
        let mut wasm = b"\0asm\x0d\0\x01\0".to_vec();
        wasm.push(1); // a core module section
        wasm.push(module.len() as u8);
        wasm.extend(&module);
        let mut name = vec![0u8, 6, 5];
        name.extend_from_slice(b"hello");
        wasm.extend(custom("component-name", &name));
        wasm.extend(custom("version", b"1.2.3"));
        wasm.extend(custom("source", b"https://git.example.com/hello\x1b[31m"));
        let found = scan(&wasm).unwrap().metadata;
        assert_eq!(found.name.as_deref(), Some("hello"));
        assert_eq!(found.version.as_deref(), Some("1.2.3"), "the component's own wins");
        assert_eq!(
            found.authors.as_deref(),
            Some("Module Author"),
            "a module's fills the gaps"
        );
        assert_eq!(
            found.source.as_deref(),
            Some("https://git.example.com/hello[31m"),
            "no control characters"
        );
        assert!(scan(b"\0asm\x0d\0\x01\0").unwrap().metadata.is_empty());
    }

    #[test]
    fn async_built_ins_are_named_for_people() {
        use wasmparser::CanonicalFunction as F;
        assert_eq!(async_construct(&F::TaskCancel).as_deref(), Some("`task.cancel`"));
        assert_eq!(async_construct(&F::SubtaskDrop).as_deref(), Some("`subtask.drop`"));
        assert_eq!(
            async_construct(&F::BackpressureInc).as_deref(),
            Some("`backpressure.inc`")
        );
        assert_eq!(async_construct(&F::ResourceDrop { resource: 0 }), None);
    }

    #[test]
    fn mismatches_name_the_import_and_what_the_host_offers() {
        let s = shape(
            &[
                "nuntiq:connector/context@0.4.0",
                "wasi:keyvalue/store@0.2.0",
                "acme:x/y",
            ],
            &["start"],
        );
        let found: Vec<String> = s.mismatches().iter().map(ToString::to_string).collect();
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(
            found[0].starts_with(
                "it imports nuntiq:connector/context@0.4.0, but this host provides \
                 nuntiq:connector/context@0.1.0 and nuntiq:connector/context@0.2.1 and \
                 nuntiq:connector/context@0.3.0"
            ),
            "{}",
            found[0]
        );
        assert!(found[1].contains("wasi:keyvalue/store@0.2.0, which this host does not provide"));
        assert!(found[2].contains("acme:x/y"));
        assert!(found[3].contains("does not export `run"));
    }
}
