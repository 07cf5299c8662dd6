//! The slots `serve` claims: a job's scheduled run at one moment, claimed
//! through the database so that, of any number of hosts sharing it, exactly
//! one runs it. The primary key (job, slot) is the arbiter; a lease, renewed
//! while the run lives, lets another host take over the slot of a host that
//! died mid-run.

use super::StoreError;
use super::schema::now_utc;
use super::sql::{Conn, params, transaction};
use serde::Serialize;
use std::time::Duration;

/// Who claims a slot.
#[derive(Debug, Clone)]
pub struct SlotOwner {
    pub host: String,
    pub pid: u32,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This host runs the slot; `took_over` says from whom, when it did.
    Claimed { took_over: Option<String> },
    /// It has run (here or elsewhere): nothing to do until the next slot.
    Done,
    /// Another process is running it and renewing its claim: look again
    /// later, in case that process dies.
    Held,
    /// The job's previous slot is still running somewhere: try again later.
    Busy,
}

/// How often a `serve` process writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// A process whose heartbeat is older than this is dead: its slots are taken
/// over, and it no longer counts among the hosts sharing the due slots.
pub const STALE_AFTER: Duration = Duration::from_secs(4);

/// Hosts silent for this long are forgotten.
const FORGET_AFTER: chrono::Duration = chrono::Duration::days(1);

fn ago(d: Duration) -> String {
    let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero());
    (chrono::Utc::now() - d).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A `serve` process, as its heartbeat row records it.
#[derive(Debug, Clone)]
pub struct HostBeat {
    /// Unique per process start.
    pub id: String,
    pub hostname: String,
    pub pid: u32,
    /// Kernel boot and pid namespace (see `owner::this_instance`).
    pub instance: Option<String>,
    pub process_start: Option<String>,
    pub started: String,
}

/// Writes this process's heartbeat; returns how many hosts are live (at least 1: this one).
pub async fn heartbeat(conn: &mut Conn, me: &HostBeat) -> Result<usize, StoreError> {
    let now = now_utc();
    conn.execute(
        "INSERT INTO hosts (id, hostname, pid, instance, process_start, started, last_heartbeat)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (id) DO UPDATE SET last_heartbeat = ?7",
        params![
            &me.id,
            &me.hostname,
            me.pid,
            &me.instance,
            &me.process_start,
            &me.started,
            &now
        ],
    )
    .await?;
    let forget = (chrono::Utc::now() - FORGET_AFTER).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    conn.execute("DELETE FROM hosts WHERE last_heartbeat < ?1", params![&forget])
        .await?;
    let live = conn
        .query_opt(
            "SELECT count(*) FROM hosts WHERE last_heartbeat >= ?1",
            params![&ago(STALE_AFTER)],
        )
        .await?
        .map_or(1, |r| r.int(0));
    Ok(usize::try_from(live).unwrap_or(1).max(1))
}

/// How old the heartbeat a dead process on this machine is given is, so its
/// slots are taken over at once (stale at once, forgotten like any other).
const DEAD_SINCE: Duration = Duration::from_secs(3600);

/// Marks dead the `serve` processes of this machine (same boot and pid
/// namespace) whose pid no longer runs: a process restarted after a crash
/// takes their slots over at once instead of waiting for their heartbeat to
/// go stale. Returns their pids.
pub async fn free_dead_here(conn: &mut Conn, me: &HostBeat) -> Result<Vec<i64>, StoreError> {
    let Some(instance) = &me.instance else {
        return Ok(Vec::new());
    };
    let rows = conn
        .query(
            "SELECT id, pid, process_start FROM hosts
             WHERE hostname = ?1 AND instance = ?2 AND id <> ?3 AND last_heartbeat >= ?4",
            params![&me.hostname, instance, &me.id, &ago(STALE_AFTER)],
        )
        .await?;
    let mut freed = Vec::new();
    for row in rows {
        let (id, pid, start) = (row.text(0), row.int(1), row.opt_text(2));
        let alive = u32::try_from(pid).is_ok_and(|p| super::owner::process_alive(p, start.as_deref()));
        if !alive {
            conn.execute(
                "UPDATE hosts SET last_heartbeat = ?2 WHERE id = ?1",
                params![&id, &ago(DEAD_SINCE)],
            )
            .await?;
            freed.push(pid);
        }
    }
    Ok(freed)
}

