//! Embeds what `nuntiq-host new` and `nuntiq-host wit` write: the guest SDK
//! (`guests/sdk`: its Cargo.toml, sources and its copy of the contract) and
//! the project templates (`host/templates`), so the binary alone is enough.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a readable directory").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(root, &path, out);
        } else {
            let relative = path.strip_prefix(root).expect("inside root");
            out.push((relative.to_string_lossy().replace('\\', "/"), path));
        }
    }
}

fn table(name: &str, root: &Path, keep: impl Fn(&str) -> bool) -> String {
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    walk(root, root, &mut files);
    let mut out = format!("pub static {name}: &[(&str, &[u8])] = &[\n");
    for (relative, path) in files.into_iter().filter(|(r, _)| keep(r)) {
        let absolute = path.canonicalize().expect("a file that exists");
        writeln!(
            out,
            "    ({relative:?}, include_bytes!({:?})),",
            absolute.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    out
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let sdk = manifest.join("../guests/sdk");
    let mut code = table("SDK", &sdk, |r| {
        r == "Cargo.toml" || r.starts_with("src/") || r.starts_with("wit/")
    });
    code.push_str(&table("TEMPLATES", &manifest.join("templates"), |_| true));
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("embedded.rs");
    std::fs::write(out, code).unwrap();
}
