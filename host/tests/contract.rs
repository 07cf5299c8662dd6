//! The contract in `wit/` as the authors' toolchains read it.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// Parses a WIT directory (with its deps) the way cargo-component 0.21.1 does.
fn parse(dir: &Path) -> anyhow::Result<(wit_parser::Resolve, wit_parser::PackageId)> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_dir(dir)?;
    Ok((resolve, package))
}

#[test]
fn the_current_contract_parses_with_cargo_components_wit_parser() {
    let (resolve, package) = parse(&root().join("wit")).unwrap_or_else(|e| panic!("{e:#}"));
    let name = &resolve.packages[package].name;
    assert_eq!(name.to_string(), "nuntiq:connector@0.3.0");
    for world in ["connector", "connector-core"] {
        resolve
            .select_world(package, Some(world))
            .unwrap_or_else(|e| panic!("world {world}: {e:#}"));
    }
}

#[test]
fn the_frozen_contract_is_what_that_parser_rejects() {
    // The reason 0.2.0 exists: 0.1.0's `custom-field-1` is not kebab case to it.
    let e = parse(&root().join("wit/v0.1.0")).unwrap_err();
    assert!(format!("{e:#}").contains("custom-field-1"), "{e:#}");
}

#[test]
fn the_connector_world_imports_only_what_the_host_links() {
    let (resolve, package) = parse(&root().join("wit")).unwrap();
    let world = resolve.select_world(package, Some("connector")).unwrap();
    let offered = nuntiq_host::plugin::offered();
    for (key, _) in &resolve.worlds[world].imports {
        let name = resolve.name_world_key(key);
        let (base, version) = name.rsplit_once('@').expect("versioned");
        let linked = offered.iter().any(|o| {
            o.rsplit_once('@')
                .is_some_and(|(b, v)| b == base && nuntiq_host::plugin::compatible(version, v))
        });
        assert!(linked, "the world imports {name}, which the host does not link");
    }
}

#[test]
fn the_sdk_carries_the_same_contract() {
    let files = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    // The frozen versions (v0.1.0/, v0.2.0/, v0.2.1/) are the host's, not the SDK's.
                    let frozen = path.parent() == Some(dir)
                        && path
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("v0."));
                    if !frozen {
                        stack.push(path);
                    }
                } else {
                    out.push((
                        path.strip_prefix(dir).unwrap().to_owned(),
                        std::fs::read(&path).unwrap(),
                    ));
                }
            }
        }
        out.sort();
        out
    };
    assert!(
        files(&root().join("wit")) == files(&root().join("guests/sdk/wit")),
        "guests/sdk/wit differs from wit/: copy it with `make sdk-wit`"
    );
}

#[test]
fn the_frozen_0_2_1_contract_parses_and_lacks_what_0_3_0_added() {
    let (resolve, id) = parse(&root().join("wit/v0.2.1")).unwrap();
    assert_eq!(resolve.packages[id].name.to_string(), "nuntiq:connector@0.2.1");
    let text = std::fs::read_to_string(root().join("wit/v0.2.1/connector.wit")).unwrap();
    assert!(!text.contains("bank-account") && !text.contains("set-options"));
    let current = std::fs::read_to_string(root().join("wit/connector.wit")).unwrap();
    assert!(current.contains("bank-accounts: list<supplier-bank-account>") && current.contains("set-options:"));
}
