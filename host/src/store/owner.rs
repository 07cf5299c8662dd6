//! Who holds a stream's lease: a process on a host. A run whose owner is a
//! process on this machine that no longer exists can be taken over at once;
//! anything else waits for the lease to expire.

use std::time::Duration;

/// The process that begins a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOwner {
    pub run_id: String,
    pub host: String,
    pub pid: u32,
    /// The process's start time (clock ticks since boot), so a recycled pid is not
    /// mistaken for the owner.
    pub process_start: Option<String>,
    /// SHA-256 of the plugin file, for run history.
    pub plugin_sha256: String,
    /// Written to the rows' `updated_by`.
    pub updated_by: String,
    /// How long the lease lasts without a heartbeat.
    pub lease: Duration,
}

impl RunOwner {
    /// This process, with a fresh run id.
    pub fn this_process(plugin_sha256: &str, updated_by: &str, lease: Duration) -> Self {
        let pid = std::process::id();
        Self {
            run_id: uuid::Uuid::new_v4().to_string(),
            host: this_host(),
            pid,
            process_start: process_start(pid),
            plugin_sha256: plugin_sha256.to_owned(),
            updated_by: updated_by.to_owned(),
            lease,
        }
    }
}

pub fn this_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot.
fn process_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19).map(str::to_owned)
}

/// Whether the process that recorded (pid, start) on this host still runs.
/// Unknown (no /proc) counts as alive: then only the lease can free the stream.
pub fn process_alive(pid: u32, recorded_start: Option<&str>) -> bool {
    if !std::path::Path::new("/proc/self/stat").exists() {
        return true;
    }
    match (process_start(pid), recorded_start) {
        (None, _) => false,
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_finished_child_is_not() {
        let me = RunOwner::this_process("abc", "test", Duration::from_secs(60));
        assert!(process_alive(me.pid, me.process_start.as_deref()));
        // The same pid with another start time is a recycled pid: not the owner.
        assert!(!process_alive(me.pid, Some("1")));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_alive(pid, None));
    }

    #[test]
    fn run_ids_are_unique() {
        let a = RunOwner::this_process("abc", "test", Duration::from_secs(60));
        let b = RunOwner::this_process("abc", "test", Duration::from_secs(60));
        assert_ne!(a.run_id, b.run_id);
        assert!(!a.host.is_empty());
    }
}
