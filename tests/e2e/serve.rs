//! `nuntiq-host serve`: scheduled runs on one host or many sharing one
//! PostgreSQL database — every slot once, no stream overlapping, a dead
//! host's slot taken over, a hostile run failing alone among hundreds, a
//! changed plugin refused until it is applied, SIGTERM settling cleanly, metrics served.

use crate::MOCK;
use chrono::{DateTime, Duration as Days, Utc};
use nuntiq_e2e::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A jobs file of `n` Acme jobs against `mock`, one customer and connector each.
pub(crate) struct Jobs {
    pub(crate) work: Workdir,
    pub(crate) toml: String,
}

impl Jobs {
    pub(crate) fn new() -> Self {
        Self {
            work: Workdir::new(),
            toml: String::new(),
        }
    }

    /// Adds job `name` for customer `customer`, with extra TOML keys.
    pub(crate) fn add(&mut self, mock: &Mock, name: &str, guest_name: &str, customer: &str, extra: &str) {
        self.add_with(mock, name, guest_name, customer, json!({}), extra);
    }

    /// Adds job `name`, with `config` merged into its settings' config.
    pub(crate) fn add_with(
        &mut self,
        mock: &Mock,
        name: &str,
        guest_name: &str,
        customer: &str,
        config: serde_json::Value,
        extra: &str,
    ) {
        let mut settings = acme_settings(&mock.api_url(), name);
        settings["customer_number"] = json!(customer);
        settings["config"]["page_size"] = json!(50);
        for (k, v) in config.as_object().unwrap() {
            settings["config"][k] = v.clone();
        }
        let path = self.work.write_settings(&format!("{name}.json"), &settings);
        self.toml.push_str(&format!(
            "[[job]]\nname = \"{name}\"\nplugin = \"{}\"\nsettings = \"{}\"\nallow_hosts = [\"{}\"]\n{extra}\n\n",
            guest(guest_name).display(),
            path.display(),
            mock.allow_host()
        ));
    }

    pub(crate) fn write(&self) -> PathBuf {
        let path = self.work.path("jobs.toml");
        std::fs::write(&path, &self.toml).unwrap();
        path
    }
}

/// A `serve` process; its stderr is collected as it comes.
pub(crate) struct Serve {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Serve {
    pub(crate) fn start(jobs: &Path, db: &str, extra: &[&str]) -> Self {
        Self::start_with_open_files(jobs, db, extra, None)
    }

    /// `serve` with these environment variables set.
    pub(crate) fn start_env(jobs: &Path, db: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(Some(jobs), db, extra, None, env)
    }

    /// `serve --db DB` without a jobs file: the jobs stored in the database.
    pub(crate) fn start_from_db(db: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(None, db, extra, None, env)
    }

    /// `serve` under `ulimit -n open_files` (soft and hard), when given.
    fn start_with_open_files(jobs: &Path, db: &str, extra: &[&str], open_files: Option<u64>) -> Self {
        Self::spawn(Some(jobs), db, extra, open_files, &[])
    }

    fn spawn(jobs: Option<&Path>, db: &str, extra: &[&str], open_files: Option<u64>, env: &[(&str, &str)]) -> Self {
        let mut command = host_command();
        command.envs(env.iter().copied());
        if let Some(n) = open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit { rlim_cur: n, rlim_max: n };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command
            .arg("serve")
            .args(jobs.map(|j| j.to_str().unwrap()))
            .args(["--db", db])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nuntiq-host serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Self { child, stderr }
    }

