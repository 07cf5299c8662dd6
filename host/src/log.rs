//! The job's log on `tracing`: the platform's text line
//! (`YYYY-MM-DD HH:MM:SS UTC [LEVEL] message`) and the JSON line are two
//! formatting layers of a `tracing_subscriber` registry, one registry per sink
//! (each run has its own, with its secrets). [`LogSink`] is how the host logs:
//! it redacts the message, step and detail before it emits the event, so no
//! layer ever sees a secret; the layers redact what they print again, and
//! clean what libraries (wasmtime, reqwest, hyper, rustls, tokio-postgres)
//! report, which is kept at debug and capped per sink.

pub use crate::redact::{MIN_SUBSTRING_SECRET, REDACTED, Redactor, is_unprintable, sanitize};
use serde_json::{Map, Value};
use std::io::Write;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Metadata, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Longest message kept, in bytes; longer ones are cut and marked.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Longest step kept, in bytes.
pub const MAX_STEP_BYTES: usize = 256;
/// Largest `detail` (JSON text) a connector line may carry; a larger one is
/// replaced by a note of its size, so no line outgrows the budget.
pub const MAX_DETAIL_BYTES: usize = 8 * 1024;
/// The target of the host's own events and spans: everything else is a library's.
pub const TARGET: &str = "nuntiq";
/// Libraries whose events are printed (as DEBUG, with `--log-level debug`);
/// any other crate's (cranelift's, for one) never reach the log.
const LIBRARIES: &[&str] = &[
    "wasmtime",
    "reqwest",
    "hyper",
    "h2",
    "rustls",
    "tokio_postgres",
    "postgres",
    "deadpool",
    "opentelemetry",
];
/// Library lines one sink prints at most: a chatty library never floods a run's log.
pub const MAX_LIBRARY_LINES: u64 = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    fn of(level: &tracing::Level) -> Self {
        match *level {
            tracing::Level::ERROR => Level::Error,
            tracing::Level::WARN => Level::Warn,
            tracing::Level::INFO => Level::Info,
            _ => Level::Debug,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// The platform's line format; `step` and `detail` are not printed.
    #[default]
    Text,
    /// One JSON object per line: time, level, message, step, detail.
    Json,
}

/// Bridges the `log` records of the libraries that use it (wasmtime,
/// reqwest, rustls, tokio-postgres) into `tracing`, once per process. Below
/// debug they are not even formatted.
pub fn init_process(level: Level) {
    let max = if level == Level::Debug {
        tracing_log::log::LevelFilter::Debug
    } else {
        tracing_log::log::LevelFilter::Off
    };
    let _ = tracing_log::LogTracer::builder().with_max_level(max).init();
}

/// How much a connector may log in one run. Past it, its lines are dropped
/// and counted; the host's own lines are never dropped.
#[derive(Debug)]
struct Budget {
    max_lines: AtomicU64,
    max_bytes: AtomicU64,
    lines: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
}

/// What a sink's layers share with it.
struct Shared {
    format: LogFormat,
    min_level: Level,
    /// Which job a line is about, when one process runs many (`serve`).
    label: OnceLock<String>,
    /// Whose run it is; set once the settings are read.
    customer: OnceLock<String>,
    redactor: Redactor,
    out: Mutex<Box<dyn Write + Send>>,
    budget: Budget,
    library_lines: AtomicU64,
}

/// Where the job's log lines go.
pub struct LogSink {
    shared: Arc<Shared>,
    dispatch: Dispatch,
}

/// Emits one event at a level chosen at run time (the macros want a constant).
macro_rules! emit_at {
    ($level:expr, $($rest:tt)*) => {
        match $level {
            Level::Debug => tracing::event!(target: TARGET, tracing::Level::DEBUG, $($rest)*),
            Level::Info => tracing::event!(target: TARGET, tracing::Level::INFO, $($rest)*),
            Level::Warn => tracing::event!(target: TARGET, tracing::Level::WARN, $($rest)*),
            Level::Error => tracing::event!(target: TARGET, tracing::Level::ERROR, $($rest)*),
        }
    };
}

impl LogSink {
    pub fn new(format: LogFormat, min_level: Level, redactor: Redactor, out: Box<dyn Write + Send>) -> Self {
        let shared = Arc::new(Shared {
            format,
            min_level,
            label: OnceLock::new(),
            customer: OnceLock::new(),
            redactor,
            out: Mutex::new(out),
            budget: Budget {
                max_lines: AtomicU64::new(u64::MAX),
                max_bytes: AtomicU64::new(u64::MAX),
                lines: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            },
            library_lines: AtomicU64::new(0),
        });
        let registry = tracing_subscriber::registry().with(crate::trace::exporting_layer());
        let dispatch = match format {
            LogFormat::Text => Dispatch::new(registry.with(FormatLayer::<TextLine>::new(shared.clone()))),
            LogFormat::Json => Dispatch::new(registry.with(FormatLayer::<JsonLine>::new(shared.clone()))),
        };
        Self { shared, dispatch }
    }

    /// Names the job on every line: `[job]` before the text, `"job"` in JSON.
    pub fn with_label(self, label: impl Into<String>) -> Self {
        let _ = self.shared.label.set(label.into());
        self
    }

    /// Caps what the connector may log (lines and bytes per run).
    pub fn with_connector_budget(self, max_lines: u64, max_bytes: u64) -> Self {
        self.shared.budget.max_lines.store(max_lines, Ordering::Relaxed);
        self.shared.budget.max_bytes.store(max_bytes, Ordering::Relaxed);
        self
    }

    /// Names the customer on every line from now on (`serve`'s text lines
    /// print `[job customer]`; JSON lines carry `customer`).
    pub fn set_customer(&self, customer: &str) {
        let _ = self.shared.customer.set(self.shared.redactor.clean(customer, MAX_STEP_BYTES));
    }

    /// Opens the run's span in this sink's registry: the root of the run's
    /// HTTP attempts, store batches and delta calls, naming its job (in
    /// `serve`), customer, plugin and run id. Returns it with its trace id
    /// (W3C: 32 hex digits), the exported trace's when spans are exported.
    pub fn run_span(&self, plugin: &str, run_id: &str) -> (tracing::Span, String) {
        let redactor = &self.shared.redactor;
        let plugin = redactor.clean(plugin, MAX_STEP_BYTES);
        let customer = self.shared.customer.get().map_or("", String::as_str);
        let span = tracing::dispatcher::with_default(&self.dispatch, || match self.shared.label.get() {
            Some(job) => tracing::info_span!(target: TARGET, parent: None, "run", job = job.as_str(), customer,
                plugin, run_id, trace_id = tracing::field::Empty),
            None => tracing::info_span!(target: TARGET, parent: None, "run", customer, plugin, run_id,
                trace_id = tracing::field::Empty),
        });
        let trace_id = crate::trace::trace_id(&span);
        span.record("trace_id", trace_id.as_str());
        (span, trace_id)
    }

    /// The job's name, if the sink has one.
    pub fn label(&self) -> Option<&str> {
        self.shared.label.get().map(String::as_str)
    }

    /// The registry this sink's events and the run's spans go to: the run's
    /// thread makes it its default, so what libraries report there is formatted
    /// (and redacted) like the host's own lines.
    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    /// Connector lines dropped because the budget was spent.
    pub fn dropped(&self) -> u64 {
        self.shared.budget.dropped.load(Ordering::Relaxed)
    }

    /// A line from the connector: counted against its budget, dropped past it.
    pub fn connector_log(&self, level: Level, message: &str, step: Option<&str>, detail: Option<Value>) {
        if !self.enabled(level) {
            return;
        }
        let b = &self.shared.budget;
        if b.lines.load(Ordering::Relaxed) >= b.max_lines.load(Ordering::Relaxed)
            || b.bytes.load(Ordering::Relaxed) >= b.max_bytes.load(Ordering::Relaxed)
        {
            b.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.emit(level, message, step, detail, true);
    }

    /// A host line the connector caused (a refused request, a retry, a
    /// rejected row): counted against the run's log budget like its own
    /// lines, so a connector cannot make the host write without end.
    pub fn caused(&self, level: Level, message: &str, step: Option<&str>, detail: Option<Value>) {
        self.connector_log(level, message, step, detail);
    }

    pub fn stderr(format: LogFormat, min_level: Level, redactor: Redactor) -> Self {
        Self::new(format, min_level, redactor, Box::new(std::io::stderr()))
    }

    pub fn redactor(&self) -> &Redactor {
        &self.shared.redactor
    }

    pub fn enabled(&self, level: Level) -> bool {
        level >= self.shared.min_level
    }

    /// Whether lines carry `detail` (only the JSON format prints it).
    pub fn prints_detail(&self) -> bool {
        self.shared.format == LogFormat::Json
    }

    /// Writes one of the host's own lines. Never fails: a log that cannot be
    /// written must not end the job.
    pub fn log(&self, level: Level, message: &str, step: Option<&str>, detail: Option<Value>) {
        if self.enabled(level) {
            self.emit(level, message, step, detail, false);
        }
    }

    /// Redacts the fields, then emits the event to this sink's layers (in the
    /// current span, when it is this sink's).
    fn emit(&self, level: Level, message: &str, step: Option<&str>, detail: Option<Value>, counted: bool) {
        let redactor = &self.shared.redactor;
        let message = redactor.clean(message, MAX_MESSAGE_BYTES);
        let step = step.map(|s| redactor.clean(s, MAX_STEP_BYTES));
        // Only the JSON line prints them: the text line never pays for it.
        let detail = match (self.shared.format, detail) {
            (LogFormat::Json, Some(d)) => Some(redactor.clean_json(d).to_string()),
            _ => None,
        };
        tracing::dispatcher::with_default(&self.dispatch, || {
            emit_at!(level, counted, step = step.as_deref(), detail = detail.as_deref(), "{message}")
        });
    }

    pub fn debug(&self, message: &str, step: Option<&str>, detail: Option<Value>) {
        self.log(Level::Debug, message, step, detail);
    }

    pub fn info(&self, message: &str, step: Option<&str>, detail: Option<Value>) {
        self.log(Level::Info, message, step, detail);
    }

    pub fn warn(&self, message: &str, step: Option<&str>, detail: Option<Value>) {
        self.log(Level::Warn, message, step, detail);
    }

    pub fn error(&self, message: &str, step: Option<&str>, detail: Option<Value>) {
        self.log(Level::Error, message, step, detail);
    }
}

/// A handle on one of a run's spans that drops its reference with the span's
/// own registry as the thread's default. A run's spans live in the run's
/// registry, and a registry releases a closed span's parent through the
/// thread's default dispatcher: a span last dropped elsewhere (on the store's
/// thread, or as the run's runtime drops its tasks) would release it in the
/// wrong registry.
pub struct OwnedSpan(Option<tracing::Span>);

impl OwnedSpan {
    pub fn new(span: tracing::Span) -> Self {
        Self(Some(span))
    }
}

impl std::ops::Deref for OwnedSpan {
    type Target = tracing::Span;

    fn deref(&self) -> &tracing::Span {
        self.0.as_ref().expect("taken only on drop")
    }
}

impl Drop for OwnedSpan {
    fn drop(&mut self) {
        if let Some(span) = self.0.take() {
            match span.with_subscriber(|(_, dispatch)| dispatch.clone()) {
                Some(own) => tracing::dispatcher::with_default(&own, move || drop(span)),
                None => drop(span),
            }
        }
    }
}

/// Runs `fut` in `span`, which is released in its own registry however the
/// future ends (done, or dropped unfinished).
pub async fn in_span<F: std::future::Future>(span: tracing::Span, fut: F) -> F::Output {
    let _released_last = OwnedSpan::new(span.clone());
    tracing::Instrument::instrument(fut, span).await
}

/// Whether `target` is one of the libraries whose events are kept.
fn is_library(target: &str) -> bool {
    LIBRARIES.iter().any(|lib| target.starts_with(lib))
}

/// One line, redacted, ready to format.
struct Line<'a> {
    level: Level,
    job: Option<&'a str>,
    customer: Option<&'a str>,
    message: &'a str,
    step: Option<&'a str>,
    detail: Option<Value>,
}

/// How a formatting layer writes a line.
trait LineFormat: Send + Sync + 'static {
    fn format(line: &Line<'_>) -> String;
}

/// The platform's line: `YYYY-MM-DD HH:MM:SS UTC [LEVEL] message`, with
/// `[job customer]` before the message when one process runs many jobs, and
/// `[customer C]` in a single run's lines once its settings named C (the
/// message stays the platform's last field, so a parser of the platform's
/// lines reads the same level and text).
struct TextLine;

impl LineFormat for TextLine {
    fn format(line: &Line<'_>) -> String {
        let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC");
        let level = line.level.label();
        match (line.job, line.customer) {
            (Some(job), Some(customer)) => format!("{now} [{level}] [{job} {customer}] {}\n", line.message),
            (Some(job), None) => format!("{now} [{level}] [{job}] {}\n", line.message),
            (None, Some(customer)) => format!("{now} [{level}] [customer {customer}] {}\n", line.message),
            (None, None) => format!("{now} [{level}] {}\n", line.message),
        }
    }
}

/// One JSON object a line: `time`, `level`, `job`, `customer`, `message`, `step`, `detail`.
struct JsonLine;

impl LineFormat for JsonLine {
    fn format(line: &Line<'_>) -> String {
        let mut obj = Map::new();
        let now = chrono::Utc::now();
        obj.insert(
            "time".into(),
            now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into(),
        );
        obj.insert("level".into(), line.level.name().into());
        if let Some(job) = line.job {
            obj.insert("job".into(), job.into());
        }
        if let Some(customer) = line.customer {
            obj.insert("customer".into(), customer.into());
        }
        obj.insert("message".into(), line.message.into());
        obj.insert("step".into(), line.step.map_or(Value::Null, Value::from));
        obj.insert("detail".into(), line.detail.clone().unwrap_or(Value::Null));
        let mut text = Value::Object(obj).to_string();
        text.push('\n');
        text
    }
}

/// A formatting layer: prints the host's events at their level and the
/// libraries' as DEBUG, redacted again (a field that reached it unredacted
/// is still never printed), and counts the connector's against its budget.
struct FormatLayer<F> {
    shared: Arc<Shared>,
    format: PhantomData<fn() -> F>,
}

impl<F> FormatLayer<F> {
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            format: PhantomData,
        }
    }

    fn wants(&self, meta: &Metadata<'_>) -> bool {
        let target = meta.target();
        if target.starts_with(TARGET) {
            return meta.is_span() || Level::of(meta.level()) >= self.shared.min_level;
        }
        // A library's events only at debug, and never its TRACE ones or its spans.
        meta.is_event()
            && self.shared.min_level == Level::Debug
            && *meta.level() <= tracing::Level::DEBUG
            && is_library(target)
    }
}

