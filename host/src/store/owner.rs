//! Who holds a stream's lease: a process on a host. A run whose owner is a
//! process on this machine that no longer exists can be taken over at once;
//! anything else waits for the lease to expire.
//!
//! "This machine" is more than a hostname: containers often share one, while
//! their pids live in separate namespaces. Two processes are on the same
//! machine only when they share the kernel boot (boot id) and the pid
//! namespace; only then does a pid lookup say anything about the owner.

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
    /// The kernel boot and pid namespace the pid belongs to (see [`this_instance`]).
    pub instance: Option<String>,
    /// SHA-256 of the plugin file, for run history.
    pub plugin_sha256: String,
    /// The plugin's name, version, authors and source (JSON), for run history.
    pub plugin_metadata: Option<String>,
    /// Written to the rows' `updated_by`.
    pub updated_by: String,
    /// How long the lease lasts without a heartbeat.
    pub lease: Duration,
    /// The job (one `run-plugin`, one scheduled run) the stream's run belongs
    /// to: its usage is recorded on its runs' history rows.
    pub job_id: Option<String>,
    /// The trace id of the job's run (W3C, 32 hex digits), on its runs' history rows.
    pub trace_id: Option<String>,
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
            instance: this_instance(),
            plugin_sha256: plugin_sha256.to_owned(),
            plugin_metadata: None,
            updated_by: updated_by.to_owned(),
            lease,
            job_id: None,
            trace_id: None,
        }
    }
}

pub fn this_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// `boot:<boot id>/pidns:<namespace inode>`: where a pid means this process.
/// `None` without /proc, and then no process is judged dead by its pid.
pub fn this_instance() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let pid_ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("boot:{}/{}", boot.trim(), pid_ns.display()))
}

/// Whether a lease holder recorded as (host, instance) ran where this process
/// runs, so that its pid can be looked up here.
pub fn same_machine(host: &str, instance: Option<&str>) -> bool {
    host == this_host() && instance.is_some() && instance == this_instance().as_deref()
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot.
pub fn process_start(pid: u32) -> Option<String> {
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
    fn another_pid_namespace_is_another_machine() {
        let me = RunOwner::this_process("abc", "test", Duration::from_secs(60));
        assert!(me.instance.as_deref().unwrap().starts_with("boot:"));
        assert!(same_machine(&me.host, me.instance.as_deref()));
        // Same hostname, another container: its pids are not ours to look up.
        assert!(!same_machine(&me.host, Some("boot:x/pid:[1]")));
        assert!(
            !same_machine(&me.host, None),
            "an owner from before instances were recorded"
        );
        assert!(!same_machine("elsewhere", me.instance.as_deref()));
    }

    #[test]
    fn run_ids_are_unique() {
        let a = RunOwner::this_process("abc", "test", Duration::from_secs(60));
        let b = RunOwner::this_process("abc", "test", Duration::from_secs(60));
        assert_ne!(a.run_id, b.run_id);
        assert!(!a.host.is_empty());
    }
}
