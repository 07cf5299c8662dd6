//! `nuntiq-host serve`: every job of a jobs file on its cadence, on one host
//! or many sharing one database. A job's slot (its run at one scheduled
//! moment) is claimed through the database, so however many hosts run the
//! same file, each slot runs once; the stream lease keeps runs of one stream
//! from overlapping. Each run has its own sandbox, store handle, limits and
//! thread: a trap, a timeout or a hostile connector ends that run only.
//!
//! The process shares one wasm engine and each plugin compiled once (again
//! when its file changes; a changed file that is refused leaves its jobs on
//! the plugin they had, with one warning). A global cap and a per-customer cap bound how many
//! runs go at once; a host at its cap leaves due slots for other hosts.

pub mod jobs;
pub mod metrics;

use crate::compile::CompileLimits;
use crate::job::{JobOptions, Runner, run_job};
use crate::limits::{Limits, Stop};
use crate::log::{Level, LogFormat, LogSink, Redactor};
use crate::meter::Usage;
use crate::settings::Settings;
use crate::store::schedule::{Claim, SlotClaim, SlotOwner};
use crate::store::{Db, Store};
use jobs::{JobSpec, slot_key};
use metrics::Metrics;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The operator's choices for a `serve` process.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub jobs_file: PathBuf,
    pub db: Db,
    /// With `db` the Customer API: where slots, leases, run history and
    /// rejected rows are kept (the scheduler's store).
    pub ledger: Db,
    pub metrics_addr: Option<SocketAddr>,
    /// Runs at once in this process.
    pub max_concurrent: usize,
    /// Runs at once for one customer (`customer_number`), so one tenant
    /// cannot take every slot.
    pub max_per_customer: usize,
    /// After SIGTERM: how long running jobs may go on before they are stopped.
    pub grace: Duration,
    /// A claimed slot's lease (and, unless a job sets one, its stream lease):
    /// another host takes over a slot whose holder stopped renewing it.
    pub lease: Duration,
    pub cache_dir: Option<PathBuf>,
    /// What compiling a plugin may cost, for the whole process.
    pub compile: CompileLimits,
    /// The connectors' wasm stack, for the whole process (one engine).
    pub max_stack: Option<usize>,
    pub log_format: LogFormat,
    pub log_level: Level,
}

/// How often the scheduler looks for due slots.
const TICK: Duration = Duration::from_millis(200);

/// Due slots claimed in one store transaction: one commit for many claims,
/// while the first runs start before the last are claimed.
const CLAIMS_PER_COMMIT: usize = 50;

/// A job, checked at start.
struct Job {
    spec: JobSpec,
    customer: String,
}

/// A run going on in this process.
struct Running {
    job_id: String,
    customer: String,
    stop: Arc<Stop>,
}

struct State {
    options: ServeOptions,
    runner: Runner,
    store: Store,
    metrics: Arc<Metrics>,
    log: LogSink,
    running: Mutex<HashMap<String, Running>>,
    /// Set by the first SIGTERM or SIGINT.
    stopping: AtomicBool,
}

/// Runs the jobs until SIGTERM or SIGINT; returns the process's exit code
/// (2 when the jobs file, a job's settings or plugin, or the database is unusable).
pub fn serve(options: ServeOptions) -> u8 {
    let log = LogSink::stderr(options.log_format, options.log_level, Redactor::default()).with_label("serve");
    // What libraries report outside any run's thread; each run's own go to its log.
    let _ = tracing::dispatcher::set_global_default(log.dispatch().clone());
    match start(options, &log) {
        Ok((state, jobs)) => run(state, jobs),
        Err(message) => {
            log.error(&format!("Nothing was started: {message}"), Some("start"), None);
            2
        }
    }
}

