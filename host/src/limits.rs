//! Host-enforced limits on one job. A connector cannot ask for more; the
//! operator sets them with flags. Each limit that ends a run has its own error
//! kind in the envelope.

use std::time::Duration;

/// The operator's limits for one job.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory of the connector, all memories together.
    pub max_memory_bytes: usize,
    /// Elements across the connector's tables.
    pub max_table_elements: usize,
    /// Wall-clock time for the whole run, host calls included.
    pub timeout: Duration,
    /// Wasm stack; deeper recursion traps.
    pub max_wasm_stack_bytes: usize,
    /// Connector log lines per run (its stdout and stderr included); later
    /// lines are dropped and counted.
    pub max_log_lines: u64,
    /// Connector log bytes per run, likewise.
    pub max_log_bytes: u64,
    /// Epoch interruption (what stops a connector spinning without host calls).
    /// Off only in [`Limits::unenforced`], to measure what the limits cost.
    pub epoch_interruption: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory_bytes: 256 << 20,
            max_table_elements: 100_000,
            timeout: Duration::from_secs(15 * 60),
            max_wasm_stack_bytes: 512 << 10,
            max_log_lines: 50_000,
            max_log_bytes: 32 << 20,
            epoch_interruption: true,
        }
    }
}

impl Limits {
    /// No limits at all: for measuring their cost on the honest path
    /// (`cargo run --release --example limits_cost`), never for tenants.
    pub fn unenforced() -> Self {
        Self {
            max_memory_bytes: usize::MAX,
            max_table_elements: usize::MAX,
            timeout: Duration::from_secs(365 * 24 * 3600),
            max_wasm_stack_bytes: Limits::default().max_wasm_stack_bytes,
            max_log_lines: u64::MAX,
            max_log_bytes: u64::MAX,
            epoch_interruption: false,
        }
    }
}

/// A limit that ended a run; travels inside a trap so the runtime can name it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error(
        "the connector tried to grow its memory to {desired} bytes, over the limit of {limit} bytes \
         (--max-memory)"
    )]
    Memory { desired: usize, limit: usize },
    #[error("the connector tried to grow its tables to {desired} elements, over the limit of {limit} (--max-memory)")]
    Table { desired: usize, limit: usize },
    #[error("the run exceeded its time limit of {} (--timeout)", humantime::format_duration(*.0))]
    Timeout(Duration),
}

impl LimitExceeded {
    /// The envelope's error kind.
    pub fn kind(&self) -> &'static str {
        match self {
            LimitExceeded::Memory { .. } | LimitExceeded::Table { .. } => "memory_limit",
            LimitExceeded::Timeout(_) => "timeout",
        }
    }
}

/// A host limit a capability enforced by refusing a call (the connector saw an
/// error it could handle). If the run then fails, the envelope names the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitHit {
    /// The envelope's error kind: `body_too_large`, `request_budget`, `too_many_redirects`,
    /// `network_denied`, `batch_too_large`, `already_running`, `lease_lost`.
    pub kind: &'static str,
    pub message: String,
}

/// wasmtime's view of the memory and table limits: growth past them traps
/// with a [`LimitExceeded`] the runtime can recognise.
pub struct GuestLimiter {
    max_memory_bytes: usize,
    max_table_elements: usize,
}

impl GuestLimiter {
    pub fn new(limits: &Limits) -> Self {
        Self {
            max_memory_bytes: limits.max_memory_bytes,
            max_table_elements: limits.max_table_elements,
        }
    }
}

impl wasmtime::ResourceLimiter for GuestLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            return Err(LimitExceeded::Memory {
                desired,
                limit: self.max_memory_bytes,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_table_elements {
            return Err(LimitExceeded::Table {
                desired,
                limit: self.max_table_elements,
            }
            .into());
        }
        Ok(true)
    }
}

/// Parses sizes such as `256MiB`, `64 MB` or `1048576`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let size: bytesize::ByteSize = text
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not a size such as 256MiB ({e})"))?;
    usize::try_from(size.as_u64()).map_err(|_| format!("{text:?} is too large"))
}

/// Parses durations such as `15m`, `90s` or `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("{text:?} is not a duration such as 15m or 90s ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn growth_past_the_limit_is_refused_with_a_named_error() {
        let mut limiter = GuestLimiter::new(&Limits {
            max_memory_bytes: 1 << 20,
            ..Limits::default()
        });
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        let err = limiter.memory_growing(1 << 20, 2 << 20, None).unwrap_err();
        let limit = err.downcast_ref::<LimitExceeded>().unwrap();
        assert_eq!(limit.kind(), "memory_limit");
        assert!(
            err.to_string()
                .contains("over the limit of 1048576 bytes (--max-memory)"),
            "{err}"
        );
        assert!(limiter.table_growing(0, 10, None).unwrap());
        assert!(limiter.table_growing(0, 1_000_000, None).is_err());
    }

    #[test]
    fn timeouts_read_well() {
        assert_eq!(
            LimitExceeded::Timeout(Duration::from_secs(90)).to_string(),
            "the run exceeded its time limit of 1m 30s (--timeout)"
        );
    }
}
