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
        // Earlier slots of this job whose holder stopped renewing: history.
        tx.execute(
            "UPDATE schedule_slot SET status = 'abandoned', ended_at = ?3, outcome = 'lease_expired'
             WHERE job_name = ?1 AND slot_at <> ?2 AND status = 'running' AND lease_expires_at <= ?3",
            params![job_name, slot_at, &now],
        )
        .await?;
        let sql = format!(
            "SELECT status, host, pid, lease_expires_at FROM schedule_slot
             WHERE job_name = ?1 AND slot_at = ?2{}",
            tx.for_update()
        );
        if let Some(row) = tx.query_opt(&sql, params![job_name, slot_at]).await? {
            let (status, host, pid, expires) = (row.text(0), row.text(1), row.int(2), row.text(3));
            if status == "running" && expires <= now {
                tx.execute(
                    "UPDATE schedule_slot SET job_id = ?3, host = ?4, pid = ?5, claimed_at = ?6,
                         lease_expires_at = ?7, takeovers = takeovers + 1
                     WHERE job_name = ?1 AND slot_at = ?2",
                    params![job_name, slot_at, job_id, &owner.host, owner.pid, &now, &until],
                )
                .await?;
                return Ok(Claim::Claimed {
                    took_over: Some(format!(
                        "took over the slot from process {pid} on {host}, whose lease expired at {expires}"
                    )),
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
/// claim another host took over.
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
            lost.push(job_id.clone());
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

/// One slot, as `serve` and the tests read them.
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
    pub outcome: Option<String>,
    pub takeovers: i64,
}

/// The slots of every job (or of `job_name`), newest first.
pub async fn list(conn: &mut Conn, job_name: Option<&str>, limit: usize) -> Result<Vec<Slot>, StoreError> {
    let rows = conn
        .query(
            "SELECT job_name, slot_at, status, job_id, host, pid, claimed_at, ended_at, outcome, takeovers
             FROM schedule_slot WHERE CAST(?1 AS TEXT) IS NULL OR job_name = ?1
             ORDER BY slot_at DESC, job_name LIMIT ?2",
            params![job_name, limit as i64],
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
        let slots = list(conn, Some("acme"), 10).await.unwrap();
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
        let mine: Vec<String> = list(conn, None, 10)
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

    on_both_engines!(
        a_slot_is_claimed_once_and_a_dead_holder_is_taken_over,
        many_slots_are_claimed_in_one_commit_answered_in_order,
    );
}
