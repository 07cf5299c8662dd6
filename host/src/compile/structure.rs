//! The structure check: what a plugin's nesting and counts add up to, read
//! with wasmparser before anything is compiled. The engine's compile cost
//! grows with the square of the nesting depth and with every instance its
//! nested components make once inlined, so a 400-byte file can ask for
//! gigabytes; this walk costs a few milliseconds and refuses it first.

use wasmparser::{
    ComponentAlias, ComponentExternalKind, ComponentInstance, ComponentOuterAliasKind, ComponentTypeRef, Encoding,
    Parser, Payload,
};

/// The largest plugin file this host reads.
pub const MAX_PLUGIN_BYTES: u64 = 128 << 20;
/// How deep components and modules may nest (the plugin itself is level 0).
/// Toolchains nest 1 to 3 levels; the engine's cost grows with the square of it.
pub const MAX_NESTING: usize = 32;
/// Components in all index spaces together: defined, imported, aliased or exported.
pub const MAX_COMPONENTS: usize = 1_000;
/// Core modules defined anywhere in the plugin.
pub const MAX_MODULES: usize = 1_000;
/// Instances the plugin makes once its nested components are instantiated the
/// way the engine inlines them: a component instantiated twice counts twice.
pub const MAX_INSTANCES: u64 = 10_000;

/// What a plugin's structure adds up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Structure {
    /// The deepest nesting of components and modules (the plugin is 0).
    pub depth: usize,
    /// Components in all index spaces together.
    pub components: usize,
    /// Core modules defined.
    pub modules: usize,
    /// Instances once nested components are inlined.
    pub instances: u64,
}

/// A structure past one of this host's limits, or bytes that do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StructureError {
    #[error(
        "it is {size} bytes; this host reads plugins of at most {MAX_PLUGIN_BYTES} bytes (128 MiB), \
         a fixed limit; nothing was compiled"
    )]
    TooLarge { size: u64 },
    #[error(
        "its components and modules nest more than {MAX_NESTING} levels deep; this host accepts at most \
         {MAX_NESTING} (toolchains nest 1 to 3), a fixed limit; nothing was compiled"
    )]
    TooDeep,
    #[error(
        "it has more than {MAX_COMPONENTS} components (defined, imported, aliased or exported); this host \
         accepts at most {MAX_COMPONENTS}, a fixed limit; nothing was compiled"
    )]
    TooManyComponents,
    #[error(
        "it defines more than {MAX_MODULES} core modules; this host accepts at most {MAX_MODULES}, a fixed \
         limit; nothing was compiled"
    )]
    TooManyModules,
    #[error(
        "it would make more than {MAX_INSTANCES} instances once its nested components are instantiated \
         (a component instantiated twice counts twice); this host accepts at most {MAX_INSTANCES}, a fixed \
         limit; nothing was compiled"
    )]
    TooManyInstances,
    #[error("{0}")]
    Malformed(String),
}

/// One component or module the walk is inside.
struct Open {
    component: bool,
    /// Its component index space: what instantiating each entry makes.
    components: Vec<u64>,
    /// The instances instantiating it makes (itself, its core instances and
    /// the components it instantiates).
    instances: u64,
}