/// The job and customer a run span names, kept on the span for its events.
struct RunFields {
    job: Option<String>,
    customer: Option<String>,
}

impl<S, F> Layer<S> for FormatLayer<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    F: LineFormat,
{
    fn register_callsite(&self, _meta: &'static Metadata<'static>) -> Interest {
        // Sinks differ in level: each asks `enabled` for itself.
        Interest::sometimes()
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.wants(meta)
    }

    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "run" || !attrs.metadata().target().starts_with(TARGET) {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let redactor = &self.shared.redactor;
        let run = RunFields {
            job: fields.job.map(|j| redactor.clean(&j, MAX_STEP_BYTES)),
            customer: fields.customer.map(|c| redactor.clean(&c, MAX_STEP_BYTES)),
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(run);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if !self.wants(meta) {
            return;
        }
        let ours = meta.target().starts_with(TARGET);
        let shared = &self.shared;
        if !ours && shared.library_lines.fetch_add(1, Ordering::Relaxed) >= MAX_LIBRARY_LINES {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let redactor = &shared.redactor;
        // The host's own fields were redacted where they were built; this is the defence.
        // Only the sink's own lines (they carry `counted`) were cleaned where they were built.
        let (level, message) = if ours && fields.counted.is_some() {
            (Level::of(meta.level()), redactor.redact(&fields.message))
        } else if ours {
            (Level::of(meta.level()), redactor.clean(&fields.message, MAX_MESSAGE_BYTES))
        } else {
            let mut text = format!("{}: {}", meta.target(), fields.message);
            for (name, value) in &fields.other {
                text.push_str(&format!(" {name}={value}"));
            }
            (Level::Debug, redactor.clean(&text, MAX_MESSAGE_BYTES))
        };
        let step = fields.step.map(|s| redactor.redact(&s));
        let detail = fields.detail.map(|d| match serde_json::from_str::<Value>(&d) {
            Ok(v) => redactor.clean_json(v),
            Err(_) => Value::String(redactor.clean(&d, MAX_DETAIL_BYTES)),
        });
        // The job and customer: the run span's, else the sink's.
        let scope = ctx.event_scope(event);
        let run = scope.and_then(|scope| {
            scope.from_root().find_map(|span| {
                span.extensions()
                    .get::<RunFields>()
                    .map(|r| (r.job.clone(), r.customer.clone()))
            })
        });
        let (job, customer) = match run {
            Some((job, customer)) => (
                job.or_else(|| shared.label.get().cloned()),
                customer.or_else(|| shared.customer.get().cloned()),
            ),
            None => (shared.label.get().cloned(), shared.customer.get().cloned()),
        };
        let text = F::format(&Line {
            level,
            job: job.as_deref(),
            customer: customer.as_deref(),
            message: &message,
            step: step.as_deref(),
            detail,
        });
        {
            let mut out = shared.out.lock().unwrap_or_else(|p| p.into_inner());
            let _ = out.write_all(text.as_bytes());
        }
        if fields.counted == Some(true) {
            shared.budget.lines.fetch_add(1, Ordering::Relaxed);
            shared.budget.bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
        }
    }
}

/// An event's fields as the layers read them.
#[derive(Default)]
struct Fields {
    message: String,
    step: Option<String>,
    detail: Option<String>,
    counted: Option<bool>,
    job: Option<String>,
    customer: Option<String>,
    other: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "step" => self.step = Some(value.to_owned()),
            "detail" => self.detail = Some(value.to_owned()),
            "job" => self.job = Some(value.to_owned()),
            "customer" => self.customer = Some(value.to_owned()),
            name if name.starts_with("log.") => {}
            name => self.other.push((name, value.to_owned())),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "counted" {
            self.counted = Some(value);
        } else {
            self.other.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            name if name.starts_with("log.") => {}
            _ => {
                let text = format!("{value:?}");
                self.record_str(field, &text);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        pub fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    pub fn sink(format: LogFormat, secrets: &[&str]) -> (LogSink, Captured) {
        let captured = Captured::default();
        let sink = LogSink::new(
            format,
            Level::Debug,
            Redactor::new(secrets.iter().copied()),
            Box::new(captured.clone()),
        );
        (sink, captured)
    }

    #[test]
    fn text_lines_use_the_platform_format() {
        let (sink, out) = sink(LogFormat::Text, &[]);
        sink.info("Fetched page 1 (200 rows)", Some("fetch"), Some(json!({"page": 1})));
        let text = out.text();
        let (stamp, rest) = text.split_at(23);
        assert!(
            chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S UTC").is_ok(),
            "{text}"
        );
        assert_eq!(rest, " [INFO] Fetched page 1 (200 rows)\n");
    }

    #[test]
    fn json_lines_carry_step_and_detail() {
        let (sink, out) = sink(LogFormat::Json, &[]);
        sink.warn("retrying", Some("http_get"), Some(json!({"attempt": 2})));
        let v: Value = serde_json::from_str(out.text().trim()).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["message"], "retrying");
        assert_eq!(v["step"], "http_get");
        assert_eq!(v["detail"]["attempt"], 2);
    }

    #[test]
    fn secrets_are_redacted_everywhere() {
        let (sink, out) = sink(LogFormat::Json, &["s3cr3t", "s3cr3t-longer"]);
        sink.error(
            "token s3cr3t-longer and s3cr3t in https://x/?t=s3cr3t",
            Some("s3cr3t"),
            Some(json!({"url": "https://x/?token=s3cr3t", "s3cr3t": ["a s3cr3t b"]})),
        );
        let text = out.text();
        assert!(!text.contains("s3cr3t"), "{text}");
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(
            v["message"],
            "token [REDACTED] and [REDACTED] in https://x/?t=[REDACTED]"
        );
        assert_eq!(v["detail"]["[REDACTED]"][0], "a [REDACTED] b");
    }

    #[test]
    fn a_secret_split_by_control_characters_is_still_redacted() {
        let (sink, out) = sink(LogFormat::Json, &["s3cr3t-token"]);
        for split in ["\u{7}", "\u{0}", "\u{202e}", "\u{2066}", "\u{1b}[31m"] {
            let message = format!("s3cr3t{split}-token");
            sink.error(&message, Some(&message), Some(json!({ "k": message, "n": [message] })));
        }
        let text = out.text();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert_eq!(text.matches(REDACTED).count(), 5 * 4, "{text}");
    }

    #[test]
    fn numeric_secrets_are_redacted_in_json_numbers() {
        let (sink, out) = sink(LogFormat::Json, &["4821", "99887766554433"]);
        sink.info(
            "pin=4821",
            None,
            Some(json!({"pin": 4821, "account": 99887766554433u64, "other": 48210})),
        );
        let v: Value = serde_json::from_str(out.text().trim()).unwrap();
        assert_eq!(v["message"], "pin=[REDACTED]");
        assert_eq!(v["detail"]["pin"], REDACTED);
        assert_eq!(v["detail"]["account"], REDACTED);
        assert_eq!(v["detail"]["other"], 48210, "a longer number is not the short secret");
    }

    #[test]
    fn control_characters_cannot_forge_lines() {
        let (sink, out) = sink(LogFormat::Text, &[]);
        sink.info(
            "one\n2026-01-01 00:00:00 UTC [ERROR] forged\x1b[31m red\x07",
            None,
            None,
        );
        let text = out.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
        assert!(
            text.ends_with("one 2026-01-01 00:00:00 UTC [ERROR] forged red\n"),
            "{text:?}"
        );
    }

    #[test]
    fn connector_lines_past_the_budget_are_dropped_and_counted() {
        let captured = Captured::default();
        let sink = LogSink::new(
            LogFormat::Text,
            Level::Debug,
            Redactor::default(),
            Box::new(captured.clone()),
        )
        .with_connector_budget(3, u64::MAX);
        for i in 0..10 {
            sink.connector_log(Level::Info, &format!("line {i}"), None, None);
        }
        sink.warn("host lines are never dropped", None, None);
        assert_eq!(sink.dropped(), 7);
        let text = captured.text();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.contains("line 2") && !text.contains("line 3"));

        let captured = Captured::default();
        let sink = LogSink::new(
            LogFormat::Text,
            Level::Debug,
            Redactor::default(),
            Box::new(captured.clone()),
        )
        .with_connector_budget(u64::MAX, 100);
        for _ in 0..10 {
            sink.connector_log(Level::Info, &"x".repeat(60), None, None);
        }
        // Each line is 92 bytes: the second one crosses the 100-byte budget, the rest are dropped.
        assert_eq!(captured.text().lines().count(), 2, "the byte budget holds too");
        assert_eq!(sink.dropped(), 8);
    }

    #[test]
    fn serve_lines_name_the_job_and_the_customer() {
        let (text_sink, out) = sink(LogFormat::Text, &[]);
        let text_sink = text_sink.with_label("acme-1");
        text_sink.info("before the settings", None, None);
        text_sink.set_customer("C001");
        text_sink.info("Fetched page 1", None, None);
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with(" [INFO] [acme-1] before the settings"), "{text}");
        assert!(lines[1].ends_with(" [INFO] [acme-1 C001] Fetched page 1"), "{text}");

        let (json_sink, out) = sink(LogFormat::Json, &[]);
        let json_sink = json_sink.with_label("acme-1");
        json_sink.set_customer("C001");
        json_sink.warn("retrying", Some("http_get"), None);
        let v: Value = serde_json::from_str(out.text().trim()).unwrap();
        assert_eq!((v["job"].as_str(), v["customer"].as_str()), (Some("acme-1"), Some("C001")));
    }

    #[test]
    fn a_single_runs_text_lines_name_its_customer_once_it_is_known() {
        let (sink, out) = sink(LogFormat::Text, &[]);
        sink.info("before the settings", None, None);
        sink.set_customer("C001");
        sink.info("Fetched page 1", None, None);
        sink.caused(Level::Warn, "from the connector", None, None);
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with(" UTC [INFO] before the settings"), "{text}");
        assert!(lines[1].ends_with(" UTC [INFO] [customer C001] Fetched page 1"), "{text}");
        assert!(lines[2].ends_with(" UTC [WARN] [customer C001] from the connector"), "{text}");
    }