fn start(mut options: ServeOptions, log: &LogSink) -> Result<(Arc<State>, Vec<Job>), String> {
    let specs = jobs::load(&options.jobs_file)?;
    options.max_concurrent = size_to_descriptors(&options, &specs, log)?;
    let mut limits = Limits::default();
    if let Some(stack) = options.max_stack {
        limits.max_wasm_stack_bytes = stack;
    }
    let runner = Runner::new(&limits, options.cache_dir.clone(), options.compile).map_err(|e| e.to_string())?;
    let mut jobs = Vec::new();
    for spec in specs {
        let fail = |e: String| format!("job {:?}: {e}", spec.name);
        let settings = match &spec.inline_settings {
            Some(value) => Settings::parse(&spec.settings, value.clone(), &spec.params),
            None => Settings::load(&spec.settings, &spec.params),
        }
        .map_err(|e| fail(e.to_string()))?;
        // Compiled now, so a plugin that cannot run is found before any slot is claimed.
        runner.plugin(&spec.plugin).map_err(|e| fail(e.to_string()))?;
        if matches!(options.db, Db::Nuntiq(_)) {
            // Read now, so a missing token stops the start, not every slot.
            spec.api_token.read().map_err(|e| {
                fail(format!(
                    "{e} (in the jobs file: api_token_env = \"VAR\" or api_token_file = \"PATH\")"
                ))
            })?;
        }
        jobs.push(Job {
            customer: settings.customer_number.clone(),
            spec,
        });
    }
    // On the Customer API, the scheduler's slots and leases live in the ledger.
    let scheduler_db = match &options.db {
        Db::Nuntiq(_) => &options.ledger,
        db => db,
    };
    let store = Store::open(scheduler_db).map_err(|e| e.to_string())?;
    let metrics = Metrics::new();
    if let Some(addr) = options.metrics_addr {
        let bound = metrics::serve(addr, metrics.clone()).map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
        log.info(
            &format!("Metrics on http://{bound}/metrics, health on http://{bound}/healthz"),
            Some("start"),
            Some(json!({"metrics_addr": bound.to_string()})),
        );
    }
    log.info(
        &format!(
            "Serving {} jobs from {} on {} (at most {} runs at once, {} per customer)",
            jobs.len(),
            options.jobs_file.display(),
            options.db,
            options.max_concurrent,
            options.max_per_customer
        ),
        Some("start"),
        None,
    );
    let state = Arc::new(State {
        log: LogSink::stderr(options.log_format, options.log_level, Redactor::default()).with_label("serve"),
        options,
        runner,
        store,
        metrics,
        running: Mutex::default(),
        stopping: AtomicBool::new(false),
    });
    listen_for_signals(state.clone());
    heartbeat(state.clone());
    Ok((state, jobs))
}

/// Descriptors the process keeps for itself: stdio, the database pool, the
/// metrics listener and its clients, the HTTP threads, the signal pipe.
const RESERVED_DESCRIPTORS: u64 = 64 + crate::store::postgres::POOL_SIZE as u64;

/// Descriptors one run may hold besides its connections: its async
/// runtime's poller and waker, a SQLite store (database, WAL, shared memory),
/// idle pooled sockets.
const DESCRIPTORS_PER_RUN: u64 = 8;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns how many
/// runs fit in it at once, each with its `--max-connections`: a run that
/// cannot get a descriptor would fail, so the process takes no more runs at
/// once than it has descriptors for. Errs when not even one fits.
fn size_to_descriptors(options: &ServeOptions, specs: &[JobSpec], log: &LogSink) -> Result<usize, String> {
    let descriptors = raise_open_files_limit();
    let per_run = DESCRIPTORS_PER_RUN
        + specs
            .iter()
            .map(|spec| {
                let mut o = JobOptions::new(spec.plugin.clone(), spec.settings.clone(), options.db.clone());
                spec.flags.apply(&mut o);
                o.budget.max_connections as u64
            })
            .max()
            .unwrap_or(crate::budget::BudgetLimits::default().max_connections as u64);
    let fit = descriptors.saturating_sub(RESERVED_DESCRIPTORS) / per_run;
    if fit == 0 {
        return Err(format!(
            "this process may open only {descriptors} files (ulimit -n), too few for one run ({per_run} descriptors \
             at most, with its connections, beside {RESERVED_DESCRIPTORS} for the process); raise the limit"
        ));
    }
    let fit = usize::try_from(fit).unwrap_or(usize::MAX);
    if fit < options.max_concurrent {
        log.warn(
            &format!(
                "--max-concurrent {} lowered to {fit}: this process may open {descriptors} files (ulimit -n, hard \
                 limit) and each run may hold up to {per_run} (its --max-connections and its runtime and store); \
                 raise the hard limit (ulimit -Hn, LimitNOFILE=) to run more at once",
                options.max_concurrent
            ),
            Some("start"),
            Some(json!({"max_concurrent": fit, "open_files": descriptors, "per_run": per_run})),
        );
        return Ok(fit);
    }
    Ok(options.max_concurrent)
}

