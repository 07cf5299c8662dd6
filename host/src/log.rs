//! The job's log: one sink for the host's own lines and the connector's, in the
//! platform's format (`YYYY-MM-DD HH:MM:SS UTC [LEVEL] message`) or as JSON
//! lines, with every secret value redacted and control characters stripped.

use aho_corasick::AhoCorasick;
use serde_json::{Map, Value};
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What replaces a secret value wherever it appears.
pub const REDACTED: &str = "[REDACTED]";

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

/// Secrets shorter than this are redacted only where they stand as a whole
/// token (not inside a longer run of letters and digits): a one-letter secret
/// must not turn every `t` of every line into `[REDACTED]`, while `pin=4821`
/// still loses its PIN. Longer secrets are redacted wherever they appear.
pub const MIN_SUBSTRING_SECRET: usize = 8;

/// Replaces every secret value in text that has already been sanitised
/// (see [`Redactor::clean`], which does both in the right order).
#[derive(Debug, Default)]
pub struct Redactor {
    /// Secrets of at least [`MIN_SUBSTRING_SECRET`] bytes, matched as substrings.
    long: Option<AhoCorasick>,
    /// Shorter secrets, matched only as whole tokens.
    short: Option<AhoCorasick>,
    /// The longest secret, in bytes: how much of a cut message may hold part of one.
    longest: usize,
}

impl Redactor {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        // A secret is compared as it prints: control characters never reach a log line.
        let mut long: Vec<String> = Vec::new();
        let mut short: Vec<String> = Vec::new();
        for secret in secrets {
            let printed = strip_controls(secret);
            if printed.is_empty() {
                continue;
            }
            if printed.len() >= MIN_SUBSTRING_SECRET {
                &mut long
            } else {
                &mut short
            }
            .push(printed);
        }
        let longest = long.iter().chain(&short).map(String::len).max().unwrap_or(0);
        let build = |mut patterns: Vec<String>, kind| {
            patterns.sort();
            patterns.dedup();
            (!patterns.is_empty()).then(|| {
                AhoCorasick::builder()
                    .match_kind(kind)
                    .build(&patterns)
                    .expect("secret patterns build")
            })
        };
        Self {
            long: build(long, aho_corasick::MatchKind::LeftmostLongest),
            short: build(short, aho_corasick::MatchKind::Standard),
            longest,
        }
    }

    fn is_empty(&self) -> bool {
        self.long.is_none() && self.short.is_none()
    }

    /// Replaces secrets in `text`, which must already be sanitised.
    pub fn redact(&self, text: &str) -> String {
        let text = match &self.long {
            Some(m) => m.replace_all(text, &vec![REDACTED; m.patterns_len()]),
            None => text.to_owned(),
        };
        let Some(short) = &self.short else { return text };
        // Overlapping matches, so a rejected match cannot hide an accepted one.
        let mut spans: Vec<(usize, usize)> = short
            .find_overlapping_iter(&text)
            .map(|m| (m.start(), m.end()))
            .filter(|&(start, end)| is_token(&text, start, end))
            .collect();
        if spans.is_empty() {
            return text;
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end) in spans {
            if end <= at {
                continue;
            }
            if start >= at {
                out.push_str(&text[at..start]);
                out.push_str(REDACTED);
            }
            at = end;
        }
        out.push_str(&text[at..]);
        out
    }

    /// Redacts text kept as it came (a rejected row): unchanged unless a
    /// secret shows once controls and invisible characters are stripped, in
    /// which case the stripped text is kept, redacted — a secret split by
    /// them must not survive to be printed whole.
    pub fn redact_raw(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_owned();
        }
        let printed = strip_controls(text);
        let redacted = self.redact(&printed);
        if redacted != printed {
            redacted
        } else {
            self.redact(text)
        }
    }

    /// Text for people: sanitised first (so a secret split by a control
    /// character is whole again), then redacted, then cut to `max_bytes`. Only
    /// a bounded prefix of `text` is ever looked at.
    pub fn clean(&self, text: &str, max_bytes: usize) -> String {
        // ANSI sequences and controls only shrink text; a window this wide
        // always holds what survives up to the cut, plus any secret crossing it.
        let window = max_bytes.saturating_add(self.longest).saturating_add(4096);
        let cut = text.len() > window;
        let head = if cut {
            &text[..text.floor_char_boundary(window)]
        } else {
            text
        };
        let mut printed = strip_controls(head);
        if cut {
            // The window's tail may hold the start of a secret that continues past it.
            printed.truncate(printed.floor_char_boundary(printed.len().saturating_sub(self.longest)));
        }
        let mut out = if self.is_empty() {
            printed
        } else {
            self.redact(&printed)
        };
        if cut || out.len() > max_bytes {
            out.truncate(out.floor_char_boundary(max_bytes));
            // The cut may have made a short secret a whole token.
            if self.short.is_some() {
                out = self.redact(&out);
            }
            out.push_str(" …[truncated]");
        }
        out
    }

    /// Cleans every string and key inside a JSON value; a number that spells a
    /// secret becomes the string `[REDACTED]`.
    pub fn clean_json(&self, value: Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.clean(&s, usize::MAX / 2)),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.clean_json(v)).collect()),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (self.clean(&k, usize::MAX / 2), self.clean_json(v)))
                    .collect::<Map<_, _>>(),
            ),
            Value::Number(n) if !self.is_empty() => {
                let text = n.to_string();
                if self.redact(&text) == text {
                    Value::Number(n)
                } else {
                    Value::String(REDACTED.into())
                }
            }
            other => other,
        }
    }
}

