//! `serve`'s view of the control plane: the jobs stored in the database
//! (`jobs apply`), read at start and again whenever their generation moves,
//! so every live host sees an apply, a pause, a resume, a trigger or a
//! delete within [`WATCH`] and a little. The scheduler takes a snapshot each
//! tick; a run already going keeps the definition it started with.

use super::State;
use super::definition;
use super::jobs::JobSpec;
use crate::log::LogSink;
use crate::store::Store;
use crate::store::jobs::JobSet as StoredJobs;
use crate::store::schedule::{Claim, SlotClaim, Unrun};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a `serve` asks whether the stored jobs changed.
pub const WATCH: Duration = Duration::from_secs(1);

/// A job, as the scheduler runs it.
pub struct Job {
    pub spec: JobSpec,
    pub customer: String,
    /// `config.connector_name`, or the job's name: for a history row of a
    /// run that failed before any stream began.
    pub connector: String,
    /// Why its slots are recorded `skipped` instead of run, while it or its
    /// customer is paused.
    pub paused: Option<String>,
    /// Tells a changed definition (its slots are then tracked afresh).
    pub digest: String,
}

/// The jobs at one generation, and the triggered slots not yet run anywhere.
#[derive(Default)]
pub struct JobSet {
    pub generation: Option<i64>,
    pub jobs: Vec<Job>,
    /// (job, slot) of each `jobs trigger` no host has claimed yet.
    pub triggers: Vec<(String, String)>,
}

/// The current job set, swapped whole when the database's changes.
#[derive(Default)]
pub struct Control {
    current: Mutex<Arc<JobSet>>,
}

impl Control {
    pub fn snapshot(&self) -> Arc<JobSet> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, set: JobSet) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
    }
}

/// The stored jobs as the scheduler runs them; a job whose stored
/// definition cannot be read is left out, with an error naming it.
fn build(stored: StoredJobs, log: &LogSink) -> JobSet {
    let mut jobs = Vec::new();
    for row in stored.jobs {
        match definition::from_row(&row) {
            Ok(spec) => jobs.push(Job {
                customer: row.customer_number.clone(),
                connector: row.connector_name.clone().unwrap_or_else(|| row.name.clone()),
                paused: row.paused_because(),
                digest: row.definition_digest.clone(),
                spec,
            }),
            Err(e) => log.error(
                &format!(
                    "{}: its stored definition cannot be run: {e}; apply the jobs file again with this \
                     nuntiq-host (jobs apply)",
                    row.name
                ),
                Some("jobs"),
                Some(json!({"job": row.name})),
            ),
        }
    }
    JobSet {
        generation: Some(stored.generation),
        jobs,
        triggers: stored.triggers,
    }
}

/// Reads the stored jobs at start.
pub fn load(store: &Store, log: &LogSink) -> Result<JobSet, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    let stored = runtime
        .block_on(store.load_jobs(None))
        .map_err(|e| format!("the database: {e}"))?
        .unwrap_or_else(|| StoredJobs {
            generation: 0,
            jobs: Vec::new(),
            triggers: Vec::new(),
        });
    Ok(build(stored, log))
}

/// Installs the first job set.
pub fn install(state: &State, set: JobSet) {
    state.metrics.jobs(set.jobs.iter().map(|j| j.spec.name.as_str()));
    state.control.replace(set);
}

/// Every [`WATCH`]: reads the stored jobs when their generation moved, and
/// swaps them in, with one line saying what changed. The plugins of new and
/// changed jobs are compiled here, off the scheduler's thread.
pub fn watch(state: Arc<State>) {
    let _ = std::thread::Builder::new()
        .name("nuntiq-jobs-watch".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
                return;
            };
            while !state.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(WATCH);
                let known = state.control.snapshot().generation;
                match runtime.block_on(state.store.load_jobs(known)) {
                    Ok(Some(stored)) => {
                        let set = build(stored, &state.log);
                        changed(&state, &state.control.snapshot(), &set);
                        state.metrics.jobs(set.jobs.iter().map(|j| j.spec.name.as_str()));
                        state.control.replace(set);
                    }
                    Ok(None) => {}
                    Err(e) => super::store_failed(&state, "jobs", &format!("could not read the stored jobs: {e}")),
                }
            }
        });
}

