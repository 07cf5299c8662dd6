//! Untrusted plugins are compiled under limits: the structure check first
//! ([`structure`]), then the compile itself in a short-lived child process of
//! this same binary (`nuntiq-host __compile`) with memory and CPU-time rlimits
//! and a timeout on the clock. The child bounds what a compile costs, not
//! whether its output may be trusted: the parent keeps the cache entry and its
//! MAC, and loads what the child wrote only because this binary wrote it.

pub mod structure;

pub use structure::{MAX_PLUGIN_BYTES, Structure, StructureError, check_structure};

use crate::runtime::{EngineSettings, engine_config};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The hidden subcommand a compile child runs as:
/// `nuntiq-host __compile ENGINE_SETTINGS_JSON`, the plugin on stdin, the
/// engine's precompiled form on stdout, an error on stderr.
pub const CHILD_COMMAND: &str = "__compile";

/// The child's exit codes besides 0 (written) and a panic's 101.
const CHILD_INVALID: i32 = 10;
const CHILD_OUT_OF_MEMORY: i32 = 11;
const CHILD_FAILED: i32 = 12;

/// The most of a child's stderr the parent keeps (its message, or a panic's).
const MAX_CHILD_MESSAGE: usize = 16 << 10;

/// What compiling one plugin may cost; the operator sets them with
/// `--max-compile-memory` and `--max-compile-time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// Memory of the compile process: its heap and private writable mappings
    /// (`RLIMIT_DATA`), the plugin's bytes and the compiled code included.
    pub max_memory_bytes: u64,
    /// CPU time of the compile (all its threads together, `RLIMIT_CPU`,
    /// counted in whole seconds). On the clock it may take twice this: a
    /// busy machine slows an honest compile, and a stalled one still ends.
    pub max_time: Duration,
}

impl CompileLimits {
    /// How long a compile may take on the clock.
    pub fn max_clock_time(&self) -> Duration {
        self.max_time.saturating_mul(2)
    }

    /// The CPU time `RLIMIT_CPU` allows: whole seconds, at least one.
    fn cpu_seconds(&self) -> u64 {
        self.max_time.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// Below this the compile process cannot even start.
pub const MIN_COMPILE_MEMORY: u64 = 4 << 20;

/// `--max-compile-memory`: a size such as `448MiB`, at least [`MIN_COMPILE_MEMORY`].
pub fn parse_compile_memory(text: &str) -> Result<u64, String> {
    let bytes = crate::limits::parse_size(text)? as u64;
    if bytes < MIN_COMPILE_MEMORY {
        return Err(format!(
            "{text:?} is too little: the compile process needs at least {} to start",
            shown_size(MIN_COMPILE_MEMORY)
        ));
    }
    Ok(bytes)
}

impl Default for CompileLimits {
    /// Enough for the toolchains' connectors with room to spare: a 30 MB
    /// componentize-py component compiles in about 350 MiB and 8 s of CPU, a
    /// Rust one in under 32 MiB and 0.3 s. With the parent's own memory, a
    /// compile that hits the limit keeps the whole process under 512 MB.
    fn default() -> Self {
        Self {
            max_memory_bytes: 448 << 20,
            max_time: Duration::from_secs(120),
        }
    }
}

/// Why a compile produced nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The engine refused the component (invalid, or using what it does not run).
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the compiler ran out of its {} of memory (--max-compile-memory); raise it only for a plugin \
         you trust to need more",
        shown_size(*limit)
    )]
    Memory { limit: u64 },
    #[error(
        "the compile used its {} of CPU time (--max-compile-time) and was stopped; raise it only for a \
         plugin you trust to need more",
        humantime::format_duration(*limit)
    )]
    CpuTime { limit: Duration },
    #[error(
        "the compile took longer than {} on the clock (twice --max-compile-time) and was stopped; raise \
         it only for a plugin you trust to need more, or compile it ahead of time with `nuntiq-host compile`",
        humantime::format_duration(*limit)
    )]
    ClockTime { limit: Duration },
    /// The compile process failed for a reason that is the host's, not the
    /// plugin's (it could not start, or crashed); trying again may work.
    #[error("{0}")]
    Failed(String),
}

impl CompileError {
    /// Whether the error is a limit the plugin ran into.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            CompileError::Memory { .. } | CompileError::CpuTime { .. } | CompileError::ClockTime { .. }
        )
    }
}

/// Loading what the child wrote failed: the host's problem, not the plugin's.
impl From<wasmtime::Error> for CompileError {
    fn from(e: wasmtime::Error) -> Self {
        CompileError::Failed(format!("what the compile process wrote does not load: {e:#}"))
    }
}

