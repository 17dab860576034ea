//! The example application: applies its embedded changes at start-up and
//! answers the flamingock commands as a subcommand.

use std::process::Command;

fn app(db: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_example-sql-files"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("APP_DB")
        .output()
        .expect("run the example");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn start_up_applies_and_the_subcommand_inspects() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = tmp.path().join("app.db");

    let (code, _, err) = app(&db, &["flamingock", "validate"]);
    assert_eq!(code, 3, "pending before the first start: {err}");

    let (code, out, err) = app(&db, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("serving with 1 user(s)"), "{out}");

    let (code, out, err) = app(&db, &["flamingock", "audit", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("json");
    let ids: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["change_id"].as_str())
        .collect();
    assert_eq!(ids, ["audit-trigger", "create-users", "seed-admin"]);

    let (code, out, _) = app(&db, &["flamingock", "plan"]);
    assert_eq!(code, 0);
    assert!(out.contains("skip (applied)"), "{out}");
    let (code, _, _) = app(&db, &["flamingock", "validate"]);
    assert_eq!(code, 0);
    let (code, _, err) = app(
        &db,
        &[
            "flamingock",
            "audit",
            "fix",
            "seed-admin",
            "--resolution",
            "applied",
            "--reason",
            "x",
            "--operator",
            "ops",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("has no issue to fix"), "{err}");
}