/// SQL: the slot row's holder is a `serve` whose heartbeat went stale (and
/// no live process has its host and pid). `?4` is the staleness cutoff.
const HOLDER_GONE: &str = "(EXISTS (SELECT 1 FROM hosts h WHERE h.hostname = schedule_slot.host
          AND h.pid = schedule_slot.pid AND h.last_heartbeat < ?4)
      AND NOT EXISTS (SELECT 1 FROM hosts h WHERE h.hostname = schedule_slot.host
          AND h.pid = schedule_slot.pid AND h.last_heartbeat >= ?4))";

/// Whether process `pid` on `host` is a `serve` whose heartbeat went stale.
pub async fn process_gone(conn: &mut Conn, host: &str, pid: i64) -> Result<bool, StoreError> {
    let row = conn
        .query_opt(
            "SELECT (SELECT count(*) FROM hosts WHERE hostname = ?1 AND pid = ?2 AND last_heartbeat < ?3),
                    (SELECT count(*) FROM hosts WHERE hostname = ?1 AND pid = ?2 AND last_heartbeat >= ?3)",
            params![host, pid, &ago(STALE_AFTER)],
        )
        .await?;
    Ok(row.is_some_and(|r| r.int(0) > 0 && r.int(1) == 0))
}

fn lease_until(lease: Duration) -> String {
    let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::hours(1));
    (chrono::Utc::now() + lease).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A slot to claim: the job, the slot, and the run id it would get.
#[derive(Debug, Clone)]
pub struct SlotClaim {
    pub job_name: String,
    pub slot_at: String,
    pub job_id: String,
}

/// Claims `job_name`'s slot at `slot_at` for run `job_id`.
pub async fn claim(
    conn: &mut Conn,
    job_name: &str,
    slot_at: &str,
    job_id: &str,
    owner: &SlotOwner,
) -> Result<Claim, StoreError> {
    transaction(conn, async |tx: &mut Conn| {
        claim_in(tx, job_name, slot_at, job_id, owner).await
    })
    .await
}

/// Claims many slots in one transaction (one commit, not one per slot: a
/// host with a thousand jobs due claims them in a few commits), at most
/// `limit` of them: the ones held or done elsewhere are passed over, and once
/// `limit` are claimed the rest are not asked (`None`). The slots are taken in
/// job order, so hosts claiming overlapping sets wait for each other instead
/// of deadlocking. The answers come in the order asked.
pub async fn claim_many(
    conn: &mut Conn,
    claims: &[SlotClaim],
    owner: &SlotOwner,
    limit: usize,
) -> Result<Vec<Option<Claim>>, StoreError> {
    let mut order: Vec<usize> = (0..claims.len()).collect();
    order.sort_by(|&a, &b| (&claims[a].job_name, &claims[a].slot_at).cmp(&(&claims[b].job_name, &claims[b].slot_at)));
    transaction(conn, async |tx: &mut Conn| {
        let mut answers = vec![None; claims.len()];
        let mut claimed = 0;
        for &i in &order {
            if claimed == limit {
                break;
            }
            let c = &claims[i];
            let answer = claim_in(tx, &c.job_name, &c.slot_at, &c.job_id, owner).await?;
            claimed += usize::from(matches!(answer, Claim::Claimed { .. }));
            answers[i] = Some(answer);
        }
        Ok(answers)
    })
    .await
}

