//! The Acme mock's suppliers (also the benchmark's data): seeded, deterministic, deliberately untidy (mixed UTC
//! offsets, fractional seconds, missing fields) — and changeable by tests.

use chrono::{DateTime, Duration, FixedOffset, SecondsFormat, SubsecRound, Utc};
use serde_json::{Value, json};

/// One Acme supplier row as the API serves it.
#[derive(Debug, Clone)]
pub struct Row {
    pub number: String,
    pub updated_at: DateTime<Utc>,
    /// The row as JSON, with `updated_at` rendered as the API would.
    pub json: Value,
}

pub struct Dataset {
    /// Sorted by number: the API pages in this order, which is not `updated_at` order.
    pub rows: Vec<Row>,
    rng: fastrand::Rng,
    next_number: usize,
}

const CITIES: &[(&str, &str)] = &[
    ("Utrecht", "NL"),
    ("Hamburg", "DE"),
    ("Lyon", "FR"),
    ("Gent", "BE"),
    ("Porto", "PT"),
    ("Malmö", "SE"),
];
const FORMS: &[&str] = &["B.V.", "GmbH", "S.A.", "NV", "Lda", "AB"];

impl Dataset {
    /// `count` suppliers updated within the last six days, plus one in fifty
    /// updated weeks ago (outside the default seven-day bootstrap window).
    pub fn seeded(count: usize, seed: u64, now: DateTime<Utc>) -> Self {
        let mut data = Self {
            rows: Vec::with_capacity(count),
            rng: fastrand::Rng::with_seed(seed),
            next_number: 1,
        };
        for i in 0..count {
            let age = if i % 50 == 49 {
                Duration::days(20 + data.rng.i64(0..30))
            } else {
                Duration::seconds(data.rng.i64(60..6 * 24 * 3600))
            };
            data.push_new(now - age);
        }
        data
    }

    fn push_new(&mut self, updated_at: DateTime<Utc>) -> String {
        let n = self.next_number;
        self.next_number += 1;
        let number = format!("ACME-{n:06}");
        let row = self.render(
            &number,
            n,
            &format!("{} Supplies {}", name_stem(n), FORMS[n % FORMS.len()]),
            updated_at,
        );
        let at = self.rows.partition_point(|r| r.number < number);
        self.rows.insert(at, row);
        number
    }

    fn render(&self, number: &str, n: usize, name: &str, updated_at: DateTime<Utc>) -> Row {
        // What the API shows is exactly what it filters on.
        let updated_at = match n % 5 {
            3 => updated_at.trunc_subsecs(0) + Duration::milliseconds(137),
            _ => updated_at.trunc_subsecs(0),
        };
        let mut json = json!({
            "number": number,
            "name": name,
            "vat_number": format!("NL{:09}B01", n),
            "updated_at": render_time(updated_at, n),
        });
        // One in seven rows leaves `active` out (the connector defaults it to true).
        match n % 7 {
            0 => {}
            3 => json["active"] = json!(false),
            _ => json["active"] = json!(true),
        }
        let (city, country) = CITIES[n % CITIES.len()];
        // One in ten has no address, one in ten no country (the connector uses "XX").
        match n % 10 {
            4 => json["address"] = Value::Null,
            8 => json["address"] = json!({"street": format!("{} Canal Street", n % 300 + 1), "city": city}),
            _ => {
                json["address"] =
                    json!({"street": format!("{} Main Street", n % 300 + 1), "city": city, "country": country})
            }
        }
        Row {
            number: number.to_owned(),
            updated_at,
            json,
        }
    }

    /// The stamp of a change made `now`: the previous whole second, as a
    /// source whose clock never runs ahead of ours would write it (even with
    /// the .137 some rows carry). Changes within one second share a stamp, and
    /// a change may land in the second a connector already read.
    fn next_stamp(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.trunc_subsecs(0) - Duration::seconds(1)
    }

