//! E-mail: messages in plain text and HTML (multipart/alternative), sent over SMTP by the job
//! queue, never by a request.
//!
//! A module that wants to tell a customer something builds an [`Email`] (the address is checked
//! then) and records a `mail.send` job with [`MailQueue::enqueue`] (or [`enqueue`]) inside its
//! own transaction, so the e-mail exists exactly when the change it reports does. A worker of any
//! instance then sends it through [`Mailer`]; a failed send (the relay down, a timeout, a refusal)
//! is retried with the queue's backoff and dead-lettered after `jobs.max_attempts` attempts.
//! Delivery is at least once: a worker that dies between the relay's answer and the job's
//! deletion sends the e-mail again.
//!
//! `mail.smtp_url` empty turns mail off: [`MailQueue::enqueue`] records nothing, and a `mail.send`
//! job already queued (recorded while mail was on) completes without sending.

use std::time::Duration;

use async_trait::async_trait;
use diesel::QueryResult;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

use crate::platform::db::DbConnection;
use crate::platform::jobs::{self, JobHandler};
use crate::platform::tokens::random_base62;

/// The job kind that sends one [`Email`]; its payload is the e-mail as JSON.
pub const SEND_JOB: &str = "mail.send";
/// The longest address accepted (RFC 5321's path limit, less the angle brackets).
pub const MAX_ADDRESS_LEN: usize = 254;
/// `mail.timeout_ms` bounds.
const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=300_000;
/// `smtp://` without a port: the submission port, where relays take mail from programs.
const SUBMISSION_PORT: u16 = 587;
/// `smtps://` without a port: submission over implicit TLS.
const SUBMISSIONS_PORT: u16 = 465;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSettings {
    /// `smtp://[USER:PASSWORD@]HOST[:PORT]` (STARTTLS when the server offers it) or
    /// `smtps://...` (implicit TLS); empty: mail off.
    pub smtp_url: String,
    /// The sender, a mailbox such as `reklama <noreply@example.com>`.
    pub from: String,
    /// The longest a send may take, connecting included.
    pub timeout_ms: u64,
}

impl MailSettings {
    pub fn enabled(&self) -> bool {
        !self.smtp_url.trim().is_empty()
    }

    /// What is wrong with these settings, each message naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.enabled()
            && let Err(e) = Relay::parse(&self.smtp_url)
        {
            problems.push(format!("mail.smtp_url: {e}"));
        }
        if self.enabled() || !self.from.trim().is_empty() {
            match self.from.trim().parse::<Mailbox>() {
                Ok(mailbox) if mailbox.email.to_string().len() <= MAX_ADDRESS_LEN => {}
                Ok(_) => problems.push(format!(
                    "mail.from: the address is longer than {MAX_ADDRESS_LEN} characters"
                )),
                Err(_) if self.from.trim().is_empty() => problems.push(
                    "mail.from: must be set when mail.smtp_url is, e.g. \"reklama <noreply@example.com>\""
                        .into(),
                ),
                Err(e) => problems.push(format!(
                    "mail.from: {:?} is not a mailbox such as \"reklama <noreply@example.com>\" ({e})",
                    self.from
                )),
            }
        }
        if !TIMEOUT_MS.contains(&self.timeout_ms) {
            problems.push(format!(
                "mail.timeout_ms: must be from {} to {}",
                TIMEOUT_MS.start(),
                TIMEOUT_MS.end()
            ));
        }
        problems
    }

    /// `smtp_url` with its password replaced, for printing.
    pub fn redacted_url(&self, redacted: &str) -> String {
        match url::Url::parse(self.smtp_url.trim()) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some(redacted));
                u.to_string()
            }
            _ => self.smtp_url.clone(),
        }
    }
}

/// Where and how to reach the relay, from `mail.smtp_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Relay {
    host: String,
    port: u16,
    /// `smtps://`: TLS from the first byte; else STARTTLS when the server offers it.
    implicit_tls: bool,
    credentials: Option<(String, String)>,
}