async fn claim_in(
    tx: &mut Conn,
    job_name: &str,
    slot_at: &str,
    job_id: &str,
    owner: &SlotOwner,
) -> Result<Claim, StoreError> {
    {
        let now = now_utc();
        let until = lease_until(owner.lease);
        let stale = ago(STALE_AFTER);
        // Earlier slots of this job whose holder stopped renewing or died: history.
        tx.execute(
            &format!(
                "UPDATE schedule_slot SET status = 'abandoned', ended_at = ?3,
                     outcome = CASE WHEN lease_expires_at <= ?3 THEN 'lease_expired' ELSE 'host_died' END
                 WHERE job_name = ?1 AND slot_at <> ?2 AND status = 'running'
                   AND (lease_expires_at <= ?3 OR ({HOLDER_GONE} AND NOT (host = ?5 AND pid = ?6)))"
            ),
            // Never this process's own slots: its heartbeat may be stale only because
            // the database was away, and it records their ends itself.
            params![job_name, slot_at, &now, &stale, &owner.host, owner.pid],
        )
        .await?;
        let sql = format!(
            "SELECT status, host, pid, lease_expires_at,
                    CASE WHEN {HOLDER_GONE} THEN 1 ELSE 0 END
             FROM schedule_slot
             WHERE job_name = ?1 AND slot_at = ?2 AND CAST(?3 AS TEXT) IS NOT NULL{}",
            tx.for_update()
        );
        if let Some(row) = tx.query_opt(&sql, params![job_name, slot_at, &now, &stale]).await? {
            let (status, host, pid, expires) = (row.text(0), row.text(1), row.int(2), row.text(3));
            let holder_gone = row.int(4) == 1 && !(host == owner.host && pid == i64::from(owner.pid));
            if status == "running" && (expires <= now || holder_gone) {
                let why = if expires <= now {
                    format!("whose lease expired at {expires}")
                } else {
                    format!("whose heartbeat stopped (no heartbeat for {} s)", STALE_AFTER.as_secs())
                };
                tx.execute(
                    "UPDATE schedule_slot SET job_id = ?3, host = ?4, pid = ?5, claimed_at = ?6,
                         lease_expires_at = ?7, takeovers = takeovers + 1
                     WHERE job_name = ?1 AND slot_at = ?2",
                    params![job_name, slot_at, job_id, &owner.host, owner.pid, &now, &until],
                )
                .await?;
                return Ok(Claim::Claimed {
                    took_over: Some(format!("took over the slot from process {pid} on {host}, {why}")),
                });
            }
            return Ok(if status == "running" { Claim::Held } else { Claim::Done });
        }
        let busy = tx
            .query_opt(
                "SELECT slot_at FROM schedule_slot
                 WHERE job_name = ?1 AND status = 'running' AND lease_expires_at > ?2 LIMIT 1",
                params![job_name, &now],
            )
            .await?;
        if busy.is_some() {
            return Ok(Claim::Busy);
        }
        let inserted = tx
            .execute(
                "INSERT INTO schedule_slot
                     (job_name, slot_at, status, job_id, host, pid, claimed_at, lease_expires_at)
                 VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (job_name, slot_at) DO NOTHING",
                params![job_name, slot_at, job_id, &owner.host, owner.pid, &now, &until],
            )
            .await?;
        // Claimed by another process between our read and our insert.
        Ok(if inserted == 1 {
            Claim::Claimed { took_over: None }
        } else {
            Claim::Held
        })
    }
}

/// Extends the claims of running slots (by job id); returns the ids whose
/// claim another host took over. A slot this run has just recorded as ended
/// (its run still on the way out of the running set) is not lost.
pub async fn renew(conn: &mut Conn, job_ids: &[String], lease: Duration) -> Result<Vec<String>, StoreError> {
    let until = lease_until(lease);
    let mut lost = Vec::new();
    for job_id in job_ids {
        let changed = conn
            .execute(
                "UPDATE schedule_slot SET lease_expires_at = ?2 WHERE job_id = ?1 AND status = 'running'",
                params![job_id, &until],
            )
            .await?;
        if changed == 0 {
            // A takeover gives the slot the new run's id, so a row still
            // under this id has ended here.
            let ended = conn
                .query_opt("SELECT status FROM schedule_slot WHERE job_id = ?1", params![job_id])
                .await?
                .is_some();
            if !ended {
                lost.push(job_id.clone());
            }
        }
    }
    Ok(lost)
}

/// Records how a slot's run ended: `succeeded`, `failed`, or `skipped`.
pub async fn finish(conn: &mut Conn, job_id: &str, status: &str, outcome: Option<&str>) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE schedule_slot SET status = ?2, outcome = ?3, ended_at = ?4 WHERE job_id = ?1 AND status = 'running'",
        params![job_id, status, outcome, &now_utc()],
    )
    .await?;
    Ok(())
}

/// A due slot that ends without a run: `missed` (its time passed with no
/// room to start it) or `skipped` (the job's previous run was still going).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrun {
    pub job_name: String,
    pub slot_at: String,
    pub status: &'static str,
    /// Why, when it was not the usual (`store_unavailable`: the database was away).
    pub reason: Option<&'static str>,
}

