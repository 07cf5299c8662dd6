//! Outbound network policy: which URLs a connector may fetch, and which
//! addresses a host name may resolve to.
//!
//! The tenant's `config.api_url` opens its own origin over https, nothing more.
//! Only the operator (`--allow-host`, `--allow-private-networks`) can open plain
//! http or a private, loopback or link-local address — a tenant's settings never can.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// One `--allow-host` entry: `HOST`, `HOST:PORT`, `https://HOST[:PORT]` or
/// `http://HOST[:PORT]`. Without a scheme only https is allowed; without a
/// port, the scheme's default port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: &'static str,
    host: Host<String>,
    port: u16,
}

impl AllowedHost {
    pub fn parse(entry: &str) -> Result<Self, String> {
        let with_scheme = if entry.contains("://") {
            entry.to_owned()
        } else {
            format!("https://{entry}")
        };
        let bad = |why: &str| {
            format!(
                "--allow-host {entry:?}: {why}; expected HOST, HOST:PORT, https://HOST[:PORT] \
                 or http://HOST[:PORT] (e.g. api.acme-erp.com or http://127.0.0.1:8080)"
            )
        };
        let url = Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
        let scheme = match url.scheme() {
            "https" => "https",
            "http" => "http",
            _ => return Err(bad("the scheme must be http or https")),
        };
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(bad("it must not carry a path or query"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("it must not carry credentials"));
        }
        let host = url.host().ok_or_else(|| bad("no host"))?.to_owned();
        let port = url.port_or_known_default().ok_or_else(|| bad("no port"))?;
        Ok(Self { scheme, host, port })
    }

    fn matches(&self, scheme: &str, host: &Host<String>, port: u16) -> bool {
        self.scheme == scheme && &self.host == host && self.port == port
    }

    /// The origin of `url` (scheme, host and port) as an entry.
    pub fn origin_of(url: &Url) -> Option<Self> {
        let scheme = match url.scheme() {
            "https" => "https",
            "http" => "http",
            _ => return None,
        };
        Some(Self {
            scheme,
            host: url.host()?.to_owned(),
            port: url.port_or_known_default()?,
        })
    }

    /// Whether `url` is on this origin.
    pub fn matches_url(&self, url: &Url) -> bool {
        url.host()
            .is_some_and(|h| self.matches(url.scheme(), &h.to_owned(), url.port_or_known_default().unwrap_or(0)))
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// The policy for one job.
#[derive(Debug, Clone)]
pub struct NetworkPolicy {
    /// (host, port) of `config.api_url`, reachable over https.
    /// `None` when `config.api_url` is a `file://` URL (offline fixtures).
    api_origin: Option<(Host<String>, u16)>,
    operator: Vec<AllowedHost>,
    allow_private_networks: bool,
    /// A replay: every http(s) URL is answered from the cassette, and no
    /// address is ever connected to.
    replaying: bool,
}

/// A refused request: the message names the host and says what would allow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// What the policy decided for an allowed URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// The operator named this exact host, so it may resolve to private addresses.
    pub operator_allowed: bool,
}

impl NetworkPolicy {
    pub fn new(api_url: &Url, operator: Vec<AllowedHost>, allow_private_networks: bool) -> Self {
        Self {
            api_origin: api_url
                .host()
                .map(|h| (h.to_owned(), api_url.port_or_known_default().unwrap_or(443))),
            operator,
            allow_private_networks,
            replaying: false,
        }
    }

    /// The policy of a `--replay`: nothing leaves the host, so no URL needs
    /// the operator's flags, and the resolver refuses every address.
    pub fn replaying() -> Self {
        Self {
            api_origin: None,
            operator: Vec::new(),
            allow_private_networks: false,
            replaying: true,
        }
    }