/// A size as the flags write it: `448MiB`, `16KiB`, or bytes.
fn shown_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// Compiles plugins in child processes of this binary, under limits.
#[derive(Debug, Clone)]
pub struct Compiler {
    engine: EngineSettings,
    limits: CompileLimits,
}

impl Compiler {
    pub fn new(engine: EngineSettings, limits: CompileLimits) -> Self {
        Self { engine, limits }
    }

    /// The engine's precompiled form of `wasm` (which has passed the
    /// structure check), made by a child process under the limits. The
    /// parent's copy of the plugin goes once the child has read it.
    pub fn compile(&self, wasm: Vec<u8>) -> Result<Vec<u8>, CompileError> {
        let engine = serde_json::to_string(&self.engine).map_err(|e| CompileError::Failed(e.to_string()))?;
        let memory = self.limits.max_memory_bytes;
        let cpu_seconds = self.limits.cpu_seconds();
        let mut command = Command::new(this_binary());
        command
            .arg(CHILD_COMMAND)
            .arg(engine)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: runs between fork and exec, so it may only make
        // async-signal-safe calls: `confine` makes four syscalls and
        // allocates nothing.
        unsafe {
            command.pre_exec(move || confine(memory, cpu_seconds));
        }
        let deadline = Instant::now() + self.limits.max_clock_time();
        let mut child = command.spawn().map_err(|e| spawn_failed(&e, memory))?;
        let pid = child.id() as libc::pid_t;
        let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (done, finished) = mpsc::channel();
        let threads = (
            std::thread::Builder::new().name("nuntiq-cmp-in".into()).spawn(move || {
                // The child reads the whole plugin before it compiles; a write
                // to one that died early fails, and its status says why.
                if let Some(mut stdin) = stdin {
                    let _ = stdin.write_all(&wasm);
                }
            }),
            std::thread::Builder::new()
                .name("nuntiq-cmp-out".into())
                .spawn(move || {
                    // The child's output lived in its memory, so it is at most that large.
                    let read = read_capped(stdout, memory);
                    let _ = done.send(());
                    read
                }),
            std::thread::Builder::new()
                .name("nuntiq-cmp-err".into())
                .spawn(move || read_capped(stderr, MAX_CHILD_MESSAGE as u64).0),
        );
        let (feeder, output, message) = match threads {
            (Ok(feeder), Ok(output), Ok(message)) => (feeder, output, message),
            (feeder, output, message) => {
                let _ = child.kill();
                reap(pid);
                let _ = (
                    feeder.map(|t| t.join()),
                    output.map(|t| t.join()),
                    message.map(|t| t.join()),
                );
                return Err(CompileError::Failed(
                    "cannot start the threads that talk to the compile process".into(),
                ));
            }
        };
        let timed_out = match finished.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => false,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                true
            }
        };
        let (status, cpu) = reap(pid);
        let _ = feeder.join();
        let (artifact, overflowed) = output.join().unwrap_or_default();
        let message = String::from_utf8_lossy(&message.join().unwrap_or_default())
            .trim()
            .to_owned();
        let ended = Ended {
            status,
            timed_out,
            cpu,
            message,
        };
        ended.verdict(&self.limits)?;
        if overflowed || artifact.is_empty() {
            return Err(CompileError::Failed(
                if overflowed {
                    "the compile process wrote more than its memory limit"
                } else {
                    "the compile process wrote nothing"
                }
                .into(),
            ));
        }
        Ok(artifact)
    }
}

/// The running binary itself, even when its file was replaced since it
/// started: the child's engine must be this one's.
fn this_binary() -> std::path::PathBuf {
    let proc_self = std::path::Path::new("/proc/self/exe");
    if proc_self.exists() {
        proc_self.to_owned()
    } else {
        std::env::current_exe().unwrap_or_else(|_| "nuntiq-host".into())
    }
}