/// Raises this process's soft limit on open files to its hard limit (what an
/// unprivileged process may do) and returns the limit it then has.
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls writing into and reading from `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur as u64
}

/// The scheduler: claims due slots and starts their runs until told to stop,
/// then lets running jobs finish for the grace period and stops the rest.
fn run(state: Arc<State>, jobs: Vec<Job>) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            state
                .log
                .error(&format!("cannot start the scheduler: {e}"), Some("start"), None);
            return 1;
        }
    };
    let owner = SlotOwner {
        host: crate::store::owner::this_host(),
        pid: std::process::id(),
        lease: state.options.lease,
    };
    // Per job: the slot it last claimed or found done, or found held
    // elsewhere and when to look at it again (its holder may die).
    let mut handled: HashMap<String, (String, Option<Instant>)> = HashMap::new();
    let recheck = state.options.lease / 2;
    while !state.stopping.load(Ordering::Relaxed) {
        let now = chrono::Utc::now();
        let mut waiting = 0;
        // Every due slot this host could run, claimed below until its room is
        // full. Not only as many as it has room for: those may all be held
        // by another host already (hosts see the jobs in the same order), and
        // a host that only ever asked for them would never get a slot while
        // a faster one took every other.
        let mut due: Vec<(&Job, SlotClaim)> = Vec::new();
        let (room, mut of_customer) = {
            let running = state.running.lock().unwrap_or_else(|p| p.into_inner());
            let mut of_customer: HashMap<String, usize> = HashMap::new();
            for r in running.values() {
                *of_customer.entry(r.customer.clone()).or_default() += 1;
            }
            for job in &jobs {
                let Some(slot) = job.spec.cadence.slot(now) else {
                    continue;
                };
                let key = slot_key(slot);
                if let Some((seen, again)) = handled.get(&job.spec.name)
                    && *seen == key
                    && again.is_none_or(|at| Instant::now() < at)
                {
                    continue;
                }
                if running.contains_key(&job.spec.name) {
                    continue;
                }
                due.push((
                    job,
                    SlotClaim {
                        job_name: job.spec.name.clone(),
                        slot_at: key,
                        job_id: uuid::Uuid::new_v4().to_string(),
                    },
                ));
            }
            (state.options.max_concurrent.saturating_sub(running.len()), of_customer)
        };
        let mut claimed = 0;
        let mut next = 0;
        while next < due.len() && claimed < room && !state.stopping.load(Ordering::Relaxed) {
            // A batch of candidates whose customers have room, counting their
            // runs going on, this tick's claims and the batch itself; one
            // left out here is looked at again next tick.
            let mut batch = Vec::new();
            let mut in_batch: HashMap<&str, usize> = HashMap::new();
            while next < due.len() && batch.len() < CLAIMS_PER_COMMIT {
                let (job, claim) = &due[next];
                next += 1;
                let customer = job.customer.as_str();
                let taken =
                    of_customer.get(customer).copied().unwrap_or(0) + in_batch.get(customer).copied().unwrap_or(0);
                if taken >= state.options.max_per_customer {
                    waiting += 1;
                    continue;
                }
                *in_batch.entry(customer).or_default() += 1;
                batch.push((*job, claim.clone()));
            }
            if batch.is_empty() {
                break;
            }
            let claims: Vec<SlotClaim> = batch.iter().map(|(_, c)| c.clone()).collect();
            let answers = match runtime.block_on(state.store.claim_slots(claims, owner.clone(), room - claimed)) {
                Ok(answers) => answers,
                Err(e) => {
                    state.log.error(
                        &format!("could not claim {} due slots: {e}; retrying", batch.len()),
                        Some("claim"),
                        None,
                    );
                    break;
                }
            };
            for ((job, claim), answer) in batch.into_iter().zip(answers) {
                let (name, key) = (&job.spec.name, claim.slot_at.clone());
                match answer {
                    Some(Claim::Claimed { took_over }) => {
                        claimed += 1;
                        *of_customer.entry(job.customer.clone()).or_default() += 1;
                        handled.insert(name.clone(), (key.clone(), None));
                        if let Some(note) = took_over {
                            state.log.warn(&format!("{name}: {note}"), Some("claim"), None);
                        }
                        start_run(&state, job, key, claim.job_id.clone());
                    }
                    Some(Claim::Done) => {
                        handled.insert(name.clone(), (key, None));
                    }
                    Some(Claim::Held | Claim::Busy) => {
                        handled.insert(name.clone(), (key, Some(Instant::now() + recheck)));
                    }
                    // Not asked: the room filled first.
                    None => waiting += 1,
                }
            }
        }
        // Due slots this host had no room to ask for.
        waiting += (due.len() - next) as i64;
        state.metrics.waiting.set(waiting);
        std::thread::sleep(TICK);
    }
    shut_down(&state)
}

/// Starts one run on a thread of its own.
fn start_run(state: &Arc<State>, job: &Job, slot: String, job_id: String) {
    let spec = job.spec.clone();
    let mut options = JobOptions {
        params: spec.params.clone(),
        log_format: state.options.log_format,
        log_level: state.options.log_level,
        lease: state.options.lease,
        compile: state.options.compile,
        job_id: Some(job_id.clone()),
        inline_settings: spec.inline_settings.clone(),
        ledger: state.options.ledger.clone(),
        api_token: spec.api_token.clone(),
        ..JobOptions::new(spec.plugin.clone(), spec.settings.clone(), state.options.db.clone())
    };
    spec.flags.apply(&mut options);
    let stop = Stop::new(options.limits.timeout);
    state.running.lock().unwrap_or_else(|p| p.into_inner()).insert(
        spec.name.clone(),
        Running {
            job_id: job_id.clone(),
            customer: job.customer.clone(),
            stop: stop.clone(),
        },
    );
    state.metrics.run_started(&spec.name);
    let state = state.clone();
    let name = spec.name.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("nuntiq-run:{name}"))
        .spawn({
            let state = state.clone();
            let name = name.clone();
            let job_id = job_id.clone();
            move || execute(&state, &name, &slot, &job_id, &options, stop)
        });
    if let Err(e) = spawned {
        let why = crate::limits::Overloaded(format!("the run's thread could not start: {e}"));
        state.log.error(&format!("{name}: {why}"), Some("run"), None);
        state.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
        state.metrics.run_finished(&name, "host_overloaded", None, 0.0);
        if let Err(e) = finish_slot(&state, &job_id, "failed", Some("host_overloaded".into())) {
            state.log.error(&format!("{name}: could not record how its slot ended: {e}"), Some("run"), None);
        }
    }
}

/// One run, start to slot record; nothing in it can end the process, and
/// its slot is recorded however it ended.
fn execute(state: &State, name: &str, slot: &str, job_id: &str, options: &JobOptions, stop: Arc<Stop>) {
    let started = Instant::now();
    let label = name.to_owned();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                let why = crate::limits::Overloaded(format!("the run's async runtime could not start: {e}"));
                state.log.error(&format!("{name}: slot {slot}: {why}"), Some("run"), None);
                return ("failed", Some("host_overloaded".to_owned()), None);
            }
        };
        let report = runtime.block_on(run_job(&state.runner, options, stop, |format, level, redactor| {
            LogSink::stderr(format, level, redactor).with_label(label.clone())
        }));
        let kind = report.envelope["error"]["kind"].as_str().map(str::to_owned);
        let usage: Option<Usage> = serde_json::from_value(report.envelope["usage"].clone()).ok();
        match (report.exit_code, kind) {
            (0, _) => ("succeeded", None, usage),
            (_, kind) => ("failed", Some(kind.unwrap_or_else(|| "internal".into())), usage),
        }
    }));
    let (status, outcome, usage) = outcome.unwrap_or_else(|_| ("failed", Some("internal".into()), None));
    // On the scheduler's store handle, whatever happened to the run's own.
    if let Err(e) = finish_slot(state, job_id, status, outcome.clone()) {
        state.log.error(&format!("{name}: could not record how slot {slot} ended: {e}"), Some("run"), None);
    }
    let seconds = started.elapsed().as_secs_f64();
    state.running.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    let shown = outcome.clone().unwrap_or_else(|| status.to_owned());
    state.metrics.run_finished(name, &shown, usage.as_ref(), seconds);
    state.log.info(
        &format!(
            "{name}: slot {slot} {status}{} in {seconds:.1} s",
            outcome.map(|k| format!(" ({k})")).unwrap_or_default()
        ),
        Some("run"),
        Some(json!({"job": name, "slot": slot, "job_id": job_id, "status": shown, "usage": usage})),
    );
}

/// Records how a slot ended, from a run's thread. Its runtime has no I/O
/// driver and opens nothing (the store's worker does the work), so it starts
/// even when the run could not get a descriptor.
fn finish_slot(state: &State, job_id: &str, status: &'static str, outcome: Option<String>) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("no runtime to record it on: {e}"))?;
    runtime
        .block_on(state.store.finish_slot(job_id.to_owned(), status, outcome))
        .map_err(|e| e.to_string())
}

/// Renews the claims of running slots every quarter lease; a run whose slot
/// another host took over (this one was cut off too long) is stopped.
fn heartbeat(state: Arc<State>) {
    let every = state.options.lease / 4;
    let _ = std::thread::Builder::new()
        .name("nuntiq-slot-lease".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let ids: Vec<String> = state
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .map(|r| r.job_id.clone())
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                match state.store.renew_slots_blocking(ids, state.options.lease) {
                    Ok(lost) => {
                        let running = state.running.lock().unwrap_or_else(|p| p.into_inner());
                        for (name, run) in running.iter().filter(|(_, r)| lost.contains(&r.job_id)) {
                            state.log.error(
                                &format!("{name}: another host took over this run's slot; stopping the run"),
                                Some("lease"),
                                None,
                            );
                            run.stop.cancel("slot takeover");
                        }
                    }
                    Err(e) => state
                        .log
                        .warn(&format!("could not renew the slots' leases: {e}"), Some("lease"), None),
                }
            }
        });
}

/// SIGTERM or SIGINT: stop scheduling, let runs finish; a second one ends the
/// process at once.
fn listen_for_signals(state: Arc<State>) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("nuntiq-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                let name = if signal == SIGTERM { "SIGTERM" } else { "SIGINT" };
                seen += 1;
                if seen == 1 {
                    state.log.info(
                        &format!(
                            "{name}: no new runs; running ones get {} to finish",
                            humantime::format_duration(state.options.grace)
                        ),
                        Some("stop"),
                        None,
                    );
                    state.metrics.healthy.store(false, Ordering::Relaxed);
                    state.stopping.store(true, Ordering::Relaxed);
                    continue;
                }
                state.log.error(
                    &format!("{name} a second time: exiting now; open runs stay running until their leases expire"),
                    Some("stop"),
                    None,
                );
                std::process::exit(1);
            }
        });
}

/// Waits for running jobs up to the grace period, then stops the rest (each
/// fails cleanly: its cursor stays, its slot records why) and waits for them.
fn shut_down(state: &State) -> u8 {
    let count = || state.running.lock().unwrap_or_else(|p| p.into_inner()).len();
    let deadline = Instant::now() + state.options.grace;
    while count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = count();
    if left > 0 {
        state.log.warn(
            &format!("stopping {left} runs still going after the grace period"),
            Some("stop"),
            None,
        );
        for run in state.running.lock().unwrap_or_else(|p| p.into_inner()).values() {
            run.stop.cancel("SIGTERM");
        }
        // Each run settles within its own grace; a little more for the slot record.
        let settle = Instant::now() + Limits::default().grace + Duration::from_secs(5);
        while count() > 0 && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    state.log.info("stopped", Some("stop"), None);
    0
}