    pub(crate) fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends `signal` to the process.
    pub(crate) fn signal(&self, signal: i32) {
        // SAFETY: a plain syscall on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// SIGKILL, and waits for it: a host that dies without a word.
    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has not exited.
    pub(crate) fn is_running(&self) -> bool {
        // SAFETY: a non-blocking status query of our own child.
        unsafe { libc::waitpid(self.child.id() as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) == 0 }
    }

    /// Waits for a line containing `text`; returns it.
    pub(crate) fn wait_for_line(&self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(line) = self.log().lines().find(|l| l.contains(text)) {
                return line.to_owned();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no line with {text:?} within {within:?}:\n{}", self.log());
    }

    /// The process's peak resident memory so far, in bytes (VmHWM).
    pub(crate) fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kb << 10
    }

    /// SIGTERM, then the exit code.
    pub(crate) fn stop(mut self) -> (i32, String) {
        // SAFETY: a plain syscall on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        (status.code().unwrap_or(-1), self.log())
    }
}

/// A test that fails before `stop` must not leave its `serve` running.
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting until {what}");
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

#[test]
fn two_hosts_on_one_postgres_run_every_slot_of_twenty_jobs_once() {
    let mock = Mock::start(MOCK, 80);
    let schema = PgSchema::new();
    let mut jobs = Jobs::new();
    for i in 0..20 {
        jobs.add(
            &mock,
            &format!("acme_{i:02}"),
            "acme",
            &format!("C{i:02}"),
            "every = \"2s\"",
        );
    }
    let file = jobs.write();
    // Ten runs at once each: neither host can take every slot by itself.
    let args = ["--lease", "5s", "--max-concurrent", "10", "--log-level", "warn"];
    let a = Serve::start(&file, &schema.url(), &args);
    let b = Serve::start(&file, &schema.url(), &args);
    std::thread::sleep(Duration::from_secs(9));
    let (code_a, log_a) = a.stop();
    let (code_b, log_b) = b.stop();
    assert_eq!((code_a, code_b), (0, 0), "{log_a}\n--\n{log_b}");

    let db = Db::open(Path::new(&schema.url()));
    let slots = db.rows("SELECT job_name, slot_at, status, job_id, pid FROM schedule_slot ORDER BY job_name, slot_at");
    let mut by_job: BTreeMap<String, Vec<DateTime<Utc>>> = BTreeMap::new();
    for row in &slots {
        let job = row[0].clone().unwrap();
        assert_eq!(row[2].as_deref(), Some("succeeded"), "{row:?}\n{log_a}\n--\n{log_b}");
        by_job.entry(job).or_default().push(at(row[1].as_deref().unwrap()));
    }
    assert_eq!(by_job.len(), 20, "every job ran");
    for (job, times) in &by_job {
        assert!(times.len() >= 3, "{job} ran {} slots in 9 s", times.len());
        for pair in times.windows(2) {
            assert_eq!(
                pair[1] - pair[0],
                Days::seconds(2),
                "{job}: no slot skipped or doubled: {times:?}"
            );
        }
    }
    // One run per slot, and every run came from a slot.
    assert_eq!(db.count("delta_run"), slots.len() as i64);
    assert_eq!(
        db.scalar::<i64>(
            "SELECT count(*) FROM schedule_slot s WHERE (SELECT count(*) FROM delta_run r WHERE r.job_id = s.job_id) <> 1"
        ),
        0
    );
    // Both hosts took a fair share of the slots: a host whose room refills
    // between its ticks does not take them all.
    let mut by_host: BTreeMap<Option<String>, usize> = BTreeMap::new();
    for row in &slots {
        *by_host.entry(row[4].clone()).or_default() += 1;
    }
    assert_eq!(
        by_host.len(),
        2,
        "both hosts ran slots: {by_host:?}\n{log_a}\n--\n{log_b}"
    );
    assert!(
        by_host.values().all(|&n| n * 4 >= slots.len()),
        "each host ran at least a quarter of the {} slots: {by_host:?}",
        slots.len()
    );
    // No two runs of one stream overlapped.
    let runs = db.rows(
        "SELECT connector_name, started_at_utc, ended_at_utc FROM delta_run ORDER BY connector_name, started_at_utc",
    );
    for pair in runs.windows(2) {
        if pair[0][0] == pair[1][0] {
            assert!(
                pair[0][2] <= pair[1][1],
                "runs of {:?} overlapped: {pair:?}",
                pair[0][0]
            );
        }
    }
    // Each customer's store is the source's truth.
    let expected = expected_from(&mock.truth(), Utc::now() - Days::days(7));
    for i in 0..20 {
        assert_same_suppliers(&db.suppliers(&format!("C{i:02}")), &expected);
    }
}

#[test]
fn two_hundred_runs_at_once_succeed_while_a_hostile_one_fails_alone() {
    let mock = Mock::start(MOCK, 40);
    let schema = PgSchema::new();
    let mut jobs = Jobs::new();
    for i in 0..200 {
        jobs.add(
            &mock,
            &format!("acme_{i:03}"),
            "acme",
            &format!("C{i:03}"),
            "every = \"1h\"",
        );
    }
    jobs.add(
        &mock,
        "hostile",
        "memory-hog",
        "C999",
        "every = \"1h\"\nmax_memory = \"16MiB\"",
    );
    let file = jobs.write();
    let serve = Serve::start(
        &file,
        &schema.url(),
        &["--max-concurrent", "256", "--metrics-addr", "127.0.0.1:0"],
    );
    let line = serve.wait_for_line("Metrics on http://", Duration::from_secs(60));
    let metrics_url = line
        .split("Metrics on ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_owned();
    let db = Db::open(Path::new(&schema.url()));
    wait_until("every slot ended", Duration::from_secs(240), || {
        db.try_rows("SELECT count(*) FROM schedule_slot WHERE status <> 'running'")
            .and_then(|rows| rows[0][0].clone())
            .is_some_and(|n| n == "201")
    });
    let metrics = ureq::get(&metrics_url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let health = ureq::get(metrics_url.replace("/metrics", "/healthz"))
        .call()
        .unwrap()
        .status();
    let (code, log) = serve.stop();
    assert_eq!(code, 0, "{log}");
    assert_eq!(health, 200);

    let outcome = |sql: &str| db.scalar::<i64>(sql);
    assert_eq!(
        outcome("SELECT count(*) FROM schedule_slot WHERE status = 'succeeded'"),
        200,
        "{log}"
    );
    assert_eq!(
        outcome(
            "SELECT count(*) FROM schedule_slot WHERE job_name = 'hostile' AND status = 'failed' AND outcome = 'memory_limit'"
        ),
        1
    );
    // Every customer got its suppliers; the hostile run wrote none.
    let expected = expected_from(&mock.truth(), Utc::now() - Days::days(7)).len() as i64;
    assert_eq!(
        outcome(&format!(
            "SELECT count(*) FROM (SELECT customer_number FROM supplier GROUP BY customer_number HAVING count(*) = {expected}) c"
        )),
        200
    );
    assert_eq!(
        outcome("SELECT count(*) FROM supplier WHERE customer_number = 'C999'"),
        0
    );
    // The metrics saw the same.
    let succeeded = metrics
        .lines()
        .filter(|l| l.starts_with("nuntiq_runs_total{") && l.contains("status=\"succeeded\"") && l.ends_with(" 1"))
        .count();
    assert_eq!(succeeded, 200, "{metrics}");
    // Per-run accounting: every run, the hostile one too, reported what it used.
    for family in [
        "nuntiq_run_peak_memory_bytes_count{",
        "nuntiq_run_duration_seconds_count{",
    ] {
        let runs = metrics
            .lines()
            .filter(|l| l.starts_with(family) && l.ends_with(" 1"))
            .count();
        assert_eq!(runs, 201, "{family}: {metrics}");
    }
    // CPU is billed in whole milliseconds, rounded up: a run that ran used some.
    for family in [
        "nuntiq_http_requests_total{",
        "nuntiq_records_written_total{",
        "nuntiq_run_cpu_seconds_total{",
    ] {
        let used = |l: &&str| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v > 0.0)
        };
        let acme = metrics
            .lines()
            .filter(|l| l.starts_with(family) && !l.contains("hostile"))
            .filter(used)
            .count();
        assert_eq!(acme, 200, "{family}: {metrics}");
    }
    for expected in [
        r#"nuntiq_runs_total{connector="hostile",status="memory_limit"} 1"#,
        r#"nuntiq_limit_hits_total{kind="memory_limit"} 1"#,
        "nuntiq_runs_running 0",
    ] {
        assert!(metrics.contains(expected), "{expected} missing:\n{metrics}");
    }
    // What each run used is in its run history.
    assert_eq!(
        outcome(
            "SELECT count(*) FROM delta_run WHERE http_requests >= 1 AND records_written >= 1 AND cpu_ms IS NOT NULL"
        ),
        200
    );
}

#[test]
fn a_dead_hosts_slot_is_taken_over_after_its_lease() {
    let mock = Mock::start(MOCK, 300);
    // Slow pages: the first host is killed in the middle of its run.
    mock.faults(json!([{"action": "delay", "delay_ms": 100, "times": 1_000_000}]));
    let schema = PgSchema::new();
    let mut jobs = Jobs::new();
    jobs.add(&mock, "acme_eu", "acme", "10000001", "every = \"1h\"");
    let file = jobs.write();
    let mut first = Serve::start(&file, &schema.url(), &["--lease", "2s"]);
    first.wait_for_line("Fetched page 1", Duration::from_secs(60));
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let db = Db::open(Path::new(&schema.url()));
    assert_eq!(db.scalar::<String>("SELECT status FROM schedule_slot"), "running");

    mock.faults(json!([]));
    let second = Serve::start(&file, &schema.url(), &["--lease", "2s"]);
    second.wait_for_line("took over the slot", Duration::from_secs(30));
    wait_until("the slot ended", Duration::from_secs(60), || {
        db.scalar::<String>("SELECT status FROM schedule_slot") != "running"
    });
    let (code, log) = second.stop();
    assert_eq!(code, 0, "{log}");
    let slot = db.rows("SELECT status, takeovers FROM schedule_slot");
    assert_eq!(slot, [[Some("succeeded".to_owned()), Some("1".to_owned())]], "{log}");
    assert_eq!(db.count("schedule_slot"), 1, "still one slot");
    let expected = expected_from(&mock.truth(), Utc::now() - Days::days(7));
    assert_same_suppliers(&db.suppliers("10000001"), &expected);
}

#[test]
fn a_changed_plugin_is_refused_until_applied_then_picked_up_by_the_next_run() {
    let mock = Mock::start(MOCK, 60);
    let work = Workdir::new();
    let plugin = work.path("connector.wasm");
    std::fs::copy(guest("acme"), &plugin).unwrap();
    let mut jobs = Jobs::new();
    // The 0.1.0 fixture reads job_params.since; the current Acme ignores it.
    jobs.add(
        &mock,
        "acme_eu",
        "acme",
        "10000001",
        "every = \"2s\"\nparams = { since = \"2020-01-01T00:00:00Z\" }",
    );
    jobs.toml = jobs
        .toml
        .replace(&guest("acme").display().to_string(), &plugin.display().to_string());
    let file = jobs.write();
    let db = work.db();
    let serve = Serve::start(&file, db.to_str().unwrap(), &[]);
    let runs = |sql: &str| {
        db.exists()
            .then(|| Db::open(&db).try_rows(sql))
            .flatten()
            .map_or(0, |r| r.len())
    };
    wait_until("a first run", Duration::from_secs(30), || {
        runs("SELECT 1 FROM schedule_slot WHERE status = 'succeeded'") >= 1
    });
    // A new build of the connector (the 0.1.0 fixture: another file, same job).
    let replacement = work.path("new.wasm");
    std::fs::copy(guest("acme-v0_1"), &replacement).unwrap();
    std::fs::rename(&replacement, &plugin).unwrap();
    let sha = |path: PathBuf| -> String {
        use sha2::Digest;
        sha2::Sha256::digest(std::fs::read(path).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let (old, new) = (sha(guest("acme")), sha(guest("acme-v0_1")));
    // Replaced without an apply: reported and not run, both digests named.
    wait_until("the replaced plugin refused", Duration::from_secs(30), || {
        runs("SELECT 1 FROM schedule_slot WHERE outcome = 'invalid_plugin'") >= 1
    });
    let refusal = serve.wait_for_line("is pinned to", Duration::from_secs(5));
    assert!(refusal.contains(&old) && refusal.contains(&new), "{refusal}");
    // SIGHUP applies the jobs file again, which records the new plugin's digest.
    serve.signal(libc::SIGHUP);
    wait_until("a run of the new plugin", Duration::from_secs(30), || {
        runs(&format!("SELECT 1 FROM delta_run WHERE plugin_sha256 = '{new}'")) >= 1
    });
    let (code, log) = serve.stop();
    assert_eq!(code, 0, "{log}");
    assert!(runs(&format!("SELECT 1 FROM delta_run WHERE plugin_sha256 = '{old}'")) >= 1);
}

#[test]
fn sigterm_lets_runs_finish_for_the_grace_period_then_stops_them_cleanly() {
    let mock = Mock::start(MOCK, 300);
    mock.faults(json!([{"action": "delay", "delay_ms": 300, "times": 1_000_000}]));
    let mut jobs = Jobs::new();
    jobs.add(&mock, "acme_eu", "acme", "10000001", "every = \"1h\"");
    let file = jobs.write();
    let db = jobs.work.db();
    let serve = Serve::start(&file, db.to_str().unwrap(), &["--grace", "1s"]);
    serve.wait_for_line("Fetched page 1", Duration::from_secs(30));
    let started = Instant::now();
    let (code, log) = serve.stop();
    assert_eq!(code, 3, "a run was cancelled at the grace deadline: {log}");
    assert!(log.contains("1 runs were cancelled at the grace deadline (exit 3)"), "{log}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopped within grace and settling"
    );
    assert!(log.contains("no new runs; running ones get 1s"), "{log}");
    let db = Db::open(&db);
    assert_eq!(
        db.rows("SELECT status, outcome FROM schedule_slot"),
        [[Some("failed".to_owned()), Some("cancelled".to_owned())]],
        "{log}"
    );
    let state = db.state("acme_eu", "suppliers").unwrap();
    assert_eq!(state["status"], "failed");
    assert_eq!(
        state["committed_cursor_value"],
        serde_json::Value::Null,
        "the cursor did not move"
    );
}

#[test]
fn a_customer_never_has_more_runs_at_once_than_its_cap() {
    let mock = Mock::start(MOCK, 40);
    mock.faults(json!([{"action": "delay", "delay_ms": 400, "times": 1_000_000}]));
    let mut jobs = Jobs::new();
    for i in 0..6 {
        jobs.add(&mock, &format!("busy_{i}"), "acme", "C1", "every = \"1h\"");
    }
    jobs.add(&mock, "other_0", "acme", "C2", "every = \"1h\"");
    jobs.add(&mock, "other_1", "acme", "C2", "every = \"1h\"");
    let file = jobs.write();
    let db_path = jobs.work.db();
    let serve = Serve::start(
        &file,
        db_path.to_str().unwrap(),
        &["--max-per-customer", "2", "--max-concurrent", "10"],
    );
    // Migrated, not only created.
    wait_until("the store exists", Duration::from_secs(30), || {
        db_path.exists() && Db::open(&db_path).try_rows("SELECT 1 FROM schedule_slot").is_some()
    });
    let db = Db::open(&db_path);
    wait_until("every job ran", Duration::from_secs(60), || {
        db.scalar::<i64>("SELECT count(*) FROM schedule_slot WHERE status = 'succeeded'") == 8
    });
    let (code, log) = serve.stop();
    assert_eq!(code, 0, "{log}");
    let runs = db.rows("SELECT customer_number, started_at_utc, ended_at_utc FROM delta_run");
    assert_eq!(runs.len(), 8, "{runs:?}");
    // The most runs of one customer going on at any moment.
    let most_at_once = |customer: &str| {
        let mut events: Vec<(DateTime<Utc>, i32)> = Vec::new();
        for run in runs.iter().filter(|r| r[0].as_deref() == Some(customer)) {
            events.push((at(run[1].as_deref().unwrap()), 1));
            events.push((at(run[2].as_deref().unwrap()), -1));
        }
        // An end and a start at the same instant do not overlap.
        events.sort();
        let (mut now, mut most) = (0, 0);
        for (_, step) in events {
            now += step;
            most = most.max(now);
        }
        most
    };
    assert_eq!(
        most_at_once("C1"),
        2,
        "C1's six runs went two at a time at most, and did go two at a time"
    );
    assert_eq!(most_at_once("C2"), 2);
}

/// The honest jobs' slot outcomes: (succeeded, anything else, as rows).
fn honest_outcomes(db: &Db) -> (i64, Vec<Vec<Option<String>>>) {
    let succeeded = db.scalar::<i64>(
        "SELECT count(*) FROM schedule_slot WHERE job_name LIKE 'honest%' AND status = 'succeeded'",
    );
    let other = db.rows(
        "SELECT job_name, slot_at, status, outcome FROM schedule_slot \
         WHERE job_name LIKE 'honest%' AND status NOT IN ('succeeded', 'running', 'missed', 'skipped')",
    );
    (succeeded, other)
}

#[test]
fn honest_tenants_keep_succeeding_beside_descriptor_and_memory_hungry_ones() {
    let mock = Mock::start(MOCK, 40);
    let schema = PgSchema::new();
    let mut jobs = Jobs::new();
    let slow = format!("{}/_mock/blob?bytes=10&delay_ms=3000", mock.url);
    for i in 0..3 {
        jobs.add_with(
            &mock,
            &format!("hoarder_{i}"),
            "host-hog",
            "HOG",
            json!({"mode": "socket-hoard", "count": "1000", "url": slow}),
            "every = \"1h\"\ntimeout = \"8s\"",
        );
    }
    for i in 0..2 {
        jobs.add_with(
            &mock,
            &format!("flooder_{i}"),
            "host-hog",
            "FLOOD",
            json!({"mode": "refused-flood", "count": "2000000", "url": "http://169.254.169.254/"}),
            "every = \"1h\"",
        );
    }
    for i in 0..8 {
        jobs.add(&mock, &format!("honest_{i}"), "acme", &format!("C{i}"), "every = \"2s\"");
    }
    let file = jobs.write();
    // 512 descriptors: the process sizes its concurrency to them.
    let serve = Serve::start_with_open_files(&file, &schema.url(), &["--max-concurrent", "1000"], Some(512));
    serve.wait_for_line("--max-concurrent 1000 lowered to", Duration::from_secs(60));
    let db = Db::open(Path::new(&schema.url()));
    wait_until("the hostile runs ended and honest ones ran on", Duration::from_secs(120), || {
        let hostile_done = db
            .try_rows("SELECT count(*) FROM schedule_slot WHERE job_name NOT LIKE 'honest%' AND status <> 'running'")
            .and_then(|r| r[0][0].clone())
            .is_some_and(|n| n == "5");
        hostile_done && honest_outcomes(&db).0 >= 24
    });
    let (code, log) = serve.stop();
    assert_eq!(code, 0, "{log}");
    let (succeeded, other) = honest_outcomes(&db);
    assert!(succeeded >= 24, "{succeeded} honest slots succeeded");
    assert!(other.is_empty(), "honest slots that did not succeed: {other:?}\n{log}");
    let hostile = db.rows("SELECT job_name, status, outcome FROM schedule_slot WHERE job_name NOT LIKE 'honest%' ORDER BY job_name");
    for row in &hostile {
        assert_eq!(row[1].as_deref(), Some("failed"), "{hostile:?}");
        assert_ne!(row[2].as_deref(), Some("internal"), "{hostile:?}");
    }
    assert!(
        hostile.iter().any(|r| r[0].as_deref().unwrap().starts_with("flooder") && r[2].as_deref() == Some("limit")),
        "{hostile:?}"
    );
}

#[test]
fn a_process_short_of_descriptors_runs_fewer_at_once_and_none_fails_for_it() {
    let mock = Mock::start(MOCK, 20);
    let mut jobs = Jobs::new();
    for i in 0..30 {
        jobs.add(&mock, &format!("honest_{i:02}"), "acme", &format!("C{i:02}"), "every = \"2s\"");
    }
    let file = jobs.write();
    let db_path = jobs.work.db();
    let serve = Serve::start_with_open_files(
        &file,
        db_path.to_str().unwrap(),
        &["--max-concurrent", "1000", "--log-level", "warn"],
        Some(200),
    );
    let lowered = serve.wait_for_line("--max-concurrent 1000 lowered to", Duration::from_secs(60));
    // Migrated, not only created: a store opened between the two has no tables yet.
    wait_until("the store is migrated", Duration::from_secs(30), || {
        db_path.exists() && Db::open(&db_path).try_rows("SELECT 1 FROM schedule_slot LIMIT 1").is_some()
    });
    let db = Db::open(&db_path);
    wait_until("sixty slots succeeded", Duration::from_secs(120), || honest_outcomes(&db).0 >= 60);
    let (code, log) = serve.stop();
    assert_eq!(code, 0, "{log}");
    let (_, other) = honest_outcomes(&db);
    assert!(other.is_empty(), "slots that did not succeed: {other:?}\n{lowered}");
    assert_eq!(
        db.scalar::<i64>("SELECT count(*) FROM schedule_slot WHERE status = 'running'"),
        0,
        "nothing is left running after a clean exit"
    );
}