impl Relay {
    fn parse(raw: &str) -> Result<Self, String> {
        const SHAPE: &str = "must be smtp://[USER:PASSWORD@]HOST[:PORT] or smtps://..., or empty";
        let url = url::Url::parse(raw.trim()).map_err(|_| SHAPE.to_owned())?;
        let implicit_tls = match url.scheme() {
            "smtp" => false,
            "smtps" => true,
            _ => return Err(SHAPE.to_owned()),
        };
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(SHAPE.to_owned()),
        };
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{SHAPE} (no path, query or fragment)"));
        }
        let decode = |text: &str| {
            percent_decode_str(text)
                .decode_utf8()
                .map(|t| t.into_owned())
                .map_err(|_| "the user name or password is not UTF-8 once decoded".to_owned())
        };
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            ("", Some(_)) => return Err("a password needs a user name (USER:PASSWORD@)".into()),
            (user, password) => Some((decode(user)?, decode(password.unwrap_or_default())?)),
        };
        Ok(Self {
            host,
            port: url.port().unwrap_or(if implicit_tls {
                SUBMISSIONS_PORT
            } else {
                SUBMISSION_PORT
            }),
            implicit_tls,
            credentials,
        })
    }
}

/// Checks an e-mail address: what lettre accepts as one, at most [`MAX_ADDRESS_LEN`] characters.
/// The message is for a person, without the field's name.
pub fn parse_address(raw: &str) -> Result<Address, String> {
    let text = raw.trim();
    if text.is_empty() {
        return Err("is empty".into());
    }
    if text.len() > MAX_ADDRESS_LEN {
        return Err(format!(
            "must be at most {MAX_ADDRESS_LEN} characters (got {})",
            text.len()
        ));
    }
    text.parse::<Address>()
        .map_err(|_| format!("{text:?} is not an e-mail address such as name@example.com"))
}

/// One e-mail to one address, in plain text and HTML. Built with [`Email::new`], which checks
/// the address; serialized as the `mail.send` job's payload `{to, subject, text, html}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Email {
    to: String,
    subject: String,
    text: String,
    html: String,
}

impl Email {
    /// An e-mail to `to` (checked with [`parse_address`]).
    pub fn new(
        to: &str,
        subject: impl Into<String>,
        text: impl Into<String>,
        html: impl Into<String>,
    ) -> Result<Self, String> {
        let to = parse_address(to)?;
        Ok(Self {
            to: to.to_string(),
            subject: subject.into(),
            text: text.into(),
            html: html.into(),
        })
    }