    /// Renames `change` existing suppliers (spread over the list) and adds
    /// `insert` new ones, stamped with [`Dataset::next_stamp`].
    pub fn mutate(&mut self, change: usize, insert: usize, now: DateTime<Utc>) -> (Vec<String>, Vec<String>) {
        let stamp = self.next_stamp(now);
        let mut changed = Vec::new();
        let len = self.rows.len();
        for k in 0..change.min(len) {
            let i = (k * len / change.max(1) + self.rng.usize(0..(len / change.max(1)).max(1))).min(len - 1);
            if changed.contains(&self.rows[i].number) {
                continue;
            }
            let number = self.rows[i].number.clone();
            let n: usize = number[5..].parse().unwrap_or(0);
            let renamed = format!(
                "{} (renamed {})",
                self.rows[i].json["name"].as_str().unwrap_or(""),
                stamp.timestamp()
            );
            // Same shape (address present or not, active or not); a new name and city.
            let mut row = self.render(&number, n, &renamed, stamp);
            if let Some(address) = row.json["address"].as_object_mut() {
                address.insert(
                    "city".into(),
                    json!(CITIES[(n + 1 + self.rng.usize(0..5)) % CITIES.len()].0),
                );
            }
            self.rows[i] = row;
            changed.push(number);
        }
        let inserted = (0..insert).map(|_| self.push_new(stamp)).collect();
        (changed, inserted)
    }

    /// Renames supplier `number` and stamps it `updated_at` exactly, even when
    /// that is not after earlier changes (a change in an already-read second).
    /// Returns false when there is no such supplier.
    pub fn touch(&mut self, number: &str, updated_at: DateTime<Utc>, name: &str) -> bool {
        let Some(i) = self.rows.iter().position(|r| r.number == number) else {
            return false;
        };
        let n: usize = number[5..].parse().unwrap_or(0);
        let mut row = self.render(number, n, name, updated_at);
        // `render` keeps whole seconds (or .137); keep the exact stamp asked for.
        row.updated_at = updated_at;
        row.json["updated_at"] = json!(updated_at.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        self.rows[i] = row;
        true
    }

    /// Overwrites fields of supplier `number` as the API shows it (an untidy
    /// source: a string where a boolean belongs, a date that does not parse);
    /// what the API filters on stays the row's real stamp.
    pub fn patch(&mut self, number: &str, fields: &serde_json::Map<String, Value>) -> bool {
        let Some(row) = self.rows.iter_mut().find(|r| r.number == number) else {
            return false;
        };
        for (k, v) in fields {
            row.json[k] = v.clone();
        }
        true
    }

    /// Rows updated strictly after `after` (all rows when `None`), in page order.
    pub fn updated_after(&self, after: Option<DateTime<Utc>>) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(move |r| after.is_none_or(|a| r.updated_at > a))
    }
}

fn name_stem(n: usize) -> &'static str {
    const STEMS: &[&str] = &[
        "Northwind",
        "Contoso",
        "Fabrikam",
        "Globex",
        "Initech",
        "Umbrella",
        "Hooli",
        "Vandelay",
    ];
    STEMS[n % STEMS.len()]
}

/// Untidy on purpose: some stamps carry +02:00 or -05:00 offsets, some fractions.
fn render_time(t: DateTime<Utc>, n: usize) -> String {
    match n % 5 {
        1 => t
            .with_timezone(&FixedOffset::east_opt(2 * 3600).unwrap())
            .to_rfc3339_opts(SecondsFormat::Secs, false),
        2 => t
            .with_timezone(&FixedOffset::west_opt(5 * 3600).unwrap())
            .to_rfc3339_opts(SecondsFormat::Secs, false),
        3 => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        _ => t.to_rfc3339_opts(SecondsFormat::Secs, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeding_is_deterministic_and_sorted_by_number() {
        let now = Utc::now();
        let a = Dataset::seeded(300, 7, now);
        let b = Dataset::seeded(300, 7, now);
        assert_eq!(a.rows.len(), 300);
        assert!(a.rows.windows(2).all(|w| w[0].number < w[1].number));
        assert!(a.rows.iter().zip(&b.rows).all(|(x, y)| x.json == y.json));
        // Not in updated_at order.
        assert!(a.rows.windows(2).any(|w| w[0].updated_at > w[1].updated_at));
    }

    #[test]
    fn mutations_are_newer_than_everything() {
        let now = Utc::now();
        let mut d = Dataset::seeded(100, 1, now);
        let before = d.rows.iter().map(|r| r.updated_at).max().unwrap();
        let (changed, inserted) = d.mutate(3, 2, now);
        assert_eq!((changed.len(), inserted.len()), (3, 2));
        assert_eq!(d.updated_after(Some(before)).count(), 5);
    }
}
