//! Untrusted plugin files: compile bombs are refused by their structure
//! before anything is compiled, under 512 MB for the whole process; what
//! passes the structure check compiles in a child process whose memory and
//! time limits hold and leave nothing cached; `serve` keeps a job on its
//! plugin when the file is replaced by one it refuses.

use crate::MOCK;
use crate::serve::{Jobs, Serve, wait_until};
use nuntiq_e2e::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the whole process may peak at while it refuses a bomb (issue #16).
const BOUND: u64 = 512 << 20;

const API: &str = "https://api.acme-erp.com/v2";

/// The host's own test encoder of the component binary format (not every
/// builder of it is needed here).
#[path = "../../host/src/compile/encode.rs"]
#[allow(dead_code)]
mod host_encode;

/// The component binary format, by hand: the host's test encoder, and the
/// bombs only these tests build.
mod encode {
    pub use super::host_encode::*;

    /// `levels` components, each instantiating the one inside it twice; the
    /// innermost instantiates a core module: 2^levels instances from a few
    /// hundred bytes once the engine inlines them.
    pub fn doubling(levels: usize) -> Vec<u8> {
        let mut c = component(&[section(1, MODULE), section(2, &[1, 0, 0, 0])]);
        for _ in 0..levels {
            c = component(&[section(4, &c), section(5, &[2, 0, 0, 0, 0, 0, 0])]);
        }
        c
    }

    /// A core module of functions `() -> ()` with these bodies (locals included).
    fn module_of(bodies: &[Vec<u8>]) -> Vec<u8> {
        let mut code = leb(bodies.len());
        for body in bodies {
            code.extend(leb(body.len()));
            code.extend_from_slice(body);
        }
        let mut functions = leb(bodies.len());
        functions.extend(std::iter::repeat_n(0, bodies.len()));
        let mut out = MODULE.to_vec();
        out.extend(section(1, &[1, 0x60, 0, 0]));
        out.extend(section(3, &functions));
        out.extend(section(10, &code));
        out
    }

    /// One function of `depth` nested blocks: a few MB of wasm that Cranelift
    /// compiles in hundreds of MB (3 MB took 860 MB), within every structure limit.
    pub fn nested_blocks(depth: usize) -> Vec<u8> {
        let mut body = vec![0];
        for _ in 0..depth {
            body.extend([0x02, 0x40]);
        }
        body.extend(std::iter::repeat_n(0x0b, depth + 1));
        module_of(&[body])
    }

    /// `functions` functions of `adds` chained adds each: CPU time to
    /// compile, little memory (800 × 5000 took 8 s of CPU and 30 MB).
    pub fn many_adds(functions: usize, adds: usize) -> Vec<u8> {
        let mut body = vec![0, 0x41, 1];
        for _ in 0..adds {
            body.extend([0x41, 1, 0x6a]);
        }
        body.extend([0x1a, 0x0b]);
        module_of(&vec![body; functions])
    }
}

use encode::{leb, section};

/// dist/acme.wasm with these sections added to its root: still a valid connector.
fn acme_with(sections: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = std::fs::read(guest("acme")).unwrap();
    for s in sections {
        bytes.extend_from_slice(s);
    }
    bytes
}

/// dist/acme.wasm with `component` added, and instantiated by acme's root so
/// the engine inlines it.
fn acme_instantiating(component: &[u8]) -> Vec<u8> {
    let index = root_components(&std::fs::read(guest("acme")).unwrap());
    let mut instance = vec![1, 0];
    instance.extend(leb(index));
    instance.push(0);
    acme_with(&[section(4, component), section(5, &instance)])
}

/// How many entries the root's component index space has (what a component
/// added after them is numbered).
fn root_components(bytes: &[u8]) -> usize {
    use wasmparser::{ComponentAlias, ComponentExternalKind, ComponentTypeRef, Payload};
    let (mut depth, mut count) = (0usize, 0usize);
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.unwrap() {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::ComponentSection { .. } if depth == 1 => count += 1,
            Payload::ComponentImportSection(s) if depth == 1 => {
                count += s
                    .into_iter()
                    .filter(|i| matches!(i.as_ref().unwrap().ty, ComponentTypeRef::Component(_)))
                    .count()
            }
            Payload::ComponentAliasSection(s) if depth == 1 => {
                count += s
                    .into_iter()
                    .filter(|a| match a.as_ref().unwrap() {
                        ComponentAlias::InstanceExport { kind, .. } => *kind == ComponentExternalKind::Component,
                        ComponentAlias::Outer { kind, .. } => *kind == wasmparser::ComponentOuterAliasKind::Component,
                        _ => false,
                    })
                    .count()
            }
            Payload::ComponentExportSection(s) if depth == 1 => {
                count += s
                    .into_iter()
                    .filter(|e| e.as_ref().unwrap().kind == ComponentExternalKind::Component)
                    .count()
            }
            _ => {}
        }
    }
    count
}