/// The child's limits, set between fork and exec: memory, CPU time, no core
/// dump (SIGXCPU and SIGABRT would write one), and death with its parent.
fn confine(memory: u64, cpu_seconds: u64) -> std::io::Result<()> {
    let set = |resource, soft: u64, hard: u64| {
        let limit = libc::rlimit {
            rlim_cur: soft as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: a plain syscall on a valid struct.
        match unsafe { libc::setrlimit(resource, &limit) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    };
    // RLIMIT_DATA, not RLIMIT_AS: it counts what is allocated (heap and
    // private writable mappings), not address space reserved and never used.
    set(libc::RLIMIT_DATA, memory, memory)?;
    // At the soft limit SIGXCPU ends it; the hard one is a backstop.
    set(libc::RLIMIT_CPU, cpu_seconds, cpu_seconds + 1)?;
    set(libc::RLIMIT_CORE, 0, 0)?;
    // SAFETY: a plain syscall.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    Ok(())
}

fn spawn_failed(error: &std::io::Error, memory: u64) -> CompileError {
    match error.raw_os_error() {
        // The kernel could not load the binary within the memory limit.
        Some(libc::ENOMEM) => CompileError::Memory { limit: memory },
        _ => CompileError::Failed(format!("cannot start the compile process: {error}")),
    }
}

/// Reads up to `cap` bytes, then drains the rest so the writer never blocks;
/// says whether there was more.
fn read_capped(pipe: Option<impl Read>, cap: u64) -> (Vec<u8>, bool) {
    let Some(pipe) = pipe else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut pipe = pipe.take(cap);
    let _ = pipe.read_to_end(&mut kept);
    let more = std::io::copy(&mut pipe.into_inner(), &mut std::io::sink()).unwrap_or(0) > 0;
    (kept, more)
}

/// Waits for the child: its exit status and the CPU time it used.
fn reap(pid: libc::pid_t) -> (ExitStatus, Duration) {
    let mut status = 0;
    // SAFETY: a plain syscall on our own child; the kernel fills `usage`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: as above.
        let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if waited == pid || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (
        ExitStatus::from_raw(status),
        time(usage.ru_utime) + time(usage.ru_stime),
    )
}

/// How a compile child ended, as the parent saw it.
struct Ended {
    status: ExitStatus,
    /// The parent stopped it at the deadline.
    timed_out: bool,
    /// CPU time it used.
    cpu: Duration,
    /// What it wrote on stderr.
    message: String,
}

impl Ended {
    /// Whether the compile succeeded, or which limit or failure stopped it.
    fn verdict(&self, limits: &CompileLimits) -> Result<(), CompileError> {
        let memory = CompileError::Memory {
            limit: limits.max_memory_bytes,
        };
        // Rust's allocator aborts with this line; a thread that cannot get
        // its stack, or a mapping refused, says ENOMEM or EAGAIN.
        let says_out_of_memory = [
            "memory allocation of",
            "Cannot allocate memory",
            "Resource temporarily unavailable",
        ]
        .iter()
        .any(|m| self.message.contains(m));
        if self.timed_out {
            return Err(CompileError::ClockTime {
                limit: limits.max_clock_time(),
            });
        }
        let cpu = Duration::from_secs(limits.cpu_seconds());
        if let Some(signal) = self.status.signal() {
            return Err(match signal {
                libc::SIGXCPU => CompileError::CpuTime { limit: cpu },
                libc::SIGKILL if self.cpu >= cpu => CompileError::CpuTime { limit: cpu },
                libc::SIGABRT if says_out_of_memory => memory,
                signal => CompileError::Failed(format!(
                    "the compile process was killed by signal {signal}{}",
                    if self.message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", self.message)
                    }
                )),
            });
        }
        match self.status.code() {
            Some(0) => Ok(()),
            Some(CHILD_INVALID) => Err(CompileError::Invalid(self.message.clone())),
            Some(CHILD_OUT_OF_MEMORY) => Err(memory),
            Some(_) if says_out_of_memory => Err(memory),
            code => Err(CompileError::Failed(format!(
                "the compile process failed (exit code {}): {}",
                code.unwrap_or(-1),
                self.message
            ))),
        }
    }
}

/// When this process was started as a compile child (`nuntiq-host
/// __compile …`), compiles and returns its exit code. A binary that runs
/// plugins calls this first thing in `main`.
pub fn run_child_if_asked() -> Option<u8> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(CHILD_COMMAND)) {
        return None;
    }
    let code = child(args.next().and_then(|a| a.into_string().ok()).as_deref());
    Some(code as u8)
}

