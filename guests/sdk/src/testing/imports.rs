//! The host interfaces as the test host answers them: the same names and
//! signatures as the generated bindings (`crate::context`, `crate::delta_state`,
//! …), which these modules replace under feature `testing` on native targets.
//! Their documentation is the contract's (`wit/connector.wit`).
#![allow(missing_docs)]

use super::{State, with};

/// `nuntiq:connector/context`.
pub mod context {
    use super::with;
    pub use crate::bindings::nuntiq::connector::types::SettingValue;
    use serde_json::Value;

    fn setting(value: Option<&Value>) -> Option<SettingValue> {
        Some(match value? {
            Value::Null => return None,
            Value::String(s) => SettingValue::Text(s.clone()),
            Value::Bool(b) => SettingValue::Boolean(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => SettingValue::Integer(i),
                None => SettingValue::Float(n.as_f64().unwrap_or_default()),
            },
            other => SettingValue::Json(other.to_string()),
        })
    }

    pub fn customer_number() -> String {
        with(|s| s.customer_number.clone())
    }

    pub fn get_config(key: &str) -> Option<SettingValue> {
        with(|s| setting(s.config.get(key)))
    }

    pub fn get_param(key: &str) -> Option<SettingValue> {
        with(|s| setting(s.params.get(key)))
    }

    pub fn get_secret(key: &str) -> Option<String> {
        with(|s| s.secrets.get(key).cloned())
    }

    pub fn has_secret(key: &str) -> bool {
        with(|s| s.secrets.contains_key(key))
    }
}

/// `nuntiq:connector/logger`: lines are kept and printed (`cargo test -- --nocapture` shows them).
pub mod logger {
    use super::with;
    pub use crate::bindings::nuntiq::connector::logger::Level;

    pub fn log(level: Level, message: &str, step: Option<&str>, detail: Option<&str>) {
        eprintln!(
            "[{level:?}] {message}{}{}",
            step.map(|s| format!(" (step {s})")).unwrap_or_default(),
            detail.map(|d| format!(" {d}")).unwrap_or_default()
        );
        with(|s| {
            s.logs.push(crate::testing::LogLine {
                level,
                message: message.to_owned(),
                step: step.map(str::to_owned),
            })
        });
    }
}

/// `nuntiq:connector/http`: answers from fixtures and `TestHost::respond`;
/// retries are counted, not waited for.
pub mod raw_http {
    use super::{State, with};
    pub use crate::bindings::nuntiq::connector::http::{HttpError, Request, Response, RetriesExhausted, RetryPolicy};

    /// Requests one run may have pending (the host's limit).
    const MAX_PENDING: usize = 4;
    /// Headers a connector may not set.
    const FORBIDDEN_HEADERS: [&str; 11] = [
        "host",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    ];