/// Records slots that end without a run, in one transaction; a slot that has
/// a row already (claimed or recorded by any host) keeps it, so each slot
/// has exactly one outcome. Answers, in the order asked, whether this call
/// recorded the slot.
pub async fn record_unrun(conn: &mut Conn, slots: &[Unrun], owner: &SlotOwner) -> Result<Vec<bool>, StoreError> {
    // In key order, as claims are taken, so two hosts wait instead of deadlocking.
    let mut order: Vec<usize> = (0..slots.len()).collect();
    order.sort_by(|&a, &b| (&slots[a].job_name, &slots[a].slot_at).cmp(&(&slots[b].job_name, &slots[b].slot_at)));
    transaction(conn, async |tx: &mut Conn| {
        let now = now_utc();
        let mut recorded = vec![false; slots.len()];
        for &i in &order {
            let slot = &slots[i];
            let id = uuid::Uuid::new_v4().to_string();
            let inserted = tx
                .execute(
                    "INSERT INTO schedule_slot
                         (job_name, slot_at, status, job_id, host, pid, claimed_at, lease_expires_at, ended_at, outcome)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7, ?8)
                     ON CONFLICT (job_name, slot_at) DO NOTHING",
                    params![
                        &slot.job_name,
                        &slot.slot_at,
                        slot.status,
                        &id,
                        &owner.host,
                        owner.pid,
                        &now,
                        slot.reason
                    ],
                )
                .await?;
            recorded[i] = inserted == 1;
        }
        Ok(recorded)
    })
    .await
}

/// Streams marked `running` whose lease has expired: runs that died without
/// their host recording it (the next run takes the stream over). Also the
/// scheduler's proof that the database answers.
pub async fn stale_streams(conn: &mut Conn) -> Result<i64, StoreError> {
    let row = conn
        .query_opt(
            "SELECT count(*) FROM delta_stream_state WHERE status = 'running' AND lease_expires_at_utc < ?1",
            params![&now_utc()],
        )
        .await?;
    Ok(row.map_or(0, |r| r.int(0)))
}

/// A stream this process holds: its run and the job (scheduled run) it belongs to.
#[derive(Debug, Clone)]
pub struct HeldStream {
    pub customer_number: String,
    pub connector_name: String,
    pub stream_name: String,
    pub run_id: String,
    pub job_id: Option<String>,
}

/// The streams marked running by process `pid` on `host`.
pub async fn held_streams(conn: &mut Conn, host: &str, pid: u32) -> Result<Vec<HeldStream>, StoreError> {
    let rows = conn
        .query(
            "SELECT s.customer_number, s.connector_name, s.stream_name, s.run_id, r.job_id
             FROM delta_stream_state s LEFT JOIN delta_run r ON r.run_id = s.run_id
             WHERE s.status = 'running' AND s.owner_host = ?1 AND s.owner_pid = ?2 AND s.run_id IS NOT NULL",
            params![host, pid],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| HeldStream {
            customer_number: r.text(0),
            connector_name: r.text(1),
            stream_name: r.text(2),
            run_id: r.text(3),
            job_id: r.opt_text(4),
        })
        .collect())
}

/// Fails and releases streams whose run is over but could not say so (the
/// database was unreachable when it ended): their next run need not wait
/// for the lease. Only rows still held by the same run change.
pub async fn release_streams(conn: &mut Conn, streams: &[HeldStream], why: &str) -> Result<usize, StoreError> {
    let now = now_utc();
    let mut released = 0;
    for s in streams {
        released += transaction(conn, async |tx: &mut Conn| {
            let changed = tx
                .execute(
                    "UPDATE delta_stream_state SET status = 'failed', error_summary = ?5, completed_at_utc = ?6,
                         updated_at_utc = ?6, run_id = NULL, lease_expires_at_utc = NULL
                     WHERE customer_number = ?1 AND connector_name = ?2 AND stream_name = ?3 AND run_id = ?4
                       AND status = 'running'",
                    params![
                        &s.customer_number,
                        &s.connector_name,
                        &s.stream_name,
                        &s.run_id,
                        why,
                        &now
                    ],
                )
                .await?;
            if changed == 1 {
                tx.execute(
                    "UPDATE delta_run SET status = 'failed', ended_at_utc = ?2, error_summary = ?3
                     WHERE run_id = ?1 AND status = 'running'",
                    params![&s.run_id, &now, why],
                )
                .await?;
            }
            Ok(usize::try_from(changed).unwrap_or(0))
        })
        .await?;
    }
    Ok(released)
}

