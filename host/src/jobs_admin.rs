//! `nuntiq-host jobs …`: the control plane's commands. The jobs every
//! `serve` of a database runs are rows in it; `jobs apply FILE` makes them
//! equal a jobs file (checked whole first: a mistake writes nothing), and
//! pause, resume, trigger and delete change them one at a time. Every change
//! is recorded with who made it, and every live `serve` sees it within
//! seconds.

use crate::admin::{AdminError, dash, esc, with_conn, write_json};
use crate::serve::definition::{self, Checked};
use crate::serve::jobs::{Cadence, slot_key};
use crate::store::jobs::{self as stored, Activity, ApplyRecord, Diff, JobRow};
use crate::store::sql::Conn;
use crate::store::{Db, StoreError};
use serde::Serialize;
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;

/// Who an action is recorded as: `--by`, else `$USER@hostname`.
pub fn actor(by: Option<String>) -> String {
    by.unwrap_or_else(|| {
        let user = std::env::var("USER").unwrap_or_else(|_| "operator".into());
        format!("{user}@{}", crate::store::owner::this_host())
    })
}

/// Checks `file` and stores its jobs (see [`apply_checked`]).
pub fn apply(db: &Db, file: &Path, dry_run: bool, by: &str, out: &mut dyn Write) -> Result<Diff, AdminError> {
    let checked = definition::check_file(file).map_err(AdminError::Refused)?;
    apply_checked(db, &checked, dry_run, by, out)
}

/// Makes the stored jobs equal the checked file's (or, dry, says what that
/// would do) and prints what it adds, changes and removes.
pub fn apply_checked(
    db: &Db,
    checked: &Checked,
    dry_run: bool,
    by: &str,
    out: &mut dyn Write,
) -> Result<Diff, AdminError> {
    let record = ApplyRecord {
        by: by.to_owned(),
        file: checked.file.display().to_string(),
        file_sha256: checked.file_sha256.clone(),
    };
    if let Db::Sqlite(path) = db
        && !dry_run
        && !path.exists()
    {
        // The one-machine store is made by its first apply.
        crate::store::schema::open(path)?;
    }
    let diff = match db {
        // A dry run against a store not made yet adds everything, and makes nothing.
        Db::Sqlite(path) if dry_run && !path.exists() => Diff {
            added: checked.jobs.iter().map(|j| j.name.clone()).collect(),
            ..Diff::default()
        },
        _ => with_conn(db, !dry_run, async |c: &mut Conn| {
            Ok(if dry_run {
                stored::diff(c, &checked.jobs).await?
            } else {
                stored::apply(c, &checked.jobs, &record).await?
            })
        })?,
    };
    let verb = if dry_run { "Would apply" } else { "Applied" };
    writeln!(
        out,
        "{verb} {} (sha256 {}) to {db}:",
        checked.file.display(),
        checked.file_sha256
    )?;
    for (sign, names, what) in [
        ("+", &diff.added, "added"),
        ("~", &diff.changed, "changed"),
        ("-", &diff.removed, "removed"),
    ] {
        for name in names {
            writeln!(out, "  {sign} {}  ({what})", esc(name))?;
        }
    }
    writeln!(
        out,
        "{} added, {} changed, {} removed, {} unchanged{}",
        diff.added.len(),
        diff.changed.len(),
        diff.removed.len(),
        diff.unchanged,
        if dry_run {
            "; nothing was written (--dry-run)"
        } else {
            "; every serve on this database picks the change up within seconds"
        }
    )?;
    Ok(diff)
}

/// A job as `jobs list` and `jobs show` report it.
#[derive(Serialize)]
struct Listed {
    name: String,
    customer_number: String,
    connector_name: Option<String>,
    cadence: String,
    next_slot: Option<String>,
    last_run: Option<String>,
    last_result: Option<String>,
    last_success: Option<String>,
    lag_seconds: Option<f64>,
    paused: bool,
    paused_reason: Option<String>,
    plugin: Option<String>,
    plugin_sha256: String,
    applied_at: String,
    applied_by: String,
}

