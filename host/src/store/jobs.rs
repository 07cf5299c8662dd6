//! The control plane's rows: the jobs every `serve` of a database runs
//! (written by `jobs apply`, declaratively), the record of each apply and of
//! each operator action, per-job and per-customer pauses, triggered runs, and
//! one generation number that every change bumps so a `serve` polling it sees
//! the change within a second or two.
//!
//! A job's definition is stored whole, as JSON (plugin path, the settings'
//! content, cadence, flags), so every host runs the same job; what it holds is
//! checked by the caller before it is written (`serve::definition`).

use super::StoreError;
use super::schema::now_utc;
use super::sql::{Conn, Row, params, transaction};
use serde::Serialize;
use serde_json::Value;

/// A job as `jobs apply` writes it.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub name: String,
    pub customer_number: String,
    pub connector_name: Option<String>,
    pub definition: Value,
    /// Tells a changed definition from an unchanged one (inline secrets are
    /// sealed with a fresh nonce on every apply, so the stored JSON cannot).
    pub definition_digest: String,
    pub plugin_sha256: String,
}

/// Why a job or a customer is paused, and who paused it when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pause {
    pub reason: String,
    pub by: String,
    pub at: String,
}

/// A stored job.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub name: String,
    pub customer_number: String,
    pub connector_name: Option<String>,
    pub definition: Value,
    pub definition_digest: String,
    pub plugin_sha256: String,
    pub applied_at: String,
    pub applied_by: String,
    /// The job's own pause.
    pub paused: Option<Pause>,
    /// Its customer's pause.
    pub customer_paused: Option<Pause>,
}

impl JobRow {
    /// Why its slots do not run now, if they do not.
    pub fn paused_because(&self) -> Option<String> {
        match (&self.paused, &self.customer_paused) {
            (Some(p), _) => Some(format!("job paused by {} at {}: {}", p.by, p.at, p.reason)),
            (None, Some(p)) => Some(format!(
                "customer {} paused by {} at {}: {}",
                self.customer_number, p.by, p.at, p.reason
            )),
            (None, None) => None,
        }
    }
}

/// Who applied which file.
#[derive(Debug, Clone)]
pub struct ApplyRecord {
    pub by: String,
    pub file: String,
    pub file_sha256: String,
}

/// What an apply does (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// Compares `jobs` with the stored ones, writing nothing.
pub async fn diff(conn: &mut Conn, jobs: &[NewJob]) -> Result<Diff, StoreError> {
    let stored = digests(conn).await?;
    Ok(compare(&stored, jobs))
}

async fn digests(conn: &mut Conn) -> Result<Vec<(String, String)>, StoreError> {
    let rows = conn
        .query("SELECT name, definition_digest FROM jobs ORDER BY name", params![])
        .await?;
    Ok(rows.iter().map(|r| (r.text(0), r.text(1))).collect())
}

fn compare(stored: &[(String, String)], jobs: &[NewJob]) -> Diff {
    let mut diff = Diff::default();
    for job in jobs {
        match stored.iter().find(|(name, _)| *name == job.name) {
            None => diff.added.push(job.name.clone()),
            Some((_, digest)) if *digest != job.definition_digest => diff.changed.push(job.name.clone()),
            Some(_) => diff.unchanged += 1,
        }
    }
    diff.removed = stored
        .iter()
        .filter(|(name, _)| !jobs.iter().any(|j| j.name == *name))
        .map(|(name, _)| name.clone())
        .collect();
    diff
}

/// Bumps the generation; first in every change, so concurrent changes queue
/// behind its row lock (PostgreSQL) or the write lock (SQLite).
async fn bump(tx: &mut Conn) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE jobs_generation SET generation = generation + 1 WHERE id = 1",
        params![],
    )
    .await?;
    Ok(())
}

