//! Secrets out of everything the host writes, and text made safe to print:
//! the [`Redactor`] finds a secret in every form the host's outputs carry it
//! (as it prints, percent- or form-encoded, base64 at any alignment, UTF-16,
//! inside bytes that are not UTF-8) and the sanitisers strip what would forge
//! a line or hide a character. Logs, the envelope, cassettes, rejected rows and
//! the panic hook all use it; it knows nothing of how lines are logged.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::Engine;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// What replaces a secret value wherever it appears.
pub const REDACTED: &str = "[REDACTED]";

/// Secrets shorter than this are redacted only where they stand as a whole
/// token (not inside a longer run of letters and digits): a one-letter secret
/// must not turn every `t` of every line into `[REDACTED]`, while `pin=4821`
/// still loses its PIN. Longer secrets are redacted wherever they appear, in
/// every encoding.
pub const MIN_SUBSTRING_SECRET: usize = 8;

/// Replaces every secret value in text that has already been sanitised
/// (see [`Redactor::clean`], which does both in the right order).
///
/// Text is matched through a canonical view: `%XX` stands for the byte it
/// encodes and `+` for a space, as form-encoding has it (so `%2B`, `%2b`, `+`
/// and a space written `+` or `%20` all match, in any mixture). The view is
/// built only for text holding a `%` or a `+`; other text is matched as it is.
#[derive(Debug, Default)]
pub struct Redactor {
    /// The forms of secrets of at least [`MIN_SUBSTRING_SECRET`] bytes, matched
    /// as substrings of the canonical view.
    long: Option<AhoCorasick>,
    /// Per pattern of `long`: whether it is a base64 form, and how far a
    /// match widens.
    forms: Vec<Form>,
    /// Shorter secrets (as printed and percent-encoded), matched only as whole tokens.
    short: Option<AhoCorasick>,
    /// The most bytes of text one match may cover: how much of a cut message
    /// may hold part of a secret.
    longest: usize,
}

/// What a long pattern is. A base64 form's match also takes the characters
/// on either side that mix bits of the secret with bits of its neighbours
/// (they still give part of it away), and the padding after it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Form {
    base64: bool,
    before: bool,
    after: bool,
}