    fn send(s: &mut State, request: &Request, policy: Option<&RetryPolicy>) -> Result<Response, HttpError> {
        let mut url = url::Url::parse(&request.url)
            .map_err(|e| HttpError::InvalidRequest(format!("{:?} is not an absolute URL ({e})", request.url)))?;
        if !matches!(url.scheme(), "http" | "https" | "file") {
            return Err(HttpError::InvalidRequest(format!(
                "{url}: only http(s) and file:// URLs"
            )));
        }
        if !request.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &request.query {
                pairs.append_pair(k, v);
            }
        }
        for (name, _) in &request.headers {
            let lower = name.to_ascii_lowercase();
            if FORBIDDEN_HEADERS.contains(&lower.as_str())
                || (lower == "authorization" && request.bearer_secret.is_some())
            {
                return Err(HttpError::InvalidRequest(format!(
                    "header {name:?} is the host's to set"
                )));
            }
        }
        if let Some(name) = &request.bearer_secret
            && !s.secrets.contains_key(name)
        {
            return Err(HttpError::InvalidRequest(format!(
                "bearer-secret {name:?} names no secret of settings.json's secrets"
            )));
        }
        let max_attempts = policy.map_or(5, |p| p.max_attempts.clamp(1, 10));
        let retry_statuses = policy.map_or_else(|| vec![429, 500, 502, 503, 504], |p| p.retry_statuses.clone());
        let mut attempt = 1;
        loop {
            s.requests.push(url.to_string());
            let Some(answer) = s.answers.answer(&url) else {
                return Err(HttpError::Connection(format!(
                    "GET {url}: the test host has no answer for it; add one with TestHost::respond, or \
                     answer file:// URLs with TestHost::fixtures"
                )));
            };
            let response = Response {
                status: answer.status,
                headers: answer.headers,
                body: answer.body,
                attempts: attempt,
                url: url.to_string(),
            };
            if (200..300).contains(&response.status) {
                return Ok(response);
            }
            if !retry_statuses.contains(&response.status) {
                return Err(HttpError::Status(response));
            }
            if attempt >= max_attempts {
                return Err(if attempt == 1 {
                    HttpError::Status(response)
                } else {
                    HttpError::RetriesExhausted(RetriesExhausted {
                        attempts: attempt,
                        last_status: Some(response.status),
                        last_cause: format!("HTTP {} from {}", response.status, url.host_str().unwrap_or("")),
                    })
                });
            }
            attempt += 1;
        }
    }

    pub fn get_with_retry(request: &Request, policy: Option<&RetryPolicy>) -> Result<Response, HttpError> {
        with(|s| send(s, request, policy))
    }

    /// A request started with [`start_get_with_retry`]; dropping it cancels it.
    #[derive(Debug)]
    pub struct PendingResponse(u32);

    impl PendingResponse {
        pub fn finish(this: PendingResponse) -> Result<Response, HttpError> {
            let id = this.0;
            with(|s| s.pending.remove(&id)).unwrap_or_else(|| {
                Err(HttpError::InvalidRequest(
                    "this request was already finished or cancelled".into(),
                ))
            })
        }
    }

    impl Drop for PendingResponse {
        fn drop(&mut self) {
            let id = self.0;
            with(|s| s.pending.remove(&id));
        }
    }

    /// Answered at once and kept until `finish`; at most 4 at a time, as in the host.
    pub fn start_get_with_retry(request: &Request, policy: Option<&RetryPolicy>) -> Result<PendingResponse, HttpError> {
        with(|s| {
            if s.pending.len() >= MAX_PENDING {
                return Err(HttpError::Denied(format!(
                    "a run has at most {MAX_PENDING} requests pending; finish or drop one first"
                )));
            }
            let outcome = send(s, request, policy);
            if let Err(e @ (HttpError::InvalidRequest(_) | HttpError::Denied(_))) = outcome {
                return Err(e);
            }
            let id = s.next_pending;
            s.next_pending += 1;
            s.pending.insert(id, outcome);
            Ok(PendingResponse(id))
        })
    }
}

/// `nuntiq:connector/supplier-load`: queued suppliers are checked as the
/// host checks them and land in the test host's store on `save-all` or `complete`.
pub mod supplier_load {
    use super::{State, with};
    pub use crate::bindings::nuntiq::connector::supplier_load::{
        LoadError, LoadOptions, Supplier, SupplierAddress, SupplierBankAccount, SupplierLocation,
    };

    /// Unsaved suppliers the host takes (`--max-queued-suppliers`).
    const MAX_QUEUED: usize = 10_000;
    const MAX_FIELD_BYTES: usize = 4096;
    const MAX_LOCATIONS: usize = 1000;
    const MAX_ADDRESSES: usize = 100;

