//! The binary's edge: parse the command line, load settings, install logging,
//! and hand over to the library. Errors become one readable line and exit 1.

use std::process::ExitCode;

use clap::Parser;
use warehouse_monitor::{
    api,
    app::{
        check,
        cli::{Cli, Command},
        shutdown, startup, telemetry,
    },
    config::Settings,
    store::Store,
};

/// glibc's malloc and free took 13% of the service's CPU under HTTP load
/// (perf, docs/loadtest/README.md); mimalloc's thread-local pages cost less.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    warehouse_monitor::alloc::tune();
    match run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        println!("{}", api::spec_json());
        return Ok(ExitCode::SUCCESS);
    }
    let mut settings = Settings::load_layered(cli.config_dir.as_deref(), cli.config.as_deref())?;
    if let Command::Config = cli.command {
        print!("{}", settings.to_toml()?);
        return Ok(ExitCode::SUCCESS);
    }
    telemetry::init(settings.log.format);
    match cli.command {
        Command::Openapi | Command::Config => {}
        Command::Serve { role } => {
            settings.role = role.unwrap_or(settings.role);
            let stop = shutdown::on_signal();
            startup::Application::build(settings)
                .await?
                .run(stop)
                .await?;
        }
        Command::Migrate => {
            let (_, applied) = startup::migrate(&settings).await?;
            println!("applied {} migration(s): {applied:?}", applied.len());
        }
        Command::Verify => {
            let report = Store::new(&settings.postgres)?.verify().await?;
            print!("{report}");
            if !report.mismatches.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Check => {
            let report = check::standalone(&settings).await?;
            print!("{report}");
            return Ok(ExitCode::from(report.exit_code()));
        }
    }
    Ok(ExitCode::SUCCESS)
}