    pub fn to(&self) -> &str {
        &self.to
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The job's payload.
    fn payload(&self) -> String {
        // Four strings always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Records a `mail.send` job for `email`, whatever `mail.smtp_url` says (while mail is off, the
/// job completes without sending). Call it inside the transaction that makes the change the
/// e-mail is about. Prefer [`MailQueue::enqueue`], which records nothing while mail is off.
pub fn enqueue(conn: &mut DbConnection, email: &Email, max_attempts: u32) -> QueryResult<i64> {
    jobs::enqueue(conn, SEND_JOB, &email.payload(), max_attempts)
}

/// What code that sends e-mail needs: whether mail is on, and the attempts a send gets.
#[derive(Debug, Clone, Copy)]
pub struct MailQueue {
    enabled: bool,
    max_attempts: u32,
}

impl MailQueue {
    pub fn new(settings: &MailSettings, max_attempts: u32) -> Self {
        Self {
            enabled: settings.enabled(),
            max_attempts,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Records a `mail.send` job for `email` inside the caller's transaction; the job's id, or
    /// `None` (nothing recorded) while mail is off.
    pub fn enqueue(&self, conn: &mut DbConnection, email: &Email) -> QueryResult<Option<i64>> {
        if !self.enabled {
            tracing::debug!("mail is off (mail.smtp_url is empty): e-mail not queued");
            return Ok(None);
        }
        enqueue(conn, email, self.max_attempts).map(Some)
    }
}

/// Why an e-mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("mail is off: mail.smtp_url is empty")]
    Off,
    #[error("the e-mail cannot be built: {0}")]
    Message(String),
    #[error("no answer from the SMTP server within {0} ms")]
    Timeout(u64),
    #[error("SMTP: {0}")]
    Smtp(String),
}

/// Sends e-mail through `mail.smtp_url`, one connection per e-mail.
#[derive(Clone)]
pub struct Mailer {
    /// `None` while mail is off.
    relay: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    timeout: Duration,
}

impl Mailer {
    /// The mailer for these (validated) settings. `hello` is the name it greets the server with
    /// (the host of `server.public_url`); `None`: `localhost`.
    pub fn from_settings(settings: &MailSettings, hello: Option<&str>) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        if !settings.enabled() {
            return Ok(Self {
                relay: None,
                timeout,
            });
        }
        let relay =
            Relay::parse(&settings.smtp_url).map_err(|e| anyhow::anyhow!("mail.smtp_url: {e}"))?;
        let from: Mailbox = settings
            .from
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("mail.from: {e}"))?;
        let tls = TlsParameters::new(relay.host.clone())
            .map_err(|e| anyhow::anyhow!("mail.smtp_url: TLS: {e}"))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&relay.host)
            .port(relay.port)
            .timeout(Some(timeout))
            .tls(if relay.implicit_tls {
                Tls::Wrapper(tls)
            } else {
                Tls::Opportunistic(tls)
            });
        if let Some(name) = hello.filter(|h| !h.is_empty()) {
            let name = name.trim_start_matches('[').trim_end_matches(']');
            builder = builder.hello_name(match name.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(ip)) => ClientId::Ipv4(ip),
                Ok(std::net::IpAddr::V6(ip)) => ClientId::Ipv6(ip),
                Err(_) => ClientId::Domain(name.to_owned()),
            });
        }
        if let Some((user, password)) = relay.credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(Self {
            relay: Some((builder.build(), from)),
            timeout,
        })
    }

    pub fn enabled(&self) -> bool {
        self.relay.is_some()
    }

    /// The message as it goes on the wire: From, To, Subject, Date, Message-ID, and a
    /// multipart/alternative body (plain text first, HTML second).
    pub fn message(from: &Mailbox, email: &Email) -> Result<Message, MailError> {
        let to = parse_address(&email.to).map_err(|e| MailError::Message(format!("to: {e}")))?;
        // Message-ID on the sender's domain (what a relay and spam filters expect to see).
        let message_id = format!("<{}@{}>", random_base62(24), from.email.domain());
        Message::builder()
            .message_id(Some(message_id))
            .from(from.clone())
            .to(Mailbox::new(None, to))
            .subject(email.subject.as_str())
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(email.text.clone()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(email.html.clone()),
                    ),
            )
            .map_err(|e| MailError::Message(e.to_string()))
    }

    /// Sends `email` now, within `mail.timeout_ms`; the server's refusal as the error.
    pub async fn send(&self, email: &Email) -> Result<(), MailError> {
        let Some((transport, from)) = &self.relay else {
            return Err(MailError::Off);
        };
        let message = Self::message(from, email)?;
        let ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        match tokio::time::timeout(self.timeout, transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(MailError::Smtp(smtp_error(&e))),
            Err(_) => Err(MailError::Timeout(ms)),
        }
    }
}

/// lettre's error with its causes (the server's answer, the connection's failure).
fn smtp_error(error: &lettre::transport::smtp::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The domain of an address, for logs (the whole address is the customer's).
fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, domain)| domain)
}

/// The `mail.send` job: sends one [`Email`].
pub struct SendJob {
    mailer: Mailer,
}

impl SendJob {
    pub fn new(mailer: Mailer) -> Self {
        Self { mailer }
    }
}