fn listed(row: &JobRow, activity: &Activity) -> Listed {
    let text = |key: &str| row.definition.get(key).and_then(Value::as_str).map(str::to_owned);
    let cadence = match (text("every"), text("cron")) {
        (Some(every), _) => format!("every {every}"),
        (None, Some(cron)) => format!("cron {cron}"),
        _ => "-".into(),
    };
    let next_slot = definition::from_row(row).ok().and_then(|spec| next_slot(&spec.cadence));
    Listed {
        name: row.name.clone(),
        customer_number: row.customer_number.clone(),
        connector_name: row.connector_name.clone(),
        cadence,
        next_slot,
        last_run: activity.last_run.as_ref().map(|r| r.slot_at.clone()),
        last_result: activity.last_run.as_ref().map(|r| r.result.clone()),
        last_success: activity.last_success.clone(),
        lag_seconds: activity.last_run.as_ref().and_then(|r| r.lag_seconds),
        paused: row.paused_because().is_some(),
        paused_reason: row.paused_because(),
        plugin: text("plugin"),
        plugin_sha256: row.plugin_sha256.clone(),
        applied_at: row.applied_at.clone(),
        applied_by: row.applied_by.clone(),
    }
}

fn next_slot(cadence: &Cadence) -> Option<String> {
    let now = chrono::Utc::now();
    cadence.slot(now).and_then(|slot| cadence.next(slot)).map(slot_key)
}

async fn read_listed(c: &mut Conn, name: Option<&str>) -> Result<Vec<(JobRow, Listed)>, StoreError> {
    let mut all = Vec::new();
    for row in stored::list(c, name).await? {
        let activity = stored::activity(c, &row.name).await?;
        let shown = listed(&row, &activity);
        all.push((row, shown));
    }
    Ok(all)
}

