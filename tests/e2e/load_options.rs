//! Contract 0.3.0's supplier entity on the SQL stores: bank accounts per
//! location, and the load options (`full-load`, address- and bank-insert-only)
//! carried the same on SQLite and PostgreSQL. The Customer API's side is in
//! `customer_api.rs`.

use nuntiq_e2e::*;
use serde_json::{Value, json};
use std::path::Path;

pub fn bank_settings() -> Value {
    json!({
        "customer_number": "10000001",
        // The loader reaches no API; the host requires an origin all the same.
        "config": {"connector_name": "banks", "api_url": "https://erp.invalid/unused"},
        "job_params": {"count": 3, "tag": "1"}
    })
}

/// Runs the bank-loader fixture against `db` with `params` as `--param`s.
pub fn load_banks(work: &Workdir, db: &str, params: &[&str]) -> Run {
    let settings = work.write_settings("banks.json", &bank_settings());
    let mut args = vec![
        "run-plugin".to_string(),
        guest("bank-loader").to_string_lossy().into_owned(),
        settings.to_string_lossy().into_owned(),
        "--db".into(),
        db.into(),
    ];
    for p in params {
        args.push("--param".into());
        args.push(p.to_string());
    }
    nuntiq_host(args)
}

/// (supplier, bank account number) and (supplier, city), sorted.
fn children(db: &Path) -> (Vec<String>, Vec<String>) {
    let db = Db::open(db);
    let pairs = |sql: &str| -> Vec<String> {
        db.rows(sql)
            .into_iter()
            .map(|r| format!("{}:{}", r[0].clone().unwrap(), r[1].clone().unwrap_or_default()))
            .collect()
    };
    (
        pairs("SELECT supplier_number, bank_account_number FROM supplier_bank_account ORDER BY 1, 2"),
        pairs("SELECT supplier_number, city FROM supplier_address ORDER BY 1, 2"),
    )
}

on_both_engines!(
    bank_accounts_and_load_options_on_sqlite,
    bank_accounts_and_load_options_on_postgres,
    bank_accounts_and_load_options
);

fn bank_accounts_and_load_options(db: &Path) {
    let work = Workdir::new();
    let url = db.to_string_lossy().into_owned();
    let ok = |run: &Run| assert_eq!(run.code, 0, "{}\n{}", run.envelope, run.stderr);

    // A first load: one account and one address per location.
    let first = load_banks(&work, &url, &[]);
    ok(&first);
    let (accounts, cities) = children(db);
    assert_eq!(
        accounts,
        ["B00000:NL00000ACCT1", "B00001:NL00001ACCT1", "B00002:NL00002ACCT1"],
        "{}",
        first.stderr
    );
    assert_eq!(cities, ["B00000:City 1", "B00001:City 1", "B00002:City 1"]);
    assert!(
        !first.stderr.contains("ACCT"),
        "no bank account number is logged: {}",
        first.stderr
    );

    // Insert-only: the new account and address are added, the stored ones kept.
    let added = load_banks(
        &work,
        &url,
        &["tag=2", "bank_insert_only=true", "address_insert_only=true"],
    );
    ok(&added);
    let (accounts, cities) = children(db);
    assert_eq!(accounts.len(), 6, "{accounts:?}");
    assert!(accounts.contains(&"B00001:NL00001ACCT1".to_string()), "{accounts:?}");
    assert!(accounts.contains(&"B00001:NL00001ACCT2".to_string()), "{accounts:?}");
    assert_eq!(cities.len(), 6, "{cities:?}");
    assert!(cities.contains(&"B00002:City 1".to_string()) && cities.contains(&"B00002:City 2".to_string()));

    // The same insert-only run again adds nothing.
    ok(&load_banks(&work, &url, &["tag=2", "bank_insert_only=true", "address_insert_only=true"]));
    assert_eq!(children(db).0.len(), 6);

    // Without the options, a location's accounts and addresses are replaced.
    ok(&load_banks(&work, &url, &["tag=3"]));
    let (accounts, cities) = children(db);
    assert_eq!(accounts, ["B00000:NL00000ACCT3", "B00001:NL00001ACCT3", "B00002:NL00002ACCT3"]);
    assert_eq!(cities, ["B00000:City 3", "B00001:City 3", "B00002:City 3"]);

    // A full load of two suppliers, one per write: the first write deletes the
    // third supplier, the second write keeps the first.
    let full = load_banks(
        &work,
        &url,
        &["count=2", "tag=4", "full_load=true", "save_every=1"],
    );
    ok(&full);
    let stored = Db::open(db).suppliers("10000001");
    assert_eq!(
        stored.keys().cloned().collect::<Vec<_>>(),
        ["B00000", "B00001"],
        "{}",
        full.stderr
    );
    let (accounts, cities) = children(db);
    assert_eq!(accounts, ["B00000:NL00000ACCT4", "B00001:NL00001ACCT4"]);
    assert_eq!(cities, ["B00000:City 4", "B00001:City 4"]);

    // Choosing a full load once suppliers are queued is refused, and names the call.
    let late = load_banks(&work, &url, &["change_full_load_late=true"]);
    assert_eq!(late.code, 1, "{}", late.envelope);
    assert!(
        late.error_message().contains("full-load can only be chosen before the run's first queue call"),
        "{}",
        late.envelope
    );
    assert_eq!(Db::open(db).suppliers("10000001").len(), 2, "nothing of the refused run is written");
}

#[test]
fn a_connector_built_against_the_frozen_0_2_1_contract_runs_on_this_0_3_0_host() {
    let plugin = guest("contract-v0_2_1");
    let (code, out, _) = host_output(&["inspect", plugin.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{out}");
    let found: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(found["compatible"], true, "{found}");
    let imports: Vec<&str> = found["imports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert!(imports.contains(&"nuntiq:connector/http@0.2.1"), "{imports:?}");
    assert!(imports.contains(&"nuntiq:connector/supplier-load@0.2.1"), "{imports:?}");

    let mock = Mock::start(crate::MOCK, 5);
    let work = Workdir::new();
    let settings = work.write_settings("settings.json", &acme_settings(&mock.api_url(), "acme_eu"));
    let run = nuntiq_host([
        "run-plugin",
        plugin.to_str().unwrap(),
        settings.to_str().unwrap(),
        "--db",
        work.db().to_str().unwrap(),
        "--allow-host",
        &mock.allow_host(),
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.envelope, run.stderr);
    assert_eq!(run.envelope["status"], 200, "{}", run.envelope);
    let (accounts, cities) = children(&work.db());
    assert!(accounts.is_empty(), "{accounts:?}");
    assert_eq!(cities, ["V021-1:Utrecht"]);
}
