//! The frozen contract `nuntiq:connector@0.2.1` (and so 0.2.0), forwarded to
//! the current capabilities (0.3.0): connectors built against 0.2.x keep
//! running unchanged, with every limit and check of the current host.
//!
//! 0.3.0 only added to `supplier-load` (bank accounts on a location and
//! `set-options`); every other type is the same shape under another name, so
//! the conversions below move fields across one for one.

use super::context::ContextCap;
use super::delta::{DeltaRunHandle, DeltaView};
use super::http::{HttpCap, PendingGet};
use super::logger::LoggerCap;
use super::supplier::SupplierCap;
use crate::bindings::{v0_2 as old, v0_3 as new};
use wasmtime::component::Resource;

/// `From` for records whose fields are the same in both contracts.
macro_rules! same_record {
    ($from:ty => $to:ty { $($field:ident),* $(,)? }) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                Self { $($field: v.$field.into()),* }
            }
        }
    };
}

/// `From` for enums and variants whose cases are the same in both contracts.
macro_rules! same_cases {
    ($from:ident => $to:ident, unit { $($unit:ident),* $(,)? }) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                match v { $($from::$unit => Self::$unit),* }
            }
        }
    };
    ($from:ident => $to:ident, payload { $($case:ident),* $(,)? }) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                match v { $($from::$case(x) => Self::$case(x.into())),* }
            }
        }
    };
}

mod types {
    use super::{new, old};
    use new::types::SettingValue as New;
    use old::types::SettingValue as Old;
    same_cases!(New => Old, payload { Text, Integer, Float, Boolean, Json });
}

mod logger {
    use super::{new, old};
    use new::logger::Level as New;
    use old::logger::Level as Old;
    same_cases!(Old => New, unit { Debug, Info, Warn, Error });
}

mod http {
    use super::{new, old};
    same_record!(old::http::Request => new::http::Request { url, query, headers, timeout_ms, bearer_secret });
    same_record!(old::http::RetryPolicy => new::http::RetryPolicy {
        max_attempts, backoff_multiplier_ms, backoff_min_ms, backoff_max_ms, timeout_ms, retry_statuses
    });
    same_record!(new::http::Response => old::http::Response { status, headers, body, attempts, url });
    same_record!(new::http::RetriesExhausted => old::http::RetriesExhausted { attempts, last_status, last_cause });
    use new::http::HttpError as New;
    use old::http::HttpError as Old;
    same_cases!(New => Old, payload {
        Denied, InvalidRequest, Timeout, Connection, Status, RetriesExhausted, BodyTooLarge
    });
}

mod delta {
    use super::{new, old};
    use new::delta_state::{DeltaError as NewError, RunStatus as NewStatus};
    use old::delta_state::{DeltaError as OldError, RunStatus as OldStatus};
    type NewCursor = new::delta_state::CursorType;
    type OldCursor = old::delta_state::CursorType;
    same_cases!(OldCursor => NewCursor, unit { TimestampUtc, NumericId, OpaqueToken });
    same_cases!(NewCursor => OldCursor, unit { TimestampUtc, NumericId, OpaqueToken });
    same_cases!(NewStatus => OldStatus, unit { Idle, Running, Succeeded, Failed });
    same_cases!(NewError => OldError, payload {
        InvalidCursor, CursorRegression, CursorTypeMismatch, AlreadyRunning, NotRunning, InvalidArgument, Store,
        Denied, Limit
    });

    impl From<new::delta_state::StreamState> for old::delta_state::StreamState {
        fn from(s: new::delta_state::StreamState) -> Self {
            Self {
                connector_name: s.connector_name,
                stream_name: s.stream_name,
                cursor_type: s.cursor_type.map(Into::into),
                committed_cursor_value: s.committed_cursor_value,
                committed_at_utc: s.committed_at_utc,
                status: s.status.into(),
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
}

mod supplier_load {
    use super::{new, old};
    use new::supplier_load::LoadError as New;
    use old::supplier_load::LoadError as Old;
    same_cases!(New => Old, payload { InvalidRecord, QueueFull, Store });
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
        new::logger::Host::log(self, level.into(), message, step, detail).await
    }
}

impl old::http::HostPendingResponse for HttpCap {
    async fn finish(&mut self, this: Resource<PendingGet>) -> HttpResult<old::http::Response> {
        Ok(new::http::HostPendingResponse::finish(self, this)
            .await?
            .map(Into::into)
            .map_err(Into::into))
    }

