//! PostgreSQL over TLS, as libpq's `sslmode` has it, against a throw-away
//! cluster each test starts (`initdb`, its own CA and certificates made
//! here, TLS on, a free port on 127.0.0.1, its socket in the test's
//! directory), and libpq's password sources (`PGPASSWORD`, the password file).
//!
//! The cluster's `pg_hba.conf` tells by refusing what a connection was:
//! `nuntiq` may only come in over TLS with a password, `plainonly` only
//! without TLS, `certuser` only with a client certificate the CA signed.

use crate::MOCK;
use nuntiq_e2e::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const PASSWORD: &str = "tls-test-Pa55word";

/// A PostgreSQL cluster of the test's own, stopped when dropped.
struct TlsCluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl TlsCluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();

        // A CA; the server's certificate, for `localhost` only (so 127.0.0.1
        // is a wrong name); a client certificate for `certuser`; and a CA
        // that signed none of them.
        let ca = new_ca("nuntiq test CA");
        let server_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let server = params.signed_by(&server_key, &ca).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "certuser");
        let client = params.signed_by(&client_key, &ca).unwrap();
        let other = new_ca("some other CA");
        write_private(&d.join("ca.pem"), &ca.pem());
        write_private(&d.join("other-ca.pem"), &other.pem());
        write_private(&d.join("server.crt"), &server.pem());
        write_private(&d.join("server.key"), &server_key.serialize_pem());
        write_private(&d.join("client.crt"), &client.pem());
        write_private(&d.join("client.key"), &client_key.serialize_pem());

        // initdb refuses root: as root, the cluster is the `postgres` user's.
        let as_root = unsafe { libc::geteuid() } == 0;
        if as_root {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(d)
                .status()
                .unwrap();
            assert!(status.success(), "chown the cluster's directory to postgres");
        }
        let data = d.join("data");
        run_pg(
            as_root,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let port = free_port();
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{dir}'\n\
             ssl = on\nssl_cert_file = '{dir}/server.crt'\nssl_key_file = '{dir}/server.key'\n\
             ssl_ca_file = '{dir}/ca.pem'\npassword_encryption = 'scram-sha-256'\nfsync = off\n\
             max_connections = 40\nshared_buffers = 16MB\n",
            dir = d.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl certdb certuser 127.0.0.1/32 cert\n\
             hostssl nuntiq nuntiq 127.0.0.1/32 scram-sha-256\n\
             hostnossl plaindb plainonly 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        run_pg(
            as_root,
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                d.join("server.log").to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        let cluster = Self { dir, port };
        let mut admin = cluster.admin();
        // One statement at a time: CREATE DATABASE refuses a transaction block.
        for statement in [
            format!("CREATE ROLE nuntiq LOGIN PASSWORD '{PASSWORD}'"),
            "CREATE DATABASE nuntiq OWNER nuntiq".into(),
            format!("CREATE ROLE plainonly LOGIN PASSWORD '{PASSWORD}'"),
            "CREATE DATABASE plaindb OWNER plainonly".into(),
            "CREATE ROLE certuser LOGIN".into(),
            "CREATE DATABASE certdb OWNER certuser".into(),
        ] {
            admin.batch_execute(&statement).unwrap();
        }
        cluster
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// The superuser, over the cluster's socket (trusted).
    fn admin(&self) -> postgres::Client {
        postgres::Client::connect(
            &format!(
                "host={} port={} user=postgres dbname=postgres",
                self.dir.path().display(),
                self.port
            ),
            postgres::NoTls,
        )
        .unwrap_or_else(|e| panic!("the test cluster does not answer: {e}\n{}", self.log()))
    }

    /// A database of the cluster as the superuser sees it.
    fn db(&self, name: &str) -> postgres::Client {
        postgres::Client::connect(
            &format!(
                "host={} port={} user=postgres dbname={name}",
                self.dir.path().display(),
                self.port
            ),
            postgres::NoTls,
        )
        .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("server.log")).unwrap_or_default()
    }

    /// `postgres://USER@HOST:PORT/DB?QUERY`; `localhost` is reached at
    /// 127.0.0.1 (`hostaddr`), whatever the machine's resolver prefers.
    fn url(&self, user: &str, host: &str, db: &str, query: &str) -> String {
        let mut url = format!("postgres://{user}@{host}:{}/{db}", self.port);
        let mut params: Vec<String> = Vec::new();
        if host == "localhost" {
            params.push("hostaddr=127.0.0.1".into());
        }
        if !query.is_empty() {
            params.push(query.into());
        }
        if !params.is_empty() {
            url.push('?');
            url.push_str(&params.join("&"));
        }
        url
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let as_root = unsafe { libc::geteuid() } == 0;
        let data = self.path("data");
        let mut command = pg_command(as_root, "pg_ctl");
        command.args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"]);
        let _ = command.output();
    }
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Written 0600: the server refuses a key others can read, libpq a password file.
fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

fn pg_command(as_root: bool, program: &str) -> Command {
    let program = format!("{PG_BIN}/{program}");
    if as_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", &program]);
        command
    } else {
        Command::new(program)
    }
}

