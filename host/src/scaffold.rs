//! `nuntiq-host new`: a connector crate that builds outside this repository
//! with `cargo build --release` and `cargo component build --release`, and
//! runs at once against the fixtures it ships with.

use std::path::{Path, PathBuf};

/// Where the new crate gets the guest SDK (`nuntiq-connector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    Path(PathBuf),
    Git { url: String, rev: Option<String> },
}

impl SdkSource {
    /// The SDK of the checkout this binary was built from, when it is still there.
    pub fn from_build() -> Option<Self> {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests/sdk");
        sdk.join("Cargo.toml")
            .is_file()
            .then(|| Self::Path(sdk.canonicalize().unwrap_or(sdk)))
    }

    fn dependency(&self) -> String {
        let quoted = |s: &str| toml_string(s);
        match self {
            SdkSource::Path(path) => format!(
                "nuntiq-connector = {{ path = {} }}",
                quoted(&path.display().to_string())
            ),
            SdkSource::Git { url, rev: None } => format!("nuntiq-connector = {{ git = {} }}", quoted(url)),
            SdkSource::Git { url, rev: Some(rev) } => {
                format!("nuntiq-connector = {{ git = {}, rev = {} }}", quoted(url), quoted(rev))
            }
        }
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const FILES: [(&str, &str); 8] = [
    ("Cargo.toml", include_str!("../templates/connector/Cargo.toml.tmpl")),
    (
        ".cargo/config.toml",
        include_str!("../templates/connector/cargo/config.toml"),
    ),
    (".gitignore", include_str!("../templates/connector/gitignore")),
    ("src/lib.rs", include_str!("../templates/connector/src/lib.rs")),
    (
        "settings.example.json",
        include_str!("../templates/connector/settings.example.json.tmpl"),
    ),
    ("README.md", include_str!("../templates/connector/README.md.tmpl")),
    (
        "fixtures/v1/suppliers@page=1.json",
        include_str!("../templates/connector/fixtures/v1/suppliers@page=1.json"),
    ),
    (
        "fixtures/v1/suppliers@page=2.json",
        include_str!("../templates/connector/fixtures/v1/suppliers@page=2.json"),
    ),
];

/// Checks a crate name the way cargo would want it for a cdylib.
fn check_name(name: &str) -> Result<(), String> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a connector name: use lowercase letters, digits, - and _, starting with a letter \
             (e.g. acme-suppliers)"
        ))
    }
}

/// Writes the crate `name` into `dir/name`; refuses to touch an existing directory.
/// Returns the crate's directory.
pub fn new_connector(name: &str, dir: &Path, sdk: &SdkSource) -> Result<PathBuf, String> {
    check_name(name)?;
    let root = dir.join(name);
    if root.exists() {
        return Err(format!("{} already exists; pick another name or --dir", root.display()));
    }
    let lib_name = name.replace('-', "_");
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{lib_name}}", &lib_name)
            .replace("{{connector_name}}", &lib_name)
            .replace("{{sdk_dependency}}", &sdk.dependency())
    };
    for (path, text) in FILES {
        let target = root.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&target, fill(text)).map_err(|e| format!("cannot write {}: {e}", target.display()))?;
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_crate_has_every_file_filled_in() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = SdkSource::Path("/opt/nuntiq \"sdk\"".into());
        let root = new_connector("acme-suppliers", dir.path(), &sdk).unwrap();
        let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"acme-suppliers\""), "{cargo}");
        assert!(
            cargo.contains(r#"nuntiq-connector = { path = "/opt/nuntiq \"sdk\"" }"#),
            "{cargo}"
        );
        let settings: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("settings.example.json")).unwrap()).unwrap();
        assert_eq!(settings["config"]["connector_name"], "acme_suppliers");
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        assert!(
            readme.contains("release/acme_suppliers.wasm") && !readme.contains("{{"),
            "{readme}"
        );
        assert!(root.join("fixtures/v1/suppliers@page=2.json").is_file());
        assert!(
            new_connector("acme-suppliers", dir.path(), &sdk)
                .unwrap_err()
                .contains("already exists")
        );
        assert!(
            new_connector("Acme", dir.path(), &sdk)
                .unwrap_err()
                .contains("not a connector name")
        );
        let git = SdkSource::Git {
            url: "https://git.example.com/nuntiq.git".into(),
            rev: Some("v0.2.0".into()),
        };
        assert_eq!(
            git.dependency(),
            r#"nuntiq-connector = { git = "https://git.example.com/nuntiq.git", rev = "v0.2.0" }"#
        );
    }
}