/// Whether `text[start..end]` stands alone: no letter or digit touches it.
fn is_token(text: &str, start: usize, end: usize) -> bool {
    let before = text[..start].chars().next_back();
    let after = text[end..].chars().next();
    !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
}

/// Characters that reorder how a line reads (Trojan Source): never printed.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters a terminal shows as nothing (Unicode's default-ignorable code
/// points: zero-width space and joiners, soft hyphen, word joiner, byte-order
/// mark, variation selectors, tags, fillers): between a secret's halves they
/// would print it whole to the eye and hide it from redaction.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// Whether `c` must not reach a log line, a terminal or a name as it is:
/// a control, bidi or invisible character.
pub fn is_unprintable(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || is_invisible(c)
}

/// Strips ANSI escape sequences, control, bidi and invisible characters; line
/// breaks and tabs become spaces (a line break would let a connector forge log
/// lines).
fn strip_controls(text: &str) -> String {
    let stripped = strip_ansi_escapes::strip_str(text);
    let mut out = String::with_capacity(stripped.len());
    for c in stripped.chars() {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if is_unprintable(c) => {}
            c => out.push(c),
        }
    }
    out
}

/// Strips ANSI escape sequences and control characters and cuts the text to
/// `max_bytes` (for text that holds no secret, such as a panic location).
pub fn sanitize(text: &str, max_bytes: usize) -> String {
    Redactor::default().clean(text, max_bytes)
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
    fn short_secrets_are_redacted_only_as_whole_tokens() {
        let r = Redactor::new(["t", "ab12"]);
        assert_eq!(r.redact("the test token is t."), "the test token is [REDACTED].");
        assert_eq!(r.redact("t"), REDACTED);
        assert_eq!(r.redact("xab12 ab12x ab12/ab12"), "xab12 ab12x [REDACTED]/[REDACTED]");
        // Long secrets go wherever they are, even inside words.
        let r = Redactor::new(["correct-horse"]);
        assert_eq!(r.redact("xcorrect-horsey"), "x[REDACTED]y");
    }

    #[test]
    fn invisible_characters_cannot_split_a_secret() {
        let r = Redactor::new(["correct-horse"]);
        for c in [
            '\u{200b}',
            '\u{ad}',
            '\u{2060}',
            '\u{feff}',
            '\u{fe0f}',
            '\u{e0041}',
            '\u{1d173}',
        ] {
            let split = format!("token correct{c}-horse here");
            assert_eq!(r.clean(&split, 1000), "token [REDACTED] here", "U+{:04X}", c as u32);
            // A rejected row is kept as it came, unless a secret hides in it.
            assert_eq!(r.redact_raw(&split), "token [REDACTED] here");
            let honest = format!("{{\"name\": \"Zero{c}Width\"}}");
            assert_eq!(r.redact_raw(&honest), honest);
        }
    }

    #[test]
    fn a_cut_never_leaves_part_of_a_secret() {
        let secret = "abcdefghijklmnop";
        let r = Redactor::new([secret]);
        for pad in 0..40 {
            let text = format!(
                "{}{secret}{}",
                "x".repeat(MAX_MESSAGE_BYTES + 4096 - pad),
                "y".repeat(5000)
            );
            let cleaned = r.clean(&text, MAX_MESSAGE_BYTES);
            assert!(cleaned.len() <= MAX_MESSAGE_BYTES + 20);
            for n in 4..=secret.len() {
                assert!(
                    !cleaned.contains(&secret[..n]),
                    "pad {pad}: {n} bytes of the secret survive"
                );
            }
        }
        // A short secret the cut turns into a whole token.
        let r = Redactor::new(["4821"]);
        let text = format!("{}4821zz", "x ".repeat(MAX_MESSAGE_BYTES / 2 - 2));
        assert!(!r.clean(&text, MAX_MESSAGE_BYTES).contains("4821"));
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
    fn long_messages_are_cut_with_a_marker() {
        let cut = sanitize(&"é".repeat(20_000), MAX_MESSAGE_BYTES);
        assert!(cut.len() <= MAX_MESSAGE_BYTES + 20);
        assert!(cut.ends_with("…[truncated]"));
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