/// One slot, as `serve`, `nuntiq-host slots` and the tests read them.
#[derive(Debug, Clone, Serialize)]
pub struct Slot {
    pub job_name: String,
    pub slot_at: String,
    pub status: String,
    pub job_id: String,
    pub host: String,
    pub pid: i64,
    pub claimed_at: String,
    pub ended_at: Option<String>,
    /// Why a failed or abandoned slot ended (its error kind, `lease_expired`).
    pub outcome: Option<String>,
    pub takeovers: i64,
}

impl Slot {
    /// How the slot ended in one word: `succeeded`, the error kind of a
    /// failed run, `missed`, `skipped`, `lease_expired` (abandoned), or
    /// `running` while it runs.
    pub fn result(&self) -> &str {
        match (self.status.as_str(), &self.outcome) {
            ("failed" | "abandoned", Some(kind)) => kind,
            (status, _) => status,
        }
    }
}

/// The slots of every job (or of `job_name`), newest first; with `outcome`,
/// those whose [`Slot::result`] or status is it.
pub async fn list(
    conn: &mut Conn,
    job_name: Option<&str>,
    outcome: Option<&str>,
    limit: usize,
) -> Result<Vec<Slot>, StoreError> {
    let rows = conn
        .query(
            "SELECT job_name, slot_at, status, job_id, host, pid, claimed_at, ended_at, outcome, takeovers
             FROM schedule_slot
             WHERE (CAST(?1 AS TEXT) IS NULL OR job_name = ?1)
               AND (CAST(?2 AS TEXT) IS NULL OR status = ?2 OR outcome = ?2)
             ORDER BY slot_at DESC, job_name LIMIT ?3",
            params![job_name, outcome, limit as i64],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Slot {
            job_name: r.text(0),
            slot_at: r.text(1),
            status: r.text(2),
            job_id: r.text(3),
            host: r.text(4),
            pid: r.int(5),
            claimed_at: r.text(6),
            ended_at: r.opt_text(7),
            outcome: r.opt_text(8),
            takeovers: r.int(9),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::on_both_engines;

    fn owner(host: &str, lease: Duration) -> SlotOwner {
        SlotOwner {
            host: host.into(),
            pid: 1,
            lease,
        }
    }

    async fn a_slot_is_claimed_once_and_a_dead_holder_is_taken_over(conn: &mut Conn) {
        let slot = "2026-01-01T00:15:00Z";
        let a = owner("a", Duration::from_millis(80));
        assert_eq!(
            claim(conn, "acme", slot, "run-a", &a).await.unwrap(),
            Claim::Claimed { took_over: None }
        );
        let b = owner("b", Duration::from_secs(60));
        assert_eq!(claim(conn, "acme", slot, "run-b", &b).await.unwrap(), Claim::Held);
        // The next slot waits while the previous one runs.
        assert_eq!(
            claim(conn, "acme", "2026-01-01T00:30:00Z", "run-b2", &b).await.unwrap(),
            Claim::Busy
        );
        // a stops renewing: b takes the slot over once the lease is gone.
        std::thread::sleep(Duration::from_millis(120));
        let Claim::Claimed { took_over: Some(note) } = claim(conn, "acme", slot, "run-b", &b).await.unwrap() else {
            panic!("b takes over")
        };
        assert!(note.contains("process 1 on a"), "{note}");
        assert_eq!(renew(conn, &["run-a".into()], a.lease).await.unwrap(), ["run-a"]);
        assert!(renew(conn, &["run-b".into()], b.lease).await.unwrap().is_empty());
        finish(conn, "run-b", "succeeded", None).await.unwrap();
        // A run that recorded its end before the heartbeat came round lost nothing.
        assert!(renew(conn, &["run-b".into()], b.lease).await.unwrap().is_empty());
        let slots = list(conn, Some("acme"), None, 10).await.unwrap();
        assert_eq!(slots.len(), 1);
        assert_eq!((slots[0].status.as_str(), slots[0].takeovers), ("succeeded", 1));
        assert_eq!(
            claim(conn, "acme", slot, "run-c", &b).await.unwrap(),
            Claim::Done,
            "done is done"
        );
    }

    async fn many_slots_are_claimed_in_one_commit_answered_in_order(conn: &mut Conn) {
        let slot = "2026-01-01T00:15:00Z";
        let (a, b) = (owner("a", Duration::from_secs(60)), owner("b", Duration::from_secs(60)));
        claim(conn, "held", slot, "run-held", &a).await.unwrap();
        claim(conn, "done", slot, "run-done", &a).await.unwrap();
        finish(conn, "run-done", "succeeded", None).await.unwrap();
        let ask = |job: &str, slot: &str| SlotClaim {
            job_name: job.into(),
            slot_at: slot.into(),
            job_id: format!("b-{job}-{slot}"),
        };
        let answers = claim_many(
            conn,
            &[
                ask("zeta", slot),
                ask("held", slot),
                ask("alpha", slot),
                ask("done", slot),
            ],
            &b,
            10,
        )
        .await
        .unwrap();
        assert_eq!(
            answers,
            [
                Some(Claim::Claimed { took_over: None }),
                Some(Claim::Held),
                Some(Claim::Claimed { took_over: None }),
                Some(Claim::Done)
            ]
        );
        let mine: Vec<String> = list(conn, None, None, 10)
            .await
            .unwrap()
            .into_iter()
            .filter(|s| s.host == "b")
            .map(|s| s.job_name)
            .collect();
        assert_eq!(mine.len(), 2, "{mine:?}");
        assert!(mine.contains(&"alpha".to_owned()) && mine.contains(&"zeta".to_owned()));

        // With room for one, the held slot is passed over and the first free
        // one (in job order) is claimed; the rest are not asked.
        let next = "2026-01-01T00:30:00Z";
        claim(conn, "beta", next, "run-beta", &a).await.unwrap();
        let answers = claim_many(
            conn,
            &[
                ask("delta", next),
                ask("beta", next),
                ask("gamma", next),
                ask("epsilon", next),
            ],
            &b,
            1,
        )
        .await
        .unwrap();
        assert_eq!(
            answers,
            [Some(Claim::Claimed { took_over: None }), Some(Claim::Held), None, None],
            "in job order: beta (held), delta (claimed), then nothing more"
        );
    }

    async fn a_slot_without_a_run_is_recorded_once_and_never_over_a_claim(conn: &mut Conn) {
        let slot = "2026-01-01T00:15:00Z";
        let a = owner("a", Duration::from_secs(60));
        claim(conn, "claimed", slot, "run-1", &a).await.unwrap();
        let unrun = |job: &str, status| Unrun {
            job_name: job.into(),
            slot_at: slot.into(),
            status,
            reason: None,
        };
        let asked = [
            unrun("claimed", "missed"),
            unrun("late", "missed"),
            unrun("busy", "skipped"),
        ];
        assert_eq!(record_unrun(conn, &asked, &a).await.unwrap(), [false, true, true]);
        // Another host records the same slots: nothing changes.
        let b = owner("b", Duration::from_secs(60));
        assert_eq!(record_unrun(conn, &asked, &b).await.unwrap(), [false, false, false]);
        // A host that comes to claim a missed slot finds it done.
        assert_eq!(claim(conn, "late", slot, "run-2", &b).await.unwrap(), Claim::Done);
        let results: Vec<(String, String)> = list(conn, None, None, 10)
            .await
            .unwrap()
            .iter()
            .map(|s| (s.job_name.clone(), s.result().to_owned()))
            .collect();
        assert_eq!(
            results,
            [
                ("busy".to_owned(), "skipped".to_owned()),
                ("claimed".to_owned(), "running".to_owned()),
                ("late".to_owned(), "missed".to_owned())
            ]
        );
        let missed = list(conn, None, Some("missed"), 10).await.unwrap();
        assert_eq!((missed.len(), missed[0].host.as_str()), (1, "a"));
        finish(conn, "run-1", "failed", Some("timeout")).await.unwrap();
        assert_eq!(
            list(conn, Some("claimed"), Some("timeout"), 10).await.unwrap()[0].result(),
            "timeout"
        );
    }

    on_both_engines!(
        a_slot_without_a_run_is_recorded_once_and_never_over_a_claim,
        a_slot_is_claimed_once_and_a_dead_holder_is_taken_over,
        many_slots_are_claimed_in_one_commit_answered_in_order,
    );
}
