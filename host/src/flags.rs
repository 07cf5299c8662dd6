//! The per-job choices an operator makes — network policy and limits — in one
//! place: `run-plugin` takes them as flags, a `serve` jobs file as keys of the
//! same names (`allow_hosts`, `timeout`, `max_memory`, …).

use crate::job::JobOptions;
use crate::limits;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Absent means the default the help text names.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
pub struct JobFlags {
    /// Also allow this origin: HOST, HOST:PORT, https://HOST[:PORT] or http://HOST[:PORT].
    /// Needed for plain http and for private or loopback addresses; repeatable.
    #[arg(long = "allow-host", value_name = "HOST[:PORT]")]
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Also send bearer secrets to this origin (same forms as --allow-host);
    /// by default only config.api_url's origin receives them. Repeatable.
    #[arg(long = "bearer-host", value_name = "HOST[:PORT]")]
    #[serde(default)]
    pub bearer_hosts: Vec<String>,
    /// Let connectors reach private, loopback and link-local addresses of allowed hosts.
    #[arg(long)]
    #[serde(default)]
    pub allow_private_networks: bool,
    /// get-secret returns nothing; bearer-secret injection still works.
    #[arg(long)]
    #[serde(default)]
    pub deny_secret_read: bool,
    /// Wall-clock limit for the whole run, host calls included [default: 15m].
    #[arg(long, value_name = "DURATION", value_parser = limits::parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    /// After the deadline or SIGTERM/SIGINT: time to stop the connector, settle
    /// the store and report; also how long a final commit the database did not
    /// answer is tried again [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = limits::parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub grace: Option<Duration>,
    /// Connector memory (linear memory and tables) [default: 256MiB].
    #[arg(long, value_name = "SIZE", value_parser = limits::parse_size)]
    #[serde(default, deserialize_with = "size")]
    pub max_memory: Option<usize>,
    /// Connector log lines per run; later lines are dropped and counted [default: 50000].
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub max_log_lines: Option<u64>,
    /// Connector log bytes per run, likewise [default: 32MiB].
    #[arg(long, value_name = "SIZE", value_parser = limits::parse_size)]
    #[serde(default, deserialize_with = "size")]
    pub max_log_bytes: Option<usize>,
    /// Most HTTP response bodies a run holds at once: one response, or its
    /// pending requests' together [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = limits::parse_size)]
    #[serde(default, deserialize_with = "size")]
    pub max_response_body: Option<usize>,
    /// HTTP requests per run, retries and redirects included [default: 10000].
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub max_requests: Option<u64>,
    /// Rows one run may set aside with delta-run.reject [default: 100].
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub max_rejected: Option<u64>,
    /// Suppliers queued and not yet saved [default: 10000].
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub max_queued_suppliers: Option<usize>,
    /// Host memory the queued suppliers may take [default: 32MiB].
    #[arg(long, value_name = "SIZE", value_parser = limits::parse_size)]
    #[serde(default, deserialize_with = "size")]
    pub max_queued_bytes: Option<usize>,
    /// Data the host copies out of the connector in one call, however its
    /// strings and lists alias [default: 16MiB].
    #[arg(long, value_name = "SIZE", value_parser = limits::parse_size)]
    #[serde(default, deserialize_with = "size")]
    pub max_call_bytes: Option<usize>,
    /// Distinct streams one run may begin [default: 100].
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub max_streams: Option<usize>,
    /// How far past now a timestamp cursor may point [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = limits::parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub max_cursor_skew: Option<Duration>,
    /// A stream's lease: a run is renewed every quarter of it while alive, and
    /// another process may take the stream over once it expires [default: 5m].
    #[arg(long, value_name = "DURATION", value_parser = limits::parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub lease: Option<Duration>,
    /// Host memory the run may hold at once: response bodies, wasi:http
    /// requests and their tasks, queued suppliers, delta runs; past it the
    /// run is stopped (kind limit) [default: 128MiB].
    #[arg(long, value_name = "SIZE", value_parser = limits::parse_size)]
    #[serde(default, deserialize_with = "size")]
    pub max_host_memory: Option<usize>,
    /// Connections (sockets) the run holds at once, http and wasi:http
    /// together; more requests wait for one [default: 16].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Delta runs one run may begin, whatever streams [default: 1000].
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub max_begins: Option<u64>,
    /// Rows one run may hand to the store (suppliers, rejected rows) [default: 5000000].
    #[arg(long, value_name = "N")]
    #[serde(default)]
    pub max_stored_rows: Option<u64>,
    /// Bytes of those rows [default: 4GiB].
    #[arg(long, value_name = "SIZE", value_parser = limits::parse_size)]
    #[serde(default, deserialize_with = "size")]
    pub max_stored_bytes: Option<usize>,
    /// With --db nuntiq+…: the environment variable that holds the Customer
    /// API's token [default: NUNTIQ_API_TOKEN]. The token never comes from
    /// the command line and never reaches the connector.
    #[arg(long, value_name = "NAME", conflicts_with = "api_token_file")]
    #[serde(default)]
    pub api_token_env: Option<String>,
    /// With --db nuntiq+…: a file that holds the Customer API's token.
    #[arg(long, value_name = "PATH")]
    #[serde(default)]
    pub api_token_file: Option<std::path::PathBuf>,
}

