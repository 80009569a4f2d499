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

#[test]
fn reklama_secret_prints_a_fresh_32_byte_secret() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        // No configuration needed, not even a valid one.
        let out = reklama(dir.path())
            .arg("secret")
            .env("REKLAMA__JOBS__WORKERS", "0")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (a, b) = (run(), run());
    assert_ne!(a, b);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&a)
        .unwrap();
    assert_eq!(bytes.len(), 32, "{a}");
    // What it prints is accepted where a secret is asked for.
    let out = reklama(dir.path())
        .arg("check-config")
        .env("REKLAMA__SERVING__TOKEN_SECRET", &a)
        .env("REKLAMA__DASHBOARD__SESSION_SECRET", &b)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn short_or_placeholder_secrets_stop_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    for (setting, env, value) in [
        (
            "serving.token_secret",
            "REKLAMA__SERVING__TOKEN_SECRET",
            "short",
        ),
        (
            "serving.token_secret",
            "REKLAMA__SERVING__TOKEN_SECRET",
            "CHANGE-ME",
        ),
        (
            "serving.token_secret",
            "REKLAMA__SERVING__TOKEN_SECRET",
            "local-compose-token-secret-change-me",
        ),
        (
            "dashboard.session_secret",
            "REKLAMA__DASHBOARD__SESSION_SECRET",
            "CHANGE-ME-CHANGE-ME-CHANGE-ME-CHANGE-ME",
        ),
        (
            "dashboard.session_secret",
            "REKLAMA__DASHBOARD__SESSION_SECRET",
            "0123456789",
        ),
    ] {
        let out = reklama(dir.path())
            .arg("serve")
            .env(env, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{setting}={value}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(setting), "{setting}={value}: {stderr}");
        assert!(
            !stderr.contains(value),
            "the value is not printed: {stderr}"
        );
    }
}