/// The child: reads the plugin from stdin, compiles it with the parent's
/// engine settings, writes the precompiled form to stdout.
fn child(engine: Option<&str>) -> i32 {
    let fail = |code: i32, message: &str| {
        let mut cut = message.to_owned();
        if cut.len() > MAX_CHILD_MESSAGE / 2 {
            let mut end = MAX_CHILD_MESSAGE / 2;
            while !cut.is_char_boundary(end) {
                end -= 1;
            }
            cut.truncate(end);
            cut.push_str(" …");
        }
        eprintln!("{cut}");
        code
    };
    let Some(Ok(settings)) = engine.map(serde_json::from_str::<EngineSettings>) else {
        return fail(
            CHILD_FAILED,
            "the compile process was started without its engine settings",
        );
    };
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut wasm) {
        return fail(CHILD_FAILED, &format!("cannot read the plugin: {e}"));
    }
    let engine = match wasmtime::Engine::new(&engine_config(&settings)) {
        Ok(engine) => engine,
        Err(e) => return fail(CHILD_FAILED, &format!("failed to create the wasm engine: {e:#}")),
    };
    match engine.precompile_component(&wasm) {
        Ok(artifact) => {
            drop(wasm);
            let mut out = std::io::stdout().lock();
            match out.write_all(&artifact).and_then(|_| out.flush()) {
                Ok(()) => 0,
                Err(e) => fail(CHILD_FAILED, &format!("cannot write the compiled plugin: {e}")),
            }
        }
        Err(e) => {
            let out_of_memory = e.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.raw_os_error() == Some(libc::ENOMEM))
            });
            fail(
                if out_of_memory {
                    CHILD_OUT_OF_MEMORY
                } else {
                    CHILD_INVALID
                },
                &format!("{e:#}"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(status: i32, message: &str, cpu: Duration, timed_out: bool) -> Ended {
        Ended {
            status: ExitStatus::from_raw(status),
            timed_out,
            cpu,
            message: message.into(),
        }
    }

    /// A raw wait status: exited with `code`, or killed by `signal`.
    fn exited(code: i32) -> i32 {
        code << 8
    }

    #[test]
    fn each_way_a_child_ends_is_named_by_its_limit() {
        let limits = CompileLimits {
            max_memory_bytes: 16 << 20,
            max_time: Duration::from_secs(3),
        };
        let verdict = |status, message, cpu, timed_out| ended(status, message, cpu, timed_out).verdict(&limits);
        let short = Duration::from_millis(10);
        assert_eq!(verdict(exited(0), "", short, false), Ok(()));
        let memory = Err(CompileError::Memory { limit: 16 << 20 });
        assert_eq!(
            verdict(libc::SIGABRT, "memory allocation of 393216 bytes failed", short, false),
            memory
        );
        assert_eq!(
            verdict(exited(CHILD_OUT_OF_MEMORY), "failed to mmap", short, false),
            memory
        );
        assert_eq!(
            verdict(
                exited(101),
                "panicked: Resource temporarily unavailable (os error 11)",
                short,
                false
            ),
            memory
        );
        let cpu = Err(CompileError::CpuTime {
            limit: Duration::from_secs(3),
        });
        assert_eq!(verdict(libc::SIGXCPU, "", Duration::from_secs(3), false), cpu);
        assert_eq!(verdict(libc::SIGKILL, "", Duration::from_secs(4), false), cpu);
        // Killed by us at the deadline (twice the CPU time), whatever it died of.
        assert_eq!(
            verdict(libc::SIGKILL, "", short, true),
            Err(CompileError::ClockTime {
                limit: Duration::from_secs(6)
            })
        );
        assert_eq!(
            verdict(
                exited(CHILD_INVALID),
                "failed to parse WebAssembly module",
                short,
                false
            ),
            Err(CompileError::Invalid("failed to parse WebAssembly module".into()))
        );
        // Not the plugin's limits: someone else's SIGKILL, a crash, our own failure.
        for (status, message) in [
            (libc::SIGKILL, ""),
            (libc::SIGSEGV, ""),
            (exited(CHILD_FAILED), "cannot read"),
        ] {
            let failed = verdict(status, message, short, false).unwrap_err();
            assert!(
                matches!(failed, CompileError::Failed(_)) && !failed.is_limit(),
                "{failed:?}"
            );
        }
    }

    #[test]
    fn messages_name_the_flag_and_the_limit_as_written() {
        let memory = CompileError::Memory { limit: 448 << 20 }.to_string();
        assert!(
            memory.contains("its 448MiB of memory (--max-compile-memory)"),
            "{memory}"
        );
        let cpu = CompileError::CpuTime {
            limit: Duration::from_secs(120),
        }
        .to_string();
        assert!(cpu.contains("its 2m of CPU time (--max-compile-time)"), "{cpu}");
        let clock = CompileError::ClockTime {
            limit: Duration::from_millis(1),
        }
        .to_string();
        assert!(
            clock.contains("longer than 1ms on the clock (twice --max-compile-time)"),
            "{clock}"
        );
        assert_eq!(shown_size(1000), "1000 bytes");
        assert_eq!(shown_size(16 << 10), "16KiB");
    }

    #[test]
    fn compile_memory_below_what_a_process_needs_to_start_is_refused() {
        assert_eq!(parse_compile_memory("448MiB"), Ok(448 << 20));
        let refused = parse_compile_memory("1MiB").unwrap_err();
        assert!(refused.contains("at least 4MiB"), "{refused}");
    }

    #[test]
    fn a_capped_read_drains_what_it_does_not_keep() {
        let (kept, more) = read_capped(Some(&b"0123456789"[..]), 4);
        assert_eq!((kept.as_slice(), more), (&b"0123"[..], true));
        let (kept, more) = read_capped(Some(&b"0123"[..]), 4);
        assert_eq!((kept.as_slice(), more), (&b"0123"[..], false));
    }
}