/// Logs what a new job set changes, and compiles the plugins of new and
/// changed jobs (a refusal is logged; their runs then fail as `invalid_plugin`).
fn changed(state: &State, old: &JobSet, new: &JobSet) {
    let before: HashMap<&str, &Job> = old.jobs.iter().map(|j| (j.spec.name.as_str(), j)).collect();
    let names: HashSet<&str> = new.jobs.iter().map(|j| j.spec.name.as_str()).collect();
    let (mut added, mut changed, mut paused, mut resumed) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for job in &new.jobs {
        let name = job.spec.name.as_str();
        match before.get(name) {
            None => added.push(name),
            Some(was) if was.digest != job.digest => changed.push(name),
            Some(_) => {}
        }
        let was_paused = before.get(name).is_some_and(|j| j.paused.is_some());
        match (was_paused, job.paused.is_some()) {
            (false, true) => paused.push(name),
            (true, false) => resumed.push(name),
            _ => {}
        }
    }
    let removed: Vec<&str> = before.keys().copied().filter(|n| !names.contains(n)).collect();
    let triggered: Vec<&str> = new
        .triggers
        .iter()
        .filter(|t| !old.triggers.contains(t))
        .map(|(job, _)| job.as_str())
        .collect();
    if [&added, &changed, &removed, &paused, &resumed, &triggered]
        .iter()
        .all(|l| l.is_empty())
    {
        return;
    }
    state.log.info(
        &format!(
            "the stored jobs changed (generation {}): {} added, {} changed, {} removed, {} paused, {} resumed, \
             {} triggered",
            new.generation.unwrap_or(0),
            added.len(),
            changed.len(),
            removed.len(),
            paused.len(),
            resumed.len(),
            triggered.len()
        ),
        Some("jobs"),
        Some(
            json!({"added": added, "changed": changed, "removed": removed, "paused": paused,
            "resumed": resumed, "triggered": triggered}),
        ),
    );
    for job in new
        .jobs
        .iter()
        .filter(|j| added.contains(&j.spec.name.as_str()) || changed.contains(&j.spec.name.as_str()))
    {
        if let Err(e) = state.runner.plugin(&job.spec.plugin) {
            state.log.error(
                &format!(
                    "{}: its plugin cannot run: {e}; its slots fail as invalid_plugin until it is fixed",
                    job.spec.name
                ),
                Some("jobs"),
                Some(json!({"job": job.spec.name})),
            );
        }
    }
}

/// What this host knows of the triggered slots (`jobs trigger`): each is
/// claimed like a scheduled slot, under the same leases, by one host.
#[derive(Default)]
pub struct Triggers {
    /// Answered for good: claimed here, or run or recorded elsewhere.
    settled: HashSet<(String, String)>,
    /// Held elsewhere, or the job's previous run still going: asked again after this.
    later: HashMap<(String, String), std::time::Instant>,
}

impl Triggers {
    /// Forgets the triggers the database no longer lists as pending.
    pub fn keep(&mut self, pending: &[(String, String)]) {
        let pending: HashSet<&(String, String)> = pending.iter().collect();
        self.settled.retain(|t| pending.contains(t));
        self.later.retain(|t, _| pending.contains(t));
    }

    /// The triggered slots to claim now, and those of paused jobs, to record
    /// as skipped (paused).
    pub fn due<'a>(
        &mut self,
        set: &'a JobSet,
        running: &HashMap<String, super::Running>,
    ) -> (Vec<(&'a Job, SlotClaim)>, Vec<Unrun>) {
        let (mut asked, mut paused) = (Vec::new(), Vec::new());
        let now = std::time::Instant::now();
        for (name, slot) in &set.triggers {
            let id = (name.clone(), slot.clone());
            if self.settled.contains(&id) || self.later.get(&id).is_some_and(|at| now < *at) {
                continue;
            }
            let Some(job) = set.jobs.iter().find(|j| j.spec.name == *name) else {
                continue;
            };
            if job.paused.is_some() {
                paused.push(Unrun {
                    job_name: name.clone(),
                    slot_at: slot.clone(),
                    status: "skipped",
                    reason: Some("paused"),
                });
                self.settled.insert(id);
                continue;
            }
            // Its previous run still goes here: asked for once it ends.
            if running.contains_key(name) {
                continue;
            }
            asked.push((
                job,
                SlotClaim {
                    job_name: name.clone(),
                    slot_at: slot.clone(),
                    job_id: uuid::Uuid::new_v4().to_string(),
                },
            ));
        }
        (asked, paused)
    }

    /// What the claim of a triggered slot answered.
    pub fn answered(&mut self, claim: &SlotClaim, answer: Option<&Claim>, recheck: Duration) {
        let id = (claim.job_name.clone(), claim.slot_at.clone());
        match answer {
            Some(Claim::Claimed { .. } | Claim::Done) => {
                self.later.remove(&id);
                self.settled.insert(id);
            }
            Some(Claim::Held | Claim::Busy) => {
                self.later.insert(id, std::time::Instant::now() + recheck);
            }
            None => {}
        }
    }
}
