//! Looks for ambient authority: files, environment variables, preopened
//! directories, arguments and raw sockets. Succeeds only if it found any.

use nuntiq_connector::{Guest, export_connector, get_config};

struct SandboxEscape;

impl Guest for SandboxEscape {
    fn run() -> Result<String, String> {
        let _run = hostile_kit::open_run();
        let mut found = Vec::new();
        let mut refused = Vec::new();
        let mut note = |what: &str, leaked: Option<String>| match leaked {
            Some(l) => found.push(format!("{what}: {l}")),
            None => refused.push(what.to_owned()),
        };
        note("read /etc/passwd", std::fs::read_to_string("/etc/passwd").ok());
        note("read ./settings.json", std::fs::read_to_string("settings.json").ok());
        note(
            "write /tmp/pwned",
            std::fs::write("/tmp/pwned", b"x").ok().map(|_| "written".into()),
        );
        note(
            "list /",
            std::fs::read_dir("/").ok().map(|d| format!("{} entries", d.count())),
        );
        note(
            "list .",
            std::fs::read_dir(".").ok().map(|d| format!("{} entries", d.count())),
        );
        let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
        note("environment", (!vars.is_empty()).then(|| vars.join(",")));
        note("HOME", std::env::var("HOME").ok());
        let args: Vec<String> = std::env::args().collect();
        note("arguments", (!args.is_empty()).then(|| args.join(" ")));
        let target = get_config("socket_target").unwrap_or_else(|| "127.0.0.1:9".into());
        note(
            "tcp connect",
            std::net::TcpStream::connect(target.as_str())
                .ok()
                .map(|_| format!("connected to {target}")),
        );
        if found.is_empty() {
            Err(format!("no ambient authority: {}", refused.join(", ")))
        } else {
            Ok(format!(r#"{{"leaked": {:?}}}"#, found.join("; ")))
        }
    }
}

export_connector!(SandboxEscape);
