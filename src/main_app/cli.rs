//! The command line: `reklama [serve]`, `migrate`, `check-config`, `customer add|revoke`,
//! `variants rebuild`, `secret`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use super::{Application, Settings, open_database_for_command};
use crate::platform::auth::Customers;
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
pub enum CustomerAction {
    /// Create a customer; prints the new API key alone on stdout.
    Add { name: String },
    /// Revoke the API keys of a customer, by name or id.
    Revoke { customer: String },
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
        Command::Customer { action } => {
            let customers = Customers::new(open_database_for_command(&settings).await?);
            match action {
                CustomerAction::Add { name } => {
                    if name.trim().is_empty() {
                        anyhow::bail!("the customer name must not be empty");
                    }
                    let issued = customers.create(&name).await?;
                    eprintln!(
                        "created customer {} ({}); its API key is shown once, below:",
                        issued.customer.id, issued.customer.name
                    );
                    println!("{}", issued.key);
                    Ok(())
                }
                CustomerAction::Revoke { customer } => {
                    let n = customers.revoke(&customer).await?;
                    if n == 0 {
                        anyhow::bail!("no active customer named or numbered {customer:?}");
                    }
                    eprintln!("revoked the API key of {n} customer(s)");
                    Ok(())
                }
            }
        }
    }
}