fn cached_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "cwasm"))
            .count()
    })
}

/// `inspect`, `compile` and `run-plugin` each refuse `plugin` with exit 2 and
/// a message containing `names`, under [`BOUND`], compiling and writing nothing.
#[track_caller]
fn refused_everywhere(work: &Workdir, plugin: &Path, names: &str, extra: &[&str]) {
    let cache = work.path("cache");
    let shown = plugin.display().to_string();
    let cache_arg = cache.display().to_string();
    for command in ["inspect", "compile"] {
        let mut args = vec![command, &shown, "--cache-dir", &cache_arg];
        args.extend_from_slice(extra);
        let (code, _, stderr, peak) = host_output_measured(&args);
        assert_eq!(code, 2, "{command}: {stderr}");
        assert!(stderr.contains(&shown) && stderr.contains(names), "{command}: {stderr}");
        assert!(peak < BOUND, "{command} peaked at {} MB", peak >> 20);
    }
    let settings = work.write_settings("settings.json", &acme_settings(API, "acme_eu"));
    let db = work.path("refused.db");
    let mut args = vec![
        "run-plugin".to_owned(),
        shown.clone(),
        settings.display().to_string(),
        "--db".into(),
        db.display().to_string(),
        "--cache-dir".into(),
        cache_arg.clone(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let (run, peak) = nuntiq_host_measured(&args);
    assert_eq!(run.code, 2, "{}\n{}", run.envelope, run.stderr);
    assert_eq!(run.error_kind(), "invalid_plugin");
    assert!(run.error_message().contains(names), "{}", run.envelope);
    assert!(peak < BOUND, "run-plugin peaked at {} MB", peak >> 20);
    assert!(!db.exists(), "nothing was written");
    assert_eq!(cached_entries(&cache), 0, "nothing was cached");
}

#[test]
fn compile_bomb_is_refused_under_512_mb() {
    let work = Workdir::new();
    // A valid connector plus 8000 or 100 000 nested empty components: 401 KB
    // took 1.3 GB to compile, 1.5 MB more than 23 GB.
    for depth in [8000, 100_000] {
        let bomb = work.path(&format!("bomb-{depth}.wasm"));
        std::fs::write(&bomb, acme_with(&[section(4, &encode::nested(depth))])).unwrap();
        refused_everywhere(
            &work,
            &bomb,
            "is refused: its components and modules nest more than 32 levels deep; this host accepts at most 32",
            &[],
        );
    }
}

#[test]
fn instantiation_bomb_is_refused_under_512_mb() {
    let work = Workdir::new();
    // 24 levels that each instantiate the next twice: 500 bytes on top of acme,
    // 50 million instances once inlined (20 levels already took 330 MB).
    let bomb = work.path("doubling.wasm");
    std::fs::write(&bomb, acme_instantiating(&encode::doubling(24))).unwrap();
    refused_everywhere(
        &work,
        &bomb,
        "it would make more than 10000 instances once its nested components are instantiated",
        &[],
    );
}

#[test]
fn compile_memory_bomb_within_the_structure_limits_is_stopped_by_the_child_under_512_mb() {
    let work = Workdir::new();
    // One function of a million nested blocks: 3 MB, every structure limit
    // kept, 860 MB to compile in one process. The child stops at 448 MiB.
    let bomb = work.path("blocks.wasm");
    std::fs::write(&bomb, acme_with(&[section(1, &encode::nested_blocks(1_000_000))])).unwrap();
    refused_everywhere(
        &work,
        &bomb,
        "could not be compiled: the compiler ran out of its 448MiB of memory (--max-compile-memory)",
        &[],
    );
}

#[test]
fn compile_time_bomb_is_stopped_at_max_compile_time() {
    let work = Workdir::new();
    // 800 functions of 5000 chained adds: 12 MB that take seconds of CPU to compile.
    let bomb = work.path("adds.wasm");
    std::fs::write(&bomb, acme_with(&[section(1, &encode::many_adds(800, 5000))])).unwrap();
    // Whether the CPU rlimit (1 s) or the clock (2 s) ends it first depends
    // on the machine's load; both name the flag.
    refused_everywhere(
        &work,
        &bomb,
        "--max-compile-time) and was stopped",
        &["--max-compile-time", "1s"],
    );
}

#[test]
fn the_compile_childs_limits_hold_and_leave_nothing_cached() {
    let work = Workdir::new();
    let acme = guest("acme");
    // Acme compiles in about 30 MiB and half a second: tiny limits refuse it.
    refused_everywhere(
        &work,
        &acme,
        "could not be compiled: the compiler ran out of its 16MiB of memory (--max-compile-memory); \
         raise it only for a plugin you trust to need more; nothing was cached",
        &["--max-compile-memory", "16MiB"],
    );
    refused_everywhere(
        &work,
        &acme,
        "could not be compiled: the compile took longer than 2ms on the clock (twice --max-compile-time)",
        &["--max-compile-time", "1ms"],
    );
    // The limits were the cause: with the defaults it compiles and is cached.
    let cache = work.path("cache");
    let (code, said, err) = host_output(&[
        "compile",
        acme.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(said.starts_with("compiled "), "{said}");
    assert_eq!(cached_entries(&cache), 1);
}

#[test]
fn serve_keeps_a_job_on_its_plugin_when_the_file_is_replaced_by_a_bomb() {
    let mock = Mock::start(MOCK, 60);
    let mut jobs = Jobs::new();
    jobs.add(&mock, "acme_eu", "acme", "10000001", "every = \"2s\"");
    let plugin = jobs.work.path("connector.wasm");
    std::fs::copy(guest("acme"), &plugin).unwrap();
    jobs.toml = jobs
        .toml
        .replace(&guest("acme").display().to_string(), &plugin.display().to_string());
    let file = jobs.write();
    let db = jobs.work.db();
    let serve = Serve::start(&file, db.to_str().unwrap(), &[]);
    let succeeded = || {
        db.exists()
            .then(|| Db::open(&db).try_rows("SELECT 1 FROM schedule_slot WHERE status = 'succeeded'"))
            .flatten()
            .map_or(0, |r| r.len())
    };
    wait_until("a first run", Duration::from_secs(30), || succeeded() >= 1);

    // `mv` of a nesting bomb over the plugin, then of a compile-memory bomb:
    // each is refused once, and the job's later slots run on acme.
    let bombs: [(&str, Vec<u8>, &str); 2] = [
        (
            "nested.wasm",
            acme_with(&[section(4, &encode::nested(8000))]),
            "nest more than 32 levels deep",
        ),
        (
            "blocks.wasm",
            acme_with(&[section(1, &encode::nested_blocks(1_000_000))]),
            "ran out of its 448MiB of memory (--max-compile-memory)",
        ),
    ];
    for (name, bytes, _) in &bombs {
        let replacement: PathBuf = jobs.work.path(name);
        std::fs::write(&replacement, bytes).unwrap();
        let before = succeeded();
        std::fs::rename(&replacement, &plugin).unwrap();
        wait_until(
            "three more slots after the replacement",
            Duration::from_secs(60),
            || succeeded() >= before + 3,
        );
    }
    let peak = serve.peak_rss();
    let (code, log) = serve.stop();
    assert_eq!(code, 0, "{log}");

    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("The changed plugin file was refused"))
        .collect();
    assert_eq!(
        warnings.len(),
        2,
        "one warning per change of the file, not per slot:\n{log}"
    );
    for (warning, (_, _, limit)) in warnings.iter().zip(&bombs) {
        assert!(warning.contains("[WARN]"), "{warning}");
        assert!(
            warning.contains(&plugin.display().to_string()),
            "names the file: {warning}"
        );
        assert!(warning.contains(limit), "names the limit: {warning}");
        assert!(
            warning.contains("keeps running until the file changes again"),
            "{warning}"
        );
    }
    let db = Db::open(&db);
    // Slots that came while a run waited for a refused compile are recorded as
    // skipped; every slot that ran succeeded.
    let other = db.rows("SELECT status, outcome FROM schedule_slot WHERE status NOT IN ('succeeded', 'skipped')");
    assert!(other.is_empty(), "every slot that ran succeeded: {other:?}\n{log}");
    let plugins = db.rows("SELECT DISTINCT plugin_sha256 FROM delta_run");
    assert_eq!(plugins.len(), 1, "every run ran acme: {plugins:?}");
    // The serve process itself never holds a compile (the child does).
    assert!(peak < 256 << 20, "serve peaked at {} MB", peak >> 20);
}

#[test]
fn a_fifo_in_a_plugins_place_is_refused_without_hanging() {
    let work = Workdir::new();
    let fifo = work.path("plugin.wasm");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a plain syscall on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let mut child = host_command()
        .args(["inspect", fifo.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("inspect hung opening a FIFO");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("plugin.wasm: it is not a regular file"), "{stderr}");
}
