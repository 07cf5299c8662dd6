//! Offline development: answers to a connector's HTTP requests that do not
//! come from the network.
//!
//! - **Fixtures** (`--fixtures DIR`): `file://` URLs are served from files in
//!   DIR, confined with cap-std (no `..`, absolute path or symlink leads out).
//!   `GET file:///v2/suppliers?page=2&per_page=200` is answered by the most
//!   specific of `v2/suppliers@<params>.json` whose params all appear in the
//!   request with the same values (`v2/suppliers@page=2.json`), else by
//!   `v2/suppliers.json`, else by `v2/suppliers` itself. Params are written
//!   `key=value`, joined by `&`, percent-encoded as in a URL. A request nothing
//!   answers gets a 404 whose body lists the files it looked for.
//! - **Cassettes** (`--record FILE`, `--replay FILE`): every HTTP exchange of a
//!   run, through `http` or `wasi:http` (method and URL, status, headers, body;
//!   no request headers or bodies, secrets redacted) is written to a JSON file,
//!   and a replay answers from it by method, path and query (whatever the
//!   origin) without touching the network. A request
//!   the cassette lacks fails the run (`replay_miss`). The replayed connector's
//!   wall clock starts at the recorded time, so time-derived queries (the
//!   bootstrap `since`) match.

use crate::redact::Redactor;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use url::Url;

/// One HTTP exchange as a connector sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Exchange {
    /// A response's headers as a connector and a cassette see them (values
    /// that are not UTF-8 lossily converted).
    pub fn header_pairs(headers: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect()
    }
}

/// `file://` answers from a directory.
pub struct Fixtures {
    dir: cap_std::fs::Dir,
    shown: PathBuf,
}

impl Fixtures {
    pub fn open(dir: &Path) -> Result<Self, String> {
        let opened = cap_std::fs::Dir::open_ambient_dir(dir, cap_std::ambient_authority())
            .map_err(|e| format!("--fixtures {}: {e}", dir.display()))?;
        Ok(Self {
            dir: opened,
            shown: dir.to_owned(),
        })
    }

