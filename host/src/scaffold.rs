//! `nuntiq-host new` and `nuntiq-host wit`: a connector project in Rust,
//! Python or JavaScript, for a timestamp, numeric-id or opaque-token cursor,
//! that builds and tests with only this binary and the language's own
//! toolchain. The guest SDK and the contract are embedded in the binary
//! (`build.rs`) and written into the project; nothing in it names a path of
//! the machine it was made on.

use crate::plugin::Contract;
use std::path::{Path, PathBuf};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// The connector's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// The kind of cursor the template keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cursor {
    Timestamp,
    NumericId,
    Opaque,
}

impl Cursor {
    fn dir(self) -> &'static str {
        match self {
            Cursor::Timestamp => "timestamp",
            Cursor::NumericId => "numeric-id",
            Cursor::Opaque => "opaque",
        }
    }
}

/// Where a Rust connector gets the guest SDK (`nuntiq-connector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// The SDK this binary carries, written into the crate as `sdk/`.
    Embedded,
    /// A directory holding the SDK (`--sdk-path`).
    Path(PathBuf),
    /// A git repository holding `guests/sdk` (`--sdk-git`, `--sdk-rev`).
    Git { url: String, rev: Option<String> },
}

impl SdkSource {
    /// Checks an `--sdk-path` or `--sdk-git` before anything is written.
    pub fn check(&self) -> Result<(), String> {
        match self {
            SdkSource::Embedded => Ok(()),
            SdkSource::Path(path) => {
                let manifest = path.join("Cargo.toml");
                let text = std::fs::read_to_string(&manifest).map_err(|e| {
                    format!(
                        "--sdk-path {}: cannot read {} ({e}); pass the directory holding the SDK's Cargo.toml \
                         (a checkout's guests/sdk), or leave --sdk-path out to use the SDK this nuntiq-host carries",
                        path.display(),
                        manifest.display()
                    )
                })?;
                if !text.lines().any(|l| l.replace(' ', "") == "name=\"nuntiq-connector\"") {
                    return Err(format!(
                        "--sdk-path {}: {} is not the nuntiq-connector SDK's manifest",
                        path.display(),
                        manifest.display()
                    ));
                }
                Ok(())
            }
            SdkSource::Git { url, rev } => {
                let out = std::process::Command::new("git")
                    .args(["ls-remote", "--", url])
                    .env("GIT_TERMINAL_PROMPT", "0")
                    .output()
                    .map_err(|e| format!("--sdk-git {url}: git could not be run ({e}); install git"))?;
                if !out.status.success() {
                    return Err(format!(
                        "--sdk-git {url}: not a git repository this machine can read: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                let refs = String::from_utf8_lossy(&out.stdout);
                if let Some(rev) = rev {
                    let is_commit = rev.len() >= 7 && rev.len() <= 40 && rev.chars().all(|c| c.is_ascii_hexdigit());
                    let named = refs.lines().any(|l| {
                        l.split('\t').nth(1).is_some_and(|r| {
                            r == rev
                                || r.strip_prefix("refs/tags/") == Some(rev)
                                || r.strip_prefix("refs/heads/") == Some(rev)
                        })
                    });
                    if !is_commit && !named {
                        return Err(format!("--sdk-rev {rev}: {url} has no such branch or tag"));
                    }
                }
                Ok(())
            }
        }
    }

    /// The dependency's source, inside `nuntiq-connector = { … }`.
    fn spec(&self) -> String {
        match self {
            SdkSource::Embedded => "path = \"sdk\"".into(),
            SdkSource::Path(path) => format!("path = {}", toml_string(&path.display().to_string())),
            SdkSource::Git { url, rev: None } => format!("git = {}", toml_string(url)),
            SdkSource::Git { url, rev: Some(rev) } => format!("git = {}, rev = {}", toml_string(url), toml_string(rev)),
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

/// What `nuntiq-host new` makes.
#[derive(Debug, Clone)]
pub struct NewConnector {
    pub name: String,
    /// The project is `dir/name`.
    pub dir: PathBuf,
    pub lang: Lang,
    pub cursor: Cursor,
    pub sdk: SdkSource,
}

/// Checks a project name: it is a crate, package and file name at once.
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

/// Where a template file goes: `gitignore` → `.gitignore`, `cargo/` → `.cargo/`, `.tmpl` dropped.
fn target_path(relative: &str) -> (String, bool) {
    let templated = relative.ends_with(".tmpl");
    let path = relative.trim_end_matches(".tmpl");
    let path = match path {
        "gitignore" => ".gitignore".to_owned(),
        p => p
            .strip_prefix("cargo/")
            .map_or_else(|| p.to_owned(), |rest| format!(".cargo/{rest}")),
    };
    (path, templated)
}

/// The files of a project: `(path in the project, contents)`.
fn project_files(new: &NewConnector) -> Vec<(String, Vec<u8>)> {
    let lang = match new.lang {
        Lang::Rust => "rust",
        Lang::Python => "python",
        Lang::Js => "js",
    };
    let cursor = new.cursor.dir();
    let lib_name = new.name.replace('-', "_");
    let fill = |text: &str| {
        text.replace("{{name}}", &new.name)
            .replace("{{lib_name}}", &lib_name)
            .replace("{{connector_name}}", &lib_name)
            .replace("{{contract}}", Contract::CURRENT.version())
            .replace("{{host_version}}", env!("CARGO_PKG_VERSION"))
            .replace("{{author}}", "Your Name <you@example.com>")
            .replace("{{sdk}}", &new.sdk.spec())
    };
    let layers = [
        ("common/".to_owned(), String::new()),
        (format!("{lang}/common/"), String::new()),
        (format!("{lang}/{cursor}/"), String::new()),
        (format!("fixtures/{cursor}/"), "fixtures/".to_owned()),
    ];
    let mut files = Vec::new();
    for (prefix, into) in &layers {
        for (relative, bytes) in embedded::TEMPLATES {
            let Some(rest) = relative.strip_prefix(prefix.as_str()) else {
                continue;
            };
            let (path, templated) = target_path(rest);
            let contents = if templated {
                fill(&String::from_utf8_lossy(bytes)).into_bytes()
            } else {
                bytes.to_vec()
            };
            files.push((format!("{into}{path}"), contents));
        }
    }
    match new.lang {
        Lang::Rust if new.sdk == SdkSource::Embedded => {
            files.extend(embedded::SDK.iter().map(|(p, b)| (format!("sdk/{p}"), b.to_vec())));
        }
        Lang::Rust => {}
        // componentize-py and jco read the contract from wit/.
        Lang::Python | Lang::Js => files.extend(wit_files().map(|(p, b)| (format!("wit/{p}"), b.to_vec()))),
    }
    files
}

/// The contract this host runs, with the WASI packages its `connector` world
/// names: `connector.wit` and `deps/…`.
fn wit_files() -> impl Iterator<Item = (&'static str, &'static [u8])> {
    embedded::SDK
        .iter()
        .filter_map(|(p, b)| p.strip_prefix("wit/").map(|rest| (rest, *b)))
}

/// Writes files under `root`, which must not exist yet; on a failure nothing stays half-written.
fn write_all(root: &Path, files: &[(String, Vec<u8>)]) -> Result<(), String> {
    let parent = root
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(format!(
            "{} is not a directory; create it first or pass another --dir",
            parent.display()
        ));
    }
    let staging = tempfile::Builder::new()
        .prefix(".nuntiq-new-")
        .tempdir_in(parent)
        .map_err(|e| format!("cannot write in {} ({e})", parent.display()))?;
    for (path, contents) in files {
        let target = staging.path().join(path);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::write(&target, contents).map_err(|e| format!("cannot write {}: {e}", target.display()))?;
    }
    // One rename: the project appears whole or not at all.
    let staged = staging.keep();
    std::fs::rename(&staged, root).map_err(|e| {
        let _ = std::fs::remove_dir_all(&staged);
        format!("cannot create {} ({e})", root.display())
    })
}

/// Writes the project `dir/name`; refuses to touch an existing path.
/// Returns the project's directory.
pub fn new_connector(new: &NewConnector) -> Result<PathBuf, String> {
    check_name(&new.name)?;
    if new.lang != Lang::Rust && new.sdk != SdkSource::Embedded {
        return Err("--sdk-path and --sdk-git choose the Rust SDK; they do not apply to --lang python or js".into());
    }
    new.sdk.check()?;
    let root = new.dir.join(&new.name);
    if root.exists() {
        return Err(format!("{} already exists; pick another name or --dir", root.display()));
    }
    write_all(&root, &project_files(new))?;
    Ok(root)
}

/// `nuntiq-host wit --out DIR`: writes `DIR/connector.wit` and `DIR/deps/…`.
/// Files already there are replaced; others are left alone.
pub fn write_wit(out: &Path) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    for (path, contents) in wit_files() {
        let target = out.join(path);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::write(&target, contents).map_err(|e| format!("cannot write {}: {e}", target.display()))?;
        written.push(target);
    }
    Ok(written)
}

/// The contract's main file, for `nuntiq-host wit` without `--out`.
pub fn connector_wit() -> &'static str {
    wit_files()
        .find(|(p, _)| *p == "connector.wit")
        .and_then(|(_, b)| std::str::from_utf8(b).ok())
        .expect("the SDK carries wit/connector.wit")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str, dir: &Path, lang: Lang, cursor: Cursor) -> NewConnector {
        NewConnector {
            name: name.into(),
            dir: dir.into(),
            lang,
            cursor,
            sdk: SdkSource::Embedded,
        }
    }

    /// Every file of every template, read back as text.
    fn texts(root: &Path) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.push((
                        path.clone(),
                        String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned(),
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn every_template_is_filled_in_and_names_no_path_of_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .display()
            .to_string();
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            for cursor in [Cursor::Timestamp, Cursor::NumericId, Cursor::Opaque] {
                let name = format!("c-{lang:?}-{}", cursor.dir()).to_lowercase();
                let root = new_connector(&new(&name, dir.path(), lang, cursor)).unwrap();
                let settings: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(root.join("settings.example.json")).unwrap())
                        .unwrap();
                assert_eq!(settings["config"]["connector_name"], name.replace('-', "_"));
                assert!(root.join("fixtures/v1").is_dir(), "{name}");
                for (path, text) in texts(&root) {
                    assert!(!text.contains("{{"), "{} is not filled in", path.display());
                    assert!(
                        !text.contains(&checkout),
                        "{} names the checkout {checkout}",
                        path.display()
                    );
                    assert!(
                        !text.contains(&dir.path().display().to_string()),
                        "{} names where it was made",
                        path.display()
                    );
                }
                let contract = Contract::CURRENT.version();
                match lang {
                    Lang::Rust => {
                        let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
                        assert!(cargo.contains(r#"nuntiq-connector = { path = "sdk" }"#), "{cargo}");
                        assert!(root.join("sdk/wit/connector.wit").is_file());
                        assert!(root.join("src/tests.rs").is_file());
                    }
                    Lang::Python | Lang::Js => assert!(root.join("wit/deps").is_dir()),
                }
                let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
                assert!(
                    readme.contains(contract),
                    "{name}: the README names contract {contract}"
                );
                for old in ["0.1.0", "0.2.0", "0.2.1"] {
                    assert!(
                        !readme.contains(old),
                        "{name}: the README names contract {old}, not only {contract}"
                    );
                }
                for (path, text) in texts(&root) {
                    for version in contract_versions(&text) {
                        assert_eq!(version, contract, "{}: one contract version", path.display());
                    }
                }
            }
        }
    }

    /// Every version a text names the contract at: `nuntiq:connector@V` and `nuntiq:connector/iface@V`.
    fn contract_versions(text: &str) -> Vec<&str> {
        text.match_indices("nuntiq:connector")
            .filter_map(|(at, found)| {
                let rest = &text[at + found.len()..];
                let rest = rest.strip_prefix('/').map_or(rest, |r| {
                    r.trim_start_matches(|c: char| c.is_ascii_lowercase() || c == '-')
                });
                let version = rest.strip_prefix('@')?;
                let end = version
                    .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .unwrap_or(version.len());
                Some(version[..end].trim_end_matches('.'))
            })
            .collect()
    }

    #[test]
    fn contract_versions_are_found_in_imports_and_package_names() {
        let text = "import { queue } from 'nuntiq:connector/supplier-load@0.3.0';\npackage nuntiq:connector@0.2.1;";
        assert_eq!(contract_versions(text), ["0.3.0", "0.2.1"]);
        assert!(contract_versions("nuntiq:connector/logger (no version)").is_empty());
    }

    #[test]
    fn an_existing_directory_a_bad_name_and_a_missing_sdk_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str| new_connector(&new(name, dir.path(), Lang::Rust, Cursor::Timestamp));
        make("acme").unwrap();
        assert!(make("acme").unwrap_err().contains("already exists"));
        assert!(make("Acme").unwrap_err().contains("not a connector name"));
        let missing = NewConnector {
            sdk: SdkSource::Path("/nonexistent".into()),
            ..new("other", dir.path(), Lang::Rust, Cursor::Timestamp)
        };
        let e = new_connector(&missing).unwrap_err();
        assert!(e.contains("--sdk-path /nonexistent"), "{e}");
        assert!(!dir.path().join("other").exists(), "nothing was written");
        let elsewhere = NewConnector {
            sdk: SdkSource::Path(Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests/sdk")),
            ..new("elsewhere", dir.path(), Lang::Rust, Cursor::Timestamp)
        };
        let root = new_connector(&elsewhere).unwrap();
        let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("guests/sdk\", features = [\"testing\"] }"), "{cargo}");
        assert!(!root.join("sdk").exists(), "the SDK named is used, not a copy");
        let git = NewConnector {
            sdk: SdkSource::Git {
                url: dir.path().join("no-repo").display().to_string(),
                rev: None,
            },
            ..new("other", dir.path(), Lang::Rust, Cursor::Timestamp)
        };
        assert!(new_connector(&git).unwrap_err().contains("--sdk-git"));
        let python = NewConnector {
            sdk: SdkSource::Path(dir.path().into()),
            ..new("other", dir.path(), Lang::Python, Cursor::Timestamp)
        };
        assert!(new_connector(&python).unwrap_err().contains("do not apply"));
        assert_eq!(
            SdkSource::Git {
                url: "https://git.example.com/n.git".into(),
                rev: Some("v1".into())
            }
            .spec(),
            r#"git = "https://git.example.com/n.git", rev = "v1""#
        );
    }

    #[test]
    fn the_contract_written_out_is_the_repositorys() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_wit(dir.path()).unwrap();
        let repo_wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/connector.wit");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("connector.wit")).unwrap(),
            std::fs::read_to_string(repo_wit).unwrap()
        );
        assert!(
            written.iter().any(|p| p.ends_with("deps/http-0.2.12/http.wit")),
            "{written:?}"
        );
    }
}
