//! The binary's command line, run as a user would.

use std::process::Command;

fn reklama(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reklama"));
    cmd.current_dir(dir)
        .env_remove("RUST_LOG")
        .env(
            "REKLAMA__DATABASE__URL",
            format!("sqlite://{}", dir.join("r.db").display()),
        )
        .env(
            "REKLAMA__CLOUD__URL",
            dir.join("cloud").display().to_string(),
        );
    cmd
}

#[test]
fn customer_add_prints_the_key_alone_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let out = reklama(dir.path())
        .args(["customer", "add", "Acme Travel"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout:?}");
    let key = lines[0];
    assert!(
        key.starts_with("rk_") && key.len() == 3 + 12 + 1 + 32,
        "{key}"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("Acme Travel"), "{stderr}");
    assert!(!stderr.contains(key), "the key is printed once, on stdout");

    let out = reklama(dir.path())
        .args(["customer", "revoke", "Acme Travel"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = reklama(dir.path())
        .args(["customer", "revoke", "Nobody"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn migrate_creates_the_database_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = reklama(dir.path()).arg("migrate").output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(dir.path().join("r.db").exists());
}

#[test]
fn check_config_prints_the_effective_configuration_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prod.toml");
    std::fs::write(
        &file,
        "[server]\npublic_url = \"https://ads.example.com\"\n",
    )
    .unwrap();
    let out = reklama(dir.path())
        .args(["--config", file.to_str().unwrap(), "check-config"])
        .env(
            "REKLAMA__DATABASE__URL",
            "postgres://app:s3cr3t@db.internal:5432/reklama",
        )
        .env("REKLAMA__CLOUD__S3_SECRET_ACCESS_KEY", "AKIAVERYSECRET")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        shown.contains("public_url = \"https://ads.example.com\""),
        "{shown}"
    );
    assert!(
        shown.contains("postgres://app:REDACTED@db.internal:5432/reklama"),
        "{shown}"
    );
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("AKIAVERYSECRET"),
        "{shown}"
    );
}

#[test]
fn an_invalid_value_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = reklama(dir.path())
        .arg("serve")
        .env("REKLAMA__JOBS__WORKERS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("jobs.workers"), "{stderr}");
}