    /// Answers a `file://` URL (see the module docs for the mapping).
    pub fn answer(&self, url: &Url) -> Exchange {
        let segments: Vec<String> = url
            .path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).map(|p| percent_decode(p)).collect())
            .unwrap_or_default();
        let json = |body: Vec<u8>| Exchange {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        };
        let not_found = |tried: &[String], why: &str| {
            let message = format!(
                "no fixture for {url} in {}: {why} (looked for {})",
                self.shown.display(),
                tried.join(", ")
            );
            Exchange {
                status: 404,
                headers: vec![("content-type".into(), "application/json".into())],
                body: serde_json::json!({ "error": message }).to_string().into_bytes(),
            }
        };
        if segments.is_empty() || segments.iter().any(|s| s == "." || s == ".." || s.contains('/')) {
            return not_found(&[], "the path must name a file inside the fixtures directory");
        }
        let (name, parents) = segments.split_last().expect("not empty");
        let parent: PathBuf = parents.iter().collect();
        let request: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();

        // The candidates in `parent` named `<name>@<params>.json`, best match first.
        let mut candidates: Vec<(usize, String)> = Vec::new();
        let listing = if parent.as_os_str().is_empty() {
            self.dir.entries()
        } else {
            self.dir.read_dir(&parent)
        };
        if let Ok(entries) = listing {
            let prefix = format!("{name}@");
            for entry in entries.flatten() {
                let Ok(file) = entry.file_name().into_string() else {
                    continue;
                };
                let Some(params) = file.strip_prefix(&prefix).and_then(|f| f.strip_suffix(".json")) else {
                    continue;
                };
                let wanted: Vec<(String, String)> = url::form_urlencoded::parse(params.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                if wanted.iter().all(|w| request.contains(w)) {
                    candidates.push((wanted.len(), file));
                }
            }
        }
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut tried: Vec<String> = Vec::new();
        if let [(best, a), (second, b), ..] = candidates.as_slice()
            && best == second
        {
            return not_found(
                &[a.clone(), b.clone()],
                "two fixtures match equally well; name more params in one of them",
            );
        }
        let names = candidates
            .into_iter()
            .map(|(_, f)| f)
            .chain([format!("{name}.json"), name.clone()]);
        for file in names {
            let path = parent.join(&file);
            tried.push(path.display().to_string());
            match self.dir.read(&path) {
                Ok(body) => return json(body),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                // cap-std refuses symlinks that lead out and the like: say so.
                Err(e) => return not_found(&tried, &e.to_string()),
            }
        }
        not_found(&tried, "none of them exists")
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A recorded exchange in a cassette.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Interaction {
    pub request: RecordedRequest,
    pub response: RecordedResponse,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body as text, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body as base64, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

/// A cassette file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cassette {
    /// Format version.
    pub nuntiq_cassette: u32,
    /// When the recorded run began (RFC 3339): a replay's clock starts here.
    pub recorded_at: String,
    pub interactions: Vec<Interaction>,
}

/// Response headers never written to a cassette.
const SCRUBBED_HEADERS: [&str; 4] = ["set-cookie", "authorization", "proxy-authorization", "www-authenticate"];

/// What `--record` writes while a job runs: each exchange goes to a
/// temporary file beside the cassette as it is recorded (nothing is held until
/// the run ends), and [`Recorder::save`] closes it and puts it in place.
pub struct Recorder {
    path: PathBuf,
    file: Mutex<Writing>,
    /// A recorded `wasi:http` body is read in full before the connector sees
    /// it; one at a time, so a connector with many requests in flight cannot
    /// make the host hold many bodies at once.
    pub reading: tokio::sync::Semaphore,
}

/// The cassette being written: the open file, how many exchanges it has, and
/// the first write that failed (reported by `save`).
struct Writing {
    out: Option<std::io::BufWriter<tempfile::NamedTempFile>>,
    written: usize,
    failed: Option<String>,
}

impl Recorder {
    /// Starts the cassette at `path` (in a temporary file beside it until saved).
    pub fn create(path: PathBuf, started: SystemTime) -> Result<Self, String> {
        let recorded_at =
            chrono::DateTime::<chrono::Utc>::from(started).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let shown = |e: std::io::Error| format!("--record {}: {e}", path.display());
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut out = std::io::BufWriter::new(tempfile::NamedTempFile::new_in(dir).map_err(shown)?);
        // The document is written as it grows: this head, the exchanges, then the tail on save.
        let head = format!(
            "{{\n  \"nuntiq_cassette\": 1,\n  \"recorded_at\": {},\n  \"interactions\": [",
            serde_json::Value::String(recorded_at)
        );
        std::io::Write::write_all(&mut out, head.as_bytes()).map_err(shown)?;
        Ok(Self {
            path,
            file: Mutex::new(Writing {
                out: Some(out),
                written: 0,
                failed: None,
            }),
            reading: tokio::sync::Semaphore::new(1),
        })
    }

    /// Appends one interaction to the file.
    fn write(&self, interaction: &Interaction) {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let Writing { out, written, failed } = &mut *file;
        let (Some(out), None) = (out.as_mut(), failed.as_ref()) else {
            return;
        };
        let text = match serde_json::to_string_pretty(interaction) {
            Ok(text) => text,
            Err(e) => {
                *failed = Some(e.to_string());
                return;
            }
        };
        let separator = if *written == 0 { "\n" } else { ",\n" };
        let indented = text.replace('\n', "\n    ");
        match std::io::Write::write_all(out, format!("{separator}    {indented}").as_bytes()) {
            Ok(()) => *written += 1,
            Err(e) => *failed = Some(e.to_string()),
        }
    }

    /// Adds one exchange, secrets redacted and credentials scrubbed. The body
    /// is redacted as bytes, before it is written as text or as base64 (where
    /// no secret could be found any more).
    pub fn record(&self, method: &str, url: &Url, exchange: &Exchange, redactor: &Redactor) {
        let body = String::from_utf8(redactor.redact_bytes(&exchange.body).into_owned());
        let response = RecordedResponse {
            status: exchange.status,
            headers: exchange
                .headers
                .iter()
                .filter(|(k, _)| !SCRUBBED_HEADERS.contains(&k.to_ascii_lowercase().as_str()))
                .map(|(k, v)| (k.clone(), redactor.redact(v)))
                .collect(),
            body_base64: body.as_ref().err().map(|e| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(e.as_bytes())
            }),
            body: body.ok(),
        };
        self.write(&Interaction {
            request: RecordedRequest {
                method: method.to_ascii_uppercase(),
                url: redactor.redact(url.as_str()),
            },
            response,
        });
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the cassette and puts it in place (atomically: a reader sees the
    /// old file or the new one); returns how many exchanges it holds.
    pub fn save(&self) -> Result<usize, String> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let shown = |e: &dyn std::fmt::Display| format!("{}: {e}", self.path.display());
        if let Some(e) = &file.failed {
            return Err(shown(e));
        }
        let Some(mut out) = file.out.take() else {
            return Err(shown(&"the cassette was saved already"));
        };
        let tail = if file.written == 0 { "]\n}\n" } else { "\n  ]\n}\n" };
        std::io::Write::write_all(&mut out, tail.as_bytes()).map_err(|e| shown(&e))?;
        let tmp = out.into_inner().map_err(|e| shown(&e.error()))?;
        // Secrets are redacted: a cassette is for sharing, like any test fixture.
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644));
        tmp.persist(&self.path).map_err(|e| shown(&e.error))?;
        Ok(file.written)
    }
}

