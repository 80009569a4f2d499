//! The command line: `reklama [serve]`, `migrate`, `check-config`, `customer add|revoke`,
//! `customer set`, `customer key add|list|revoke`, `variants rebuild`, `mail test`, `secret`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use super::{Application, Settings, open_database_for_command};
use crate::platform::auth::{
    Contact, ContactChange, Customers, KeyError, ReportEmail, Scope, email_field,
};
use crate::platform::mail::Email;
use crate::platform::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "reklama",
    version,
    about = "Advertising content under high load, in one binary"
)]
pub struct Cli {
    /// A TOML file overriding the defaults (environment variables REKLAMA__SECTION__KEY win over it).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the effective configuration, secrets redacted, and exit.
    CheckConfig,
    /// Manage customer accounts.
    Customer {
        #[command(subcommand)]
        action: CustomerAction,
    },
    /// Placement variants of adverts.
    Variants {
        #[command(subcommand)]
        action: VariantsAction,
    },
    /// E-mail through `mail.smtp_url`.
    Mail {
        #[command(subcommand)]
        action: MailAction,
    },
    /// Print a fresh signing secret (32 random bytes, base64) for serving.token_secret or
    /// dashboard.session_secret, and exit.
    Secret,
}

#[derive(Debug, Subcommand)]
pub enum VariantsAction {
    /// Re-render every advert's variants (after `[[serving.placements]]` changed). The jobs run
    /// in the worker pool of any running instance, or at the next start.
    Rebuild,
}

#[derive(Debug, Subcommand)]
pub enum MailAction {
    /// Send one test e-mail to ADDRESS now, through mail.smtp_url; exits non-zero with the
    /// server's error when it is not accepted.
    Test { address: String },
}

#[derive(Debug, Subcommand)]
pub enum CustomerAction {
    /// Create a customer; prints the new API key alone on stdout.
    Add {
        name: String,
        /// Where alerts and reports go.
        #[arg(long, value_name = "ADDRESS")]
        email: Option<String>,
        /// The report e-mail the customer gets (needs an address to be sent).
        #[arg(long, value_enum, value_name = "WHEN")]
        report: Option<ReportArg>,
    },
    /// Change a customer's e-mail address or report e-mail, by name or id.
    Set {
        customer: String,
        /// The new address; '' removes it.
        #[arg(long, value_name = "ADDRESS")]
        email: Option<String>,
        #[arg(long, value_enum, value_name = "WHEN")]
        report: Option<ReportArg>,
    },
    /// Revoke a customer, by name or id: every API key it has, and its dashboard sessions.
    Revoke { customer: String },
    /// Manage one customer's API keys.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Give a customer (by name or id) a new API key; prints it alone on stdout.
    Add {
        customer: String,
        /// `read`: GET adverts, variants and reports only; `write`: everything.
        #[arg(long, value_enum)]
        scope: ScopeArg,
        /// A label to tell the customer's keys apart (at most 60 characters).
        #[arg(long)]
        name: Option<String>,
    },
    /// List a customer's live keys: public id, scope, name, made, last used (never a secret).
    List { customer: String },
    /// Revoke one of a customer's keys by its public id (the `rk_<id>` part). The customer's
    /// last write key is kept: `customer revoke` revokes everything.
    Revoke { customer: String, key_id: String },
}

/// `--scope`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    Read,
    Write,
}

impl From<ScopeArg> for Scope {
    fn from(scope: ScopeArg) -> Self {
        match scope {
            ScopeArg::Read => Scope::Read,
            ScopeArg::Write => Scope::Write,
        }
    }
}

/// `--report`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReportArg {
    Off,
    Daily,
    Weekly,
}

impl From<ReportArg> for ReportEmail {
    fn from(report: ReportArg) -> Self {
        match report {
            ReportArg::Off => ReportEmail::Off,
            ReportArg::Daily => ReportEmail::Daily,
            ReportArg::Weekly => ReportEmail::Weekly,
        }
    }
}

/// `--email`, checked: an error naming the option; empty is none.
fn email_arg(raw: Option<&str>) -> anyhow::Result<Option<Option<String>>> {
    raw.map(|raw| {
        email_field("--email", raw).map_err(|e| anyhow::anyhow!("--email: {}", e.message))
    })
    .transpose()
}

