//! How the host reaches PostgreSQL, the way libpq does, so operators configure
//! it as they configure `psql`: the URL's own settings first, then libpq's
//! environment variables (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`,
//! `PGPASSWORD`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`), then
//! the password file (`PGPASSFILE`, or `~/.pgpass`). TLS is rustls (the one
//! the HTTP client uses, with the same `ring` provider), following libpq's
//! `sslmode`:
//!
//! | sslmode     | encrypts          | checks the chain | checks the name |
//! |-------------|-------------------|------------------|-----------------|
//! | disable     | no                | –                | –               |
//! | prefer      | if the server can | no               | no              |
//! | require     | yes               | only with a root certificate | no  |
//! | verify-ca   | yes               | yes              | no              |
//! | verify-full | yes               | yes              | yes             |

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // libpq's `allow` tries plain first; a host that wants no TLS says `disable`.
            other => {
                return Err(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the certificates that sign the server's come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    File(PathBuf),
    /// `sslrootcert=system`: the operating system's store.
    System,
}

impl std::fmt::Display for Roots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Roots::File(path) => write!(f, "the CA in sslrootcert={}", path.display()),
            Roots::System => f.write_str("any CA of the system's store (sslrootcert=system)"),
        }
    }
}

/// Everything needed to connect: the driver's settings and the TLS connector.
pub struct Settings {
    pub config: tokio_postgres::Config,
    pub tls: RustlsConnect,
    pub mode: SslMode,
    /// Why a source libpq would read was left out (a password file open to
    /// others), said when the connection then fails.
    pub notes: Vec<String>,
}

/// The settings `url` names, completed from the environment `env` gives
/// (`std::env::var` in the host; a map in tests) and the password file.
pub fn settings(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, String> {
    let (rest, ours) = take_tls_params(url)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
        format!("not a PostgreSQL URL ({e}); the form is postgres://USER@HOST:PORT/DATABASE?sslmode=verify-full")
    })?;
    let get = |key: &str, var: &str| -> Option<String> {
        ours.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .or_else(|| env(var).filter(|v| !v.is_empty()))
    };

    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        if let Some(hosts) = env("PGHOST").filter(|h| !h.is_empty()) {
            for host in hosts.split(',') {
                config.host(host);
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(port) = env("PGPORT").filter(|p| !p.is_empty()) {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("PGPORT={port:?} is not a port number"))?;
            config.port(port);
        }
    }
    if config.get_user().is_none() {
        if let Some(user) = env("PGUSER").filter(|u| !u.is_empty()) {
            config.user(user);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(db) = env("PGDATABASE").filter(|d| !d.is_empty()) {
            config.dbname(db);
        }
    }
    let mut notes = Vec::new();
    if config.get_password().is_none() {
        if let Some(password) = env("PGPASSWORD") {
            config.password(password);
        } else if let Some(password) = password_from_file(&config, env, &mut notes) {
            config.password(password);
        }
    }

    let home = env("HOME").map(PathBuf::from);
    let in_home = |name: &str| {
        home.as_ref()
            .map(|h| h.join(".postgresql").join(name))
            .filter(|p| p.is_file())
    };
    let roots = match get("sslrootcert", "PGSSLROOTCERT") {
        Some(s) if s == "system" => Some(Roots::System),
        Some(path) => Some(Roots::File(PathBuf::from(path))),
        None => in_home("root.crt").map(Roots::File),
    };
    let mode = match get("sslmode", "PGSSLMODE") {
        Some(mode) => SslMode::parse(&mode)?,
        // As libpq 16: the system's store is only worth using with the name checked.
        None if roots == Some(Roots::System) => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    if roots == Some(Roots::System) && mode != SslMode::VerifyFull {
        return Err(format!(
            "sslrootcert=system needs sslmode=verify-full (any public CA can sign for any name), not sslmode={}",
            mode.name()
        ));
    }
    // libpq's rule: with a root certificate at hand, `require` checks the chain as verify-ca does.
    let check = match (mode, &roots) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => Check::Nothing,
        (SslMode::Require | SslMode::VerifyCa, Some(roots)) => Check::Chain(roots.clone()),
        (SslMode::VerifyFull, Some(roots)) => Check::ChainAndName(roots.clone()),
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(format!(
                "sslmode={} checks the server's certificate and needs the CA that signs it: add \
                 sslrootcert=FILE (PEM) to the URL, set PGSSLROOTCERT, put it in ~/.postgresql/root.crt, or use \
                 sslrootcert=system for a public CA",
                mode.name()
            ));
        }
    };
    let client_cert = match (get("sslcert", "PGSSLCERT"), get("sslkey", "PGSSLKEY")) {
        (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
        (Some(_), None) | (None, Some(_)) => {
            return Err("a client certificate needs both sslcert=FILE and sslkey=FILE".into());
        }
        (None, None) => match (in_home("postgresql.crt"), in_home("postgresql.key")) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        },
    };
    config.ssl_mode(match mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    let tls = if mode == SslMode::Disable {
        RustlsConnect::unused()
    } else {
        RustlsConnect::new(check, client_cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())))?
    };
    Ok(Settings {
        config,
        tls,
        mode,
        notes,
    })
}

