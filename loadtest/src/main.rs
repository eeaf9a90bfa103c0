//! The `switchboard-loadtest` binary: parses the command line and runs a scenario.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use switchboard_loadtest::cli::{Cli, Common, Scenario};
use switchboard_loadtest::report::Summary;
use switchboard_loadtest::{config, limits, scenario, workers};

fn main() -> ExitCode {
    // Before any thread starts: the file's options become environment defaults.
    let args: Vec<String> = std::env::args().collect();
    if let Err(e) = config::apply(&args) {
        eprintln!("switchboard-loadtest: {e}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    if let Some(problem) = cli.scenario.refusal() {
        Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, problem)
            .exit();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchboard-loadtest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("switchboard-loadtest: a target was missed (--strict)");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("switchboard-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the scenario; `false` when `--strict` and a target was missed.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let (summary, common) = match cli.scenario {
        Scenario::Worker => return workers::worker_main().await.map(|()| true),
        Scenario::Presence { presence } => {
            let summary = scenario::presence::run(&presence).await?;
            println!("{}", summary.table());
            if let Some(path) = &presence.json {
                std::fs::write(path, serde_json::to_vec_pretty(&summary)?)?;
            }
            let problems = summary.problems(presence.url.is_some());
            if !problems.is_empty() {
                anyhow::bail!("presence counts are wrong: {}", problems.join("; "));
            }
            return Ok(true);
        }
        Scenario::Webhooks { webhooks } => {
            let summary = scenario::webhooks::run(&webhooks).await?;
            println!("{}", summary.table());
            if let Some(path) = &webhooks.json {
                std::fs::write(path, serde_json::to_vec_pretty(&summary)?)?;
            }
            let problems = summary.problems();
            if !problems.is_empty() {
                anyhow::bail!("webhooks are wrong: {}", problems.join("; "));
            }
            return Ok(true);
        }
        Scenario::Api { common, api } => {
            limits::raise_nofile();
            let summary = scenario::api::run(&common, &api).await?;
            println!("{}", summary.table());
            if let Some(path) = &common.json {
                std::fs::write(path, serde_json::to_vec_pretty(&summary)?)?;
            }
            let problems = summary.problems();
            if !problems.is_empty() {
                anyhow::bail!("API calls failed: {}", problems.join("; "));
            }
            return Ok(true);
        }
        Scenario::Floor { floor } => {
            let summary = scenario::floor::run(&floor).await?;
            println!("{}", summary.table());
            if let Some(path) = &floor.json {
                std::fs::write(path, serde_json::to_vec_pretty(&summary)?)?;
            }
            if summary.lost > 0 || summary.out_of_order > 0 {
                anyhow::bail!(
                    "loopback lost {} and reordered {} messages",
                    summary.lost,
                    summary.out_of_order
                );
            }
            return Ok(true);
        }
        Scenario::Connect {
            common,
            connections,
            subscribe,
            channels,
            channel_prefix,
        } => {
            limits::raise_nofile();
            let channels =
                scenario::connect::channels(&common, subscribe, channels, channel_prefix);
            (
                scenario::connect::run(&common, connections, channels).await?,
                common,
            )
        }
        Scenario::Fanout { common, fanout } => {
            limits::raise_nofile();
            (
                scenario::fanout::run(&common, &fanout, None, None).await?,
                common,
            )
        }
        Scenario::Churn {
            common,
            fanout,
            churn,
        } => {
            limits::raise_nofile();
            (
                scenario::fanout::run(&common, &fanout, Some(&churn), None).await?,
                common,
            )
        }
        Scenario::Failover {
            common,
            fanout,
            failover,
        } => {
            limits::raise_nofile();
            (
                scenario::fanout::run(&common, &fanout, None, Some(&failover)).await?,
                common,
            )
        }
    };
    scenario::output(&summary, &common)?;
    Ok(!common.strict || benchmark_targets_met(&summary, &common))
}

fn benchmark_targets_met(summary: &Summary, common: &Common) -> bool {
    switchboard_loadtest::benchmd::all_met(summary, &common.targets)
}
