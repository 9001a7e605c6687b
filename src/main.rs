//! The binary's edge: parse the command line, load settings, install logging,
//! and hand over to the library. Errors become one readable line and exit 1.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use warehouse_monitor::{
    api,
    cli::{Cli, Command},
    config::Settings,
    kafka, produce, shutdown, startup, store, telemetry,
};

#[tokio::main]
async fn main() -> ExitCode {
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
    let settings = Settings::load(&cli.config_dir, cli.config.as_deref())?;
    telemetry::init(settings.log.format);
    match cli.command {
        Command::Serve => {
            let stop = shutdown::on_signal();
            let app = startup::Application::build(settings).await?;
            app.run(stop).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let applied = startup::migrate(&settings).await?;
            println!("applied {} migration(s): {applied:?}", applied.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Openapi => Ok(ExitCode::SUCCESS),
        Command::Produce {
            movements,
            seed,
            duplicate_ratio,
            invalid_ratio,
            compression,
        } => {
            let client = kafka::connect(&settings.kafka).await?;
            let k = &settings.kafka;
            let partitions =
                kafka::ensure_topic(&client, &k.topic, k.partitions, k.create_topic).await?;
            let plan = produce::Plan {
                movements,
                seed: seed.unwrap_or_else(rand::random),
                duplicate_ratio,
                invalid_ratio,
            };
            let messages = produce::generate(&plan);
            let total = messages.len();
            let counts =
                produce::produce(&client, &k.topic, &partitions, messages, compression.into())
                    .await?;
            println!(
                "produced {total} records to {}: {counts:?} (partition: records)",
                k.topic
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify => {
            let pool = store::pool(&settings.postgres)?;
            let client = pool.get().await.context("connecting to PostgreSQL")?;
            let report = store::verify::stock(&client).await?;
            println!(
                "checked {} stock rows against {} events",
                report.stock_rows, report.events
            );
            for m in &report.mismatches {
                let stored = m.stored.map_or("missing".to_owned(), |s| s.to_string());
                println!(
                    "MISMATCH warehouse {} product {}: events say {}, stock table says {stored}",
                    m.warehouse_id, m.product_id, m.expected
                );
            }
            if report.mismatches.is_empty() {
                println!("no mismatch");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("{} mismatch(es)", report.mismatches.len());
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