/// What `--replay` answers from.
pub struct Replay {
    shown: String,
    interactions: Vec<Interaction>,
    /// How many times each interaction was served.
    served: Vec<u32>,
    /// When the recorded run began.
    pub recorded_at: SystemTime,
    /// The cassette file's size: what holding it costs the run, about.
    pub bytes: u64,
    /// The connector's clock during the replay.
    clock: ReplayClock,
}

/// The part of a URL a replay matches on: path and query, not the origin.
fn replay_key(url: &str) -> Option<String> {
    let url = Url::parse(url).ok()?;
    Some(match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    })
}

impl Replay {
    /// `real_time`: waits between retries are slept (`--replay-real-time`),
    /// not skipped on the replay's clock.
    pub fn load(path: &Path, real_time: bool) -> Result<Self, String> {
        let shown = path.display().to_string();
        let text = std::fs::read(path).map_err(|e| format!("--replay {shown}: {e}"))?;
        let cassette: Cassette =
            serde_json::from_slice(&text).map_err(|e| format!("--replay {shown}: not a cassette ({e})"))?;
        if cassette.nuntiq_cassette != 1 {
            return Err(format!(
                "--replay {shown}: cassette format {} is not one this host reads (1)",
                cassette.nuntiq_cassette
            ));
        }
        let recorded_at = chrono::DateTime::parse_from_rfc3339(&cassette.recorded_at)
            .map_err(|e| format!("--replay {shown}: recorded_at: {e}"))?;
        let recorded_at: SystemTime = recorded_at.to_utc().into();
        Ok(Self {
            bytes: text.len() as u64,
            served: vec![0; cassette.interactions.len()],
            interactions: cassette.interactions,
            clock: ReplayClock::starting_at(recorded_at, real_time),
            recorded_at,
            shown,
        })
    }

    /// The connector's clock (a handle on the one clock of this replay).
    pub fn clock(&self) -> ReplayClock {
        self.clock.clone()
    }

    /// The recorded answer to `method url`: identical requests get their
    /// recordings in order, then the last one again. `Err` says what the
    /// cassette has.
    pub fn answer(&mut self, method: &str, url: &Url, redactor: &Redactor) -> Result<Exchange, String> {
        // The cassette's URLs were redacted when recorded: compare alike.
        let wanted = replay_key(&redactor.redact(url.as_str()));
        let matching: Vec<usize> = (0..self.interactions.len())
            .filter(|&i| {
                let recorded = &self.interactions[i].request;
                recorded.method.eq_ignore_ascii_case(method) && replay_key(&recorded.url) == wanted
            })
            .collect();
        let Some(&pick) = matching.iter().find(|&&i| self.served[i] == 0).or(matching.last()) else {
            let known: Vec<String> = self
                .interactions
                .iter()
                .filter_map(|i| replay_key(&i.request.url))
                .take(5)
                .collect();
            return Err(format!(
                "{} {} is not in the cassette {} ({} recorded requests, e.g. {}); record it again with --record",
                method.to_ascii_uppercase(),
                wanted.as_deref().unwrap_or(url.as_str()),
                self.shown,
                self.interactions.len(),
                known.join(", ")
            ));
        };
        self.served[pick] += 1;
        let response = &self.interactions[pick].response;
        let body = match (&response.body, &response.body_base64) {
            (Some(text), _) => text.clone().into_bytes(),
            (None, Some(b64)) => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| format!("the cassette {}: a body is not base64 ({e})", self.shown))?
            }
            (None, None) => Vec::new(),
        };
        Ok(Exchange {
            status: response.status,
            headers: response.headers.clone(),
            body,
        })
    }
}

/// The connector's clock in a replay: the recorded start, then real time,
/// plus every wait between retries that was skipped rather than slept.
#[derive(Clone)]
pub struct ReplayClock {
    start: Duration,
    started: Instant,
    /// Nanoseconds of skipped waits, shared by every handle.
    skipped: std::sync::Arc<AtomicU64>,
    real_time: bool,
}

