//! What a run used and where its time went: the per-run accounting a
//! multi-tenant platform bills and throttles by (CPU, peak memory, HTTP
//! requests, retries, bytes in, records written, wall time), and the split of
//! the connector's side into its own work (parsing, mapping: time in wasm),
//! each kind of host call, and crossing the boundary (lifting and lowering).

use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmtime::CallHook;

/// A run's usage, as the envelope and the run history report it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Usage {
    pub wall_ms: u64,
    /// CPU time of the run's own thread: the connector and the host calls it made.
    pub cpu_ms: u64,
    /// CPU time the store spent writing for the run (its writer thread).
    pub store_ms: u64,
    /// The largest linear memory the connector grew to.
    pub peak_memory_bytes: u64,
    /// The most host memory the run held at once (its budget's count:
    /// response bodies, requests, queued suppliers, delta runs).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub peak_host_memory_bytes: u64,
    pub http_requests: u64,
    pub http_retries: u64,
    pub http_bytes_in: u64,
    /// Suppliers inserted or updated.
    pub records_written: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Milliseconds, rounded up: a run that used any time is billed at least
/// 1 ms, so thousands of small runs do not add up to nothing.
pub fn whole_ms(d: Duration) -> u64 {
    d.as_micros().div_ceil(1000) as u64
}

/// Where the run's thread spent its time, in milliseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct Breakdown {
    /// In wasm: the connector's own work (parsing responses, mapping rows).
    pub connector_ms: f64,
    /// Inside `http` calls: waiting for the network, retries included.
    pub http_ms: f64,
    /// Inside `supplier-load.queue`: converting and validating batches.
    pub queue_ms: f64,
    /// Waiting for the store: `save-all` (a full write queue) and delta-state calls.
    pub store_wait_ms: f64,
    /// Inside `logger.log` and the connector's stdout/stderr.
    pub log_ms: f64,
    /// The rest of the time in host calls: the canonical ABI copying
    /// arguments in (lifting) and results out (lowering), and small calls.
    pub boundary_ms: f64,
}

/// Time and counts the capabilities add to, shared with them.
#[derive(Debug, Default)]
pub struct Counters {
    http_ns: AtomicU64,
    queue_ns: AtomicU64,
    store_wait_ns: AtomicU64,
    log_ns: AtomicU64,
    pub http_requests: AtomicU64,
    pub http_retries: AtomicU64,
    pub http_bytes_in: AtomicU64,
}

/// What a timed section counts as.
#[derive(Debug, Clone, Copy)]
pub enum Section {
    Http,
    Queue,
    StoreWait,
    Log,
}

impl Counters {
    fn slot(&self, section: Section) -> &AtomicU64 {
        match section {
            Section::Http => &self.http_ns,
            Section::Queue => &self.queue_ns,
            Section::StoreWait => &self.store_wait_ns,
            Section::Log => &self.log_ns,
        }
    }

    /// Adds the time since `started` to `section`.
    pub fn add(&self, section: Section, started: Instant) {
        self.slot(section)
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    fn ms(&self, section: Section) -> f64 {
        self.slot(section).load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// Follows the run's thread across the boundary (wasmtime's call hook): time
/// in wasm and in host calls, and the thread's CPU time.
#[derive(Debug)]
pub struct Meter {
    pub counters: Arc<Counters>,
    started: Instant,
    cpu_started: Duration,
    wasm_since: Instant,
    host_since: Instant,
    wasm: Duration,
    host: Duration,
}

/// CPU time this thread has used.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a plain syscall writing into `ts`.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Default for Meter {
    fn default() -> Self {
        Self::new(Arc::default())
    }
}

impl Meter {
    /// A meter that starts now, adding the capabilities' `counters` to its breakdown.
    pub fn new(counters: Arc<Counters>) -> Self {
        let now = Instant::now();
        Self {
            counters,
            started: now,
            cpu_started: thread_cpu(),
            wasm_since: now,
            host_since: now,
            wasm: Duration::ZERO,
            host: Duration::ZERO,
        }
    }
}

impl Meter {
    /// wasmtime's call hook. (A host call that lowers a result calls into
    /// wasm to allocate: that bit counts as both, which is noise.)
    pub fn on(&mut self, hook: CallHook) {
        let now = Instant::now();
        match hook {
            CallHook::CallingWasm | CallHook::ReturningFromHost => {
                if matches!(hook, CallHook::ReturningFromHost) {
                    self.host += now - self.host_since;
                }
                self.wasm_since = now;
            }
            CallHook::CallingHost | CallHook::ReturningFromWasm => {
                self.wasm += now - self.wasm_since;
                if matches!(hook, CallHook::CallingHost) {
                    self.host_since = now;
                }
            }
        }
    }

    /// The run's thread CPU time so far.
    pub fn cpu(&self) -> Duration {
        thread_cpu().saturating_sub(self.cpu_started)
    }

    pub fn wall(&self) -> Duration {
        self.started.elapsed()
    }

    /// Where the time went.
    pub fn breakdown(&self) -> Breakdown {
        let c = &self.counters;
        let (http, queue, store_wait, log) = (
            c.ms(Section::Http),
            c.ms(Section::Queue),
            c.ms(Section::StoreWait),
            c.ms(Section::Log),
        );
        let host = self.host.as_secs_f64() * 1e3;
        Breakdown {
            connector_ms: self.wasm.as_secs_f64() * 1e3,
            http_ms: http,
            queue_ms: queue,
            store_wait_ms: store_wait,
            log_ms: log,
            boundary_ms: (host - http - queue - store_wait - log).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_rounds_time_up_to_whole_milliseconds() {
        assert_eq!(whole_ms(Duration::ZERO), 0);
        assert_eq!(whole_ms(Duration::from_micros(1)), 1);
        assert_eq!(whole_ms(Duration::from_micros(1000)), 1);
        assert_eq!(whole_ms(Duration::from_micros(1001)), 2);
    }

    #[test]
    fn time_in_wasm_and_in_host_calls_is_told_apart() {
        let mut m = Meter::default();
        m.on(CallHook::CallingWasm);
        std::thread::sleep(Duration::from_millis(20));
        m.on(CallHook::CallingHost);
        std::thread::sleep(Duration::from_millis(10));
        m.on(CallHook::ReturningFromHost);
        std::thread::sleep(Duration::from_millis(20));
        m.on(CallHook::ReturningFromWasm);
        let b = m.breakdown();
        assert!(b.connector_ms >= 40.0 && b.connector_ms < 60.0, "{b:?}");
        assert!(b.boundary_ms >= 10.0 && b.boundary_ms < 25.0, "{b:?}");
    }
}