    /// Decides whether `url` may be fetched, before any DNS lookup.
    pub fn check_url(&self, url: &Url) -> Result<Allowed, Denied> {
        let scheme = url.scheme();
        if !matches!(scheme, "http" | "https") {
            return Err(Denied(format!(
                "{}: only http(s) URLs can be fetched, not {scheme}:",
                redact_url(url)
            )));
        }
        let Some(host) = url.host().map(|h| h.to_owned()) else {
            return Err(Denied(format!("{}: the URL has no host", redact_url(url))));
        };
        if self.replaying {
            return Ok(Allowed {
                operator_allowed: false,
            });
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let shown = display_host(&host, port);
        let operator_allowed = self.operator.iter().any(|a| a.matches(scheme, &host, port));
        let is_api_origin = self.api_origin.as_ref().is_some_and(|(h, p)| *h == host && *p == port);

        if !operator_allowed {
            if !is_api_origin {
                return Err(Denied(format!(
                    "GET {shown} refused: the host is not config.api_url's origin; \
                     an operator can allow it with --allow-host {}",
                    allow_hint(scheme, &host, port)
                )));
            }
            if scheme != "https" {
                return Err(Denied(format!(
                    "GET {scheme}://{shown} refused: plain http is only allowed when the operator \
                     passes --allow-host http://{shown}"
                )));
            }
            if !self.allow_private_networks && host_is_private(&host) {
                return Err(Denied(format!(
                    "GET {shown} refused: {} is a private, loopback or link-local address, which \
                     config.api_url cannot open; an operator can allow it with --allow-host {}",
                    host,
                    allow_hint(scheme, &host, port)
                )));
            }
        }
        Ok(Allowed {
            operator_allowed: operator_allowed || self.allow_private_networks,
        })
    }

    /// Whether a resolved address may be connected to for a host that was not
    /// named by the operator.
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        !self.replaying && (self.allow_private_networks || !ip_is_private(ip))
    }

    /// Whether `name` was named by the operator (any port), so its resolved
    /// addresses are trusted as they come.
    pub fn name_trusted(&self, name: &str) -> bool {
        !self.replaying
            && (self.allow_private_networks
                || self
                    .operator
                    .iter()
                    .any(|a| matches!(&a.host, Host::Domain(d) if d.eq_ignore_ascii_case(name))))
    }
}

fn display_host(host: &Host<String>, port: u16) -> String {
    format!("{host}:{port}")
}

fn allow_hint(scheme: &str, host: &Host<String>, port: u16) -> String {
    let default = if scheme == "https" { 443 } else { 80 };
    match (scheme, port == default) {
        ("https", true) => host.to_string(),
        ("https", false) => format!("{host}:{port}"),
        (_, true) => format!("{scheme}://{host}"),
        (_, false) => format!("{scheme}://{host}:{port}"),
    }
}

/// The URL without its query string and credentials, for messages and logs.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

fn host_is_private(host: &Host<String>) -> bool {
    match host {
        Host::Ipv4(ip) => ip_is_private(IpAddr::V4(*ip)),
        Host::Ipv6(ip) => ip_is_private(IpAddr::V6(*ip)),
        // Names that always mean this machine, whatever DNS says.
        Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
    }
}

/// Addresses a tenant's connector must never reach unless the operator says so:
/// loopback, private, link-local (cloud metadata), CGNAT, unique-local,
/// unspecified, multicast and reserved ranges — IPv4, IPv6 and IPv4 embedded in IPv6.
pub fn ip_is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_private(v4),
        IpAddr::V6(v6) => v6_is_private(v6),
    }
}

fn v4_is_private(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn v6_is_private(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return v4_is_private(v4);
    }
    let seg = ip.segments();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] == 0x2001 && seg[1] == 0) // Teredo tunnels to arbitrary IPv4
}

