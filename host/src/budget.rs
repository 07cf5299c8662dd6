//! One budget per run: whatever the host holds, opens or writes for a run is
//! charged here before it happens and given back when it goes. A run that
//! goes over is stopped alone, with kind `limit` naming what ran out.
//!
//! Held resources (host memory) come back when their [`Charge`] is dropped,
//! so a charge moved into a future or a body is released exactly when that
//! is; spent ones (begins, rows and bytes handed to the store) only add up.
//! Connections are a per-run semaphore shared by `http` and `wasi:http`: a
//! request past the cap waits for one, so sockets stay bounded however many
//! requests a connector starts.

use crate::limits::{LimitExceeded, Stop};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a run's budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Bytes the host holds for the run: response bodies, wasi:http requests
    /// and their tasks, queued and in-flight suppliers, open delta runs.
    HostMemory,
    /// Delta runs begun (each writes a run row).
    Begins,
    /// Rows handed to the store: suppliers, rejected rows.
    StoredRows,
    /// Bytes of those rows.
    StoredBytes,
}

const RESOURCES: usize = 4;

impl Resource {
    /// The name the envelope's `error.limit` carries.
    pub fn name(self) -> &'static str {
        match self {
            Resource::HostMemory => "host_memory",
            Resource::Begins => "begins",
            Resource::StoredRows => "stored_rows",
            Resource::StoredBytes => "stored_bytes",
        }
    }

    /// The operator's flag (a jobs file key with `_` for `-`).
    pub fn flag(self) -> &'static str {
        match self {
            Resource::HostMemory => "--max-host-memory",
            Resource::Begins => "--max-begins",
            Resource::StoredRows => "--max-stored-rows",
            Resource::StoredBytes => "--max-stored-bytes",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn amount(self, n: u64) -> String {
        match self {
            Resource::HostMemory | Resource::StoredBytes => bytesize::ByteSize(n).display().iec().to_string(),
            Resource::Begins if n == 1 => "1 delta run".to_owned(),
            Resource::Begins => format!("{n} delta runs"),
            Resource::StoredRows if n == 1 => "1 row".to_owned(),
            Resource::StoredRows => format!("{n} rows"),
        }
    }
}

/// The operator's budget for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetLimits {
    /// Host memory the run may hold at once.
    pub max_host_memory: u64,
    /// Connections (sockets) the run may hold at once, `http` and `wasi:http` together.
    pub max_connections: usize,
    /// Delta runs one run may begin.
    pub max_begins: u64,
    /// Rows one run may hand to the store.
    pub max_stored_rows: u64,
    /// Bytes of those rows.
    pub max_stored_bytes: u64,
}

impl Default for BudgetLimits {
    /// Room for an honest run at its other limits' worst (a 64 MiB response
    /// body beside 32 MiB of queued suppliers and a batch being written),
    /// and for a million-supplier first load; far below what hurts a host.
    fn default() -> Self {
        Self {
            max_host_memory: 128 << 20,
            max_connections: 16,
            max_begins: 1000,
            max_stored_rows: 5_000_000,
            max_stored_bytes: 4 << 30,
        }
    }
}

/// What ran out: the run is stopped with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the run went over its budget of {} ({}): {what} asked for {} more with {} in use; the run was \
     stopped. If this connector needs more, raise {} for its job",
    resource.amount(*limit), resource.flag(), resource.amount(*wanted), resource.amount(*used), resource.flag()
)]
pub struct Exceeded {
    pub resource: Resource,
    pub limit: u64,
    pub used: u64,
    pub wanted: u64,
    /// Who asked, for people ("wasi:http requests", "delta-run.begin").
    pub what: &'static str,
}

/// A run's budget, shared by its capabilities.
#[derive(Debug)]
pub struct RunBudget {
    limits: BudgetLimits,
    used: [AtomicU64; RESOURCES],
    peak_host_memory: AtomicU64,
    connections: Arc<Semaphore>,
    stop: Arc<Stop>,
}

impl RunBudget {
    pub fn new(limits: BudgetLimits, stop: Arc<Stop>) -> Arc<Self> {
        Arc::new(Self {
            connections: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            used: Default::default(),
            peak_host_memory: AtomicU64::new(0),
            stop,
        })
    }

    /// A budget nothing runs out of (tests, admin paths).
    pub fn unlimited() -> Arc<Self> {
        Self::new(
            BudgetLimits {
                max_host_memory: u64::MAX,
                max_connections: Semaphore::MAX_PERMITS,
                max_begins: u64::MAX,
                max_stored_rows: u64::MAX,
                max_stored_bytes: u64::MAX,
            },
            Stop::never(),
        )
    }

    pub fn limits(&self) -> &BudgetLimits {
        &self.limits
    }

    fn limit(&self, resource: Resource) -> u64 {
        match resource {
            Resource::HostMemory => self.limits.max_host_memory,
            Resource::Begins => self.limits.max_begins,
            Resource::StoredRows => self.limits.max_stored_rows,
            Resource::StoredBytes => self.limits.max_stored_bytes,
        }
    }