fn show_contact(contact: &Contact) -> String {
    format!(
        "e-mail {}, report e-mail {}",
        contact.email.as_deref().unwrap_or("none"),
        contact.report.as_str()
    )
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Needs no configuration: it is how a configuration's secrets are made.
    if matches!(cli.command, Some(Command::Secret)) {
        println!("{}", crate::platform::tokens::fresh_secret());
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("reklama: {e:#}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Some(Command::CheckConfig)) {
        return match settings.redacted_toml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("reklama: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    telemetry::init(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("reklama: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve), settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("reklama: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        }
        Command::Migrate => {
            open_database_for_command(&settings).await?;
            eprintln!("database is up to date");
            Ok(())
        }
        Command::CheckConfig | Command::Secret => Ok(()),
        Command::Variants {
            action: VariantsAction::Rebuild,
        } => {
            let db = open_database_for_command(&settings).await?;
            let queued =
                crate::modules::intake::queue_variants_rebuild(&db, settings.jobs.max_attempts)
                    .await?;
            eprintln!("queued variant rendering for {queued} advert(s)");
            Ok(())
        }
        Command::Mail {
            action: MailAction::Test { address },
        } => mail_test(&settings, &address).await,
        Command::Customer { action } => {
            // Arguments are checked before the database is opened.
            let email = match &action {
                CustomerAction::Add { email, .. } | CustomerAction::Set { email, .. } => {
                    email_arg(email.as_deref())?
                }
                _ => None,
            };
            let customers = Customers::new(open_database_for_command(&settings).await?);
            match action {
                CustomerAction::Add { name, report, .. } => {
                    if name.trim().is_empty() {
                        anyhow::bail!("the customer name must not be empty");
                    }
                    let contact = Contact {
                        email: email.flatten(),
                        report: report.map(ReportEmail::from).unwrap_or_default(),
                    };
                    let issued = customers.create_with_contact(&name, contact).await?;
                    eprintln!(
                        "created customer {} ({}); its API key is shown once, below:",
                        issued.customer.id, issued.customer.name
                    );
                    println!("{}", issued.key);
                    Ok(())
                }
                CustomerAction::Set {
                    customer, report, ..
                } => {
                    if email.is_none() && report.is_none() {
                        anyhow::bail!(
                            "nothing to change: give --email ADDRESS and/or --report WHEN"
                        );
                    }
                    let (id, name) = customers.find(&customer).await.map_err(key_error)?;
                    let change = ContactChange {
                        email,
                        report: report.map(ReportEmail::from),
                    };
                    let Some(contact) = customers.set_contact(id, change).await? else {
                        anyhow::bail!("no active customer named or numbered {customer:?}");
                    };
                    eprintln!("customer {id} ({name}): {}", show_contact(&contact));
                    Ok(())
                }
                CustomerAction::Revoke { customer } => {
                    let n = customers.revoke(&customer).await?;
                    if n == 0 {
                        anyhow::bail!("no active customer named or numbered {customer:?}");
                    }
                    eprintln!("revoked {n} customer(s): every API key, every dashboard session");
                    Ok(())
                }
                CustomerAction::Key { action } => key_command(&customers, action).await,
            }
        }
    }
}

/// `reklama mail test ADDRESS`: one e-mail, sent now.
async fn mail_test(settings: &Settings, address: &str) -> anyhow::Result<()> {
    let mailer = super::wiring::mailer(settings)?;
    if !mailer.enabled() {
        anyhow::bail!("mail is off: set mail.smtp_url (and mail.from) first");
    }
    let email = Email::new(
        address,
        "reklama: test e-mail",
        "This is a test e-mail from reklama: mail.smtp_url works.\n",
        "<!doctype html>\n<html><body>\n<p>This is a test e-mail from <strong>reklama</strong>:\n\
         <code>mail.smtp_url</code> works.</p>\n</body></html>\n",
    )
    .map_err(|e| anyhow::anyhow!("ADDRESS: {e}"))?;
    mailer.send(&email).await?;
    eprintln!("sent a test e-mail to {}", email.to());
    Ok(())
}

async fn key_command(customers: &Customers, action: KeyAction) -> anyhow::Result<()> {
    match action {
        KeyAction::Add {
            customer,
            scope,
            name,
        } => {
            let name = match crate::platform::auth::name_field(name.as_deref()) {
                Ok(name) => name,
                Err(e) => anyhow::bail!("--name: {}", e.message),
            };
            let issued = customers
                .add_key_for(&customer, scope.into(), name)
                .await
                .map_err(key_error)?;
            eprintln!(
                "a new {} key for customer {} ({}), id {}; it is shown once, below:",
                issued.info.scope.as_str(),
                issued.customer.id,
                issued.customer.name,
                issued.info.key_id
            );
            println!("{}", issued.key);
            Ok(())
        }
        KeyAction::List { customer } => {
            let (id, _) = customers.find(&customer).await.map_err(key_error)?;
            for key in customers.keys(id).await? {
                let time = |ms: i64| {
                    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                        .ok()
                        .and_then(|t| {
                            t.format(&time::format_description::well_known::Rfc3339)
                                .ok()
                        })
                        .unwrap_or_default()
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    key.key_id,
                    key.scope.as_str(),
                    time(key.created_at),
                    key.last_used_at.map_or_else(|| "never".to_owned(), time),
                    key.name.unwrap_or_default()
                );
            }
            Ok(())
        }
        KeyAction::Revoke { customer, key_id } => {
            let (id, name) = customers.find(&customer).await.map_err(key_error)?;
            customers.revoke_key(id, &key_id).await.map_err(key_error)?;
            eprintln!("revoked key {key_id} of customer {id} ({name})");
            Ok(())
        }
    }
}

fn key_error(e: KeyError) -> anyhow::Error {
    match e {
        KeyError::NotFound => anyhow::anyhow!("the customer has no such live key"),
        KeyError::LastWriteKey => anyhow::anyhow!(
            "that is the customer's last write key: add another write key first, or use \
             `reklama customer revoke` to revoke the customer altogether"
        ),
        other => anyhow::Error::new(other),
    }
}
