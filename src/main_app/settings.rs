//! The configuration: compiled-in defaults (config/default.toml), then an optional file, then
//! `REKLAMA__SECTION__KEY` environment variables. Checked at start-up with messages that name the
//! key at fault; printable with secrets redacted.

use std::net::SocketAddr;
use std::path::Path;

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

use crate::modules::intake::IntakeSettings;
use crate::modules::integrations::WebhookSettings;
use crate::modules::serving::ServingSettings;
use crate::modules::tracking::TrackingSettings;
use crate::platform::cloud::CloudSettings;
use crate::platform::db::{DatabaseSettings, DatabaseUrl};
use crate::platform::events::EventSettings;
use crate::platform::jobs::JobSettings;
use crate::platform::limits::LimitsSettings;
use crate::platform::mail::MailSettings;
use crate::platform::redis::RedisSettings;
use crate::platform::session::SessionSettings;
use crate::platform::telemetry::LogSettings;
use crate::platform::tls::TlsSettings;

const DEFAULTS: &str = include_str!("../../config/default.toml");
const REDACTED: &str = "REDACTED";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub tls: TlsSettings,
    pub database: DatabaseSettings,
    pub cloud: CloudSettings,
    pub redis: RedisSettings,
    pub jobs: JobSettings,
    pub events: EventSettings,
    pub mail: MailSettings,
    pub webhooks: WebhookSettings,
    pub intake: IntakeSettings,
    pub tracking: TrackingSettings,
    pub serving: ServingSettings,
    pub dashboard: SessionSettings,
    pub admin: AdminSettings,
    pub limits: LimitsSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: String,
    /// A second listener for the operations endpoints (`/metrics`, `/readyz`, `/docs`,
    /// `/openapi.json`; `/healthz` too); empty: they stay on `listen`.
    pub admin_listen: String,
    pub public_url: String,
    pub workers: usize,
    pub shutdown_timeout_secs: u64,
    pub max_body_bytes: usize,
    /// Slow clients: how long a new request's head may take to arrive, and how long a closing
    /// connection may take to go; then idle keep-alive, and connection caps.
    pub client_request_timeout_ms: u64,
    pub client_disconnect_timeout_ms: u64,
    pub keep_alive_secs: u64,
    pub max_connections: usize,
    pub backlog: u32,
    /// Every backend call made for a request ends within this many milliseconds of its
    /// arrival; a call that would run past it answers 503 at once.
    pub request_deadline_ms: u64,
}

/// Who may read the operations endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// `Authorization: Bearer <token>` that `/metrics` requires, on whichever listener serves
    /// it; empty: `/metrics` answers anyone who reaches it.
    pub token: String,
}