    #[test]
    fn lines_in_a_run_span_name_its_customer() {
        let (sink, out) = sink(LogFormat::Json, &[]);
        sink.set_customer("from-the-sink");
        let (span, trace_id) = sink.run_span("acme.wasm", "job-1");
        assert_eq!(trace_id.len(), 32);
        assert!(trace_id.chars().all(|c| c.is_ascii_hexdigit()), "{trace_id}");
        tracing::dispatcher::with_default(sink.dispatch(), || {
            let _in_run = span.enter();
            sink.info("in the run", None, None);
        });
        let v: Value = serde_json::from_str(out.text().trim()).unwrap();
        assert_eq!(v["customer"], "from-the-sink", "the run span's customer: {v}");
    }

    #[test]
    fn library_events_print_only_at_debug_as_debug_and_redacted() {
        let (sink, out) = sink(LogFormat::Text, &["s3cr3t-token"]);
        tracing::dispatcher::with_default(sink.dispatch(), || {
            tracing::info!(target: "reqwest::connect", url = "http://x/?t=s3cr3t-token", "starting s3cr3t-token\n[ERROR] forged");
            tracing::trace!(target: "hyper::proto", "too chatty");
            tracing::warn!(target: "cranelift_codegen::isa", "not one of the libraries kept");
        });
        let text = out.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.ends_with(" [DEBUG] reqwest::connect: starting [REDACTED] [ERROR] forged url=http://x/?t=[REDACTED]\n"),
            "{text:?}"
        );