#[async_trait]
impl JobHandler for SendJob {
    fn kind(&self) -> &'static str {
        SEND_JOB
    }

    async fn run(&self, payload: &str) -> Result<(), String> {
        let email: Email =
            serde_json::from_str(payload).map_err(|e| format!("bad mail.send payload: {e}"))?;
        if !self.mailer.enabled() {
            tracing::debug!(
                to_domain = domain_of(&email.to),
                "mail is off (mail.smtp_url is empty): e-mail dropped"
            );
            return Ok(());
        }
        self.mailer.send(&email).await.map_err(|e| e.to_string())?;
        tracing::info!(to_domain = domain_of(&email.to), "e-mail sent");
        Ok(())
    }

    async fn dead_lettered(&self, payload: &str, error: &str) {
        let domain = serde_json::from_str::<Email>(payload)
            .map(|e| domain_of(&e.to).to_owned())
            .unwrap_or_default();
        tracing::error!(to_domain = %domain, %error, "e-mail given up");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings(url: &str, from: &str) -> MailSettings {
        MailSettings {
            smtp_url: url.into(),
            from: from.into(),
            timeout_ms: 10_000,
        }
    }

    #[test]
    fn relay_urls_give_host_port_tls_and_credentials() {
        assert_eq!(
            Relay::parse("smtp://mail.example.com").unwrap(),
            Relay {
                host: "mail.example.com".into(),
                port: 587,
                implicit_tls: false,
                credentials: None
            }
        );
        assert_eq!(
            Relay::parse("smtps://us%40r:p%3Ass@127.0.0.1:2465/").unwrap(),
            Relay {
                host: "127.0.0.1".into(),
                port: 2465,
                implicit_tls: true,
                credentials: Some(("us@r".into(), "p:ss".into()))
            }
        );
        assert_eq!(Relay::parse("smtps://relay").unwrap().port, 465);
        for bad in [
            "http://relay",
            "smtp://",
            "relay:25",
            "smtp://relay/path",
            "smtp://relay?tls=1",
            "smtp://:pw@relay",
        ] {
            assert!(Relay::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_name_the_key_at_fault() {
        assert!(settings("", "").problems().is_empty());
        assert!(
            settings("smtp://relay:25", "reklama <noreply@example.com>")
                .problems()
                .is_empty()
        );
        let p = settings("ftp://relay", "noreply@example.com").problems();
        assert!(p[0].starts_with("mail.smtp_url:"), "{p:?}");
        let p = settings("smtp://relay", "").problems();
        assert!(p[0].starts_with("mail.from: must be set"), "{p:?}");
        let p = settings("smtp://relay", "not a mailbox").problems();
        assert!(p[0].starts_with("mail.from:"), "{p:?}");
        let mut s = settings("", "");
        s.timeout_ms = 0;
        assert!(s.problems()[0].starts_with("mail.timeout_ms:"));
    }

    #[test]
    fn addresses_are_checked_and_bounded() {
        assert_eq!(
            parse_address(" ann@example.com ").unwrap().to_string(),
            "ann@example.com"
        );
        assert!(parse_address("").is_err());
        assert!(parse_address("ann").is_err());
        assert!(parse_address("ann@").is_err());
        assert!(parse_address("a b@example.com").is_err());
        assert!(parse_address("ann@example.com\r\nBcc: x@example.com").is_err());
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(parse_address(&long).unwrap_err().contains("at most 254"));
    }

    #[test]
    fn the_password_is_redacted() {
        let s = settings("smtp://ann:hunter2@relay:587", "a@example.com");
        assert_eq!(s.redacted_url("REDACTED"), "smtp://ann:REDACTED@relay:587");
    }

    #[test]
    fn a_message_is_multipart_alternative_text_then_html() {
        let email = Email::new(
            "ann@example.com",
            "Hello",
            "plain words",
            "<p>html words</p>",
        )
        .unwrap();
        let from: Mailbox = "reklama <noreply@example.com>".parse().unwrap();
        let wire = String::from_utf8(Mailer::message(&from, &email).unwrap().formatted()).unwrap();
        assert!(
            wire.contains("From: reklama <noreply@example.com>"),
            "{wire}"
        );
        assert!(wire.contains("To: ann@example.com"), "{wire}");
        assert!(wire.contains("Subject: Hello"), "{wire}");
        assert!(wire.contains("multipart/alternative"), "{wire}");
        assert!(
            wire.contains("@example.com>\r\n"),
            "a Message-ID on the sender's domain: {wire}"
        );
        let text = wire.find("plain words").unwrap();
        let html = wire.find("<p>html words</p>").unwrap();
        assert!(text < html);
        // The payload round-trips as the job's JSON.
        let back: Email = serde_json::from_str(&email.payload()).unwrap();
        assert_eq!(back, email);
    }
}