impl Settings {
    /// Defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        Self::load_with(file, std::env::vars())
    }

    /// Like `load`, with the environment given explicitly (tests).
    pub fn load_with(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = file {
            if !path.exists() {
                anyhow::bail!("--config: {} does not exist", path.display());
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("REKLAMA__"))
            .collect();
        builder = builder.add_source(
            Environment::with_prefix("REKLAMA")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("limits.trusted_proxies")
                .source(Some(env)),
        );
        let settings: Settings = builder
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot; every message starts with the key at fault.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if self.server.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "server.listen: {:?} is not an address such as 127.0.0.1:8080",
                self.server.listen
            ));
        }
        if !self.server.admin_listen.is_empty() {
            match self.server.admin_listen.parse::<SocketAddr>() {
                Err(_) => problems.push(format!(
                    "server.admin_listen: {:?} is not an address such as 10.0.0.5:9090 (or empty)",
                    self.server.admin_listen
                )),
                Ok(admin)
                    if admin.port() != 0
                        && self.server.listen.parse::<SocketAddr>() == Ok(admin) =>
                {
                    problems.push("server.admin_listen: must differ from server.listen".into())
                }
                Ok(_) => {}
            }
        }
        problems.extend(crate::platform::tokens::secret_problem_where_empty_means(
            "admin.token",
            &self.admin.token,
            "/metrics open to whoever reaches it",
        ));
        match url::Url::parse(&self.server.public_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                if u.query().is_some() || u.fragment().is_some() {
                    problems.push("server.public_url: must not have a query or fragment".into());
                }
            }
            _ => problems.push(format!(
                "server.public_url: {:?} is not an absolute http(s) URL",
                self.server.public_url
            )),
        }
        if self.server.client_request_timeout_ms == 0 {
            problems.push(
                "server.client_request_timeout_ms: must be at least 1 (a slow client must not \
                 hold a connection forever)"
                    .into(),
            );
        }
        if self.server.max_connections == 0 {
            problems.push("server.max_connections: must be at least 1".into());
        }
        if self.server.backlog == 0 || i32::try_from(self.server.backlog).is_err() {
            problems.push("server.backlog: must be from 1 to 2147483647".into());
        }
        if self.server.request_deadline_ms == 0 {
            problems.push(
                "server.request_deadline_ms: must be at least 1 (a request must not wait on a \
                 backend forever)"
                    .into(),
            );
        }
        if self.server.max_body_bytes < 1024 {
            problems.push("server.max_body_bytes: must be at least 1024".into());
        }
        problems.extend(self.events.problems());
        problems.extend(self.mail.problems());
        problems.extend(self.webhooks.problems());
        if self.tls.cert.is_empty() != self.tls.key.is_empty() {
            problems.push("tls.cert and tls.key: set both to enable HTTPS, or neither".into());
        }
        if let Err(e) = DatabaseUrl::parse(&self.database.url) {
            problems.push(format!("database.url: {e}"));
        }
        problems.extend(self.database.problems());
        problems.extend(self.cloud.problems());
        if self.cloud.url.trim().is_empty() {
            problems.push("cloud.url: must not be empty".into());
        }
        if self.jobs.workers == 0 {
            problems.push("jobs.workers: must be at least 1".into());
        }
        if self.jobs.max_attempts == 0 {
            problems.push("jobs.max_attempts: must be at least 1".into());
        }
        if self.jobs.lease_secs < 2 {
            problems.push("jobs.lease_secs: must be at least 2".into());
        }
        if !(1..=100).contains(&self.intake.creative_quality) {
            problems.push("intake.creative_quality: must be 1 to 100".into());
        }
        if self.intake.creative_max_width == 0 || self.intake.creative_max_height == 0 {
            problems.push("intake.creative_max_width/height: must be at least 1".into());
        }
        if self.intake.max_image_bytes == 0 {
            problems.push("intake.max_image_bytes: must be at least 1".into());
        }
        let redis_url = self.redis.url.trim();
        if !(redis_url.is_empty()
            || redis_url.starts_with("redis://")
            || redis_url.starts_with("rediss://"))
        {
            problems.push("redis.url: must start with redis:// or rediss:// (or be empty)".into());
        }
        problems.extend(self.tracking.problems());
        problems.extend(self.serving.problems());
        problems.extend(self.dashboard.problems());
        problems.extend(self.limits.problems());
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            problems.push(format!(
                "log.level: {:?} is not a valid filter",
                self.log.level
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("invalid configuration:\n  {}", problems.join("\n  "))
        }
    }

    /// The effective configuration as TOML, with passwords and secret keys replaced.
    pub fn redacted_toml(&self) -> anyhow::Result<String> {
        let mut shown = self.clone();
        shown.database.url = redact_url(&shown.database.url);
        shown.redis.url = redact_url(&shown.redis.url);
        shown.events.amqp_url = redact_url(&shown.events.amqp_url);
        shown.mail.smtp_url = shown.mail.redacted_url(REDACTED);
        if !shown.serving.token_secret.is_empty() {
            shown.serving.token_secret = REDACTED.into();
        }
        if !shown.dashboard.session_secret.is_empty() {
            shown.dashboard.session_secret = REDACTED.into();
        }
        if !shown.admin.token.is_empty() {
            shown.admin.token = REDACTED.into();
        }
        if !shown.cloud.s3_secret_access_key.is_empty() {
            shown.cloud.s3_secret_access_key = REDACTED.into();
        }
        Ok(toml::to_string(&shown)?)
    }
}