fn run_pg(as_root: bool, program: &str, args: &[&str]) {
    assert!(
        Path::new(PG_BIN).join(program).exists(),
        "{PG_BIN}/{program} is needed for the TLS tests (PostgreSQL 15's server package)"
    );
    let out = pg_command(as_root, program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An admin command (`runs`) against `url` with `env`: exit code and stderr.
fn runs(url: &str, env: &[(&str, &str)]) -> (i32, String) {
    let mut command = host_command();
    command.args(["runs", "--db", url, "--json"]);
    for var in [
        "PGPASSWORD",
        "PGPASSFILE",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGSSLCERT",
        "PGSSLKEY",
    ] {
        command.env_remove(var);
    }
    command.env("HOME", "/nonexistent");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("nuntiq-host runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
        "the password leaked:\n{stdout}\n{stderr}"
    );
    (out.status.code().expect("exited"), stderr)
}

#[test]
fn every_sslmode_connects_or_refuses_as_libpq_does() {
    let pg = TlsCluster::start();
    let ca = pg.file("ca.pem");
    let other = pg.file("other-ca.pem");
    let pw = [("PGPASSWORD", PASSWORD)];
    let cases: Vec<(String, i32, String)> = vec![
        // disable: no TLS, so only the role that may come in plain gets in.
        (
            pg.url("plainonly", "127.0.0.1", "plaindb", "sslmode=disable"),
            0,
            String::new(),
        ),
        (
            pg.url("nuntiq", "127.0.0.1", "nuntiq", "sslmode=disable"),
            2,
            "no encryption".into(),
        ),
        // prefer and require encrypt (the TLS-only role gets in) and check
        // nothing: this CA is no one's the host knows.
        (
            pg.url("nuntiq", "127.0.0.1", "nuntiq", "sslmode=prefer"),
            0,
            String::new(),
        ),
        (pg.url("nuntiq", "127.0.0.1", "nuntiq", ""), 0, String::new()),
        (
            pg.url("nuntiq", "127.0.0.1", "nuntiq", "sslmode=require"),
            0,
            String::new(),
        ),
        (
            pg.url("plainonly", "127.0.0.1", "plaindb", "sslmode=require"),
            2,
            "SSL encryption".into(),
        ),
        // require with a root certificate checks the chain, as libpq does.
        (
            pg.url(
                "nuntiq",
                "127.0.0.1",
                "nuntiq",
                &format!("sslmode=require&sslrootcert={other}"),
            ),
            2,
            format!("the server's certificate is not signed by the CA in sslrootcert={other}"),
        ),
        // verify-ca: the chain, not the name (the certificate is for localhost).
        (
            pg.url(
                "nuntiq",
                "127.0.0.1",
                "nuntiq",
                &format!("sslmode=verify-ca&sslrootcert={ca}"),
            ),
            0,
            String::new(),
        ),
        (
            pg.url(
                "nuntiq",
                "127.0.0.1",
                "nuntiq",
                &format!("sslmode=verify-ca&sslrootcert={other}"),
            ),
            2,
            format!("the server's certificate is not signed by the CA in sslrootcert={other}"),
        ),
        // verify-full: the chain and the name.
        (
            pg.url(
                "nuntiq",
                "localhost",
                "nuntiq",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            0,
            String::new(),
        ),
        (
            pg.url(
                "nuntiq",
                "127.0.0.1",
                "nuntiq",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            2,
            "the server's certificate is for host localhost, not 127.0.0.1".into(),
        ),
        (
            pg.url(
                "nuntiq",
                "localhost",
                "nuntiq",
                &format!("sslmode=verify-full&sslrootcert={other}"),
            ),
            2,
            format!("the server's certificate is not signed by the CA in sslrootcert={other}"),
        ),
        (
            pg.url("nuntiq", "localhost", "nuntiq", "sslmode=verify-full"),
            2,
            "sslmode=verify-full checks the server's certificate and needs the CA".into(),
        ),
    ];
    for (url, want, says) in &cases {
        let (code, stderr) = runs(url, &pw);
        assert_eq!(code, *want, "{url}: {stderr}");
        assert!(stderr.contains(says.as_str()), "{url}: wanted {says:?} in:\n{stderr}");
        if *want == 2 {
            assert!(stderr.contains("--db postgres://"), "the database is named: {stderr}");
        }
    }

    // A wrong password is refused by the server, and said so.
    let url = pg.url(
        "nuntiq",
        "localhost",
        "nuntiq",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let (code, stderr) = runs(&url, &[("PGPASSWORD", "not-it")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("password authentication failed"), "{stderr}");

    // PGSSLMODE and PGSSLROOTCERT when the URL says nothing; the URL's own settings win.
    let bare = pg.url("nuntiq", "localhost", "nuntiq", "");
    let env = [
        ("PGPASSWORD", PASSWORD),
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", other.as_str()),
    ];
    let (code, stderr) = runs(&bare, &env);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&format!("sslrootcert={other}")), "{stderr}");
    let env = [
        ("PGPASSWORD", PASSWORD),
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", ca.as_str()),
    ];
    let (code, stderr) = runs(&bare, &env);
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = runs(&pg.url("nuntiq", "localhost", "nuntiq", "sslmode=disable"), &env);
    assert_eq!(code, 2, "the URL's sslmode=disable wins over PGSSLMODE: {stderr}");
    assert!(stderr.contains("no encryption"), "{stderr}");
}

#[test]
fn run_plugin_and_admin_commands_work_over_verify_full_with_the_password_in_pgpassword() {
    let pg = TlsCluster::start();
    let url = pg.url(
        "nuntiq",
        "localhost",
        "nuntiq",
        &format!("sslmode=verify-full&sslrootcert={}", pg.file("ca.pem")),
    );
    let mock = Mock::start(MOCK, 300);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let out = host_command()
        .args(acme_args(&mock, &settings, Path::new(&url), &[]))
        .env("PGPASSWORD", PASSWORD)
        .env_remove("PGPASSFILE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let envelope: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(envelope["cursor_committed"].is_string(), "{envelope}");
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));

    // What the run wrote is in the cluster.
    let mut db = pg.db("nuntiq");
    let suppliers: i64 = db.query_one("SELECT count(*) FROM supplier", &[]).unwrap().get(0);
    assert!(suppliers > 0, "the run wrote its suppliers");
    let cursor: Option<String> = db
        .query_one("SELECT committed_cursor_value FROM delta_stream_state", &[])
        .unwrap()
        .get(0);
    assert!(cursor.is_some(), "the run committed its cursor");

    // The admin commands read it over the same connection settings.
    let (code, stdout, stderr) = {
        let out = host_command()
            .args(["state", "show", "--db", &url, "--json"])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(cursor.as_deref().unwrap()),
        "state show has the cursor: {stdout}"
    );
    let out = host_command()
        .args(["runs", "--db", &url, "--json"])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let runs = String::from_utf8_lossy(&out.stdout);
    assert!(runs.contains("acme_eu"), "{runs}");

    // Without the password the server says no, and the host says what to check.
    let out = host_command()
        .args(["runs", "--db", &url])
        .env_remove("PGPASSWORD")
        .env("HOME", "/nonexistent")
        .env_remove("PGPASSFILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("password"));
}

#[test]
fn a_client_certificate_logs_in_where_the_server_asks_for_one() {
    let pg = TlsCluster::start();
    let ca = pg.file("ca.pem");
    let with_cert = format!(
        "sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}",
        pg.file("client.crt"),
        pg.file("client.key")
    );
    let (code, stderr) = runs(&pg.url("certuser", "localhost", "certdb", &with_cert), &[]);
    assert_eq!(code, 0, "{stderr}");

    // The same from PGSSLCERT and PGSSLKEY.
    let url = pg.url(
        "certuser",
        "localhost",
        "certdb",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let (code, stderr) = runs(
        &url,
        &[
            ("PGSSLCERT", &pg.file("client.crt")),
            ("PGSSLKEY", &pg.file("client.key")),
        ],
    );
    assert_eq!(code, 0, "{stderr}");

    // Without one, the server refuses.
    let (code, stderr) = runs(&url, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
}

#[test]
fn the_password_file_is_read_as_libpq_reads_it() {
    let pg = TlsCluster::start();
    let url = pg.url("nuntiq", "localhost", "nuntiq", "sslmode=require");
    let passfile = pg.path("pgpass");
    // The host field is the name connected to; `*` matches any port.
    std::fs::write(
        &passfile,
        format!("# nuntiq\nlocalhost:*:other:nuntiq:wrong\nlocalhost:*:nuntiq:nuntiq:{PASSWORD}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file = passfile.display().to_string();
    let (code, stderr) = runs(&url, &[("PGPASSFILE", &file)]);
    assert_eq!(code, 0, "{stderr}");

    // ~/.pgpass when PGPASSFILE is not set.
    let home = tempfile::tempdir().unwrap();
    std::fs::copy(&passfile, home.path().join(".pgpass")).unwrap();
    std::fs::set_permissions(home.path().join(".pgpass"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, stderr) = runs(&url, &[("HOME", home.path().to_str().unwrap())]);
    assert_eq!(code, 0, "{stderr}");

    // Open to others: ignored, and the failure says why.
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stderr) = runs(&url, &[("PGPASSFILE", &file)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("chmod 0600"), "{stderr}");
}