impl ReplayClock {
    pub fn starting_at(at: SystemTime, real_time: bool) -> Self {
        Self {
            start: at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default(),
            started: Instant::now(),
            skipped: Default::default(),
            real_time,
        }
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed() + Duration::from_nanos(self.skipped.load(Ordering::Relaxed))
    }

    /// The replay's time now, as the connector sees it.
    pub fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + self.start + self.elapsed()
    }

    /// A recorded wait (backoff, `Retry-After`): moves the clock on at once,
    /// or, with `--replay-real-time`, is slept.
    pub async fn wait(&self, delay: Duration) {
        if self.real_time {
            tokio::time::sleep(delay).await;
        } else {
            let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
            self.skipped.fetch_add(nanos, Ordering::Relaxed);
        }
    }

    /// The same clock as wasi:clocks' monotonic clock.
    pub fn monotonic(&self) -> ReplayMonotonic {
        ReplayMonotonic(self.clone())
    }
}

impl wasmtime_wasi::HostWallClock for ReplayClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        self.start + self.elapsed()
    }
}

/// A replay's monotonic clock: real time plus the skipped waits.
pub struct ReplayMonotonic(ReplayClock);

impl wasmtime_wasi::HostMonotonicClock for ReplayMonotonic {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Where a retry's wait and its `Retry-After` date are measured: the
/// replay's clock under `--replay`, else the real one.
impl super::http::Offline {
    pub fn now(&self) -> SystemTime {
        match &self.replay {
            Some(replay) => replay.lock().unwrap_or_else(|p| p.into_inner()).clock.now(),
            None => SystemTime::now(),
        }
    }

