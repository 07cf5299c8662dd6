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

mod control;
pub mod definition;
pub mod jobs;
pub mod metrics;

use crate::compile::CompileLimits;
use crate::job::{JobOptions, Runner, run_job};
use crate::limits::{Limits, Stop};
use crate::log::{Level, LogFormat, LogSink, Redactor};
use crate::meter::Usage;
use crate::store::delta::JobEnd;
use crate::store::schedule::{Claim, HEARTBEAT, HostBeat, STALE_AFTER, SlotClaim, SlotOwner, Unrun};
use crate::store::{Db, Store};
use chrono::{DateTime, Utc};
use control::Job;
use jobs::{JobSpec, MAX_BACKLOG, MissedPolicy, slot_key};
use metrics::Metrics;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The operator's choices for a `serve` process.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The one-machine shortcut: this jobs file is applied to the database
    /// at start (and again on SIGHUP). Without it the jobs are the ones
    /// stored in the database (`jobs apply`).
    pub jobs_file: Option<PathBuf>,
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
    /// Where the jobs' secret references may read on this host.
    pub secret_policy: crate::secrets::SecretPolicy,
    /// The connectors' wasm stack, for the whole process (one engine).
    pub max_stack: Option<usize>,
    pub log_format: LogFormat,
    pub log_level: Level,
    /// At start, how long to wait for a PostgreSQL database that does not
    /// answer yet (a host and its database started together).
    pub wait_for_db: Duration,
}

/// How often the scheduler looks for due slots.
const TICK: Duration = Duration::from_millis(200);

/// Due slots claimed in one store transaction: one commit for many claims,
/// while the first runs start before the last are claimed.
const CLAIMS_PER_COMMIT: usize = 50;

/// A run going on in this process.
struct Running {
    job_id: String,
    customer: String,
    stop: Arc<Stop>,
}