    /// What the host refuses in a record, naming the record and the field.
    fn check(s: &Supplier) -> Result<(), String> {
        let name = format!("supplier {:?}", s.supplier_number);
        if s.supplier_number.trim().is_empty() {
            return Err("a supplier has no supplier_number".into());
        }
        if s.supplier_name.trim().is_empty() {
            return Err(format!("{name}: supplier_name is required"));
        }
        if s.locations.len() > MAX_LOCATIONS {
            return Err(format!(
                "{name}: {} locations, at most {MAX_LOCATIONS}",
                s.locations.len()
            ));
        }
        let long = |field: &str, v: &Option<String>| match v {
            Some(v) if v.len() > MAX_FIELD_BYTES => Err(format!("{name}: {field} is over {MAX_FIELD_BYTES} bytes")),
            _ => Ok(()),
        };
        long("supplier_number", &Some(s.supplier_number.clone()))?;
        long("supplier_name", &Some(s.supplier_name.clone()))?;
        long("organization_code", &s.organization_code)?;
        for l in &s.locations {
            if l.location_code.trim().is_empty() {
                return Err(format!("{name}: a location has no location_code"));
            }
            long("location_code", &Some(l.location_code.clone()))?;
            if l.addresses.len() > MAX_ADDRESSES {
                return Err(format!(
                    "{name}: location {:?} has {} addresses, at most {MAX_ADDRESSES}",
                    l.location_code,
                    l.addresses.len()
                ));
            }
            if l.bank_accounts.len() > MAX_ADDRESSES {
                return Err(format!(
                    "{name}: location {:?} has {} bank accounts, at most {MAX_ADDRESSES}",
                    l.location_code,
                    l.bank_accounts.len()
                ));
            }
        }
        Ok(())
    }

    /// The run's load options, as the host takes them: `full_load` only
    /// before the first supplier is queued.
    pub fn set_options(options: LoadOptions) -> Result<(), LoadError> {
        with(|s| {
            let started = s.load_started || !s.queue.is_empty();
            if started && options.full_load != s.load_options.0 {
                return Err(LoadError::InvalidRecord(
                    "set-options: full-load can only be chosen before the run's first queue call; call \
                     set-options first"
                        .into(),
                ));
            }
            s.load_options = (options.full_load, options.address_insert_only, options.bank_insert_only);
            Ok(())
        })
    }

    pub fn queue(suppliers: &[Supplier]) -> Result<u32, LoadError> {
        with(|s| {
            for supplier in suppliers {
                check(supplier).map_err(LoadError::InvalidRecord)?;
            }
            if s.queue.len() + suppliers.len() > MAX_QUEUED {
                return Err(LoadError::QueueFull(format!(
                    "{} suppliers would be queued, more than the host's {MAX_QUEUED}; call save-all more often",
                    s.queue.len() + suppliers.len()
                )));
            }
            s.queue.extend_from_slice(suppliers);
            s.queued.extend_from_slice(suppliers);
            Ok(s.queue.len() as u32)
        })
    }

    /// Writes what is queued: upserted on (supplier_number, organization_code),
    /// locations upserted by location_code, addresses and bank accounts
    /// replaced (or, insert-only, the new ones added); a full load's first
    /// write empties the store first.
    pub(crate) fn flush(s: &mut State) -> u32 {
        let queued = std::mem::take(&mut s.queue);
        let n = queued.len() as u32;
        if n > 0 && s.load_options.0 && !s.load_started {
            s.store.clear();
        }
        s.load_started |= n > 0;
        let (_, address_insert_only, bank_insert_only) = s.load_options;
        for supplier in queued {
            let key = (
                supplier.supplier_number.clone(),
                supplier.organization_code.clone().unwrap_or_default(),
            );
            let mut merged = supplier.clone();
            if let Some(old) = s.store.get(&key) {
                let mut locations = old.locations.clone();
                for mut l in supplier.locations {
                    match locations.iter_mut().find(|o| o.location_code == l.location_code) {
                        Some(o) => {
                            if address_insert_only {
                                let mut kept = std::mem::take(&mut o.addresses);
                                for a in l.addresses.drain(..) {
                                    if !kept.iter().any(|k| same_address(k, &a)) {
                                        kept.push(a);
                                    }
                                }
                                l.addresses = kept;
                            }
                            if bank_insert_only {
                                let mut kept = std::mem::take(&mut o.bank_accounts);
                                for b in l.bank_accounts.drain(..) {
                                    if !kept.iter().any(|k| k.bank_account_number == b.bank_account_number) {
                                        kept.push(b);
                                    }
                                }
                                l.bank_accounts = kept;
                            }
                            *o = l;
                        }
                        None => locations.push(l),
                    }
                }
                merged.locations = locations;
            }
            merged.is_active = Some(merged.is_active.unwrap_or(true));
            s.store.insert(key, merged);
        }
        n
    }