    pub async fn wait(&self, delay: Duration) {
        let clock = self
            .replay
            .as_ref()
            .map(|replay| replay.lock().unwrap_or_else(|p| p.into_inner()).clock());
        match clock {
            Some(clock) => clock.wait(delay).await,
            None => tokio::time::sleep(delay).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures(files: &[(&str, &str)]) -> (tempfile::TempDir, Fixtures) {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
        let f = Fixtures::open(dir.path()).unwrap();
        (dir, f)
    }

    fn body(e: &Exchange) -> String {
        String::from_utf8(e.body.clone()).unwrap()
    }

    #[test]
    fn the_most_specific_fixture_answers() {
        let (_d, f) = fixtures(&[
            ("v2/suppliers.json", "all"),
            ("v2/suppliers@page=2.json", "page two"),
            ("v2/suppliers@page=2&per_page=10.json", "page two of ten"),
        ]);
        let get = |u: &str| f.answer(&Url::parse(u).unwrap());
        assert_eq!(
            body(&get("file:///v2/suppliers?page=2&per_page=10&updated_after=x")),
            "page two of ten"
        );
        assert_eq!(body(&get("file:///v2/suppliers?page=2&per_page=200")), "page two");
        assert_eq!(body(&get("file:///v2/suppliers?page=3")), "all");
        let missing = get("file:///v2/invoices");
        assert_eq!(missing.status, 404);
        assert!(body(&missing).contains("v2/invoices.json"), "{}", body(&missing));
    }

    #[test]
    fn nothing_outside_the_fixtures_directory_is_served() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.json"), "secret").unwrap();
        let (dir, f) = fixtures(&[("ok.json", "ok")]);
        std::os::unix::fs::symlink(outside.path().join("secret.json"), dir.path().join("link.json")).unwrap();
        for url in [
            "file:///../secret.json",
            "file:///link.json",
            "file:///%2E%2E/secret.json",
            "file:///a/..%2F..%2Fsecret.json",
        ] {
            let answer = f.answer(&Url::parse(url).unwrap());
            assert_eq!(answer.status, 404, "{url}: {}", body(&answer));
            assert!(!body(&answer).contains("\"secret\""), "{url}");
        }
        assert_eq!(body(&f.answer(&Url::parse("file:///ok.json").unwrap())), "ok");
    }

    #[test]
    fn a_replay_answers_by_path_and_query_in_order_and_says_what_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let recorder = Recorder::create(
            path.clone(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
        .unwrap();
        let redactor = Redactor::new(["s3cr3t-token"]);
        let exchange = |status, text: &str| Exchange {
            status,
            headers: vec![
                ("set-cookie".into(), "x".into()),
                ("x-token".into(), "s3cr3t-token".into()),
            ],
            body: text.as_bytes().to_vec(),
        };
        let a = Url::parse("http://127.0.0.1:1/v2/suppliers?page=1&key=s3cr3t-token").unwrap();
        recorder.record("GET", &a, &exchange(503, "busy"), &redactor);
        recorder.record("GET", &a, &exchange(200, "first page s3cr3t-token"), &redactor);
        recorder.record("post", &a, &exchange(201, "made"), &redactor);
        assert_eq!(recorder.save().unwrap(), 3);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cr3t-token") && !text.contains("set-cookie"), "{text}");

        let mut replay = Replay::load(&path, false).unwrap();
        let elsewhere = Url::parse("http://127.0.0.1:9/v2/suppliers?page=1&key=s3cr3t-token").unwrap();
        assert_eq!(
            replay.answer("POST", &elsewhere, &redactor).unwrap().status,
            201,
            "by method"
        );
        assert_eq!(replay.answer("GET", &elsewhere, &redactor).unwrap().status, 503);
        assert_eq!(replay.answer("GET", &elsewhere, &redactor).unwrap().status, 200);
        assert_eq!(
            replay.answer("GET", &elsewhere, &redactor).unwrap().status,
            200,
            "the last one again"
        );
        let e = replay
            .answer("GET", &Url::parse("http://x/v2/suppliers?page=2").unwrap(), &redactor)
            .unwrap_err();
        assert!(e.contains("GET /v2/suppliers?page=2 is not in the cassette"), "{e}");
        assert_eq!(
            replay.recorded_at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
    }

    #[test]
    fn a_recording_goes_to_disk_as_it_happens_and_an_empty_one_is_a_cassette() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let recorder = Recorder::create(path.clone(), SystemTime::now()).unwrap();
        let on_disk = || -> u64 {
            std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum()
        };
        let before = on_disk();
        let big = Exchange {
            status: 200,
            headers: vec![],
            body: vec![b'x'; 4 << 20],
        };
        let url = Url::parse("http://127.0.0.1:1/big").unwrap();
        recorder.record("GET", &url, &big, &Redactor::default());
        assert!(
            on_disk() >= before + (4 << 20) - 64 * 1024,
            "the body is on disk before the run ends"
        );
        assert!(!path.exists(), "the cassette appears only when saved");
        assert_eq!(recorder.save().unwrap(), 1);
        assert_eq!(Replay::load(&path, false).unwrap().interactions.len(), 1);

        let empty = dir.path().join("empty.json");
        Recorder::create(empty.clone(), SystemTime::now())
            .unwrap()
            .save()
            .unwrap();
        assert_eq!(Replay::load(&empty, false).unwrap().interactions.len(), 0);
    }

    #[test]
    fn a_body_that_is_not_utf8_is_redacted_before_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let recorder = Recorder::create(path.clone(), SystemTime::UNIX_EPOCH).unwrap();
        let secret = "s3cr3t-token+/=";
        let redactor = Redactor::new([secret]);
        let url = Url::parse("http://127.0.0.1:1/echo?key=s3cr3t-token%2B%2F%3D").unwrap();
        let mut body = b"\xff\xfeAuthorization: Bearer ".to_vec();
        body.extend_from_slice(secret.as_bytes());
        body.push(0x80);
        let exchange = Exchange {
            status: 200,
            headers: vec![("x-echo".into(), format!("key={secret}"))],
            body,
        };
        recorder.record("GET", &url, &exchange, &redactor);
        recorder.save().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // No form of the secret the redactor knows is left anywhere in the file.
        assert_eq!(redactor.redact(&text), text, "{text}");
        let cassette: Cassette = serde_json::from_str(&text).unwrap();
        let response = &cassette.interactions[0].response;
        assert!(response.body.is_none() && response.body_base64.is_some(), "{text}");
        let mut replay = Replay::load(&path, false).unwrap();
        let answer = replay.answer("GET", &url, &redactor).unwrap();
        assert_eq!(answer.body, b"\xff\xfeAuthorization: Bearer [REDACTED]\x80");
        assert_eq!(answer.headers[0].1, "key=[REDACTED]");
    }

    #[tokio::test]
    async fn a_replayed_wait_moves_the_clock_instead_of_sleeping() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let clock = ReplayClock::starting_at(start, false);
        let hour = Duration::from_secs(3600);
        // Slept, an hour would outlast the timeout; skipped, it returns at once.
        tokio::time::timeout(Duration::from_secs(30), clock.wait(hour))
            .await
            .expect("a replayed wait is not slept");
        assert!(clock.now() >= start + hour, "the connector's clock moved past the wait");
        let monotonic = wasmtime_wasi::HostMonotonicClock::now(&clock.monotonic());
        assert!(monotonic >= hour.as_nanos() as u64);
        let real = ReplayClock::starting_at(start, true);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), real.wait(hour))
                .await
                .is_err(),
            "--replay-real-time sleeps"
        );
    }
}
