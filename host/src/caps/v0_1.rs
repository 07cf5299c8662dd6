//! The frozen contract `nuntiq:connector@0.1.0`, forwarded to the current
//! capabilities (0.3.0) through type conversions: connectors built against
//! 0.1.0 keep running unchanged, with every limit and check of the current host.
//!
//! 0.2.0 differs only in names (`custom-field1` for `custom-field-1`), in
//! `delta-error`'s two new cases (which 0.1.0 connectors see as
//! `invalid-argument`) and in `delta-run.reject`, which 0.1.0 does not have.

use super::context::ContextCap;
use super::delta::{DeltaRunHandle, DeltaView};
use super::http::HttpCap;
use super::logger::LoggerCap;
use super::supplier::SupplierCap;
use crate::bindings::{v0_1 as old, v0_3 as new};
use wasmtime::component::Resource;

impl From<new::types::SettingValue> for old::types::SettingValue {
    fn from(v: new::types::SettingValue) -> Self {
        use new::types::SettingValue as N;
        match v {
            N::Text(s) => Self::Text(s),
            N::Integer(i) => Self::Integer(i),
            N::Float(f) => Self::Float(f),
            N::Boolean(b) => Self::Boolean(b),
            N::Json(s) => Self::Json(s),
        }
    }
}

impl old::types::Host for ContextCap {}

impl old::context::Host for ContextCap {
    async fn customer_number(&mut self) -> wasmtime::Result<String> {
        new::context::Host::customer_number(self).await
    }

    async fn get_config(&mut self, key: String) -> wasmtime::Result<Option<old::types::SettingValue>> {
        Ok(new::context::Host::get_config(self, key).await?.map(Into::into))
    }

    async fn get_secret(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        new::context::Host::get_secret(self, key).await
    }

    async fn has_secret(&mut self, key: String) -> wasmtime::Result<bool> {
        new::context::Host::has_secret(self, key).await
    }

    async fn get_param(&mut self, key: String) -> wasmtime::Result<Option<old::types::SettingValue>> {
        Ok(new::context::Host::get_param(self, key).await?.map(Into::into))
    }
}

impl old::logger::Host for LoggerCap {
    async fn log(
        &mut self,
        level: old::logger::Level,
        message: String,
        step: Option<String>,
        detail: Option<String>,
    ) -> wasmtime::Result<()> {
        let level = match level {
            old::logger::Level::Debug => new::logger::Level::Debug,
            old::logger::Level::Info => new::logger::Level::Info,
            old::logger::Level::Warn => new::logger::Level::Warn,
            old::logger::Level::Error => new::logger::Level::Error,
        };
        new::logger::Host::log(self, level, message, step, detail).await
    }
}

impl From<new::http::Response> for old::http::Response {
    fn from(r: new::http::Response) -> Self {
        Self {
            status: r.status,
            headers: r.headers,
            body: r.body,
            attempts: r.attempts,
            url: r.url,
        }
    }
}

impl From<new::http::HttpError> for old::http::HttpError {
    fn from(e: new::http::HttpError) -> Self {
        use new::http::HttpError as N;
        match e {
            N::Denied(m) => Self::Denied(m),
            N::InvalidRequest(m) => Self::InvalidRequest(m),
            N::Timeout(m) => Self::Timeout(m),
            N::Connection(m) => Self::Connection(m),
            N::Status(r) => Self::Status(r.into()),
            N::RetriesExhausted(r) => Self::RetriesExhausted(old::http::RetriesExhausted {
                attempts: r.attempts,
                last_status: r.last_status,
                last_cause: r.last_cause,
            }),
            N::BodyTooLarge(limit) => Self::BodyTooLarge(limit),
        }
    }
}

impl old::http::Host for HttpCap {
    async fn get_with_retry(
        &mut self,
        request: old::http::Request,
        policy: Option<old::http::RetryPolicy>,
    ) -> wasmtime::Result<Result<old::http::Response, old::http::HttpError>> {
        let request = new::http::Request {
            url: request.url,
            query: request.query,
            headers: request.headers,
            timeout_ms: request.timeout_ms,
            bearer_secret: request.bearer_secret,
        };
        let policy = policy.map(|p| new::http::RetryPolicy {
            max_attempts: p.max_attempts,
            backoff_multiplier_ms: p.backoff_multiplier_ms,
            backoff_min_ms: p.backoff_min_ms,
            backoff_max_ms: p.backoff_max_ms,
            timeout_ms: p.timeout_ms,
            retry_statuses: p.retry_statuses,
        });
        let answer = new::http::Host::get_with_retry(self, request, policy).await?;
        Ok(answer.map(Into::into).map_err(Into::into))
    }
}

fn cursor_type(t: old::delta_state::CursorType) -> new::delta_state::CursorType {
    match t {
        old::delta_state::CursorType::TimestampUtc => new::delta_state::CursorType::TimestampUtc,
        old::delta_state::CursorType::NumericId => new::delta_state::CursorType::NumericId,
        old::delta_state::CursorType::OpaqueToken => new::delta_state::CursorType::OpaqueToken,
    }
}

impl From<new::delta_state::CursorType> for old::delta_state::CursorType {
    fn from(t: new::delta_state::CursorType) -> Self {
        match t {
            new::delta_state::CursorType::TimestampUtc => Self::TimestampUtc,
            new::delta_state::CursorType::NumericId => Self::NumericId,
            new::delta_state::CursorType::OpaqueToken => Self::OpaqueToken,
        }
    }
}