/// Hides the password in a URL such as postgres://user:secret@host/db.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some(REDACTED));
            u.to_string()
        }
        _ => raw.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_embedded_single_vm_shape() {
        let s = Settings::load_with(None, env(&[])).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:8080");
        assert_eq!(s.database.url, "sqlite://data/reklama.db");
        assert_eq!(s.cloud.url, "data/cloud");
        assert!(!s.tls.enabled());
    }

    #[test]
    fn slow_client_and_rate_limit_settings_refuse_zero_naming_the_key() {
        let err = Settings::load_with(
            None,
            env(&[("REKLAMA__SERVER__CLIENT_REQUEST_TIMEOUT_MS", "0")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.client_request_timeout_ms"), "{err}");
        let err = Settings::load_with(None, env(&[("REKLAMA__LIMITS__BURST", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.burst"), "{err}");
    }

    #[test]
    fn deadline_defaults_answer_a_request_within_five_seconds() {
        let s = Settings::load_with(None, env(&[])).unwrap();
        assert_eq!(s.server.request_deadline_ms, 4500);
        assert_eq!(s.database.statement_timeout_ms, 3000);
        assert_eq!(s.database.lock_timeout_ms, 2000);
        assert_eq!(s.database.idle_in_transaction_timeout_ms, 10000);
        assert_eq!(s.database.call_timeout_ms, 4000);
        assert_eq!(s.database.max_in_flight, 0);
        assert_eq!(s.database.in_flight_cap(), 16);
        assert_eq!(s.database.queue_timeout_ms, 1000);
        assert_eq!(s.cloud.timeout_ms, 3000);
        assert_eq!(s.cloud.write_timeout_ms, 30000);
        assert_eq!(s.cloud.connect_timeout_ms, 1000);
        assert_eq!(s.cloud.max_retries, 2);
        for (key, value, named) in [
            (
                "REKLAMA__DATABASE__CALL_TIMEOUT_MS",
                "0",
                "database.call_timeout_ms",
            ),
            (
                "REKLAMA__DATABASE__STATEMENT_TIMEOUT_MS",
                "4000",
                "database.statement_timeout_ms",
            ),
            (
                "REKLAMA__DATABASE__QUEUE_TIMEOUT_MS",
                "5000",
                "database.queue_timeout_ms",
            ),
            (
                "REKLAMA__SERVER__REQUEST_DEADLINE_MS",
                "0",
                "server.request_deadline_ms",
            ),
            ("REKLAMA__CLOUD__TIMEOUT_MS", "0", "cloud.timeout_ms"),
            (
                "REKLAMA__CLOUD__WRITE_TIMEOUT_MS",
                "0",
                "cloud.write_timeout_ms",
            ),
            (
                "REKLAMA__CLOUD__CONNECT_TIMEOUT_MS",
                "0",
                "cloud.connect_timeout_ms",
            ),
        ] {
            let err = Settings::load_with(None, env(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{key}={value}: {err}");
        }
    }

    #[test]
    fn the_default_placement_catalogue_is_the_standard_one() {
        let s = Settings::load_with(None, env(&[])).unwrap();
        assert_eq!(
            s.serving.placements,
            crate::domain::Placement::standard_catalogue()
        );
    }

    #[test]
    fn environment_overrides_by_section_and_key() {
        let s = Settings::load_with(
            None,
            env(&[
                ("REKLAMA__DATABASE__URL", "postgres://u:pw@db/reklama"),
                ("REKLAMA__JOBS__WORKERS", "7"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.database.url, "postgres://u:pw@db/reklama");
        assert_eq!(s.jobs.workers, 7);
    }

    #[test]
    fn an_invalid_value_names_its_key() {
        let err = Settings::load_with(None, env(&[("REKLAMA__JOBS__WORKERS", "many")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("workers"), "{err}");
        let err = Settings::load_with(None, env(&[("REKLAMA__SERVER__LISTEN", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.listen"), "{err}");
        let err = Settings::load_with(None, env(&[("REKLAMA__DATABASE__URL", "mysql://x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.url"), "{err}");
    }

    #[test]
    fn trusted_proxies_come_as_a_comma_separated_list() {
        let s = Settings::load_with(
            None,
            env(&[("REKLAMA__LIMITS__TRUSTED_PROXIES", "10.0.0.0/8,fd00::/8")]),
        )
        .unwrap();
        assert_eq!(s.limits.trusted_proxies, ["10.0.0.0/8", "fd00::/8"]);
        assert!(
            Settings::load_with(None, env(&[]))
                .unwrap()
                .limits
                .trusted_proxies
                .is_empty()
        );
        let err = Settings::load_with(
            None,
            env(&[("REKLAMA__LIMITS__TRUSTED_PROXIES", "10.0.0.0/8,lb")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("limits.trusted_proxies"), "{err}");
    }

    #[test]
    fn the_admin_listener_and_token_are_checked_naming_their_setting() {
        let s = Settings::load_with(None, env(&[])).unwrap();
        assert_eq!(s.server.admin_listen, "");
        assert_eq!(s.admin.token, "");
        for (key, value, named) in [
            (
                "REKLAMA__SERVER__ADMIN_LISTEN",
                "metrics",
                "server.admin_listen",
            ),
            (
                "REKLAMA__SERVER__ADMIN_LISTEN",
                "127.0.0.1:8080",
                "server.admin_listen: must differ",
            ),
            (
                "REKLAMA__ADMIN__TOKEN",
                "short",
                "admin.token: must be at least 32",
            ),
            (
                "REKLAMA__ADMIN__TOKEN",
                "admin-token-change-me-0123456789abcdef",
                "admin.token: is a placeholder",
            ),
        ] {
            let err = Settings::load_with(None, env(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{key}={value}: {err}");
        }
        let s = Settings::load_with(
            None,
            env(&[("REKLAMA__SERVER__ADMIN_LISTEN", "127.0.0.1:9090")]),
        )
        .unwrap();
        assert_eq!(s.server.admin_listen, "127.0.0.1:9090");
        // Two ephemeral ports are two ports.
        let s = Settings::load_with(
            None,
            env(&[
                ("REKLAMA__SERVER__LISTEN", "127.0.0.1:0"),
                ("REKLAMA__SERVER__ADMIN_LISTEN", "127.0.0.1:0"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.admin_listen, "127.0.0.1:0");
    }

    #[test]
    fn mail_settings_are_checked_naming_their_key() {
        let s = Settings::load_with(None, env(&[])).unwrap();
        assert_eq!(s.mail.smtp_url, "");
        assert!(!s.mail.enabled());
        for (pairs, named) in [
            (
                vec![("REKLAMA__MAIL__SMTP_URL", "http://relay:25")],
                "mail.smtp_url: must be smtp://",
            ),
            (
                vec![
                    ("REKLAMA__MAIL__SMTP_URL", "smtp://relay:25"),
                    ("REKLAMA__MAIL__FROM", ""),
                ],
                "mail.from: must be set",
            ),
            (
                vec![("REKLAMA__MAIL__FROM", "nobody at all")],
                "mail.from: \"nobody at all\" is not a mailbox",
            ),
            (vec![("REKLAMA__MAIL__TIMEOUT_MS", "0")], "mail.timeout_ms"),
            (
                vec![("REKLAMA__MAIL__TIMEOUT_MS", "3600000")],
                "mail.timeout_ms",
            ),
        ] {
            let err = Settings::load_with(None, env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{pairs:?}: {err}");
        }
        let s = Settings::load_with(
            None,
            env(&[
                ("REKLAMA__MAIL__SMTP_URL", "smtp://user:pw@127.0.0.1:2525"),
                ("REKLAMA__MAIL__FROM", "reklama <noreply@example.com>"),
            ]),
        )
        .unwrap();
        assert!(s.mail.enabled());
    }

    #[test]
    fn a_negative_token_ttl_is_refused_naming_the_key() {
        let err = Settings::load_with(None, env(&[("REKLAMA__SERVING__TOKEN_TTL_SECS", "-1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("token_ttl_secs"), "{err}");
    }

    /// The README's configuration table is the defaults' second home: every default it states
    /// must be the compiled-in one (config/default.toml), so the two cannot drift apart.
    #[test]
    fn the_readmes_configuration_table_states_the_compiled_defaults() {
        let defaults = serde_json::to_value(Settings::load_with(None, env(&[])).unwrap()).unwrap();
        let readme = include_str!("../../README.md");
        let mut checked = Vec::new();
        for line in readme.lines().filter(|l| l.starts_with("| ")) {
            let cells: Vec<&str> = line.split(" | ").collect();
            if cells.len() < 3 || !cells[0].contains('.') || cells[0].contains('/') {
                continue;
            }
            let mut section = "";
            let keys: Vec<(String, String)> = cells[0]
                .trim_start_matches("| ")
                .split(", ")
                .map(|key| match key.split_once('.') {
                    Some((s, k)) => {
                        section = s;
                        (s.to_owned(), k.to_owned())
                    }
                    None => (section.to_owned(), key.to_owned()),
                })
                .collect();
            // What follows a `(` explains the default; the defaults come before it.
            let stated = cells[1].split(" (").next().unwrap_or_default();
            let stated: Vec<&str> = stated.split('`').skip(1).step_by(2).collect();
            if stated.len() != keys.len() || keys.iter().any(|(_, k)| k.contains("...")) {
                continue;
            }
            for ((section, key), stated) in keys.iter().zip(stated) {
                let value = &defaults[section.as_str()][key.as_str()];
                let compiled = match value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                assert!(
                    !value.is_null(),
                    "README names {section}.{key}, which is no setting"
                );
                assert_eq!(compiled, stated, "README's default of {section}.{key}");
                checked.push(format!("{section}.{key}"));
            }
        }
        // The table is parsed, not skipped: most of its rows state plain defaults.
        assert!(
            checked.len() >= 60,
            "only {} defaults checked: {checked:?}",
            checked.len()
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[server]\nlisten_typo = \"x\"\n").unwrap();
        let err = Settings::load_with(Some(&file), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_typo"), "{err}");
    }

    #[test]
    fn events_default_to_off_with_the_reklama_events_exchange_and_no_click_events() {
        let s = Settings::load_with(None, env(&[])).unwrap();
        assert_eq!(s.events.amqp_url, "");
        assert!(!s.events.broker_configured());
        assert_eq!(s.events.exchange, "reklama.events");
        assert!(!s.events.clicks);
    }

    #[test]
    fn event_settings_are_checked_naming_their_key() {
        let err = Settings::load_with(
            None,
            env(&[
                ("REKLAMA__EVENTS__AMQP_URL", "http://mq:5672"),
                ("REKLAMA__EVENTS__EXCHANGE", "no spaces please"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("events.amqp_url"), "{err}");
        assert!(err.contains("events.exchange"), "{err}");
    }

    #[test]
    fn webhook_settings_are_checked_naming_their_key() {
        let s = Settings::load_with(None, env(&[])).unwrap();
        assert!(!s.webhooks.allow_private_targets);
        assert_eq!(s.webhooks.disable_after_hours, 72.0);
        assert_eq!(s.webhooks.timeout_ms, 5000);
        let s = Settings::load_with(
            None,
            env(&[("REKLAMA__WEBHOOKS__DISABLE_AFTER_HOURS", "0.5")]),
        )
        .unwrap();
        assert_eq!(s.webhooks.disable_after_ms(), 1_800_000);
        let err = Settings::load_with(
            None,
            env(&[
                ("REKLAMA__WEBHOOKS__DISABLE_AFTER_HOURS", "0"),
                ("REKLAMA__WEBHOOKS__TIMEOUT_MS", "0"),
                ("REKLAMA__WEBHOOKS__MAX_ATTEMPTS", "0"),
            ]),
        )
        .unwrap_err()
        .to_string();
        for key in [
            "webhooks.disable_after_hours",
            "webhooks.timeout_ms",
            "webhooks.max_attempts",
        ] {
            assert!(err.contains(key), "{key} missing in {err}");
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let mut s = Settings::load_with(None, env(&[])).unwrap();
        s.database.url = "postgres://app:hunter2@db:5432/reklama".into();
        s.cloud.s3_secret_access_key = "wJalrXUtnFEMI".into();
        s.dashboard.session_secret = "dashboard-secret-0123456789abcdefghij".into();
        s.admin.token = "admin-token-0123456789abcdefghijklmn".into();
        s.events.amqp_url = "amqps://reklama:rabbit-pass@mq:5671/%2f".into();
        s.mail.smtp_url = "smtps://relay-user:s3cret-relay@smtp.example.com:465".into();
        let shown = s.redacted_toml().unwrap();
        assert!(!shown.contains("rabbit-pass"), "{shown}");
        assert!(
            shown.contains("amqps://reklama:REDACTED@mq:5671/%2f"),
            "{shown}"
        );
        assert!(!shown.contains("s3cret-relay"), "{shown}");
        assert!(
            shown.contains("smtps://relay-user:REDACTED@smtp.example.com:465"),
            "{shown}"
        );
        assert!(!shown.contains("admin-token"), "{shown}");
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("dashboard-secret"), "{shown}");
        assert!(shown.contains("session_secret = \"REDACTED\""), "{shown}");
        assert!(!shown.contains("wJalrXUtnFEMI"));
        assert!(
            shown.contains("postgres://app:REDACTED@db:5432/reklama"),
            "{shown}"
        );
        assert!(
            shown.contains("s3_secret_access_key = \"REDACTED\""),
            "{shown}"
        );
    }
}