    async fn drop(&mut self, this: Resource<PendingGet>) -> wasmtime::Result<()> {
        new::http::HostPendingResponse::drop(self, this).await
    }
}

type HttpResult<T> = wasmtime::Result<Result<T, old::http::HttpError>>;

impl old::http::Host for HttpCap {
    async fn get_with_retry(
        &mut self,
        request: old::http::Request,
        policy: Option<old::http::RetryPolicy>,
    ) -> HttpResult<old::http::Response> {
        Ok(
            new::http::Host::get_with_retry(self, request.into(), policy.map(Into::into))
                .await?
                .map(Into::into)
                .map_err(Into::into),
        )
    }

    async fn start_get_with_retry(
        &mut self,
        request: old::http::Request,
        policy: Option<old::http::RetryPolicy>,
    ) -> HttpResult<Resource<PendingGet>> {
        Ok(
            new::http::Host::start_get_with_retry(self, request.into(), policy.map(Into::into))
                .await?
                .map_err(Into::into),
        )
    }
}

type DeltaResult<T> = wasmtime::Result<Result<T, old::delta_state::DeltaError>>;

impl old::delta_state::HostDeltaRun for DeltaView<'_> {
    async fn begin(
        &mut self,
        connector_name: String,
        stream_name: String,
        cursor_type: old::delta_state::CursorType,
    ) -> DeltaResult<Resource<DeltaRunHandle>> {
        Ok(
            new::delta_state::HostDeltaRun::begin(self, connector_name, stream_name, cursor_type.into())
                .await?
                .map_err(Into::into),
        )
    }

    async fn lower_bound_cursor(&mut self, run: Resource<DeltaRunHandle>) -> wasmtime::Result<Option<String>> {
        new::delta_state::HostDeltaRun::lower_bound_cursor(self, run).await
    }

    async fn set_new_cursor(&mut self, run: Resource<DeltaRunHandle>, value: String) -> DeltaResult<()> {
        Ok(new::delta_state::HostDeltaRun::set_new_cursor(self, run, value).await?.map_err(Into::into))
    }

    async fn set_records_processed(&mut self, run: Resource<DeltaRunHandle>, count: u64) -> wasmtime::Result<()> {
        new::delta_state::HostDeltaRun::set_records_processed(self, run, count).await
    }

    async fn set_metadata(&mut self, run: Resource<DeltaRunHandle>, metadata: String) -> DeltaResult<()> {
        Ok(new::delta_state::HostDeltaRun::set_metadata(self, run, metadata).await?.map_err(Into::into))
    }

    async fn complete(&mut self, run: Resource<DeltaRunHandle>) -> DeltaResult<old::delta_state::StreamState> {
        Ok(new::delta_state::HostDeltaRun::complete(self, run)
            .await?
            .map(Into::into)
            .map_err(Into::into))
    }

    async fn fail(&mut self, run: Resource<DeltaRunHandle>, error_summary: String) -> DeltaResult<()> {
        Ok(new::delta_state::HostDeltaRun::fail(self, run, error_summary).await?.map_err(Into::into))
    }

    async fn reject(&mut self, run: Resource<DeltaRunHandle>, row: String, reason: String) -> DeltaResult<()> {
        Ok(new::delta_state::HostDeltaRun::reject(self, run, row, reason).await?.map_err(Into::into))
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
        Ok(new::delta_state::Host::get_state(self, connector_name, stream_name)
            .await?
            .map(Into::into)
            .map_err(Into::into))
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