/// Makes the stored jobs equal `jobs` in one transaction and records the
/// apply (also when nothing changed: who applied which file, when). Pauses
/// survive an apply; a removed job's pause and pending triggers go with it.
pub async fn apply(conn: &mut Conn, jobs: &[NewJob], record: &ApplyRecord) -> Result<Diff, StoreError> {
    transaction(conn, async |tx: &mut Conn| {
        bump(tx).await?;
        let stored = digests(tx).await?;
        let diff = compare(&stored, jobs);
        let now = now_utc();
        for name in &diff.removed {
            tx.execute("DELETE FROM jobs WHERE name = ?1", params![name]).await?;
            tx.execute("DELETE FROM job_trigger WHERE job_name = ?1", params![name])
                .await?;
        }
        for job in jobs
            .iter()
            .filter(|j| diff.added.contains(&j.name) || diff.changed.contains(&j.name))
        {
            let definition = job.definition.to_string();
            tx.execute(
                "INSERT INTO jobs (name, customer_number, connector_name, definition, definition_digest,
                     plugin_sha256, applied_at, applied_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (name) DO UPDATE SET customer_number = ?2, connector_name = ?3, definition = ?4,
                     definition_digest = ?5, plugin_sha256 = ?6, applied_at = ?7, applied_by = ?8",
                params![
                    &job.name,
                    &job.customer_number,
                    &job.connector_name,
                    &definition,
                    &job.definition_digest,
                    &job.plugin_sha256,
                    &now,
                    &record.by
                ],
            )
            .await?;
        }
        let list = |names: &[String]| serde_json::to_string(names).unwrap_or_default();
        tx.execute(
            "INSERT INTO job_apply (applied_by, applied_at, file, file_sha256, added, changed, removed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                &record.by,
                &now,
                &record.file,
                &record.file_sha256,
                &list(&diff.added),
                &list(&diff.changed),
                &list(&diff.removed)
            ],
        )
        .await?;
        Ok(diff)
    })
    .await
}

/// One apply, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub by: String,
    pub at: String,
    pub file: String,
    pub file_sha256: String,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

/// The most recent applies, newest first.
pub async fn applies(conn: &mut Conn, limit: usize) -> Result<Vec<Applied>, StoreError> {
    let rows = conn
        .query(
            "SELECT applied_by, applied_at, file, file_sha256, added, changed, removed
             FROM job_apply ORDER BY id DESC LIMIT ?1",
            params![limit as i64],
        )
        .await?;
    let names = |r: &Row, i| serde_json::from_str(&r.text(i)).unwrap_or_default();
    Ok(rows
        .iter()
        .map(|r| Applied {
            by: r.text(0),
            at: r.text(1),
            file: r.text(2),
            file_sha256: r.text(3),
            added: names(r, 4),
            changed: names(r, 5),
            removed: names(r, 6),
        })
        .collect())
}

const JOB_COLUMNS: &str = "j.name, j.customer_number, j.connector_name, j.definition, j.definition_digest,
     j.plugin_sha256, j.applied_at, j.applied_by, j.paused, j.paused_reason, j.paused_by, j.paused_at,
     c.reason, c.paused_by, c.paused_at";

fn job_row(r: &Row) -> JobRow {
    let pause = |flag: bool, at: usize| {
        flag.then(|| Pause {
            reason: r.text(at),
            by: r.text(at + 1),
            at: r.text(at + 2),
        })
    };
    JobRow {
        name: r.text(0),
        customer_number: r.text(1),
        connector_name: r.opt_text(2),
        definition: serde_json::from_str(&r.text(3)).unwrap_or(Value::Null),
        definition_digest: r.text(4),
        plugin_sha256: r.text(5),
        applied_at: r.text(6),
        applied_by: r.text(7),
        paused: pause(r.int(8) != 0, 9),
        customer_paused: pause(r.opt_text(12).is_some(), 12),
    }
}

/// Every stored job (or only `name`), by name.
pub async fn list(conn: &mut Conn, name: Option<&str>) -> Result<Vec<JobRow>, StoreError> {
    let rows = conn
        .query(
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs j LEFT JOIN customer_pause c ON c.customer_number = j.customer_number
                 WHERE CAST(?1 AS TEXT) IS NULL OR j.name = ?1 ORDER BY j.name"
            ),
            params![name],
        )
        .await?;
    Ok(rows.iter().map(job_row).collect())
}

/// What `serve` reads: the jobs, the customers paused, and the triggered
/// slots no host has claimed or recorded yet.
#[derive(Debug, Clone)]
pub struct JobSet {
    pub generation: i64,
    pub jobs: Vec<JobRow>,
    pub triggers: Vec<(String, String)>,
}