impl From<new::delta_state::StreamState> for old::delta_state::StreamState {
    fn from(s: new::delta_state::StreamState) -> Self {
        use new::delta_state::RunStatus as N;
        Self {
            connector_name: s.connector_name,
            stream_name: s.stream_name,
            cursor_type: s.cursor_type.map(Into::into),
            committed_cursor_value: s.committed_cursor_value,
            committed_at_utc: s.committed_at_utc,
            status: match s.status {
                N::Idle => old::delta_state::RunStatus::Idle,
                N::Running => old::delta_state::RunStatus::Running,
                N::Succeeded => old::delta_state::RunStatus::Succeeded,
                N::Failed => old::delta_state::RunStatus::Failed,
            },
            started_at_utc: s.started_at_utc,
            completed_at_utc: s.completed_at_utc,
            records_processed: s.records_processed,
            error_summary: s.error_summary,
            metadata: s.metadata,
            updated_at_utc: s.updated_at_utc,
            updated_by: s.updated_by,
        }
    }
}

impl From<new::delta_state::DeltaError> for old::delta_state::DeltaError {
    fn from(e: new::delta_state::DeltaError) -> Self {
        use new::delta_state::DeltaError as N;
        match e {
            N::InvalidCursor(m) => Self::InvalidCursor(m),
            N::CursorRegression(m) => Self::CursorRegression(m),
            N::CursorTypeMismatch(m) => Self::CursorTypeMismatch(m),
            N::AlreadyRunning(m) => Self::AlreadyRunning(m),
            N::NotRunning(m) => Self::NotRunning(m),
            // 0.1.0 has no words for a refusal or a limit.
            N::InvalidArgument(m) | N::Denied(m) | N::Limit(m) => Self::InvalidArgument(m),
            N::Store(m) => Self::Store(m),
        }
    }
}

type DeltaResult<T> = wasmtime::Result<Result<T, old::delta_state::DeltaError>>;

impl old::delta_state::HostDeltaRun for DeltaView<'_> {
    async fn begin(
        &mut self,
        connector_name: String,
        stream_name: String,
        cursor: old::delta_state::CursorType,
    ) -> DeltaResult<Resource<DeltaRunHandle>> {
        let begun =
            new::delta_state::HostDeltaRun::begin(self, connector_name, stream_name, cursor_type(cursor)).await?;
        Ok(begun.map_err(Into::into))
    }

    async fn lower_bound_cursor(&mut self, run: Resource<DeltaRunHandle>) -> wasmtime::Result<Option<String>> {
        new::delta_state::HostDeltaRun::lower_bound_cursor(self, run).await
    }

    async fn set_new_cursor(&mut self, run: Resource<DeltaRunHandle>, value: String) -> DeltaResult<()> {
        Ok(new::delta_state::HostDeltaRun::set_new_cursor(self, run, value)
            .await?
            .map_err(Into::into))
    }

    async fn set_records_processed(&mut self, run: Resource<DeltaRunHandle>, count: u64) -> wasmtime::Result<()> {
        new::delta_state::HostDeltaRun::set_records_processed(self, run, count).await
    }

    async fn set_metadata(&mut self, run: Resource<DeltaRunHandle>, metadata: String) -> DeltaResult<()> {
        Ok(new::delta_state::HostDeltaRun::set_metadata(self, run, metadata)
            .await?
            .map_err(Into::into))
    }

    async fn complete(&mut self, run: Resource<DeltaRunHandle>) -> DeltaResult<old::delta_state::StreamState> {
        let done = new::delta_state::HostDeltaRun::complete(self, run).await?;
        Ok(done.map(Into::into).map_err(Into::into))
    }

    async fn fail(&mut self, run: Resource<DeltaRunHandle>, error_summary: String) -> DeltaResult<()> {
        Ok(new::delta_state::HostDeltaRun::fail(self, run, error_summary)
            .await?
            .map_err(Into::into))
    }

    async fn drop(&mut self, run: Resource<DeltaRunHandle>) -> wasmtime::Result<()> {
        new::delta_state::HostDeltaRun::drop(self, run).await
    }
}

impl old::delta_state::Host for DeltaView<'_> {
    async fn get_state(
        &mut self,
        connector_name: String,
        stream_name: String,
    ) -> DeltaResult<old::delta_state::StreamState> {
        let state = new::delta_state::Host::get_state(self, connector_name, stream_name).await?;
        Ok(state.map(Into::into).map_err(Into::into))
    }
}

impl From<new::supplier_load::LoadError> for old::supplier_load::LoadError {
    fn from(e: new::supplier_load::LoadError) -> Self {
        use new::supplier_load::LoadError as N;
        match e {
            N::InvalidRecord(m) => Self::InvalidRecord(m),
            N::QueueFull(m) => Self::QueueFull(m),
            N::Store(m) => Self::Store(m),
        }
    }
}

impl old::supplier_load::Host for SupplierCap {
    async fn queue(
        &mut self,
        suppliers: Vec<old::supplier_load::Supplier>,
    ) -> wasmtime::Result<Result<u32, old::supplier_load::LoadError>> {
        let started = std::time::Instant::now();
        let queued = self.queue_records(suppliers.into_iter().map(Into::into).collect());
        self.ctx.counters.add(crate::meter::Section::Queue, started);
        Ok(queued.map_err(Into::into))
    }

    async fn save_all(&mut self) -> wasmtime::Result<Result<u32, old::supplier_load::LoadError>> {
        Ok(new::supplier_load::Host::save_all(self).await?.map_err(Into::into))
    }
}