/// IPv4 addresses carried inside IPv6: mapped, compatible, NAT64 and 6to4.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let seg = ip.segments();
    let o = ip.octets();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if seg[..6] == [0, 0, 0, 0, 0, 0] && !(seg[6] == 0 && seg[7] <= 1) {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15])); // ::a.b.c.d
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15])); // NAT64
    }
    if seg[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])); // 6to4
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(api: &str, allow: &[&str]) -> NetworkPolicy {
        let allow = allow.iter().map(|a| AllowedHost::parse(a).unwrap()).collect();
        NetworkPolicy::new(&Url::parse(api).unwrap(), allow, false)
    }

    fn check(p: &NetworkPolicy, url: &str) -> Result<Allowed, Denied> {
        p.check_url(&Url::parse(url).unwrap())
    }

    #[test]
    fn api_origin_is_allowed_over_https() {
        let p = policy("https://api.acme-erp.com/v2", &[]);
        assert!(check(&p, "https://api.acme-erp.com/v2/suppliers?page=2").is_ok());
        assert!(check(&p, "https://API.acme-erp.com:443/other").is_ok());
    }

    #[test]
    fn other_hosts_are_denied_with_a_hint() {
        let p = policy("https://api.acme-erp.com/v2", &[]);
        let e = check(&p, "https://evil.example.com/x").unwrap_err().0;
        assert!(e.contains("evil.example.com:443"), "{e}");
        assert!(e.contains("--allow-host evil.example.com"), "{e}");
        // Another port on the same host is another origin.
        assert!(check(&p, "https://api.acme-erp.com:8443/x").is_err());
    }

    #[test]
    fn plain_http_needs_the_operator() {
        let p = policy("http://api.acme-erp.com/v2", &[]);
        let e = check(&p, "http://api.acme-erp.com/v2/suppliers").unwrap_err().0;
        assert!(e.contains("--allow-host http://api.acme-erp.com"), "{e}");
        let p = policy("http://api.acme-erp.com/v2", &["http://api.acme-erp.com"]);
        assert!(check(&p, "http://api.acme-erp.com/v2/suppliers").is_ok());
        // An https entry does not open http.
        let p = policy("http://api.acme-erp.com/v2", &["api.acme-erp.com"]);
        assert!(check(&p, "http://api.acme-erp.com/v2/suppliers").is_err());
    }

    #[test]
    fn api_url_never_opens_private_addresses_by_itself() {
        for api in [
            "https://127.0.0.1/v2",
            "https://localhost/v2",
            "https://169.254.169.254/latest",
            "https://10.0.0.8/v2",
            "https://[::1]/v2",
            "https://[::ffff:127.0.0.1]/v2",
            "https://2130706433/v2",
            "https://0x7f.1/v2",
            "https://100.64.0.1/v2",
            "https://[fd00::1]/v2",
            "https://[fe80::1]/v2",
            "https://0.0.0.0/v2",
        ] {
            let p = policy(api, &[]);
            let e = check(&p, api).expect_err(api).0;
            assert!(e.contains("private, loopback or link-local"), "{api}: {e}");
        }
    }

    #[test]
    fn operator_entry_opens_exactly_that_host_and_port() {
        let p = policy("http://127.0.0.1:8080/v2", &["http://127.0.0.1:8080"]);
        assert_eq!(
            check(&p, "http://127.0.0.1:8080/v2/suppliers").unwrap(),
            Allowed { operator_allowed: true }
        );
        assert!(check(&p, "http://127.0.0.1:8081/v2").is_err());
        assert!(check(&p, "http://127.0.0.2:8080/v2").is_err());
        assert!(check(&p, "http://localhost:8080/v2").is_err());
        assert!(check(&p, "http://[::1]:8080/v2").is_err());
        assert!(check(&p, "http://[::ffff:127.0.0.1]:8080/v2").is_err());
    }

    #[test]
    fn numeric_ipv4_forms_are_normalised_before_the_decision() {
        let p = policy("http://127.0.0.1:8080/v2", &["http://127.0.0.1:8080"]);
        // WHATWG URL parsing turns these into 127.0.0.1, which the operator allowed.
        assert!(check(&p, "http://2130706433:8080/").is_ok());
        assert!(check(&p, "http://0x7f.1:8080/").is_ok());
        assert!(check(&p, "http://0177.0.0.1:8080/").is_ok());
        assert!(check(&p, "http://127.1:8080/").is_ok());
        let p = policy("https://api.acme-erp.com/v2", &[]);
        assert!(check(&p, "https://2130706433/").is_err());
    }

    #[test]
    fn private_ranges_are_classified() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "::127.0.0.1",
        ] {
            assert!(ip_is_private(ip.parse().unwrap()), "{ip} should be private");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!ip_is_private(ip.parse().unwrap()), "{ip} should be public");
        }
    }

    #[test]
    fn allow_host_entries_parse() {
        assert_eq!(
            AllowedHost::parse("api.x.com").unwrap().to_string(),
            "https://api.x.com:443"
        );
        assert_eq!(
            AllowedHost::parse("api.x.com:8443").unwrap().to_string(),
            "https://api.x.com:8443"
        );
        assert_eq!(
            AllowedHost::parse("http://127.0.0.1:9").unwrap().to_string(),
            "http://127.0.0.1:9"
        );
        assert!(AllowedHost::parse("ftp://x.com").is_err());
        assert!(AllowedHost::parse("https://x.com/path").is_err());
        assert!(AllowedHost::parse("").is_err());
    }

    #[test]
    fn names_trusted_only_when_operator_named_them() {
        let p = policy("https://api.acme-erp.com/v2", &["internal.corp:8443"]);
        assert!(p.name_trusted("internal.corp"));
        assert!(!p.name_trusted("api.acme-erp.com"));
        assert!(!p.address_allowed("10.0.0.1".parse().unwrap()));
        assert!(p.address_allowed("8.8.8.8".parse().unwrap()));
    }
}