/// The current generation.
pub async fn generation(conn: &mut Conn) -> Result<i64, StoreError> {
    Ok(conn
        .query_opt("SELECT generation FROM jobs_generation WHERE id = 1", params![])
        .await?
        .map_or(0, |r| r.int(0)))
}

/// The job set, unless its generation is still `known`.
pub async fn load(conn: &mut Conn, known: Option<i64>) -> Result<Option<JobSet>, StoreError> {
    let generation = generation(conn).await?;
    if known == Some(generation) {
        return Ok(None);
    }
    let jobs = list(conn, None).await?;
    let triggers = conn
        .query(
            "SELECT t.job_name, t.slot_at FROM job_trigger t
             WHERE NOT EXISTS (SELECT 1 FROM schedule_slot s WHERE s.job_name = t.job_name AND s.slot_at = t.slot_at)
             ORDER BY t.slot_at",
            params![],
        )
        .await?
        .iter()
        .map(|r| (r.text(0), r.text(1)))
        .collect();
    Ok(Some(JobSet {
        generation,
        jobs,
        triggers,
    }))
}

async fn record_action(
    tx: &mut Conn,
    by: &str,
    action: &str,
    job: Option<&str>,
    customer: Option<&str>,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO job_action (at, actor, action, job_name, customer_number, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![&now_utc(), by, action, job, customer, reason],
    )
    .await?;
    Ok(())
}

/// Pauses (or resumes) one job; errs when there is no such job.
pub async fn pause_job(conn: &mut Conn, name: &str, pause: bool, reason: &str, by: &str) -> Result<(), StoreError> {
    transaction(conn, async |tx: &mut Conn| {
        bump(tx).await?;
        let (reason_col, by_col, at_col) = if pause {
            (Some(reason), Some(by), Some(now_utc()))
        } else {
            (None, None, None)
        };
        let changed = tx
            .execute(
                "UPDATE jobs SET paused = ?2, paused_reason = ?3, paused_by = ?4, paused_at = ?5 WHERE name = ?1",
                params![name, pause, reason_col, by_col, &at_col],
            )
            .await?;
        if changed == 0 {
            return Err(no_such_job(name));
        }
        let action = if pause { "pause" } else { "resume" };
        record_action(tx, by, action, Some(name), None, Some(reason)).await
    })
    .await
}

/// Pauses (or resumes) every job of a customer, those applied later too;
/// returns how many jobs it has now.
pub async fn pause_customer(
    conn: &mut Conn,
    customer: &str,
    pause: bool,
    reason: &str,
    by: &str,
) -> Result<usize, StoreError> {
    transaction(conn, async |tx: &mut Conn| {
        bump(tx).await?;
        if pause {
            tx.execute(
                "INSERT INTO customer_pause (customer_number, reason, paused_by, paused_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (customer_number) DO UPDATE SET reason = ?2, paused_by = ?3, paused_at = ?4",
                params![customer, reason, by, &now_utc()],
            )
            .await?;
        } else {
            let removed = tx
                .execute(
                    "DELETE FROM customer_pause WHERE customer_number = ?1",
                    params![customer],
                )
                .await?;
            if removed == 0 {
                return Err(StoreError::Invalid(format!(
                    "customer {customer:?} is not paused (jobs list shows what is)"
                )));
            }
        }
        let action = if pause { "pause_customer" } else { "resume_customer" };
        record_action(tx, by, action, None, Some(customer), Some(reason)).await?;
        let jobs = tx
            .query_opt(
                "SELECT count(*) FROM jobs WHERE customer_number = ?1",
                params![customer],
            )
            .await?
            .map_or(0, |r| r.int(0));
        Ok(usize::try_from(jobs).unwrap_or(0))
    })
    .await
}

fn no_such_job(name: &str) -> StoreError {
    StoreError::Invalid(format!("no job is named {name:?} (jobs list shows the stored jobs)"))
}