        let captured = Captured::default();
        let quiet = LogSink::new(LogFormat::Text, Level::Info, Redactor::default(), Box::new(captured.clone()));
        tracing::dispatcher::with_default(quiet.dispatch(), || {
            tracing::error!(target: "tokio_postgres::connection", "an ERROR from a library");
        });
        assert_eq!(captured.text(), "", "below debug, libraries say nothing");
    }

    #[test]
    fn library_lines_are_capped_per_sink() {
        let (sink, out) = sink(LogFormat::Text, &[]);
        tracing::dispatcher::with_default(sink.dispatch(), || {
            for i in 0..MAX_LIBRARY_LINES + 10 {
                tracing::debug!(target: "wasmtime::runtime", "line {i}");
            }
        });
        sink.info("the host's own lines go on", None, None);
        let text = out.text();
        assert_eq!(text.lines().count() as u64, MAX_LIBRARY_LINES + 1);
        assert!(text.ends_with("the host's own lines go on\n"));
    }

    #[test]
    fn levels_below_the_minimum_are_dropped() {
        let captured = Captured::default();
        let sink = LogSink::new(
            LogFormat::Text,
            Level::Info,
            Redactor::default(),
            Box::new(captured.clone()),
        );
        sink.log(Level::Debug, "hidden", None, None);
        sink.warn("shown", None, None);
        assert_eq!(captured.text().lines().count(), 1);
    }
}