/// `jobs list`: every stored job with its cadence, next slot, last run and
/// result, last success, lag and pause.
pub fn list(db: &Db, as_json: bool, out: &mut dyn Write) -> Result<(), AdminError> {
    let jobs = with_conn(db, false, async |c: &mut Conn| Ok(read_listed(c, None).await?))?;
    if as_json {
        let rows: Vec<&Listed> = jobs.iter().map(|(_, l)| l).collect();
        return write_json(out, &rows);
    }
    if jobs.is_empty() {
        writeln!(out, "No jobs are stored; jobs apply FILE stores a jobs file's.")?;
        return Ok(());
    }
    let header = [
        "NAME",
        "CUSTOMER",
        "CADENCE",
        "NEXT SLOT",
        "LAST RUN",
        "RESULT",
        "LAST SUCCESS",
        "LAG",
        "PAUSED",
    ];
    let lines: Vec<[String; 9]> = jobs
        .iter()
        .map(|(_, l)| {
            [
                esc(&l.name),
                esc(&l.customer_number),
                esc(&l.cadence),
                dash(&l.next_slot),
                dash(&l.last_run),
                dash(&l.last_result),
                dash(&l.last_success),
                l.lag_seconds.map_or_else(|| "-".into(), |s| format!("{s:.1}s")),
                dash(&l.paused_reason),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let row = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        text
    };
    writeln!(out, "{}", row(header.to_vec()))?;
    for line in &lines {
        writeln!(out, "{}", row(line.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// The definition as shown: secret values that are still plain strings are
/// masked (sealed ones and references are shown as stored).
fn shown_definition(definition: &Value) -> Value {
    let mut shown = definition.clone();
    if let Some(Value::Object(secrets)) = shown.pointer_mut("/settings/secrets") {
        for value in secrets.values_mut() {
            if value.is_string() {
                *value = Value::String("***".into());
            }
        }
    }
    shown
}

/// `jobs show NAME`: the stored definition, its pause, last run and success,
/// the recent actions on it and its recent slots.
pub fn show(db: &Db, name: &str, as_json: bool, out: &mut dyn Write) -> Result<(), AdminError> {
    let (jobs, actions, slots) = with_conn(db, false, async |c: &mut Conn| {
        let jobs = read_listed(c, Some(name)).await?;
        let customer = jobs
            .first()
            .map(|(row, _)| row.customer_number.clone())
            .unwrap_or_default();
        let actions = stored::actions(c, name, &customer, 10).await?;
        let slots = crate::store::schedule::list(c, Some(name), None, 10).await?;
        Ok((jobs, actions, slots))
    })?;
    let Some((row, l)) = jobs.into_iter().next() else {
        return Err(AdminError::Refused(format!(
            "no job is named {name:?} (jobs list shows the stored jobs)"
        )));
    };
    let definition = shown_definition(&row.definition);
    if as_json {
        let mut value = serde_json::to_value(&l).unwrap_or_default();
        value["definition"] = definition;
        value["actions"] = serde_json::to_value(&actions).unwrap_or_default();
        value["slots"] =
            json!(slots
            .iter()
            .map(|s| json!({"slot_at": s.slot_at, "result": s.result(), "host": s.host, "claimed_at": s.claimed_at,
                "ended_at": s.ended_at}))
            .collect::<Vec<_>>());
        return write_json(out, &value);
    }
    writeln!(out, "{}", esc(&l.name))?;
    let lines = [
        ("customer", esc(&l.customer_number)),
        ("connector", dash(&l.connector_name)),
        ("cadence", esc(&l.cadence)),
        ("next slot", dash(&l.next_slot)),
        ("plugin", dash(&l.plugin)),
        ("plugin sha256", l.plugin_sha256.clone()),
        ("applied", format!("{} by {}", esc(&l.applied_at), esc(&l.applied_by))),
        ("paused", l.paused_reason.as_deref().map_or_else(|| "no".into(), esc)),
        (
            "last run",
            match (&l.last_run, &l.last_result) {
                (Some(slot), Some(result)) => format!(
                    "slot {} {}{}",
                    esc(slot),
                    esc(result),
                    l.lag_seconds
                        .map(|s| format!(" (started {s:.1} s late)"))
                        .unwrap_or_default()
                ),
                _ => "-".into(),
            },
        ),
        ("last success", dash(&l.last_success)),
    ];
    for (label, value) in lines {
        writeln!(out, "  {label:<14}{value}")?;
    }
    let pretty = serde_json::to_string_pretty(&definition).unwrap_or_default();
    writeln!(out, "  definition")?;
    for line in pretty.lines() {
        writeln!(out, "    {}", esc(line))?;
    }
    if !actions.is_empty() {
        writeln!(out, "  recent actions")?;
        for a in &actions {
            writeln!(
                out,
                "    {}  {}  {}{}",
                esc(&a.at),
                esc(&a.by),
                esc(&a.action),
                a.reason.as_deref().map(|r| format!(": {}", esc(r))).unwrap_or_default()
            )?;
        }
    }
    if !slots.is_empty() {
        writeln!(out, "  recent slots")?;
        for s in &slots {
            writeln!(out, "    {}  {}  on {}", esc(&s.slot_at), esc(s.result()), esc(&s.host))?;
        }
    }
    Ok(())
}

/// What `jobs pause` and `jobs resume` act on.
pub enum Target {
    Job(String),
    Customer(String),
}

/// `jobs pause|resume`: recorded with the reason; slots due while paused are
/// recorded as skipped (paused).
pub fn pause(
    db: &Db,
    target: &Target,
    pause: bool,
    reason: &str,
    by: &str,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let verb = if pause { "Paused" } else { "Resumed" };
    match target {
        Target::Job(name) => {
            with_conn(db, true, async |c: &mut Conn| {
                Ok(stored::pause_job(c, name, pause, reason, by).await?)
            })?;
            writeln!(out, "{verb} {}: {}", esc(name), esc(reason))?;
        }
        Target::Customer(customer) => {
            let jobs = with_conn(db, true, async |c: &mut Conn| {
                Ok(stored::pause_customer(c, customer, pause, reason, by).await?)
            })?;
            writeln!(
                out,
                "{verb} customer {} ({jobs} jobs now): {}",
                esc(customer),
                esc(reason)
            )?;
        }
    }
    Ok(())
}

/// `jobs trigger NAME`: one run now, as a slot of its own.
pub fn trigger(db: &Db, name: &str, by: &str, out: &mut dyn Write) -> Result<(), AdminError> {
    let slot = with_conn(db, true, async |c: &mut Conn| Ok(stored::trigger(c, name, by).await?))?;
    writeln!(
        out,
        "Triggered {}: slot {slot}; a serve on this database runs it within seconds (jobs show {} tells how it went)",
        esc(name),
        esc(name)
    )?;
    Ok(())
}

/// `jobs delete NAME`: no more slots for it (its history stays).
pub fn delete(db: &Db, name: &str, by: &str, out: &mut dyn Write) -> Result<(), AdminError> {
    with_conn(db, true, async |c: &mut Conn| Ok(stored::delete(c, name, by).await?))?;
    writeln!(
        out,
        "Deleted {}; a run already going finishes, no new slot starts (a later jobs apply of a file naming it adds it back)",
        esc(name)
    )?;
    Ok(())
}