/// Asks for one run of `name` now, as a slot of its own (keyed by the time
/// asked, to the millisecond, where scheduled slots are whole seconds);
/// returns the slot. A paused job is refused.
pub async fn trigger(conn: &mut Conn, name: &str, by: &str) -> Result<String, StoreError> {
    transaction(conn, async |tx: &mut Conn| {
        bump(tx).await?;
        let job = list(tx, Some(name))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| no_such_job(name))?;
        if let Some(why) = job.paused_because() {
            return Err(StoreError::Invalid(format!(
                "{name} is not triggered: {why}; resume it first (jobs resume)"
            )));
        }
        let slot = now_utc();
        tx.execute(
            "INSERT INTO job_trigger (job_name, slot_at, requested_by, requested_at) VALUES (?1, ?2, ?3, ?2)",
            params![name, &slot, by],
        )
        .await?;
        record_action(tx, by, "trigger", Some(name), None, None).await?;
        Ok(slot)
    })
    .await
}

/// Deletes one job (its slots and run history stay).
pub async fn delete(conn: &mut Conn, name: &str, by: &str) -> Result<(), StoreError> {
    transaction(conn, async |tx: &mut Conn| {
        bump(tx).await?;
        if tx.execute("DELETE FROM jobs WHERE name = ?1", params![name]).await? == 0 {
            return Err(no_such_job(name));
        }
        tx.execute("DELETE FROM job_trigger WHERE job_name = ?1", params![name])
            .await?;
        record_action(tx, by, "delete", Some(name), None, None).await
    })
    .await
}

/// One operator action, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub at: String,
    pub by: String,
    pub action: String,
    pub job_name: Option<String>,
    pub customer_number: Option<String>,
    pub reason: Option<String>,
}

/// The actions on job `name` or its customer, newest first.
pub async fn actions(conn: &mut Conn, name: &str, customer: &str, limit: usize) -> Result<Vec<Action>, StoreError> {
    let rows = conn
        .query(
            "SELECT at, actor, action, job_name, customer_number, reason FROM job_action
             WHERE job_name = ?1 OR customer_number = ?2 ORDER BY id DESC LIMIT ?3",
            params![name, customer, limit as i64],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Action {
            at: r.text(0),
            by: r.text(1),
            action: r.text(2),
            job_name: r.opt_text(3),
            customer_number: r.opt_text(4),
            reason: r.opt_text(5),
        })
        .collect())
}

/// A job's last run and last success, from its slots.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Activity {
    /// The newest slot that was claimed to run: its time, its result
    /// (`running`, `succeeded`, a failure kind) and how late it started.
    pub last_run: Option<LastRun>,
    /// When the newest successful run ended.
    pub last_success: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub slot_at: String,
    pub result: String,
    pub claimed_at: String,
    pub ended_at: Option<String>,
    /// From the slot's time to its claim, in seconds.
    pub lag_seconds: Option<f64>,
}