impl JobFlags {
    /// The keys a jobs file may use for these flags (each field's name).
    pub const KEYS: [&'static str; 26] = [
        "allow_hosts",
        "bearer_hosts",
        "allow_private_networks",
        "deny_secret_read",
        "timeout",
        "grace",
        "max_memory",
        "max_log_lines",
        "max_log_bytes",
        "max_response_body",
        "max_requests",
        "max_rejected",
        "max_queued_suppliers",
        "max_queued_bytes",
        "max_call_bytes",
        "max_streams",
        "max_cursor_skew",
        "lease",
        "max_host_memory",
        "max_connections",
        "max_begins",
        "max_stored_rows",
        "max_stored_bytes",
        "api_token_env",
        "api_token_file",
        // Not a field: run-plugin takes it, serve sets it for the whole process.
        "max_stack",
    ];

    /// Sets what was given on `options`; the rest keeps its default.
    pub fn apply(&self, options: &mut JobOptions) {
        fn set<T: Clone>(field: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *field = v.clone();
            }
        }
        options.allow_hosts.extend(self.allow_hosts.iter().cloned());
        options.bearer_hosts.extend(self.bearer_hosts.iter().cloned());
        options.allow_private_networks |= self.allow_private_networks;
        options.deny_secret_read |= self.deny_secret_read;
        set(&mut options.limits.timeout, &self.timeout);
        set(&mut options.limits.grace, &self.grace);
        set(&mut options.limits.max_memory_bytes, &self.max_memory);
        set(&mut options.limits.max_log_lines, &self.max_log_lines);
        set(&mut options.limits.max_log_bytes, &self.max_log_bytes.map(|b| b as u64));
        set(&mut options.limits.max_call_bytes, &self.max_call_bytes);
        set(
            &mut options.http.max_body_bytes,
            &self.max_response_body.map(|b| b as u64),
        );
        set(&mut options.http.max_requests, &self.max_requests);
        set(&mut options.suppliers.max_queued, &self.max_queued_suppliers);
        set(&mut options.suppliers.max_queued_bytes, &self.max_queued_bytes);
        set(&mut options.delta.max_streams, &self.max_streams);
        set(&mut options.delta.max_cursor_skew, &self.max_cursor_skew);
        set(&mut options.delta.max_rejected, &self.max_rejected);
        set(&mut options.lease, &self.lease);
        set(&mut options.budget.max_host_memory, &self.max_host_memory.map(|b| b as u64));
        set(&mut options.budget.max_connections, &self.max_connections.map(|n| n as usize));
        set(&mut options.budget.max_begins, &self.max_begins);
        set(&mut options.budget.max_stored_rows, &self.max_stored_rows);
        set(&mut options.budget.max_stored_bytes, &self.max_stored_bytes.map(|b| b as u64));
        if let Some(name) = &self.api_token_env {
            options.api_token = crate::job::ApiTokenSource::Env(name.clone());
        }
        if let Some(path) = &self.api_token_file {
            options.api_token = crate::job::ApiTokenSource::File(path.clone());
        }
    }
}

/// A duration as the flags write it: `15m`, `90s`.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    limits::parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A size as the flags write it (`64MiB`), or a number of bytes.
fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => usize::try_from(n).map(Some).map_err(serde::de::Error::custom),
        Size::Text(text) => limits::parse_size(&text).map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_a_known_key() {
        let mut table = toml::Table::new();
        for key in JobFlags::KEYS.iter().filter(|k| **k != "max_stack") {
            let value: toml::Value = match *key {
                "allow_hosts" | "bearer_hosts" => toml::Value::Array(vec!["h".into()]),
                "api_token_env" | "api_token_file" => "X".into(),
                "allow_private_networks" | "deny_secret_read" => true.into(),
                "timeout" | "grace" | "max_cursor_skew" | "lease" => "1m".into(),
                "max_memory" | "max_log_bytes" | "max_response_body" | "max_queued_bytes" | "max_call_bytes"
                | "max_host_memory" | "max_stored_bytes" => "1MiB".into(),
                _ => 7.into(),
            };
            table.insert((*key).into(), value);
        }
        let flags: JobFlags = toml::Value::Table(table).try_into().unwrap();
        // Every field set from KEYS: a field added without its key fails here.
        let JobFlags {
            allow_hosts,
            bearer_hosts,
            allow_private_networks,
            deny_secret_read,
            timeout,
            grace,
            max_memory,
            max_log_lines,
            max_log_bytes,
            max_response_body,
            max_requests,
            max_rejected,
            max_queued_suppliers,
            max_queued_bytes,
            max_call_bytes,
            max_streams,
            max_cursor_skew,
            lease,
            max_host_memory,
            max_connections,
            max_begins,
            max_stored_rows,
            max_stored_bytes,
            api_token_env,
            api_token_file,
        } = flags;
        assert!(!allow_hosts.is_empty() && !bearer_hosts.is_empty() && allow_private_networks && deny_secret_read);
        assert!(timeout.is_some() && grace.is_some() && max_cursor_skew.is_some() && lease.is_some());
        assert!(max_memory.is_some() && max_log_bytes.is_some() && max_response_body.is_some());
        assert!(max_queued_bytes.is_some() && max_call_bytes.is_some());
        assert!(max_log_lines.is_some() && max_requests.is_some() && max_rejected.is_some());
        assert!(max_queued_suppliers.is_some() && max_streams.is_some());
        assert!(max_host_memory.is_some() && max_connections.is_some() && max_begins.is_some());
        assert!(max_stored_rows.is_some() && max_stored_bytes.is_some());
        assert!(api_token_env.is_some() && api_token_file.is_some());
    }
}