/// Walks every section header of `bytes` (no validation, no function bodies)
/// and refuses at the first limit it passes, so a bomb costs what the walk
/// has read up to that point.
pub fn check_structure(bytes: &[u8]) -> Result<Structure, StructureError> {
    if bytes.len() as u64 > MAX_PLUGIN_BYTES {
        return Err(StructureError::TooLarge {
            size: bytes.len() as u64,
        });
    }
    let malformed = |e: wasmparser::BinaryReaderError| StructureError::Malformed(e.to_string());
    let mut stack: Vec<Open> = Vec::new();
    let mut seen = Structure::default();
    // A component reached through an instance's export could be any complete
    // one: it is counted as the largest seen so far, never as less.
    let mut largest = 1u64;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(malformed)? {
            Payload::Version { encoding, .. } => {
                let depth = stack.len();
                if depth > MAX_NESTING {
                    return Err(StructureError::TooDeep);
                }
                seen.depth = seen.depth.max(depth);
                let component = encoding == Encoding::Component;
                if !component {
                    seen.modules += 1;
                    if seen.modules > MAX_MODULES {
                        return Err(StructureError::TooManyModules);
                    }
                }
                stack.push(Open {
                    component,
                    components: Vec::new(),
                    instances: u64::from(component),
                });
            }
            Payload::End(_) => {
                let Some(done) = stack.pop() else { continue };
                if !done.component {
                    continue;
                }
                largest = largest.max(done.instances);
                match stack.last_mut() {
                    Some(parent) => add_component(parent, done.instances, &mut seen)?,
                    None => seen.instances = done.instances,
                }
            }
            Payload::InstanceSection(section) => {
                let top = innermost(&mut stack)?;
                for instance in section {
                    instance.map_err(malformed)?;
                    add_instances(top, 1)?;
                }
            }
            Payload::ComponentInstanceSection(section) => {
                let top = innermost(&mut stack)?;
                for instance in section {
                    if let ComponentInstance::Instantiate { component_index, .. } = instance.map_err(malformed)? {
                        let makes = top.components.get(component_index as usize).copied().unwrap_or(largest);
                        add_instances(top, makes)?;
                    }
                }
            }
            Payload::ComponentImportSection(section) => {
                for import in section {
                    if let ComponentTypeRef::Component(_) = import.map_err(malformed)?.ty {
                        add_component(innermost(&mut stack)?, 1, &mut seen)?;
                    }
                }
            }
            Payload::ComponentAliasSection(section) => {
                for alias in section {
                    let makes = match alias.map_err(malformed)? {
                        ComponentAlias::InstanceExport {
                            kind: ComponentExternalKind::Component,
                            ..
                        } => largest,
                        ComponentAlias::Outer {
                            kind: ComponentOuterAliasKind::Component,
                            count,
                            index,
                        } => (stack.len().checked_sub(1 + count as usize))
                            .and_then(|outer| stack[outer].components.get(index as usize))
                            .copied()
                            .unwrap_or(largest),
                        _ => continue,
                    };
                    add_component(innermost(&mut stack)?, makes, &mut seen)?;
                }
            }
            // An export is a new index in the component model.
            Payload::ComponentExportSection(section) => {
                for export in section {
                    let export = export.map_err(malformed)?;
                    if export.kind == ComponentExternalKind::Component {
                        let top = innermost(&mut stack)?;
                        let makes = top.components.get(export.index as usize).copied().unwrap_or(largest);
                        add_component(top, makes, &mut seen)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(seen)
}

fn innermost(stack: &mut [Open]) -> Result<&mut Open, StructureError> {
    stack
        .last_mut()
        .ok_or_else(|| StructureError::Malformed("a section outside any component".into()))
}

fn add_instances(open: &mut Open, n: u64) -> Result<(), StructureError> {
    open.instances = open.instances.saturating_add(n);
    if open.instances > MAX_INSTANCES {
        return Err(StructureError::TooManyInstances);
    }
    Ok(())
}

fn add_component(open: &mut Open, makes: u64, seen: &mut Structure) -> Result<(), StructureError> {
    seen.components += 1;
    if seen.components > MAX_COMPONENTS {
        return Err(StructureError::TooManyComponents);
    }
    open.components.push(makes);
    Ok(())
}

/// Hand-encoded components for tests (shared with the e2e tests).
#[cfg(test)]
#[path = "encode.rs"]
pub(crate) mod encode;

#[cfg(test)]
mod tests {
    use super::encode::*;
    use super::*;

    /// A component like a toolchain's: two core modules instantiated, a
    /// nested component instantiated once.
    fn ordinary() -> Vec<u8> {
        let inner = component(&[section(1, MODULE), instantiate_module()]);
        component(&[
            section(1, MODULE),
            section(1, MODULE),
            section(2, &[2, 0, 0, 0, 0, 1, 0]),
            section(4, &inner),
            instantiate_first(1),
        ])
    }

    #[test]
    fn an_ordinary_component_passes_and_is_counted() {
        let bytes = ordinary();
        wasmparser::Validator::new()
            .validate_all(&bytes)
            .expect("a valid component");
        let seen = check_structure(&bytes).unwrap();
        // Root + its 2 core instances + the nested one's (itself and its core instance).
        assert_eq!(
            seen,
            Structure {
                depth: 2,
                components: 1,
                modules: 3,
                instances: 5
            }
        );
    }

    #[test]
    fn nesting_past_the_limit_is_refused_by_name() {
        let at_limit = nested(MAX_NESTING + 1);
        wasmparser::Validator::new()
            .validate_all(&at_limit)
            .expect("a valid component");
        assert_eq!(check_structure(&at_limit).unwrap().depth, MAX_NESTING);
        let over = nested(MAX_NESTING + 2);
        let refused = check_structure(&over).unwrap_err();
        assert_eq!(refused, StructureError::TooDeep);
        assert!(
            refused
                .to_string()
                .contains("more than 32 levels deep; this host accepts at most 32")
        );
    }

    #[test]
    fn a_deep_bomb_is_refused_after_reading_only_its_first_levels() {
        // 100 000 levels (the 23.5 GB plugin): refused at level 33.
        let bomb = nested(100_000);
        let started = std::time::Instant::now();
        assert_eq!(check_structure(&bomb), Err(StructureError::TooDeep));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn doubling_instantiations_are_counted_as_the_engine_inlines_them() {
        // Each level instantiates the one inside twice: 2^depth instances from a few hundred bytes.
        let mut c = component(&[section(1, MODULE), instantiate_module()]);
        for _ in 0..20 {
            c = component(&[section(4, &c), instantiate_first(2)]);
        }
        assert!(c.len() < 1000, "{} bytes", c.len());
        wasmparser::Validator::new()
            .validate_all(&c)
            .expect("a valid component");
        let refused = check_structure(&c).unwrap_err();
        assert_eq!(refused, StructureError::TooManyInstances);
        assert!(refused.to_string().contains("more than 10000 instances"), "{refused}");

        // Ten levels make 2^10 + … instances, under the limit.
        let mut c = component(&[section(1, MODULE), instantiate_module()]);
        for _ in 0..10 {
            c = component(&[section(4, &c), instantiate_first(2)]);
        }
        assert_eq!(check_structure(&c).unwrap().instances, (1 << 10) * 2 + (1 << 10) - 1);
    }

    #[test]
    fn an_outer_alias_carries_the_instances_of_what_it_names() {
        // The root defines a doubling component; a nested one aliases it and instantiates it twice.
        let mut heavy = component(&[section(1, MODULE), instantiate_module()]);
        for _ in 0..8 {
            heavy = component(&[section(4, &heavy), instantiate_first(2)]);
        }
        let heavy_makes = check_structure(&heavy).unwrap().instances;
        // alias outer 1 0 (component): sort 0x04, outer 0x02, count 1, index 0.
        let alias = section(6, &[1, 0x04, 0x02, 1, 0]);
        let user = component(&[alias, instantiate_first(2)]);
        let root = component(&[section(4, &heavy), section(4, &user), section(5, &[1, 0, 1, 0])]);
        wasmparser::Validator::new()
            .validate_all(&root)
            .expect("a valid component");
        assert_eq!(check_structure(&root).unwrap().instances, 1 + 1 + 2 * heavy_makes);
    }

    #[test]
    fn too_many_components_or_modules_are_refused() {
        let wide = component(&vec![section(4, COMPONENT); MAX_COMPONENTS + 1]);
        assert_eq!(check_structure(&wide), Err(StructureError::TooManyComponents));
        let modules = component(&vec![section(1, MODULE); MAX_MODULES + 1]);
        assert_eq!(check_structure(&modules), Err(StructureError::TooManyModules));
        let fits = component(&vec![section(4, COMPONENT); MAX_COMPONENTS]);
        assert_eq!(check_structure(&fits).unwrap().components, MAX_COMPONENTS);
    }

    #[test]
    fn an_oversized_file_is_refused_before_it_is_parsed() {
        let big = vec![0u8; MAX_PLUGIN_BYTES as usize + 1];
        let refused = check_structure(&big).unwrap_err();
        assert!(matches!(refused, StructureError::TooLarge { size } if size == MAX_PLUGIN_BYTES + 1));
        assert!(refused.to_string().contains("at most 134217728 bytes (128 MiB)"));
    }
}