/// `name`'s [`Activity`].
pub async fn activity(conn: &mut Conn, name: &str) -> Result<Activity, StoreError> {
    let last = conn
        .query_opt(
            "SELECT slot_at, status, outcome, claimed_at, ended_at FROM schedule_slot
             WHERE job_name = ?1 AND status NOT IN ('missed', 'skipped')
             ORDER BY claimed_at DESC LIMIT 1",
            params![name],
        )
        .await?;
    let success = conn
        .query_opt(
            "SELECT max(ended_at) FROM schedule_slot WHERE job_name = ?1 AND status = 'succeeded'",
            params![name],
        )
        .await?
        .and_then(|r| r.opt_text(0));
    let time = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
    Ok(Activity {
        last_run: last.map(|r| {
            let (slot_at, status, outcome, claimed_at) = (r.text(0), r.text(1), r.opt_text(2), r.text(3));
            let result = match (status.as_str(), outcome) {
                ("failed" | "abandoned", Some(kind)) => kind,
                (status, _) => status.to_owned(),
            };
            let lag_seconds = time(&slot_at)
                .zip(time(&claimed_at))
                .map(|(slot, claimed)| (claimed - slot).as_seconds_f64().max(0.0));
            LastRun {
                slot_at,
                result,
                claimed_at,
                ended_at: r.opt_text(4),
                lag_seconds,
            }
        }),
        last_success: success,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::on_both_engines;
    use serde_json::json;

    fn job(name: &str, customer: &str, digest: &str) -> NewJob {
        NewJob {
            name: name.into(),
            customer_number: customer.into(),
            connector_name: Some("acme".into()),
            definition: json!({"name": name, "every": "1m"}),
            definition_digest: digest.into(),
            plugin_sha256: "ab".repeat(32),
        }
    }

    fn record() -> ApplyRecord {
        ApplyRecord {
            by: "ops@host".into(),
            file: "/etc/jobs.toml".into(),
            file_sha256: "cd".repeat(32),
        }
    }

    async fn an_apply_makes_the_stored_jobs_equal_the_file_and_is_recorded(conn: &mut Conn) {
        let first = [job("a", "c1", "1"), job("b", "c1", "1")];
        let g0 = generation(conn).await.unwrap();
        let applied = apply(conn, &first, &record()).await.unwrap();
        assert_eq!(
            (applied.added, applied.removed.len()),
            (vec!["a".to_owned(), "b".to_owned()], 0)
        );
        assert!(generation(conn).await.unwrap() > g0);
        let second = [job("b", "c1", "2"), job("c", "c2", "1")];
        assert_eq!(
            diff(conn, &second).await.unwrap(),
            Diff {
                added: vec!["c".into()],
                changed: vec!["b".into()],
                removed: vec!["a".into()],
                unchanged: 0
            }
        );
        apply(conn, &second, &record()).await.unwrap();
        let names: Vec<String> = list(conn, None).await.unwrap().into_iter().map(|j| j.name).collect();
        assert_eq!(names, ["b", "c"]);
        let again = apply(conn, &second, &record()).await.unwrap();
        assert!(again.is_empty() && again.unchanged == 2);
        let applies = applies(conn, 10).await.unwrap();
        assert_eq!(applies.len(), 3);
        assert_eq!(
            (applies[1].removed.clone(), applies[0].by.as_str()),
            (vec!["a".to_owned()], "ops@host")
        );
    }

    async fn pauses_triggers_and_deletes_are_recorded_and_bump_the_generation(conn: &mut Conn) {
        apply(conn, &[job("a", "c1", "1"), job("b", "c2", "1")], &record())
            .await
            .unwrap();
        let set = load(conn, None).await.unwrap().unwrap();
        assert!(load(conn, Some(set.generation)).await.unwrap().is_none(), "unchanged");
        pause_job(conn, "a", true, "maintenance", "ops").await.unwrap();
        let a = list(conn, Some("a")).await.unwrap().remove(0);
        assert_eq!(a.paused.as_ref().unwrap().reason, "maintenance");
        assert!(
            trigger(conn, "a", "ops")
                .await
                .unwrap_err()
                .to_string()
                .contains("resume it first")
        );
        pause_job(conn, "a", false, "done", "ops").await.unwrap();
        assert!(list(conn, Some("a")).await.unwrap()[0].paused.is_none());
        assert!(pause_job(conn, "zz", true, "x", "ops").await.is_err());

        assert_eq!(pause_customer(conn, "c2", true, "unpaid", "ops").await.unwrap(), 1);
        let b = list(conn, Some("b")).await.unwrap().remove(0);
        assert!(
            b.paused_because().unwrap().contains("customer c2 paused by ops"),
            "{b:?}"
        );
        pause_customer(conn, "c2", false, "paid", "ops").await.unwrap();
        assert!(pause_customer(conn, "c2", false, "again", "ops").await.is_err());

        let slot = trigger(conn, "a", "ops").await.unwrap();
        let set = load(conn, Some(set.generation)).await.unwrap().expect("changed");
        assert_eq!(set.triggers, [("a".to_owned(), slot.clone())]);
        let actions = actions(conn, "a", "c1", 10).await.unwrap();
        let kinds: Vec<&str> = actions.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(kinds, ["trigger", "resume", "pause"]);
        delete(conn, "a", "ops").await.unwrap();
        assert!(list(conn, Some("a")).await.unwrap().is_empty());
        assert!(
            load(conn, None).await.unwrap().unwrap().triggers.is_empty(),
            "its trigger went with it"
        );
        assert!(delete(conn, "a", "ops").await.is_err());
    }

    on_both_engines!(
        an_apply_makes_the_stored_jobs_equal_the_file_and_is_recorded,
        pauses_triggers_and_deletes_are_recorded_and_bump_the_generation,
    );
}