    /// Every field equal (the generated records do not derive `PartialEq`).
    fn same_address(a: &SupplierAddress, b: &SupplierAddress) -> bool {
        let fields = |x: &SupplierAddress| {
            [
                x.street.clone(),
                x.city.clone(),
                x.state.clone(),
                x.postal_code.clone(),
                x.country_code.clone(),
                x.custom_field1.clone(),
                x.custom_field2.clone(),
                x.custom_field3.clone(),
            ]
        };
        fields(a) == fields(b)
    }

    pub fn save_all() -> Result<u32, LoadError> {
        Ok(with(flush))
    }
}

/// `nuntiq:connector/delta-state`, with the host's rules.
pub mod delta_state {
    use super::{State, with};
    pub use crate::bindings::nuntiq::connector::delta_state::{CursorType, DeltaError, RunStatus, StreamState};
    use crate::testing::{DeltaCall, Rejected, Stream, cursor};

    const MAX_STREAMS: usize = 100;
    const MAX_REJECTED: u32 = 100;
    const MAX_NAME_BYTES: usize = 200;

    /// One run of a stream: begin → work → complete (or fail).
    #[derive(Debug)]
    pub struct DeltaRun(usize);

    pub(crate) fn stream_state(s: &State, stream: &str) -> StreamState {
        let connector_name = s
            .config
            .get("connector_name")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let found = s.streams.get(stream);
        StreamState {
            connector_name: connector_name.to_owned(),
            stream_name: stream.to_owned(),
            cursor_type: found.map(|f| f.cursor_type),
            committed_cursor_value: found.and_then(|f| f.committed.clone()),
            committed_at_utc: None,
            status: found.map_or(RunStatus::Idle, |f| f.status),
            started_at_utc: None,
            completed_at_utc: None,
            records_processed: found.and_then(|f| f.records_processed),
            error_summary: found.and_then(|f| f.error_summary.clone()),
            metadata: found.and_then(|f| f.metadata.clone()),
            updated_at_utc: None,
            updated_by: Some("nuntiq-connector testing".into()),
        }
    }

    /// Only `config.connector_name`'s streams, named within the host's limits.
    fn own_stream(s: &State, connector_name: &str, stream_name: &str) -> Result<(), DeltaError> {
        if stream_name.is_empty() || stream_name.len() > MAX_NAME_BYTES || stream_name.chars().any(char::is_control) {
            return Err(DeltaError::InvalidArgument(format!(
                "stream_name {stream_name:?} must be 1 to {MAX_NAME_BYTES} bytes without control characters"
            )));
        }
        match s.config.get("connector_name").and_then(|v| v.as_str()) {
            Some(own) if own == connector_name => Ok(()),
            Some(own) => Err(DeltaError::Denied(format!(
                "connector {connector_name:?} is not this job's connector {own:?} (settings.json \
                 config.connector_name); a run may only read and write its own connector's streams"
            ))),
            None => Err(DeltaError::Denied(
                "this job's settings.json names no connector (config.connector_name), so it has no delta state".into(),
            )),
        }
    }