    /// Takes `n`, or stops the run and says what ran out.
    fn take(&self, resource: Resource, n: u64, what: &'static str) -> Result<(), Exceeded> {
        let limit = self.limit(resource);
        let slot = &self.used[resource.index()];
        match slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            used.checked_add(n).filter(|&total| total <= limit)
        }) {
            Ok(before) => {
                if resource == Resource::HostMemory {
                    self.peak_host_memory.fetch_max(before + n, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(used) => {
                let exceeded = Exceeded {
                    resource,
                    limit,
                    used,
                    wanted: n,
                    what,
                };
                self.stop.exceed(LimitExceeded::Budget(exceeded.clone()));
                Err(exceeded)
            }
        }
    }

    /// Charges `n` of a held resource; the charge gives it back when dropped.
    pub fn hold(self: &Arc<Self>, resource: Resource, n: u64, what: &'static str) -> Result<Charge, Exceeded> {
        self.take(resource, n, what)?;
        Ok(Charge {
            budget: self.clone(),
            resource,
            amount: n,
        })
    }

    /// An empty charge of host memory, grown as bytes arrive.
    pub fn empty(self: &Arc<Self>) -> Charge {
        Charge {
            budget: self.clone(),
            resource: Resource::HostMemory,
            amount: 0,
        }
    }

    /// Spends `n` of a resource the run uses up (begins, rows): never given back.
    pub fn spend(&self, resource: Resource, n: u64, what: &'static str) -> Result<(), Exceeded> {
        self.take(resource, n, what)
    }

    /// How much of `resource` is in use (held) or spent.
    pub fn used(&self, resource: Resource) -> u64 {
        self.used[resource.index()].load(Ordering::Acquire)
    }

    /// The most host memory the run held at once.
    pub fn peak_host_memory(&self) -> u64 {
        self.peak_host_memory.load(Ordering::Relaxed)
    }

    /// One of the run's connections, waiting up to `wait` for one to free up;
    /// `None` when none did (the caller refuses the request). Held as long
    /// as the socket is the run's: until the response body ends or is dropped.
    pub async fn connection(&self, wait: Duration) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(wait, self.connections.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// Connections held now.
    pub fn connections_in_use(&self) -> usize {
        self.limits.max_connections.max(1) - self.connections.available_permits()
    }
}

/// A held share of a run's budget, given back when dropped. It can grow (a
/// body as it arrives) and shrink.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<RunBudget>,
    resource: Resource,
    amount: u64,
}

impl Charge {
    /// Takes `n` more, or stops the run and says what ran out.
    pub fn grow(&mut self, n: u64, what: &'static str) -> Result<(), Exceeded> {
        self.budget.take(self.resource, n, what)?;
        self.amount += n;
        Ok(())
    }

    /// Keeps at most `n` and gives the rest back.
    pub fn shrink_to(&mut self, n: u64) {
        let back = self.amount.saturating_sub(n);
        self.budget.used[self.resource.index()].fetch_sub(back, Ordering::AcqRel);
        self.amount -= back;
    }

    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// An empty charge of the same resource to the same run.
    pub fn empty_like(&self) -> Charge {
        Charge {
            budget: self.budget.clone(),
            resource: self.resource,
            amount: 0,
        }
    }

    /// Takes over what `other` holds (of the same run and resource).
    pub fn absorb(&mut self, mut other: Charge) {
        debug_assert!(Arc::ptr_eq(&self.budget, &other.budget) && self.resource == other.resource);
        self.amount += std::mem::take(&mut other.amount);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max_host_memory: u64) -> (Arc<RunBudget>, Arc<Stop>) {
        let stop = Stop::never();
        let limits = BudgetLimits {
            max_host_memory,
            max_connections: 2,
            max_begins: 3,
            ..BudgetLimits::default()
        };
        (RunBudget::new(limits, stop.clone()), stop)
    }

    #[test]
    fn charges_come_back_when_dropped() {
        let (b, stop) = budget(100);
        let mut a = b.hold(Resource::HostMemory, 60, "test").unwrap();
        let c = b.hold(Resource::HostMemory, 40, "test").unwrap();
        assert_eq!(b.used(Resource::HostMemory), 100);
        drop(c);
        a.grow(30, "test").unwrap();
        a.shrink_to(10);
        assert_eq!(b.used(Resource::HostMemory), 10);
        drop(a);
        assert_eq!(b.used(Resource::HostMemory), 0);
        assert_eq!(b.peak_host_memory(), 100);
        assert!(stop.exceeded().is_none(), "nothing ran out");
    }

    #[test]
    fn going_over_stops_the_run_naming_what_ran_out() {
        let (b, stop) = budget(100);
        let _held = b.hold(Resource::HostMemory, 90, "test").unwrap();
        let e = b.hold(Resource::HostMemory, 20, "wasi:http requests").unwrap_err();
        assert_eq!(
            (e.resource, e.limit, e.used, e.wanted),
            (Resource::HostMemory, 100, 90, 20)
        );
        assert_eq!(b.used(Resource::HostMemory), 90, "a refused charge takes nothing");
        let limit = stop.exceeded().expect("the run is stopped");
        assert_eq!(limit.kind(), "limit");
        let text = limit.to_string();
        assert!(
            text.contains("--max-host-memory") && text.contains("wasi:http requests"),
            "{text}"
        );
    }

    #[test]
    fn spent_resources_only_add_up() {
        let (b, stop) = budget(100);
        for _ in 0..3 {
            b.spend(Resource::Begins, 1, "delta-run.begin").unwrap();
        }
        let e = b.spend(Resource::Begins, 1, "delta-run.begin").unwrap_err();
        assert_eq!(e.resource.name(), "begins");
        assert!(matches!(stop.exceeded(), Some(LimitExceeded::Budget(_))));
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_for_one() {
        let (b, _) = budget(100);
        let first = b.connection(Duration::from_millis(10)).await.unwrap();
        let _second = b.connection(Duration::from_millis(10)).await.unwrap();
        assert_eq!(b.connections_in_use(), 2);
        assert!(b.connection(Duration::from_millis(20)).await.is_none(), "the cap holds");
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.connection(Duration::from_secs(5)).await.is_some() })
        };
        tokio::task::yield_now().await;
        drop(first);
        assert!(waiter.await.unwrap(), "a freed connection goes to the waiter");
    }
}