impl Redactor {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut long: Vec<(Vec<u8>, Form)> = Vec::new();
        let mut short: Vec<Vec<u8>> = Vec::new();
        for secret in secrets {
            // A secret is compared as it prints: control characters never reach a log line.
            let printed = strip_controls(secret);
            if printed.is_empty() {
                continue;
            }
            let plain = canonical_forms(printed.as_bytes());
            if printed.len() < MIN_SUBSTRING_SECRET {
                short.extend(plain);
                continue;
            }
            long.extend(plain.into_iter().map(|p| (p, Form::default())));
            long.extend(base64_forms(printed.as_bytes()));
            // A body in UTF-16 carries the secret with its code units' other halves.
            for big_endian in [false, true] {
                let units = printed
                    .encode_utf16()
                    .flat_map(|u| if big_endian { u.to_be_bytes() } else { u.to_le_bytes() });
                // Viewed as text is: its bytes may happen to spell `%XX`.
                long.push((decode(&units.collect::<Vec<u8>>()).0, Form::default()));
            }
        }
        // One pattern per form; forms that coincide widen as either would.
        long.sort();
        long.dedup_by(|b, a| {
            let same = a.0 == b.0;
            if same {
                a.1.base64 |= b.1.base64;
                a.1.before |= b.1.before;
                a.1.after |= b.1.after;
            }
            same
        });
        short.sort();
        short.dedup();
        // Each byte of the view stands for at most three of the text (`%XX`).
        let longest = long
            .iter()
            .map(|(p, _)| p.len() + 3)
            .chain(short.iter().map(Vec::len))
            .max()
            .unwrap_or(0)
            * 3;
        let build = |patterns: &[&[u8]], kind| {
            (!patterns.is_empty()).then(|| {
                // A DFA would search a little faster but take far longer to build, per run.
                AhoCorasick::builder()
                    .match_kind(kind)
                    .kind(Some(AhoCorasickKind::ContiguousNFA))
                    .build(patterns)
                    .expect("secret patterns build")
            })
        };
        Self {
            long: build(
                &long.iter().map(|(p, _)| p.as_slice()).collect::<Vec<_>>(),
                MatchKind::LeftmostLongest,
            ),
            forms: long.iter().map(|(_, f)| *f).collect(),
            short: build(
                &short.iter().map(Vec::as_slice).collect::<Vec<_>>(),
                MatchKind::Standard,
            ),
            longest,
        }
    }

    fn is_empty(&self) -> bool {
        self.long.is_none() && self.short.is_none()
    }

    /// Replaces secrets in `text`, which must already be sanitised.
    pub fn redact(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_owned();
        }
        let spans = self.spans(text.as_bytes());
        if spans.is_empty() {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end) in spans {
            // A match of a UTF-16 form may start or end inside a character: take all of it.
            let (start, end) = (text.floor_char_boundary(start), text.ceil_char_boundary(end));
            if end <= at {
                continue;
            }
            out.push_str(&text[at..start.max(at)]);
            if start >= at {
                out.push_str(REDACTED);
            }
            at = end;
        }
        out.push_str(&text[at..]);
        out
    }

    /// Replaces secrets in bytes kept as they came (a response body, which
    /// may not be UTF-8).
    pub fn redact_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        if self.is_empty() {
            return Cow::Borrowed(bytes);
        }
        if let Ok(text) = std::str::from_utf8(bytes) {
            let redacted = self.redact(text);
            return if redacted.len() == text.len() && redacted == text {
                Cow::Borrowed(bytes)
            } else {
                Cow::Owned(redacted.into_bytes())
            };
        }
        let spans = self.spans(bytes);
        if spans.is_empty() {
            return Cow::Borrowed(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0;
        for (start, end) in spans {
            out.extend_from_slice(&bytes[at..start]);
            out.extend_from_slice(REDACTED.as_bytes());
            at = end;
        }
        out.extend_from_slice(&bytes[at..]);
        Cow::Owned(out)
    }

    /// Where secrets are in `text`: sorted, disjoint byte ranges.
    fn spans(&self, text: &[u8]) -> Vec<(usize, usize)> {
        let view = View::of(text);
        let mut spans: Vec<(usize, usize)> = Vec::new();
        if let Some(long) = &self.long {
            let bytes = view.bytes();
            for m in long.find_iter(bytes) {
                let (mut start, mut end) = (m.start(), m.end());
                let form = self.forms[m.pattern().as_usize()];
                if form.before && start > 0 && is_base64(bytes[start - 1]) {
                    start -= 1;
                }
                if form.after && end < bytes.len() && is_base64(bytes[end]) {
                    end += 1;
                }
                // Padding says how long the secret's tail is.
                while form.base64 && end < bytes.len() && bytes[end] == b'=' && end - m.end() < 3 {
                    end += 1;
                }
                spans.push((view.at(start), view.at(end)));
            }
        }
        if let Some(short) = &self.short {
            let long_spans = spans.len();
            // Overlapping matches, so a rejected match cannot hide an accepted one.
            for m in short.find_overlapping_iter(view.bytes()) {
                let (start, end) = (view.at(m.start()), view.at(m.end()));
                // A long secret's redaction is a boundary too.
                let after_long = spans[..long_spans].iter().any(|s| s.1 == start);
                let before_long = spans[..long_spans].iter().any(|s| s.0 == end);
                if (after_long || !alphanumeric_before(text, start)) && (before_long || !alphanumeric_after(text, end))
                {
                    spans.push((start, end));
                }
            }
        }
        spans.sort_unstable();
        // Overlapping spans become one.
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match merged.last_mut() {
                Some(last) if start < last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
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

/// Text as the redactor matches it: `%XX` decoded, `+` read as a space.
struct View<'a> {
    bytes: Cow<'a, [u8]>,
    /// Where each byte of the view starts in the text, and the text's length
    /// last; `None` when the view is the text.
    starts: Option<Vec<usize>>,
}

impl<'a> View<'a> {
    fn of(text: &'a [u8]) -> Self {
        if memchr::memchr2(b'%', b'+', text).is_none() {
            return Self {
                bytes: Cow::Borrowed(text),
                starts: None,
            };
        }
        let (bytes, starts) = decode(text);
        Self {
            bytes: Cow::Owned(bytes),
            starts: Some(starts),
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The text offset of view offset `i` (`i` may be the view's length).
    fn at(&self, i: usize) -> usize {
        self.starts.as_ref().map_or(i, |s| s[i])
    }
}

/// Decodes `%XX` and folds `+` into a space; returns the view and where each
/// of its bytes starts in `text` (with `text.len()` last).
fn decode(text: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::with_capacity(text.len());
    let mut starts = Vec::with_capacity(text.len() + 1);
    let mut i = 0;
    while i < text.len() {
        starts.push(i);
        match (
            text[i],
            text.get(i + 1).and_then(|&h| hex(h)),
            text.get(i + 2).and_then(|&l| hex(l)),
        ) {
            (b'%', Some(high), Some(low)) => {
                bytes.push(fold_byte(high << 4 | low));
                i += 3;
            }
            (b, _, _) => {
                bytes.push(fold_byte(b));
                i += 1;
            }
        }
    }
    starts.push(text.len());
    (bytes, starts)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `+` and a space are one in form-encoding: the view makes them one everywhere.
fn fold_byte(b: u8) -> u8 {
    if b == b'+' { b' ' } else { b }
}

fn fold(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.iter_mut().for_each(|b| *b = fold_byte(*b));
    bytes
}

/// A secret as the view shows it: its text with `%XX` decoded (when it holds
/// any) and as it is (so the secret written percent-encoded still matches).
fn canonical_forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let decoded = decode(secret).0;
    let folded = fold(secret.to_vec());
    if decoded == folded {
        vec![folded]
    } else {
        vec![decoded, folded]
    }
}

/// The secret's base64 forms, standard and URL-safe, at each of the three
/// alignments it can have inside a longer base64 text: the characters that
/// depend on the secret's bits alone, and whether a character on either side
/// mixes its bits with a neighbour's.
fn base64_forms(secret: &[u8]) -> Vec<(Vec<u8>, Form)> {
    let engines = [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let mut forms = Vec::new();
    for offset in 0..3usize {
        let mut shifted = vec![0u8; offset];
        shifted.extend_from_slice(secret);
        // Character i holds bits [6i, 6i + 6): keep those inside the secret's bits.
        let (first_bit, end_bit) = (8 * offset, 8 * (offset + secret.len()));
        let (first, end) = (first_bit.div_ceil(6), end_bit / 6);
        let form = Form {
            base64: true,
            before: first_bit % 6 != 0,
            after: end_bit % 6 != 0,
        };
        for engine in &engines {
            let encoded = engine.encode(&shifted);
            forms.push((fold(encoded.as_bytes()[first..end].to_vec()), form));
        }
    }
    forms
}

/// A byte a base64 text may hold, as the view shows it (`+` is a space there).
fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'/' | b' ' | b'-' | b'_')
}

/// Whether a letter or digit ends `text[..at]`.
fn alphanumeric_before(text: &[u8], at: usize) -> bool {
    (1..=4.min(at))
        .find_map(|n| std::str::from_utf8(&text[at - n..at]).ok())
        .and_then(|s| s.chars().next_back())
        .is_some_and(char::is_alphanumeric)
}

/// Whether a letter or digit starts `text[at..]`.
fn alphanumeric_after(text: &[u8], at: usize) -> bool {
    (1..=4.min(text.len() - at))
        .find_map(|n| std::str::from_utf8(&text[at..at + n]).ok())
        .and_then(|s| s.chars().next())
        .is_some_and(char::is_alphanumeric)
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
    // Most lines are printable ASCII: nothing to strip.
    if text.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return text.to_owned();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16 * 1024;

    #[test]
    fn short_secrets_are_redacted_only_as_whole_tokens() {
        let r = Redactor::new(["t", "ab12"]);
        assert_eq!(r.redact("the test token is t."), "the test token is [REDACTED].");
        assert_eq!(r.redact("t"), REDACTED);
        assert_eq!(r.redact("xab12 ab12x ab12/ab12"), "xab12 ab12x [REDACTED]/[REDACTED]");
        // Long secrets go wherever they are, even inside words.
        let r = Redactor::new(["correct-horse"]);
        assert_eq!(r.redact("xcorrect-horsey"), "x[REDACTED]y");
        // A short secret beside a long one is still a token.
        let r = Redactor::new(["correct-horse", "4821"]);
        assert_eq!(r.redact("correct-horse4821"), "[REDACTED][REDACTED]");
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
            let text = format!("{}{secret}{}", "x".repeat(MAX + 4096 - pad), "y".repeat(5000));
            let cleaned = r.clean(&text, MAX);
            assert!(cleaned.len() <= MAX + 20);
            for n in 4..=secret.len() {
                assert!(
                    !cleaned.contains(&secret[..n]),
                    "pad {pad}: {n} bytes of the secret survive"
                );
            }
        }
        // Percent-encoded, the secret is three times as long: the window still holds it.
        let encoded: String = secret.bytes().map(|b| format!("%{b:02X}")).collect();
        for pad in 0..60 {
            let text = format!("{}{encoded}{}", "x".repeat(MAX - pad), "y".repeat(5000));
            let cleaned = r.clean(&text, MAX);
            assert!(!cleaned.contains("%61%62%63%64"), "pad {pad}: {cleaned:?}");
        }
        // A short secret the cut turns into a whole token.
        let r = Redactor::new(["4821"]);
        let text = format!("{}4821zz", "x ".repeat(MAX / 2 - 2));
        assert!(!r.clean(&text, MAX).contains("4821"));
    }

    #[test]
    fn long_messages_are_cut_with_a_marker() {
        let cut = sanitize(&"é".repeat(20_000), MAX);
        assert!(cut.len() <= MAX + 20);
        assert!(cut.ends_with("…[truncated]"));
    }

    /// A secret with every character a query string encodes.
    const AWKWARD: &str = "tok+en/with=signs!and space";

    /// Percent-encodes the bytes `encode` picks, in upper or lower hex.
    fn percent(text: &str, encode: impl Fn(u8) -> bool, lower: bool, space: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b' ' => space.to_owned(),
                b if encode(b) && lower => format!("%{b:02x}"),
                b if encode(b) => format!("%{b:02X}"),
                b => (b as char).to_string(),
            })
            .collect()
    }

    #[test]
    fn percent_and_form_encoded_secrets_are_redacted() {
        let r = Redactor::new([AWKWARD]);
        let url = url::Url::parse_with_params("https://api.example/v2?page=1", [("key", AWKWARD)]).unwrap();
        let mut forms = vec![
            // How the url crate and form encoders write it (space as +).
            url.as_str().to_owned(),
            // encodeURIComponent: ! stays, space is %20.
            percent(
                AWKWARD,
                |b| !b.is_ascii_alphanumeric() && !b"-_.!~*'()".contains(&b),
                false,
                "%20",
            ),
            // Everything but letters and digits, lowercase hex.
            percent(AWKWARD, |b| !b.is_ascii_alphanumeric(), true, "%20"),
            // Every byte.
            percent(AWKWARD, |_| true, false, "%20"),
            // Only what a URL parser must encode (the space); + / = ! as they are.
            url::Url::parse(&format!("https://api.example/v2?key={AWKWARD}"))
                .unwrap()
                .to_string(),
        ];
        // A mixture: some signs encoded, some not, in either case.
        forms.push("tok%2Ben%2fwith=signs%21and+space".into());
        for form in &forms {
            let text = format!("GET {form} answered 200");
            let redacted = r.redact(&text);
            assert!(redacted.contains(REDACTED), "{text} -> {redacted}");
            for piece in ["tok", "en%2", "with", "signs", "space"] {
                assert!(!redacted.contains(piece), "{text} -> {redacted}");
            }
        }
        // The JSON log carries the same text: still redacted after cleaning.
        let cleaned = r.clean(&forms[0], 1000);
        assert!(cleaned.ends_with("key=[REDACTED]"), "{cleaned}");
        // A short secret, percent-encoded, is a token too.
        let r = Redactor::new(["4 2+1"]);
        assert_eq!(r.redact("pin=4%202%2B1&x=1"), "pin=[REDACTED]&x=1");
        assert_eq!(r.redact("pin=4+2%2b1"), "pin=[REDACTED]");
    }

    #[test]
    fn base64_secrets_are_redacted_at_any_alignment() {
        let secret = "S3cr3t-T0ken-Xq9?>Zz";
        let r = Redactor::new([secret]);
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for engine in engines {
            for before in ["", "u", "us", "user:", "Bearer "] {
                for after in ["", "x", "xy", "\n{\"ok\":true}"] {
                    let plain = format!("{before}{secret}{after}");
                    let encoded = engine.encode(&plain);
                    let text = format!("Authorization: Basic {encoded} end");
                    let redacted = r.redact(&text);
                    assert!(redacted.contains(REDACTED), "{text}");
                    // Nothing left decodes to any 4 bytes of the secret.
                    let left: String = redacted.replace(REDACTED, " ");
                    for word in left.split(' ') {
                        let word = word.trim_end_matches('=');
                        for cut in 0..4.min(word.len() + 1) {
                            let tail = &word[cut..];
                            let tail = &tail[..tail.len() / 4 * 4];
                            if let Ok(bytes) = base64::engine::general_purpose::STANDARD_NO_PAD
                                .decode(tail)
                                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tail))
                            {
                                let decoded = String::from_utf8_lossy(&bytes);
                                assert!(
                                    !secret
                                        .as_bytes()
                                        .windows(4)
                                        .any(|w| decoded.contains(std::str::from_utf8(w).unwrap())),
                                    "{text} -> {redacted}: {decoded:?} is part of the secret"
                                );
                            }
                        }
                    }
                }
            }
        }
        // The same form percent-encoded in a URL.
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(secret)
            .replace('+', "%2B")
            .replace('/', "%2F");
        assert!(!r.redact(&format!("?t={encoded}")).contains(&encoded[..12]));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_redacted_as_bytes() {
        let secret = "test-bearer-token-here";
        let r = Redactor::new([secret]);
        let mut body = vec![0xff, 0xfe, b'A'];
        body.extend_from_slice(secret.as_bytes());
        body.extend_from_slice(&[0x80, 0x00]);
        let redacted = r.redact_bytes(&body);
        assert_eq!(redacted.as_ref(), b"\xff\xfeA[REDACTED]\x80\x00");
        // UTF-16, either byte order, with or without a byte-order mark.
        for big_endian in [false, true] {
            let mut body: Vec<u8> = if big_endian { vec![0xfe, 0xff] } else { vec![0xff, 0xfe] };
            for u in format!("token {secret}.").encode_utf16() {
                body.extend(if big_endian { u.to_be_bytes() } else { u.to_le_bytes() });
            }
            let redacted = r.redact_bytes(&body);
            let text = String::from_utf8_lossy(&redacted).replace('\0', "");
            assert!(text.contains(REDACTED) && !text.contains("bearer"), "{text:?}");
        }
        // Text that is UTF-8 stays UTF-8.
        let text = format!("é{secret}é");
        assert_eq!(r.redact_bytes(text.as_bytes()).as_ref(), "é[REDACTED]é".as_bytes());
        assert!(matches!(r.redact_bytes(b"nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn honest_text_is_left_alone() {
        let r = Redactor::new(["test-bearer-token-here", "p4ss/w0rd+x=y!", "4821"]);
        for text in [
            "Fetched page 3 (200 rows) in 41 ms",
            "GET https://api.example/v2/suppliers?page=3&updated_after=2024-05-01T09%3A00%3A00Z",
            "a+b=c 100% sure %zz %4",
            "dGVzdC1iZWFyZXI=",
        ] {
            assert_eq!(r.redact(text), text);
        }
    }

    /// Not a test: how long redaction takes on typical lines (run with
    /// `cargo test --release -p nuntiq-host redactor_timing -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn redactor_timing() {
        let secrets = ["test-bearer-token-here-0123", "p4ss/w0rd+x=y!", "4821"];
        let lines = [
            "Fetched page 3 (200 rows) in 41 ms".to_string(),
            "GET https://api.acme-erp.com/v2/suppliers?page=3&per_page=200&updated_after=2024-05-01T09%3A00%3A00Z returned 200".to_string(),
            format!("{{\"data\": [{}]}}", "{\"number\": \"S-10001\", \"name\": \"Acme Widgets B.V.\", \"city\": \"Delft\"},".repeat(25)),
        ];
        let started = std::time::Instant::now();
        let n = 2000;
        for _ in 0..n {
            std::hint::black_box(Redactor::new(secrets));
        }
        eprintln!("new: {:?} each", started.elapsed() / n);
        let r = Redactor::new(secrets);
        for line in &lines {
            let n = 200_000u32;
            let started = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(r.clean(std::hint::black_box(line), MAX));
            }
            eprintln!("clean {} bytes: {:?} each", line.len(), started.elapsed() / n);
        }
    }
}