    fn end(s: &mut State, id: usize, status: RunStatus, summary: Option<String>) {
        let run = &mut s.runs[id];
        run.open = false;
        let stream = s.streams.get_mut(&run.stream).expect("begun streams exist");
        stream.status = status;
        stream.error_summary = summary;
        if status == RunStatus::Succeeded {
            stream.committed = run.new_cursor.clone();
            stream.records_processed = run.records_processed;
            stream.metadata = run.metadata.clone();
        }
    }

    /// Fails what the connector left open when its `run` returned; names them.
    pub(crate) fn fail_open_runs(s: &mut State) -> Vec<String> {
        let open: Vec<usize> = (0..s.runs.len()).filter(|&i| s.runs[i].open).collect();
        let mut names = Vec::new();
        for id in open {
            s.queue.clear();
            names.push(s.runs[id].stream.clone());
            end(
                s,
                id,
                RunStatus::Failed,
                Some("the connector returned with its delta run still open".into()),
            );
        }
        names
    }

    fn open_run(s: &mut State, id: usize) -> Result<&mut crate::testing::Run, DeltaError> {
        let run = &mut s.runs[id];
        if run.open {
            Ok(run)
        } else {
            Err(DeltaError::NotRunning(format!(
                "the run of stream {} already ended",
                run.stream
            )))
        }
    }

    impl DeltaRun {
        pub fn begin(connector_name: &str, stream_name: &str, cursor_type: CursorType) -> Result<DeltaRun, DeltaError> {
            with(|s| {
                own_stream(s, connector_name, stream_name)?;
                s.calls.push(DeltaCall::Begin {
                    stream: stream_name.to_owned(),
                    cursor_type,
                });
                if s.runs.iter().any(|r| r.open && r.stream == stream_name) {
                    return Err(DeltaError::AlreadyRunning(format!(
                        "a run of stream {stream_name} is already open in this job; complete or fail it first"
                    )));
                }
                if !s.begun.contains(stream_name) && s.begun.len() >= MAX_STREAMS {
                    return Err(DeltaError::Limit(format!(
                        "this job already began runs of {MAX_STREAMS} streams, its limit; stream {stream_name} was refused"
                    )));
                }
                let stream = s.streams.entry(stream_name.to_owned()).or_insert(Stream {
                    cursor_type,
                    committed: None,
                    status: RunStatus::Idle,
                    records_processed: None,
                    error_summary: None,
                    metadata: None,
                });
                if stream.cursor_type != cursor_type {
                    return Err(DeltaError::CursorTypeMismatch(format!(
                        "stream {stream_name} has cursor type {}, not {}; an operator changes it with \
                         `nuntiq-host state reset --cursor-type`",
                        cursor::name(stream.cursor_type),
                        cursor::name(cursor_type)
                    )));
                }
                stream.status = RunStatus::Running;
                let lower_bound = stream.committed.clone();
                s.begun.insert(stream_name.to_owned());
                s.runs.push(crate::testing::Run {
                    stream: stream_name.to_owned(),
                    cursor_type,
                    lower_bound,
                    new_cursor: None,
                    records_processed: None,
                    metadata: None,
                    rejected: 0,
                    open: true,
                });
                Ok(DeltaRun(s.runs.len() - 1))
            })
        }

        pub fn lower_bound_cursor(&self) -> Option<String> {
            with(|s| s.runs[self.0].lower_bound.clone())
        }

        pub fn set_new_cursor(&self, value: &str) -> Result<(), DeltaError> {
            with(|s| {
                s.calls.push(DeltaCall::SetNewCursor(value.to_owned()));
                let run = &mut s.runs[self.0];
                cursor::validate(run.cursor_type, value).map_err(|problem| {
                    DeltaError::InvalidCursor(format!("{} cursor: {problem}", cursor::name(run.cursor_type)))
                })?;
                run.new_cursor = Some(value.to_owned());
                Ok(())
            })
        }

        pub fn set_records_processed(&self, count: u64) {
            with(|s| {
                s.calls.push(DeltaCall::SetRecordsProcessed(count));
                s.runs[self.0].records_processed = Some(count);
            })
        }

