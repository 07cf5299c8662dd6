//! Output that cannot be forged or leak: job names that would forge metrics,
//! dry-run copies, CSV cells a spreadsheet would run, and NUL bytes, the same
//! on both engines.

use nuntiq_e2e::*;

#[test]
fn serve_refuses_a_job_name_that_could_forge_metrics() {
    for name in ["trail\\", "x\"} 99999 # fake", "two\nlines"] {
        let work = Workdir::new();
        let jobs = work.path("jobs.toml");
        let quoted = serde_json::to_string(name).unwrap();
        std::fs::write(
            &jobs,
            format!("[[job]]\nname = {quoted}\nplugin = \"p.wasm\"\nsettings = \"s.json\"\nevery = \"1m\"\n"),
        )
        .unwrap();
        let db = work.db();
        let (code, _, stderr) = host_output(&["serve", jobs.to_str().unwrap(), "--db", db.to_str().unwrap()]);
        assert_eq!(code, 2, "{name:?}: {stderr}");
        // Named as the jobs file spells it, escaped.
        let named = format!("job {name:?}: name must be 1 to 128 ASCII letters, digits, '_', '-' and '.'");
        assert!(stderr.contains(&named), "{name:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line, nothing forged: {stderr}");
        assert!(!db.exists(), "nothing was started, not even the store");
    }
}
