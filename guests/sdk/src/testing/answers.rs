//! Where the test host's HTTP answers come from: `file://` URLs from a
//! fixtures directory, mapped to files as `run-plugin --fixtures DIR` does,
//! and any URL from responses a test set with [`super::TestHost::respond`].

use std::path::{Path, PathBuf};
use url::Url;

/// One answer: status, headers and body.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    fn json(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        }
    }

    fn not_found(message: String) -> Self {
        Self::json(404, serde_json::json!({ "error": message }).to_string().into_bytes())
    }
}

/// Responses a test set for a URL: given in order, then the last one again.
#[derive(Debug)]
struct Stub {
    /// The URL without its query.
    base: String,
    /// Query parameters the request must carry (it may carry more).
    params: Vec<(String, String)>,
    answers: Vec<Answer>,
    served: usize,
}

/// The test host's answers.
#[derive(Debug, Default)]
pub(crate) struct Answers {
    pub fixtures: Option<PathBuf>,
    stubs: Vec<Stub>,
}

fn split(url: &Url) -> (String, Vec<(String, String)>) {
    let mut base = url.clone();
    base.set_query(None);
    base.set_fragment(None);
    let params = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    (base.to_string(), params)
}

impl Answers {
    /// Adds a response for `url`: a request to the same URL whose query holds
    /// every parameter `url` names (and maybe more) gets it; the most specific wins.
    pub fn respond(&mut self, url: &str, answer: Answer) {
        let parsed = Url::parse(url).unwrap_or_else(|e| panic!("TestHost::respond: {url:?} is not a URL ({e})"));
        let (base, params) = split(&parsed);
        match self.stubs.iter_mut().find(|s| s.base == base && s.params == params) {
            Some(stub) => stub.answers.push(answer),
            None => self.stubs.push(Stub {
                base,
                params,
                answers: vec![answer],
                served: 0,
            }),
        }
    }

    /// The answer to `GET url`, or `None` when nothing answers a non-file URL.
    pub fn answer(&mut self, url: &Url) -> Option<Answer> {
        let (base, params) = split(url);
        let best = self
            .stubs
            .iter_mut()
            .filter(|s| s.base == base && s.params.iter().all(|p| params.contains(p)))
            .max_by_key(|s| s.params.len());
        if let Some(stub) = best {
            let answer = stub.answers[stub.served.min(stub.answers.len() - 1)].clone();
            stub.served += 1;
            return Some(answer);
        }
        if url.scheme() != "file" {
            return None;
        }
        Some(match &self.fixtures {
            Some(dir) => fixture(dir, url),
            None => Answer::not_found(format!(
                "{url}: file:// URLs are answered from fixtures; call TestHost::fixtures(DIR)"
            )),
        })
    }
}

/// `GET file:///v2/suppliers?page=2` from `DIR/v2/suppliers@page=2.json` (the
/// most specific `name@params.json` whose params the request carries), else
/// `suppliers.json`, else `suppliers`: the host's own mapping.
fn fixture(dir: &Path, url: &Url) -> Answer {
    let segments: Vec<String> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).map(percent_decode).collect())
        .unwrap_or_default();
    if segments.is_empty() || segments.iter().any(|s| s == "." || s == ".." || s.contains('/')) {
        return Answer::not_found(format!(
            "no fixture for {url}: the path must name a file inside {}",
            dir.display()
        ));
    }
    let (name, parents) = segments.split_last().expect("not empty");
    let parent: PathBuf = dir.join(parents.iter().collect::<PathBuf>());
    let request: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut candidates: Vec<(usize, String)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&parent) {
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
    if let [(best, a), (second, b), ..] = candidates.as_slice()
        && best == second
    {
        return Answer::not_found(format!(
            "no fixture for {url}: {a} and {b} match equally well; name more params in one of them"
        ));
    }
    let mut tried = Vec::new();
    for file in candidates
        .into_iter()
        .map(|(_, f)| f)
        .chain([format!("{name}.json"), name.clone()])
    {
        let path = parent.join(&file);
        if let Ok(body) = std::fs::read(&path) {
            return Answer::json(200, body);
        }
        tried.push(path.display().to_string());
    }
    Answer::not_found(format!("no fixture for {url} (looked for {})", tried.join(", ")))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}
