//! The job's log: one sink for the host's own lines and the connector's, in the
//! platform's format (`YYYY-MM-DD HH:MM:SS UTC [LEVEL] message`) or as JSON
//! lines, with every secret value redacted and control characters stripped.

pub use crate::redact::{MIN_SUBSTRING_SECRET, REDACTED, Redactor, is_unprintable, sanitize};
use serde_json::{Map, Value};
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest message kept, in bytes; longer ones are cut and marked.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Longest step kept, in bytes.
pub const MAX_STEP_BYTES: usize = 256;
/// Largest `detail` (JSON text) a connector line may carry; a larger one is
/// replaced by a note of its size, so no line outgrows the budget.
pub const MAX_DETAIL_BYTES: usize = 8 * 1024;

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// The platform's line format; `step` and `detail` are not printed.
    #[default]
    Text,
    /// One JSON object per line: time, level, message, step, detail.
    Json,
}

/// How much a connector may log in one run. Past it, its lines are dropped
/// and counted; the host's own lines are never dropped.
#[derive(Debug, Default)]
struct Budget {
    max_lines: u64,
    max_bytes: u64,
    lines: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
}

/// Where the job's log lines go.
pub struct LogSink {
    format: LogFormat,
    min_level: Level,
    /// Which job a line is about, when one process runs many (`serve`).
    label: Option<String>,
    redactor: Redactor,
    out: Mutex<Box<dyn Write + Send>>,
    budget: Budget,
}

impl LogSink {
    pub fn new(format: LogFormat, min_level: Level, redactor: Redactor, out: Box<dyn Write + Send>) -> Self {
        Self {
            format,
            min_level,
            label: None,
            redactor,
            out: Mutex::new(out),
            budget: Budget {
                max_lines: u64::MAX,
                max_bytes: u64::MAX,
                ..Budget::default()
            },
        }
    }

    /// Names the job on every line: `[job]` before the text, `"job"` in JSON.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Caps what the connector may log (lines and bytes per run).
    pub fn with_connector_budget(mut self, max_lines: u64, max_bytes: u64) -> Self {
        self.budget.max_lines = max_lines;
        self.budget.max_bytes = max_bytes;
        self
    }

    /// Connector lines dropped because the budget was spent.
    pub fn dropped(&self) -> u64 {
        self.budget.dropped.load(Ordering::Relaxed)
    }

    /// A line from the connector: counted against its budget, dropped past it.
    pub fn connector_log(&self, level: Level, message: &str, step: Option<&str>, detail: Option<Value>) {
        if !self.enabled(level) {
            return;
        }
        let b = &self.budget;
        if b.lines.load(Ordering::Relaxed) >= b.max_lines || b.bytes.load(Ordering::Relaxed) >= b.max_bytes {
            b.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let written = self.write_line(level, message, step, detail);
        b.lines.fetch_add(1, Ordering::Relaxed);
        b.bytes.fetch_add(written as u64, Ordering::Relaxed);
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
        &self.redactor
    }

    pub fn enabled(&self, level: Level) -> bool {
        level >= self.min_level
    }

    /// Whether lines carry `detail` (only the JSON format prints it).
    pub fn prints_detail(&self) -> bool {
        self.format == LogFormat::Json
    }

    /// Writes one of the host's own lines. Never fails: a log that cannot be
    /// written must not end the job.
    pub fn log(&self, level: Level, message: &str, step: Option<&str>, detail: Option<Value>) {
        if self.enabled(level) {
            self.write_line(level, message, step, detail);
        }
    }

    /// Formats and writes one line; returns its length in bytes.
    fn write_line(&self, level: Level, message: &str, step: Option<&str>, detail: Option<Value>) -> usize {
        let message = self.redactor.clean(message, MAX_MESSAGE_BYTES);
        let now = chrono::Utc::now();
        let line = match self.format {
            LogFormat::Text => match &self.label {
                Some(label) => format!(
                    "{} [{}] [{label}] {}\n",
                    now.format("%Y-%m-%d %H:%M:%S UTC"),
                    level.label(),
                    message
                ),
                None => format!(
                    "{} [{}] {}\n",
                    now.format("%Y-%m-%d %H:%M:%S UTC"),
                    level.label(),
                    message
                ),
            },
            LogFormat::Json => {
                let mut obj = Map::new();
                obj.insert(
                    "time".into(),
                    now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into(),
                );
                obj.insert("level".into(), level.name().into());
                if let Some(label) = &self.label {
                    obj.insert("job".into(), label.clone().into());
                }
                obj.insert("message".into(), message.into());
                let step = step.map(|s| self.redactor.clean(s, MAX_STEP_BYTES));
                obj.insert("step".into(), step.map_or(Value::Null, Value::String));
                obj.insert(
                    "detail".into(),
                    detail.map_or(Value::Null, |d| self.redactor.clean_json(d)),
                );
                let mut text = Value::Object(obj).to_string();
                text.push('\n');
                text
            }
        };
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.write_all(line.as_bytes());
        line.len()
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