        pub fn set_metadata(&self, metadata: &str) -> Result<(), DeltaError> {
            with(|s| {
                s.calls.push(DeltaCall::SetMetadata(metadata.to_owned()));
                if metadata.len() > 64 * 1024 {
                    return Err(DeltaError::InvalidArgument("metadata is over 64 KiB".into()));
                }
                match serde_json::from_str::<serde_json::Value>(metadata) {
                    Ok(serde_json::Value::Object(_)) => {
                        s.runs[self.0].metadata = Some(metadata.to_owned());
                        Ok(())
                    }
                    _ => Err(DeltaError::InvalidArgument("metadata must be a JSON object".into())),
                }
            })
        }

        /// Writes what is queued and commits the cursor, if it moves forward.
        pub fn complete(&self) -> Result<StreamState, DeltaError> {
            with(|s| {
                let run = open_run(s, self.0)?;
                let Some(new) = run.new_cursor.clone() else {
                    return Err(DeltaError::InvalidArgument(
                        "set-new-cursor is required before complete; the run stays open".into(),
                    ));
                };
                let (stream, cursor_type) = (run.stream.clone(), run.cursor_type);
                let old = s.streams.get(&stream).and_then(|st| st.committed.clone());
                match cursor::advances(cursor_type, old.as_deref(), &new) {
                    Err(problem) => return Err(DeltaError::InvalidCursor(problem)),
                    Ok(false) => {
                        return Err(DeltaError::CursorRegression(format!(
                            "CURSOR_REGRESSION: {} cursor {new:?} does not move past the committed {:?} of stream {stream}",
                            cursor::name(cursor_type),
                            old.unwrap_or_default()
                        )));
                    }
                    Ok(true) => {}
                }
                super::supplier_load::flush(s);
                end(s, self.0, RunStatus::Succeeded, None);
                s.calls.push(DeltaCall::Complete(new));
                Ok(stream_state(s, &stream))
            })
        }

        /// Marks the run failed: what was queued is dropped, the cursor stays.
        pub fn fail(&self, error_summary: &str) -> Result<(), DeltaError> {
            with(|s| {
                open_run(s, self.0)?;
                s.calls.push(DeltaCall::Fail(error_summary.to_owned()));
                s.queue.clear();
                end(s, self.0, RunStatus::Failed, Some(error_summary.to_owned()));
                Ok(())
            })
        }

        pub fn reject(&self, row: &str, reason: &str) -> Result<(), DeltaError> {
            with(|s| {
                let run = open_run(s, self.0)?;
                if run.rejected >= MAX_REJECTED {
                    return Err(DeltaError::Limit(format!(
                        "run of stream {} already set aside {MAX_REJECTED} rows, its limit (--max-rejected)",
                        run.stream
                    )));
                }
                run.rejected += 1;
                let stream = run.stream.clone();
                s.calls.push(DeltaCall::Reject {
                    row: row.to_owned(),
                    reason: reason.to_owned(),
                });
                s.rejected.push(Rejected {
                    stream,
                    row: row.to_owned(),
                    reason: reason.to_owned(),
                });
                Ok(())
            })
        }
    }

    impl Drop for DeltaRun {
        /// As in the host: letting go of an open run fails it.
        fn drop(&mut self) {
            let id = self.0;
            let still_hosted = crate::testing::CURRENT.with(|c| c.borrow().is_some());
            if still_hosted {
                with(|s| {
                    if s.runs[id].open {
                        s.queue.clear();
                        end(
                            s,
                            id,
                            RunStatus::Failed,
                            Some("the connector let go of its delta run without complete or fail".into()),
                        );
                    }
                });
            }
        }
    }

    pub fn get_state(connector_name: &str, stream_name: &str) -> Result<StreamState, DeltaError> {
        with(|s| {
            own_stream(s, connector_name, stream_name)?;
            Ok(stream_state(s, stream_name))
        })
    }
}
