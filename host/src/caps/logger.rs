//! `logger`: the connector's structured log lines, and its stdout/stderr, which
//! never reach the host's stdout (that is reserved for the result envelope).

use crate::bindings::logger;
use crate::log::{Level, LogSink, MAX_DETAIL_BYTES, MAX_MESSAGE_BYTES};
use crate::meter::{Counters, Section};
use serde_json::Value;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

pub struct LoggerCap {
    sink: Arc<LogSink>,
    counters: Arc<Counters>,
}

impl LoggerCap {
    pub fn new(sink: Arc<LogSink>, counters: Arc<Counters>) -> Self {
        Self { sink, counters }
    }
}

impl From<logger::Level> for Level {
    fn from(level: logger::Level) -> Self {
        match level {
            logger::Level::Debug => Level::Debug,
            logger::Level::Info => Level::Info,
            logger::Level::Warn => Level::Warn,
            logger::Level::Error => Level::Error,
        }
    }
}

impl logger::Host for LoggerCap {
    async fn log(
        &mut self,
        level: logger::Level,
        message: String,
        step: Option<String>,
        detail: Option<String>,
    ) -> wasmtime::Result<()> {
        let level = Level::from(level);
        if !self.sink.enabled(level) {
            return Ok(());
        }
        let started = Instant::now();
        let detail = detail.filter(|_| self.sink.prints_detail()).map(connector_detail);
        self.sink.connector_log(level, &message, step.as_deref(), detail);
        self.counters.add(Section::Log, started);
        Ok(())
    }
}

/// A connector's `detail` as it is logged: its JSON value (text that is not JSON
/// is kept as a string), or a note of its size when it is over the limit, so a
/// connector cannot make the host parse or print megabytes per line.
fn connector_detail(detail: String) -> Value {
    if detail.len() > MAX_DETAIL_BYTES {
        return serde_json::json!({
            "detail_dropped": format!("{} bytes, over the {MAX_DETAIL_BYTES}-byte limit", detail.len())
        });
    }
    serde_json::from_str(&detail).unwrap_or(Value::String(detail))
}

/// The connector's stdout or stderr: each line becomes a log line with step
/// `stdout`/`stderr` (info and warn).
pub struct GuestOutput {
    sink: Arc<LogSink>,
    level: Level,
    step: &'static str,
    panic: Arc<Mutex<Option<String>>>,
}

impl GuestOutput {
    pub fn stdout(sink: Arc<LogSink>) -> Self {
        Self {
            sink,
            level: Level::Info,
            step: "stdout",
            panic: Arc::default(),
        }
    }

    pub fn stderr(sink: Arc<LogSink>) -> Self {
        Self {
            sink,
            level: Level::Warn,
            step: "stderr",
            panic: Arc::default(),
        }
    }

    /// The message of the last Rust panic printed here ("… at file:line"),
    /// so a trap can say why the connector stopped.
    pub fn panic_message(&self) -> Arc<Mutex<Option<String>>> {
        self.panic.clone()
    }
}

impl wasmtime_wasi::cli::IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            sink: self.sink.clone(),
            level: self.level,
            step: self.step,
            pending: Vec::new(),
            panic: self.panic.clone(),
            panic_location: None,
        })
    }
}

/// Splits written bytes into lines; a line longer than the message cap is
/// logged in pieces so the buffer stays bounded.
struct LineWriter {
    sink: Arc<LogSink>,
    level: Level,
    step: &'static str,
    pending: Vec<u8>,
    panic: Arc<Mutex<Option<String>>>,
    /// Set by a "thread '…' panicked at FILE:LINE:" line; the next line is the message.
    panic_location: Option<String>,
}

impl LineWriter {
    fn emit(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if text.trim().is_empty() {
            return;
        }
        if let Some(location) = self.panic_location.take() {
            let message = crate::log::sanitize(text, 1024);
            *self.panic.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{message} (at {location})"));
        } else if let Some((_, location)) = text.split_once(" panicked at ") {
            self.panic_location = Some(location.trim_end_matches(':').to_owned());
        }
        self.sink.connector_log(self.level, text, Some(self.step), None);
    }

    fn take_lines(&mut self) {
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&line[..line.len() - 1]);
        }
        while self.pending.len() >= MAX_MESSAGE_BYTES {
            let piece: Vec<u8> = self.pending.drain(..MAX_MESSAGE_BYTES).collect();
            self.emit(&piece);
        }
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        self.take_lines();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit(&rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{LogFormat, tests::sink};
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn guest_output_becomes_log_lines() {
        let (sink, out) = sink(LogFormat::Json, &["hunter2"]);
        let sink = Arc::new(sink);
        {
            let mut w = Box::into_pin(wasmtime_wasi::cli::StdoutStream::async_stream(&GuestOutput::stderr(
                sink.clone(),
            )));
            w.write_all(b"panicked at src/lib.rs:1: token hunter2\nsecond ")
                .await
                .unwrap();
            w.write_all(b"line\npartial").await.unwrap();
        }
        let lines: Vec<Value> = out.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let messages: Vec<&str> = lines.iter().map(|l| l["message"].as_str().unwrap()).collect();
        assert_eq!(
            messages,
            ["panicked at src/lib.rs:1: token [REDACTED]", "second line", "partial"]
        );
        assert!(lines.iter().all(|l| l["step"] == "stderr" && l["level"] == "warn"));
    }
}