/// The TLS settings the driver does not know, taken out of the URL's query
/// (decoded), and the URL without them.
fn take_tls_params(url: &str) -> Result<(String, Vec<(String, String)>), String> {
    const OURS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut ours = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if OURS.contains(&key) {
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| format!("{key}= is not UTF-8 once decoded"))?;
            ours.push((key.to_owned(), value.into_owned()));
        } else if key == "sslpassword" || key == "sslcrl" || key == "sslcrldir" {
            return Err(format!("{key}= is not supported by this host; leave it out of the URL"));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, ours))
}

/// The password for this connection in the password file, by libpq's rules:
/// `PGPASSFILE` or `~/.pgpass`; lines `host:port:database:user:password`, `*`
/// matching anything, `\` escaping `:` and `\`, the first match winning; a
/// file readable by group or others is ignored (and said so).
fn password_from_file(
    config: &tokio_postgres::Config,
    env: &dyn Fn(&str) -> Option<String>,
    notes: &mut Vec<String>,
) -> Option<String> {
    let path = match env("PGPASSFILE").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env("HOME")?).join(".pgpass"),
    };
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() {
        notes.push(format!(
            "the password file {} is not a plain file and was not read",
            path.display()
        ));
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            notes.push(format!(
                "the password file {} was not read: it is open to group or others (chmod 0600 it)",
                path.display()
            ));
            return None;
        }
    }
    let text = std::fs::read_to_string(&path).ok()?;
    // libpq matches a socket directory (or no host) as `localhost`.
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => config
            .get_hostaddrs()
            .first()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "localhost".into()),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432).to_string();
    let user = config
        .get_user()
        .map(str::to_owned)
        .or_else(|| env("USER"))
        .unwrap_or_default();
    let db = config.get_dbname().map(str::to_owned).unwrap_or_else(|| user.clone());
    pgpass_lookup(&text, [&host, &port, &db, &user])
}

/// The first line of a password file whose four fields match `wanted`
/// (host, port, database, user).
fn pgpass_lookup(text: &str, wanted: [&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass_line(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = fields[..4]
            .iter()
            .zip(wanted)
            .all(|(field, want)| field == "*" || field == want);
        if matches {
            return Some(fields[4].clone());
        }
    }
    None
}

/// Splits at unescaped `:`; the fifth field (the password) keeps any further
/// colons, as libpq reads it.
fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().unwrap().push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

/// What the client checks of the server's certificate.
#[derive(Debug, Clone)]
enum Check {
    Nothing,
    Chain(Roots),
    ChainAndName(Roots),
}

/// The rustls connector the driver calls for each connection.
#[derive(Clone)]
pub struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    check: Arc<Check>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl RustlsConnect {
    /// For `sslmode=disable`, where the driver never asks for TLS.
    fn unused() -> Self {
        Self::new(Check::Nothing, None).expect("a connector that checks nothing needs no files")
    }

    fn new(check: Check, client_cert: Option<(&Path, &Path)>) -> Result<Self, String> {
        let provider = provider();
        let verifier: Arc<dyn ServerCertVerifier> = match &check {
            Check::Nothing => Arc::new(AcceptAnyCertificate(provider.clone())),
            Check::Chain(roots) => Arc::new(ChainOnly(webpki_verifier(roots, &provider)?)),
            Check::ChainAndName(roots) => webpki_verifier(roots, &provider)?,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS cannot be set up: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("sslcert={}: cannot read a PEM certificate ({e})", cert.display()))?;
                if chain.is_empty() {
                    return Err(format!("sslcert={}: no PEM certificate in it", cert.display()));
                }
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("sslkey={}: cannot read a PEM private key ({e})", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| format!("sslcert/sslkey: the key does not fit the certificate ({e})"))?
            }
        };
        // PostgreSQL 17's direct TLS asks for this protocol name; earlier servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            check: Arc::new(check),
        })
    }
}