struct State {
    options: ServeOptions,
    /// The jobs, as last read from the database.
    control: control::Control,
    runner: Runner,
    store: Store,
    metrics: Arc<Metrics>,
    log: LogSink,
    running: Mutex<HashMap<String, Running>>,
    /// Set by the first SIGTERM or SIGINT.
    stopping: AtomicBool,
    /// The database outage going on, if any: logged once when it starts and
    /// once when it ends, with the failures counted in between.
    outage: Mutex<Option<Outage>>,
    /// Runs that ended while the database did not answer, recorded (slot,
    /// history) once it answers again.
    pending: Mutex<Vec<(JobEnd, &'static str, Option<String>)>>,
    /// This process's heartbeat row.
    me: HostBeat,
    /// `serve` processes whose heartbeat is fresh, this one included: each
    /// claims about its share of the due slots.
    live_hosts: AtomicUsize,
}

struct Outage {
    since: Instant,
    failures: u64,
}

/// Runs the jobs until SIGTERM or SIGINT; returns the process's exit code
/// (2 when the jobs file, a job's settings or plugin, or the database is
/// unusable; [`EXIT_CANCELLED`] when runs had to be cancelled at the grace deadline).
pub fn serve(options: ServeOptions) -> u8 {
    let log = LogSink::stderr(options.log_format, options.log_level, Redactor::default()).with_label("serve");
    // What libraries report outside any run's thread; each run's own go to its log.
    let _ = tracing::dispatcher::set_global_default(log.dispatch().clone());
    match start(options, &log) {
        Ok(state) => run(state),
        Err(message) => {
            log.error(&format!("Nothing was started: {message}"), Some("start"), None);
            2
        }
    }
}

fn start(mut options: ServeOptions, log: &LogSink) -> Result<Arc<State>, String> {
    // A jobs file is checked whole (plugins, settings, network policy) before
    // anything is written; then it is applied, and served from the database.
    let checked = options.jobs_file.as_deref().map(definition::check_file).transpose()?;
    let mut limits = Limits::default();
    if let Some(stack) = options.max_stack {
        limits.max_wasm_stack_bytes = stack;
    }
    let runner = Runner::new(&limits, options.cache_dir.clone(), options.compile).map_err(|e| e.to_string())?;
    for spec in checked.iter().flat_map(|c| &c.specs) {
        let fail = |e: String| format!("job {:?}: {e}", spec.name);
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
    }
    let store = open_store(&options, log)?;
    if let (Some(checked), Some(file)) = (&checked, &options.jobs_file) {
        let mut said = Vec::new();
        let by = format!("{} (serve)", crate::jobs_admin::actor(None));
        crate::jobs_admin::apply_checked(scheduler_db(&options), checked, false, &by, &mut said)
            .map_err(|e| format!("{}: could not apply it: {e}", file.display()))?;
        log.info(String::from_utf8_lossy(&said).trim_end(), Some("start"), None);
    }
    let set = control::load(&store, log)?;
    if checked.is_none() {
        // Jobs from the database: one that cannot run fails its own slots, never the start.
        for job in &set.jobs {
            if let Err(e) = runner.plugin(&job.spec.plugin) {
                log.error(
                    &format!("{}: its plugin cannot run: {e}; its slots fail as invalid_plugin", job.spec.name),
                    Some("start"),
                    None,
                );
            }
        }
    }
    let specs: Vec<JobSpec> = set.jobs.iter().map(|j| j.spec.clone()).collect();
    options.max_concurrent = size_to_descriptors(&options, &specs, log)?;
    let (me, live) = join_hosts(&store, log)?;
    let metrics = Metrics::new();
    if let Some(addr) = options.metrics_addr {
        let bound = metrics::serve(addr, metrics.clone()).map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
        log.info(
            &format!(
                "Metrics on http://{bound}/metrics, health on http://{bound}/healthz, readiness on \
                 http://{bound}/readyz"
            ),
            Some("start"),
            Some(json!({"metrics_addr": bound.to_string()})),
        );
    }
    log.info(
        &format!(
            "Serving {} jobs from {} on {} (at most {} runs at once, {} per customer); changes made with \
             jobs apply, pause, resume, trigger and delete apply within seconds",
            set.jobs.len(),
            options
                .jobs_file
                .as_ref()
                .map_or_else(|| "the database".to_owned(), |f| f.display().to_string()),
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
        control: control::Control::default(),
        runner,
        store,
        metrics,
        running: Mutex::default(),
        stopping: AtomicBool::new(false),
        outage: Mutex::default(),
        pending: Mutex::default(),
        me,
        live_hosts: AtomicUsize::new(live),
    });
    control::install(&state, set);
    listen_for_signals(state.clone());
    heartbeat(state.clone());
    watch_database(state.clone());
    control::watch(state.clone());
    Ok(state)
}

/// Writes this process's first heartbeat, after marking dead the `serve`
/// processes of this machine that crashed (their slots are then taken over
/// at once); returns this process's row and the live hosts.
fn join_hosts(store: &Store, log: &LogSink) -> Result<(HostBeat, usize), String> {
    let pid = std::process::id();
    let me = HostBeat {
        id: uuid::Uuid::new_v4().to_string(),
        hostname: crate::store::owner::this_host(),
        pid,
        instance: crate::store::owner::this_instance(),
        process_start: crate::store::owner::process_start(pid),
        started: crate::store::schema::now_utc(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    let freed = runtime
        .block_on(store.free_dead_here(me.clone()))
        .map_err(|e| format!("the database: {e}"))?;
    if !freed.is_empty() {
        log.warn(
            &format!(
                "processes {freed:?} of this machine ended without stopping; their slots are taken over now"
            ),
            Some("start"),
            None,
        );
    }
    let live = runtime
        .block_on(store.heartbeat(me.clone()))
        .map_err(|e| format!("the database: {e}"))?;
    Ok((me, live))
}

/// Opens the store; a PostgreSQL server that does not answer yet is asked
/// again with backoff (0.5 s doubling to 5 s) for up to `--wait-for-db`,
/// with one line when the wait starts and one when it ends.
/// The store of slots, leases, heartbeats and run history: `--db`, or on the
/// Customer API its ledger.
fn scheduler_db(options: &ServeOptions) -> &Db {
    match &options.db {
        Db::Nuntiq(_) => &options.ledger,
        db => db,
    }
}

fn open_store(options: &ServeOptions, log: &LogSink) -> Result<Store, String> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(500);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match Store::open(scheduler_db(options)) {
            Ok(store) => {
                if attempts > 1 {
                    log.info(
                        &format!(
                            "{} answers after {:.1} s ({attempts} attempts)",
                            options.db,
                            started.elapsed().as_secs_f64()
                        ),
                        Some("start"),
                        None,
                    );
                }
                return Ok(store);
            }
            Err(e) if matches!(scheduler_db(options), Db::Postgres(_)) && started.elapsed() + pause <= options.wait_for_db => {
                if attempts == 1 {
                    log.warn(
                        &format!(
                            "{e}; waiting up to {} for the database (--wait-for-db)",
                            humantime::format_duration(options.wait_for_db)
                        ),
                        Some("start"),
                        None,
                    );
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) if attempts > 1 => {
                return Err(format!(
                    "{e} (still, after waiting {:.0} s: --wait-for-db)",
                    started.elapsed().as_secs_f64()
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
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
fn run(state: Arc<State>) -> u8 {
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
    let mut tracks: HashMap<String, Track> = HashMap::new();
    // A slot held elsewhere is asked for again this often: its holder may
    // have died (lease expired, or heartbeat stale).
    let recheck = (state.options.lease / 2).min(STALE_AFTER / 2);
    // Slots that pass while the database is away are recorded, once it
    // answers, as missed for that reason.
    let mut database_was_away = false;
    let mut triggers = control::Triggers::default();
    let mut generation = None;
    while !state.stopping.load(Ordering::Relaxed) {
        if state.outage.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            // Nothing is claimed until the database answers (the watcher asks it).
            database_was_away = true;
            std::thread::sleep(TICK);
            continue;
        }
        let now = chrono::Utc::now();
        let mut waiting = 0;
        // This tick's jobs; a change in the database swaps in another set.
        let snapshot = state.control.snapshot();
        let jobs = &snapshot.jobs;
        if snapshot.generation != generation {
            generation = snapshot.generation;
            let names: std::collections::HashSet<&str> = jobs.iter().map(|j| j.spec.name.as_str()).collect();
            tracks.retain(|name, _| names.contains(name.as_str()));
            triggers.keep(&snapshot.triggers);
        }
        // Every due slot this host could run, claimed below until its room is
        // full. Not only as many as it has room for: those may all be held
        // by another host already (hosts see the jobs in the same order), and
        // a host that only ever asked for them would never get a slot while
        // a faster one took every other.
        // Each with whether it is a triggered slot (`jobs trigger`).
        let mut due: Vec<(&Job, SlotClaim, bool)> = Vec::new();
        // Slots whose time passed without a run, to record, and where each
        // job's tracking goes once they are.
        let mut unrun: Vec<Unrun> = Vec::new();
        let mut passed: Vec<(&str, DateTime<Utc>)> = Vec::new();
        // Jobs with a due slot, and those whose due slot this host claimed.
        let (mut considered, mut mine) = (0usize, 0usize);
        let mut fresh = false;
        let (room, mut of_customer) = {
            let running = state.running.lock().unwrap_or_else(|p| p.into_inner());
            let mut of_customer: HashMap<String, usize> = HashMap::new();
            for r in running.values() {
                *of_customer.entry(r.customer.clone()).or_default() += 1;
            }
            for job in jobs {
                let name = job.spec.name.as_str();
                let Some(current) = job.spec.cadence.slot(now) else {
                    continue;
                };
                let track = tracks
                    .entry(name.to_owned())
                    .or_insert_with(|| Track::new(current, &job.digest));
                // A changed definition (its cadence, say) is tracked afresh.
                if track.digest != job.digest {
                    *track = Track::new(current, &job.digest);
                }
                let (candidate, gone, resume) = track.look(&job.spec, current, now);
                if job.paused.is_some() {
                    let (slots, resume) = track.paused(&job.spec, candidate, gone, resume);
                    unrun.extend(slots.into_iter().map(|slot| Unrun {
                        job_name: name.to_owned(),
                        slot_at: slot_key(slot),
                        status: "skipped",
                        reason: Some("paused"),
                    }));
                    passed.push((name, resume));
                    track.busy = running.contains_key(name);
                    continue;
                }
                let (status, reason) = if database_was_away {
                    ("missed", Some("store_unavailable"))
                } else if track.busy {
                    ("skipped", None)
                } else {
                    ("missed", None)
                };
                unrun.extend(gone.into_iter().map(|slot| Unrun {
                    job_name: name.to_owned(),
                    slot_at: slot_key(slot),
                    status,
                    reason,
                }));
                passed.push((name, resume));
                let running_here = running.contains_key(name);
                track.busy = running_here;
                let Some(candidate) = candidate else { continue };
                let key = slot_key(candidate);
                considered += 1;
                if track.mine && track.handled.as_ref().is_some_and(|(seen, _)| *seen == key) {
                    mine += 1;
                }
                if let Some((seen, again)) = &track.handled
                    && *seen == key
                    && again.is_none_or(|at| Instant::now() < at)
                {
                    continue;
                }
                if running_here {
                    continue;
                }
                state.metrics.lag(name, (now - candidate).as_seconds_f64());
                fresh |= (now - candidate).to_std().unwrap_or_default() < SHARE_WINDOW;
                due.push((
                    job,
                    SlotClaim {
                        job_name: job.spec.name.clone(),
                        slot_at: key,
                        job_id: uuid::Uuid::new_v4().to_string(),
                    },
                    false,
                ));
            }
            let (asked, paused) = triggers.due(&snapshot, &running);
            unrun.extend(paused);
            due.extend(asked.into_iter().map(|(job, claim)| (job, claim, true)));
            (state.options.max_concurrent.saturating_sub(running.len()), of_customer)
        };
        // Fair share: with other live hosts, this one claims about its part
        // of the jobs due now (plus a little slack), so losing a host strands
        // only its part. Slots left waiting past the window go to any host
        // with room.
        let live = state.live_hosts.load(Ordering::Relaxed).max(1);
        let room = if live > 1 && fresh {
            let share = considered.div_ceil(live) + (considered / 20).max(1);
            room.min(share.saturating_sub(mine))
        } else {
            room
        };
        if record_unrun(&state, &runtime, unrun, &owner) {
            database_was_away = false;
            for (name, resume) in passed {
                if let Some(track) = tracks.get_mut(name) {
                    track.from = track.from.max(resume);
                }
            }
        }
        let mut claimed = 0;
        let mut next = 0;
        while next < due.len() && claimed < room && !state.stopping.load(Ordering::Relaxed) {
            // A batch of candidates whose customers have room, counting their
            // runs going on, this tick's claims and the batch itself; one
            // left out here is looked at again next tick.
            let mut batch = Vec::new();
            let mut in_batch: HashMap<&str, usize> = HashMap::new();
            while next < due.len() && batch.len() < CLAIMS_PER_COMMIT {
                let (job, claim, trigger) = &due[next];
                next += 1;
                let customer = job.customer.as_str();
                let taken =
                    of_customer.get(customer).copied().unwrap_or(0) + in_batch.get(customer).copied().unwrap_or(0);
                if taken >= state.options.max_per_customer {
                    waiting += 1;
                    continue;
                }
                *in_batch.entry(customer).or_default() += 1;
                batch.push((*job, claim.clone(), *trigger));
            }
            if batch.is_empty() {
                break;
            }
            let claims: Vec<SlotClaim> = batch.iter().map(|(_, c, _)| c.clone()).collect();
            let answers = match runtime.block_on(state.store.claim_slots(claims, owner.clone(), room - claimed)) {
                Ok(answers) => answers,
                Err(e) => {
                    store_failed(&state, "claim", &format!("could not claim {} due slots: {e}", batch.len()));
                    break;
                }
            };
            for ((job, claim, trigger), answer) in batch.into_iter().zip(answers) {
                if trigger {
                    if let Some(Claim::Claimed { took_over }) = &answer {
                        claimed += 1;
                        *of_customer.entry(job.customer.clone()).or_default() += 1;
                        if let Some(note) = took_over {
                            state.log.warn(&format!("{}: {note}", job.spec.name), Some("claim"), None);
                        }
                        start_run(&state, job, claim.slot_at.clone(), claim.job_id.clone());
                    }
                    waiting += i64::from(answer.is_none());
                    triggers.answered(&claim, answer.as_ref(), recheck);
                    continue;
                }
                let (name, key) = (&job.spec.name, claim.slot_at.clone());
                let Some(track) = tracks.get_mut(name) else { continue };
                let settled = |track: &mut Track| {
                    if let Some(after) = DateTime::parse_from_rfc3339(&key)
                        .ok()
                        .and_then(|slot| job.spec.cadence.next(slot.with_timezone(&Utc)))
                    {
                        track.from = track.from.max(after);
                    }
                };
                match answer {
                    Some(Claim::Claimed { took_over }) => {
                        claimed += 1;
                        *of_customer.entry(job.customer.clone()).or_default() += 1;
                        settled(track);
                        track.handled = Some((key.clone(), None));
                        track.mine = true;
                        if let Some(note) = took_over {
                            state.metrics.taken_over(name);
                            state.log.warn(&format!("{name}: {note}"), Some("claim"), None);
                        }
                        if let Ok(slot) = DateTime::parse_from_rfc3339(&key) {
                            state.metrics.lag(name, (Utc::now() - slot.with_timezone(&Utc)).as_seconds_f64());
                        }
                        start_run(&state, job, key, claim.job_id.clone());
                    }
                    Some(Claim::Done) => {
                        settled(track);
                        track.handled = Some((key, None));
                        track.mine = false;
                    }
                    // Running elsewhere: that host records how it ends; looked
                    // at again later, in case that host dies.
                    Some(Claim::Held) => {
                        settled(track);
                        track.handled = Some((key, Some(Instant::now() + recheck)));
                        track.mine = false;
                    }
                    // The job's previous slot still runs somewhere.
                    Some(Claim::Busy) => {
                        track.busy = true;
                        track.handled = Some((key, Some(Instant::now() + recheck)));
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

/// What the scheduler knows of one job's slots.
struct Track {
    /// The earliest slot this host has not seen settled (claimed, run,
    /// recorded): each tick looks at the slots from here to the current one.
    from: DateTime<Utc>,
    /// The job's previous run was going (here, or elsewhere by the store's
    /// answer) when last looked at: a slot that passed meanwhile was
    /// `skipped`, not `missed`.
    busy: bool,
    /// The slot last asked for and what the answer was: done (`None`), or
    /// held elsewhere and when to ask again (its holder may die).
    handled: Option<(String, Option<Instant>)>,
    /// Whether this host claimed the slot in `handled`.
    mine: bool,
    /// The definition tracked (see [`Job::digest`]).
    digest: String,
}

/// How long after its time a due slot is shared out between the live hosts;
/// after that, any host with room claims it.
const SHARE_WINDOW: Duration = Duration::from_secs(1);

/// Slots of one job looked at in one tick, at most: a process that was
/// stopped (SIGSTOP, a frozen VM) for longer records the rest on later ticks.
const MAX_SLOTS_PER_TICK: usize = 1000;

impl Track {
    /// Tracking from the slot due when the process starts: slots before it
    /// were no one's to run here (the next run's cursor fetches what
    /// changed meanwhile).
    fn new(current: DateTime<Utc>, digest: &str) -> Self {
        Self {
            from: current,
            busy: false,
            handled: None,
            mine: false,
            digest: digest.to_owned(),
        }
    }

    /// While the job or its customer is paused: the slots to record as
    /// skipped (those that passed, and the due one once), and where tracking
    /// resumes once they are (past the due one, so it is not looked at again).
    fn paused(
        &mut self,
        spec: &JobSpec,
        candidate: Option<DateTime<Utc>>,
        mut gone: Vec<DateTime<Utc>>,
        mut resume: DateTime<Utc>,
    ) -> (Vec<DateTime<Utc>>, DateTime<Utc>) {
        if let Some(slot) = candidate {
            let key = slot_key(slot);
            if self.handled.as_ref().is_none_or(|(seen, _)| *seen != key) {
                gone.push(slot);
                self.handled = Some((key, None));
                self.mine = false;
            }
            resume = resume.max(spec.cadence.next(slot).unwrap_or(slot));
        }
        (gone, resume)
    }

    /// At `now`, with `current` the job's latest due slot: the slot to run
    /// (if any), the slots whose time passed without a run, by the job's
    /// missed-slot policy, and where tracking resumes once those are recorded.
    fn look(
        &self,
        spec: &JobSpec,
        current: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> (Option<DateTime<Utc>>, Vec<DateTime<Utc>>, DateTime<Utc>) {
        let mut behind = Vec::new();
        let mut slot = self.from;
        while slot < current && behind.len() < MAX_SLOTS_PER_TICK {
            behind.push(slot);
            match spec.cadence.next(slot) {
                Some(next) if next > slot => slot = next,
                _ => break,
            }
        }
        let resume = if behind.len() < MAX_SLOTS_PER_TICK { current } else { slot };
        match spec.missed {
            MissedPolicy::Latest => (Some(current), behind, resume),
            MissedPolicy::Skip => {
                let interval = spec
                    .cadence
                    .next(current)
                    .and_then(|next| (next - current).to_std().ok())
                    .unwrap_or(Duration::from_secs(60));
                let tolerance = (interval / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
                let late = (now - current).to_std().unwrap_or_default() > tolerance;
                if late && self.from <= current {
                    behind.push(current);
                    let after = spec.cadence.next(current).unwrap_or(current);
                    (None, behind, after)
                } else {
                    (Some(current), behind, resume)
                }
            }
            MissedPolicy::All => {
                // The oldest slot not run yet runs next; past the backlog, the oldest are missed.
                let mut waiting = behind;
                let over = (waiting.len() + 1).saturating_sub(MAX_BACKLOG);
                let kept = waiting.split_off(over.min(waiting.len()));
                let candidate = kept.first().copied().unwrap_or(current);
                (Some(candidate), waiting, candidate)
            }
        }
    }
}

/// Records slots that passed without a run, with a log line and the slot
/// metric; false when the store could not (they are looked at again next tick).
fn record_unrun(state: &State, runtime: &tokio::runtime::Runtime, slots: Vec<Unrun>, owner: &SlotOwner) -> bool {
    if slots.is_empty() {
        return true;
    }
    let recorded = match runtime.block_on(state.store.record_unrun(slots.clone(), owner.clone())) {
        Ok(recorded) => recorded,
        Err(e) => {
            store_failed(
                state,
                "record",
                &format!("could not record {} slots that passed without a run: {e}", slots.len()),
            );
            return false;
        }
    };
    let mine: Vec<&Unrun> = slots.iter().zip(recorded).filter(|(_, r)| *r).map(|(s, _)| s).collect();
    for (status, reason) in [
        ("missed", None),
        ("missed", Some("store_unavailable")),
        ("skipped", None),
        ("skipped", Some("paused")),
    ] {
        let these: Vec<&&Unrun> = mine.iter().filter(|s| s.status == status && s.reason == reason).collect();
        if these.is_empty() {
            continue;
        }
        for slot in &these {
            state.metrics.slot_ended(&slot.job_name, status);
        }
        let why = match (status, reason) {
            ("missed", None) => "their time passed with no room to start them (--max-concurrent, --max-per-customer)",
            ("missed", _) => "their time passed while the database was unreachable",
            ("skipped", Some(_)) => "the job or its customer is paused (jobs resume)",
            _ => "the job's previous run was still going",
        };
        let shown: Vec<String> = these.iter().take(10).map(|s| format!("{} {}", s.job_name, s.slot_at)).collect();
        let more = these.len().saturating_sub(shown.len());
        state.log.warn(
            &format!(
                "{} slots {status}: {why}: {}{}; `nuntiq-host slots --outcome {status}` lists them",
                these.len(),
                shown.join(", "),
                if more > 0 { format!(" and {more} more") } else { String::new() }
            ),
            Some("slot"),
            Some(json!({
                "outcome": status,
                "reason": reason,
                "slots": these.iter().map(|s| json!({"job": s.job_name, "slot": s.slot_at})).collect::<Vec<_>>(),
            })),
        );
    }
    true
}

/// What `run-plugin` would be given for one run of `spec`.
fn job_options(serve: &ServeOptions, spec: &JobSpec, job_id: &str) -> JobOptions {
    let mut options = JobOptions {
        params: spec.params.clone(),
        log_format: serve.log_format,
        log_level: serve.log_level,
        lease: serve.lease,
        compile: serve.compile,
        job_id: Some(job_id.to_owned()),
        inline_settings: spec.inline_settings.clone(),
        job_secrets: spec.secrets.clone(),
        secret_policy: serve.secret_policy.clone(),
        ledger: serve.ledger.clone(),
        api_token: spec.api_token.clone(),
        plugin_sha256: spec.sha256.clone(),
        ..JobOptions::new(spec.plugin.clone(), spec.settings.clone(), serve.db.clone())
    };
    spec.flags.apply(&mut options);
    options
}

/// Starts one run on a thread of its own.
fn start_run(state: &Arc<State>, job: &Job, slot: String, job_id: String) {
    let spec = job.spec.clone();
    let options = job_options(&state.options, &spec, &job_id);
    let slot_for_history = slot.clone();
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
            let of = RunOf {
                name: name.clone(),
                customer: job.customer.clone(),
                connector: job.connector.clone(),
            };
            move || execute(&state, &of, &slot, &job_id, &options, stop)
        });
    if let Err(e) = spawned {
        let why = crate::limits::Overloaded(format!("the run's thread could not start: {e}"));
        state.log.error(&format!("{name}: {why}"), Some("run"), None);
        state.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
        state.metrics.run_finished(&name, "host_overloaded", None, 0.0);
        let end = JobEnd {
            job_id: job_id.clone(),
            job_name: name.clone(),
            slot_at: slot_for_history,
            customer_number: job.customer.clone(),
            connector_name: job.connector.clone(),
            started_at_utc: crate::store::schema::now_utc(),
            error: Some(("host_overloaded".into(), why.to_string())),
            usage: None,
            host: crate::store::owner::this_host(),
            pid: std::process::id(),
        };
        record_end(&state, end, "failed", Some("host_overloaded".into()));
    }
}

/// One run, start to slot record; nothing in it can end the process, and
/// its slot is recorded however it ended.
fn execute(state: &State, job: &RunOf, slot: &str, job_id: &str, options: &JobOptions, stop: Arc<Stop>) {
    let name = job.name.as_str();
    let started = Instant::now();
    let started_at = crate::store::schema::now_utc();
    let label = name.to_owned();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                let why = crate::limits::Overloaded(format!("the run's async runtime could not start: {e}"));
                state.log.error(&format!("{name}: slot {slot}: {why}"), Some("run"), None);
                return ("failed", Some(("host_overloaded".to_owned(), why.to_string())), None);
            }
        };
        let report = runtime.block_on(run_job(&state.runner, options, stop, |format, level, redactor| {
            LogSink::stderr(format, level, redactor).with_label(label.clone())
        }));
        let kind = report.envelope["error"]["kind"].as_str().map(str::to_owned);
        let message = report.envelope["error"]["message"].as_str().unwrap_or_default().to_owned();
        let usage: Option<Usage> = serde_json::from_value(report.envelope["usage"].clone()).ok();
        match (report.exit_code, kind) {
            (0, _) => ("succeeded", None, usage),
            (_, kind) => ("failed", Some((kind.unwrap_or_else(|| "internal".into()), message)), usage),
        }
    }));
    let (status, error, usage) = outcome.unwrap_or_else(|_| {
        let why = "the host's handling of the run panicked (a bug: the log has the panic)";
        ("failed", Some(("internal".into(), why.into())), None)
    });
    let outcome = error.as_ref().map(|(kind, _)| kind.clone());
    // On the scheduler's store handle, whatever happened to the run's own.
    let shown = outcome.clone().unwrap_or_else(|| status.to_owned());
    let end = JobEnd {
        job_id: job_id.to_owned(),
        job_name: name.to_owned(),
        slot_at: slot.to_owned(),
        customer_number: job.customer.clone(),
        connector_name: job.connector.clone(),
        started_at_utc: started_at,
        error,
        // A run that ended before the connector started used only the time it took.
        usage: usage.or(Some(Usage {
            wall_ms: (started.elapsed().as_millis() as u64).max(1),
            ..Usage::default()
        })),
        host: crate::store::owner::this_host(),
        pid: std::process::id(),
    };
    // Counted before it is recorded: whoever sees the slot ended sees it counted.
    let seconds = started.elapsed().as_secs_f64();
    state.metrics.run_finished(name, &shown, usage.as_ref(), seconds);
    record_end(state, end, status, outcome.clone());
    state.running.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    state.log.info(
        &format!(
            "{name}: slot {slot} {status}{} in {seconds:.1} s",
            outcome.map(|k| format!(" ({k})")).unwrap_or_default()
        ),
        Some("run"),
        Some(json!({"job": name, "customer": job.customer, "slot": slot, "job_id": job_id, "status": shown, "usage": usage})),
    );
}

/// What a run's thread knows of its job.
struct RunOf {
    name: String,
    customer: String,
    connector: String,
}

/// Records how a run ended: its slot (and the slot metric) and its run
/// history rows.
fn record_end(state: &State, end: JobEnd, status: &'static str, outcome: Option<String>) {
    let shown = outcome.clone().unwrap_or_else(|| status.to_owned());
    state.metrics.job_ended(&end.job_name, &end.customer_number, &shown);
    if let Err((end, e)) = try_record_end(state, end, status, outcome.clone()) {
        let (name, slot) = (end.job_name.clone(), end.slot_at.clone());
        store_failed(
            state,
            "finish",
            &format!("{name}: could not record how slot {slot} ended ({shown}): {e}; recorded once the database answers"),
        );
        state
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((end, status, outcome));
    }
}

/// Records a run's slot and history rows (both idempotent, so they may be retried).
fn try_record_end(
    state: &State,
    end: JobEnd,
    status: &'static str,
    outcome: Option<String>,
) -> Result<(), (JobEnd, String)> {
    let shown = outcome.clone().unwrap_or_else(|| status.to_owned());
    if let Err(e) = finish_slot(state, &end.job_id, status, outcome) {
        return Err((end, e));
    }
    state.metrics.slot_ended(&end.job_name, &shown);
    let recorded = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("no runtime to record it on: {e}"))
        .and_then(|runtime| {
            runtime
                .block_on(state.store.record_job_end(end.clone()))
                .map_err(|e| e.to_string())
        });
    recorded.map_err(|e| (end, e))
}

/// Once the database answers: the runs that ended during the outage are
/// recorded, and the streams this process still holds for runs no longer
/// going are failed and released, so their next runs need not wait for
/// their leases.
fn settle_after_outage(state: &State, runtime: &tokio::runtime::Runtime) {
    let waiting: Vec<_> = std::mem::take(&mut *state.pending.lock().unwrap_or_else(|p| p.into_inner()));
    for (end, status, outcome) in waiting {
        if let Err((end, _)) = try_record_end(state, end, status, outcome.clone()) {
            state
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((end, status, outcome));
        }
    }
    let Ok(held) = runtime.block_on(state.store.held_streams(state.me.hostname.clone(), state.me.pid)) else {
        return;
    };
    if held.is_empty() {
        return;
    }
    // Read after the streams: a run that began one since is in this list.
    let going: Vec<String> = state
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .map(|r| r.job_id.clone())
        .collect();
    let orphans: Vec<_> = held
        .into_iter()
        .filter(|s| s.job_id.as_ref().is_none_or(|j| !going.contains(j)))
        .collect();
    if orphans.is_empty() {
        return;
    }
    let why = "store_unavailable: the run ended while the database was unreachable; released by its host".to_owned();
    match runtime.block_on(state.store.release_streams(orphans, why)) {
        Ok(n) if n > 0 => state.log.info(
            &format!("released {n} streams whose runs ended while the database was unreachable"),
            Some("store"),
            None,
        ),
        _ => {}
    }
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
                    Err(e) => store_failed(&state, "renew", &format!("could not renew the slots' leases: {e}")),
                }
            }
        });
}

/// How often the scheduler writes its heartbeat and asks how many streams
/// are stale: its proof that the database answers.
const DATABASE_WATCH: Duration = HEARTBEAT;

/// Every [`DATABASE_WATCH`]: this process's heartbeat (which counts the live
/// hosts) and the streams left running with an expired lease. The answers
/// feed the fair share, `/readyz` and the stale-stream gauge, and end an
/// outage.
fn watch_database(state: Arc<State>) {
    let _ = std::thread::Builder::new()
        .name("nuntiq-db-watch".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
                return;
            };
            loop {
                let answered = runtime.block_on(async {
                    let live = state.store.heartbeat(state.me.clone()).await?;
                    let stale = state.store.stale_streams().await?;
                    Ok::<_, crate::store::StoreError>((live, stale))
                });
                match answered {
                    Ok((live, stale)) => {
                        state.live_hosts.store(live, Ordering::Relaxed);
                        state.metrics.stale_streams.set(stale);
                        // Recorded before the outage is declared over: until then
                        // nothing is claimed, so no claim marks those slots abandoned.
                        settle_after_outage(&state, &runtime);
                        store_answered(&state);
                    }
                    Err(e) => store_failed(&state, "ping", &format!("the database does not answer: {e}")),
                }
                std::thread::sleep(DATABASE_WATCH);
            }
        });
}

/// A store operation failed: counted, and logged at ERROR only when it starts
/// an outage (then `/readyz` answers 503 until the database answers again);
/// failures during an outage are counted, logged at debug.
fn store_failed(state: &State, operation: &str, message: &str) {
    state.metrics.store_error(operation);
    let mut outage = state.outage.lock().unwrap_or_else(|p| p.into_inner());
    match outage.as_mut() {
        Some(o) => {
            o.failures += 1;
            state.log.debug(message, Some("store"), None);
        }
        None => {
            *outage = Some(Outage {
                since: Instant::now(),
                failures: 1,
            });
            state.metrics.database_answers.store(false, Ordering::Relaxed);
            state.log.error(
                &format!(
                    "database outage began: {message}; asking again every {} s, no slot is claimed until it \
                     answers (/readyz answers 503)",
                    DATABASE_WATCH.as_secs()
                ),
                Some("store"),
                Some(json!({"operation": operation})),
            );
        }
    }
}

/// The database answered: an outage, if one was going on, is over.
fn store_answered(state: &State) {
    let ended = state.outage.lock().unwrap_or_else(|p| p.into_inner()).take();
    state.metrics.database_answers.store(true, Ordering::Relaxed);
    if let Some(o) = ended {
        state.log.info(
            &format!(
                "database outage ended: the database answers again after {:.1} s; {} store operations failed \
                 meanwhile",
                o.since.elapsed().as_secs_f64(),
                o.failures
            ),
            Some("store"),
            Some(json!({"outage_seconds": o.since.elapsed().as_secs_f64(), "failures": o.failures})),
        );
    }
}

/// SIGTERM or SIGINT: stop scheduling, let runs finish; a second one ends the
/// process at once. SIGHUP (a closed terminal, or an operator's reload)
/// never ends it: see [`reload`].
fn listen_for_signals(state: Arc<State>) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("nuntiq-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    reload(&state);
                    continue;
                }
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

/// SIGHUP: with a jobs file, checks it and applies it to the database (every
/// host sees the change within seconds; a file with a mistake changes
/// nothing and says why). Without one there is nothing to re-read: the jobs
/// are the database's. Runs and scheduling go on untouched either way.
fn reload(state: &State) {
    let Some(file) = &state.options.jobs_file else {
        state.log.info(
            "SIGHUP: this serve reads its jobs from the database, which it watches; change them with \
             nuntiq-host jobs apply",
            Some("signal"),
            None,
        );
        return;
    };
    let mut said = Vec::new();
    let by = format!("{} (serve, SIGHUP)", crate::jobs_admin::actor(None));
    let applied = definition::check_file(file)
        .map_err(crate::admin::AdminError::Refused)
        .and_then(|checked| {
            crate::jobs_admin::apply_checked(scheduler_db(&state.options), &checked, false, &by, &mut said)
        });
    match applied {
        Ok(_) => state.log.info(
            &format!("SIGHUP: {}", String::from_utf8_lossy(&said).trim_end()),
            Some("signal"),
            None,
        ),
        Err(e) => state.log.error(
            &format!("SIGHUP: {} was not applied, the jobs stay as they were: {e}", file.display()),
            Some("signal"),
            None,
        ),
    }
}

/// Exit code of a `serve` that had to cancel runs at the grace deadline.
pub const EXIT_CANCELLED: u8 = 3;

/// Waits for running jobs up to the grace period, then stops the rest (each
/// fails cleanly: its cursor stays, its slot records why) and waits for them;
/// returns the exit code: 0, or [`EXIT_CANCELLED`] when runs were stopped.
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
        state.log.warn(
            &format!("stopped; {left} runs were cancelled at the grace deadline (exit {EXIT_CANCELLED})"),
            Some("stop"),
            None,
        );
        return EXIT_CANCELLED;
    }
    state.log.info("stopped", Some("stop"), None);
    0
}