fn webpki_verifier(roots: &Roots, provider: &Arc<CryptoProvider>) -> Result<Arc<WebPkiServerVerifier>, String> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslrootcert={}: cannot read PEM certificates ({e})", path.display()))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "sslrootcert={}: no usable CA certificate in it",
                    path.display()
                ));
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("sslrootcert=system: the system's certificate store is empty or unreadable".into());
            }
        }
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .build()
        .map_err(|e| format!("sslrootcert: {e}"))
}

/// `prefer`, and `require` without a root certificate: encrypted, but anyone
/// may be on the other end (as with libpq). The handshake's signatures are
/// still checked, so the session is with the holder of the certificate's key.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted CA; the name is not looked
/// at. WebPKI checks the chain before the name, so a name error means the
/// chain passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsHandshake;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsHandshake, io::Error> {
        let name = match ServerName::try_from(domain.to_owned()) {
            Ok(name) => name,
            // Nothing checks the name: any will do (a socket path has none).
            Err(_) if !matches!(*self.check, Check::ChainAndName(_)) => ServerName::try_from("localhost").unwrap(),
            Err(_) => {
                return Err(io::Error::other(format!(
                    "sslmode=verify-full checks the server's name, and {domain:?} is not a host name or address"
                )));
            }
        };
        Ok(RustlsHandshake {
            config: self.config.clone(),
            check: self.check.clone(),
            name,
            host: domain.to_owned(),
        })
    }
}

/// One connection's handshake.
pub struct RustlsHandshake {
    config: Arc<rustls::ClientConfig>,
    check: Arc<Check>,
    name: ServerName<'static>,
    host: String,
}

impl<S> TlsConnect<S> for RustlsHandshake
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, io::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.config);
            match connector.connect(self.name, stream).await {
                Ok(tls) => Ok(RustlsStream(tls)),
                Err(e) => Err(io::Error::other(explain(&e, &self.check, &self.host))),
            }
        })
    }
}

/// The failed handshake in the operator's words: which check failed.
fn explain(e: &io::Error, check: &Check, host: &str) -> String {
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return format!("the TLS handshake failed: {e}");
    };
    let roots = match check {
        Check::Chain(roots) | Check::ChainAndName(roots) => roots.to_string(),
        Check::Nothing => "a trusted CA".into(),
    };
    match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "the server's certificate is not signed by {roots}: check sslrootcert names the CA that \
                 signed the server's certificate"
            ),
            CertificateError::NotValidForName => {
                format!("the server's certificate is not for host {host} (sslmode=verify-full checks the name)")
            }
            CertificateError::NotValidForNameContext { presented, .. } => format!(
                "the server's certificate is for host {}, not {host} (sslmode=verify-full checks the name: \
                 connect by a name the certificate lists)",
                presented.iter().map(|n| bare_name(n)).collect::<Vec<_>>().join(", ")
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (is this machine's clock right?)".into()
            }
            other => format!("the server's certificate was refused: {other:?}"),
        },
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => {
            "the server asks for a client certificate: give sslcert=FILE and sslkey=FILE".into()
        }
        rustls::Error::AlertReceived(alert) => {
            format!("the server ended the TLS handshake ({alert:?}): is the client certificate one it trusts?")
        }
        other => format!("the TLS handshake failed: {other}"),
    }
}

/// `DnsName("db.internal")` (how the verifier lists a certificate's names) as `db.internal`.
fn bare_name(presented: &str) -> &str {
    let inner = match (presented.find('('), presented.rfind(')')) {
        (Some(open), Some(close)) if open < close => &presented[open + 1..close],
        _ => presented,
    };
    inner.trim_matches('"')
}

/// A TLS connection to the server.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    /// No `tls-server-end-point` binding: SCRAM then runs without `-PLUS`,
    /// which is what the driver does when a server offers both.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn certificate_names_are_shown_bare() {
        assert_eq!(bare_name("DnsName(\"db.internal\")"), "db.internal");
        assert_eq!(bare_name("IpAddress(10.0.0.5)"), "10.0.0.5");
        assert_eq!(bare_name("db.internal"), "db.internal");
    }

    #[test]
    fn tls_settings_leave_the_url_and_are_decoded() {
        let (rest, ours) =
            take_tls_params("postgres://u@h/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca%20a.pem")
                .unwrap();
        assert_eq!(rest, "postgres://u@h/db?application_name=x");
        assert_eq!(
            ours,
            vec![
                ("sslmode".to_string(), "verify-full".to_string()),
                ("sslrootcert".to_string(), "/tmp/ca a.pem".to_string())
            ]
        );
    }

    #[test]
    fn url_settings_win_over_the_environment() {
        let env = env_of(&[
            ("PGPASSWORD", "from-env"),
            ("PGUSER", "envuser"),
            ("PGHOST", "envhost"),
            ("PGPORT", "6543"),
            ("PGDATABASE", "envdb"),
            ("PGSSLMODE", "disable"),
        ]);
        let s = settings("postgres://app:inurl@db.internal:5433/nuntiq?sslmode=require", &env).unwrap();
        assert_eq!(s.config.get_password(), Some(&b"inurl"[..]));
        assert_eq!(s.config.get_user(), Some("app"));
        assert_eq!(s.config.get_dbname(), Some("nuntiq"));
        assert_eq!(s.config.get_ports(), &[5433]);
        assert_eq!(s.mode, SslMode::Require);

        let s = settings("postgres:///", &env).unwrap();
        assert_eq!(s.config.get_password(), Some(&b"from-env"[..]));
        assert_eq!(s.config.get_user(), Some("envuser"));
        assert_eq!(s.config.get_dbname(), Some("envdb"));
        assert_eq!(s.config.get_ports(), &[6543]);
        assert_eq!(
            s.config.get_hosts(),
            &[tokio_postgres::config::Host::Tcp("envhost".into())]
        );
        assert_eq!(s.mode, SslMode::Disable);
    }

    #[test]
    fn prefer_is_the_default_and_verifying_needs_a_root_certificate() {
        let none = env_of(&[]);
        assert_eq!(settings("postgres://u@h/db", &none).unwrap().mode, SslMode::Prefer);
        for mode in ["verify-ca", "verify-full"] {
            let e = settings(&format!("postgres://u@h/db?sslmode={mode}"), &none)
                .err()
                .unwrap();
            assert!(e.contains("sslrootcert") && e.contains(mode), "{e}");
        }
        let e = settings("postgres://u@h/db?sslmode=allow", &none).err().unwrap();
        assert!(e.contains("sslmode=allow"), "{e}");
        let e = settings(
            "postgres://u@h/db?sslmode=require&sslrootcert=/nonexistent/ca.pem",
            &none,
        )
        .err()
        .unwrap();
        assert!(e.contains("sslrootcert=/nonexistent/ca.pem"), "{e}");
        let e = settings("postgres://u@h/db?sslmode=verify-ca&sslrootcert=system", &none)
            .err()
            .unwrap();
        assert!(e.contains("verify-full"), "{e}");
        let e = settings("postgres://u@h/db?sslcert=/x.pem", &none).err().unwrap();
        assert!(e.contains("sslkey"), "{e}");
    }

    #[test]
    fn the_password_file_follows_libpq() {
        let text = "# comment\n\
                    other:5432:*:app:wrong\n\
                    db.internal:5432:nuntiq:app:pa\\:ss\\\\word:x\n\
                    *:*:*:app:fallback\n";
        assert_eq!(
            pgpass_lookup(text, ["db.internal", "5432", "nuntiq", "app"]).as_deref(),
            Some("pa:ss\\word:x")
        );
        assert_eq!(
            pgpass_lookup(text, ["elsewhere", "1", "x", "app"]).as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_lookup(text, ["db.internal", "5432", "nuntiq", "bob"]), None);
    }

    #[test]
    fn a_password_file_open_to_others_is_ignored_and_said_so() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "db.internal:5432:nuntiq:app:secret\n").unwrap();
        let path = file.display().to_string();
        let env = env_of(&[("PGPASSFILE", path.as_str())]);

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = settings("postgres://app@db.internal/nuntiq", &env).unwrap();
        assert_eq!(s.config.get_password(), Some(&b"secret"[..]));
        assert!(s.notes.is_empty());

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let s = settings("postgres://app@db.internal/nuntiq", &env).unwrap();
        assert_eq!(s.config.get_password(), None);
        assert!(s.notes[0].contains("chmod 0600"), "{:?}", s.notes);

        // PGPASSWORD comes before the file.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let env = env_of(&[("PGPASSFILE", path.as_str()), ("PGPASSWORD", "env")]);
        let s = settings("postgres://app@db.internal/nuntiq", &env).unwrap();
        assert_eq!(s.config.get_password(), Some(&b"env"[..]));
    }
}
