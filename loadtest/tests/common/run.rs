//! Scenarios run in this process from command-line arguments, and the exact
//! accounting every fan-out must show.

// Each test crate uses what it needs of this module.
#![allow(dead_code)]

use clap::Parser;
use switchboard_loadtest::cli::{Cli, Scenario};
use switchboard_loadtest::report::Summary;
use switchboard_loadtest::scenario;

/// Runs a scenario in this process from command-line arguments.
pub async fn run(args: &[&str]) -> Summary {
    let mut argv = vec!["switchboard-loadtest"];
    argv.extend_from_slice(args);
    argv.push("--quiet");
    match Cli::try_parse_from(argv).expect("valid arguments").scenario {
        Scenario::Fanout { common, fanout } => scenario::fanout::run(&common, &fanout, None, None)
            .await
            .unwrap(),
        Scenario::Churn {
            common,
            fanout,
            churn,
        } => scenario::fanout::run(&common, &fanout, Some(&churn), None)
            .await
            .unwrap(),
        Scenario::Failover {
            common,
            fanout,
            failover,
        } => scenario::fanout::run(&common, &fanout, None, Some(&failover))
            .await
            .unwrap(),
        Scenario::Connect {
            common,
            connections,
            subscribe,
            channels,
            channel_prefix,
        } => {
            let channels =
                scenario::connect::channels(&common, subscribe, channels, channel_prefix);
            scenario::connect::run(&common, connections, channels)
                .await
                .unwrap()
        }
        Scenario::Worker
        | Scenario::Presence { .. }
        | Scenario::Webhooks { .. }
        | Scenario::Floor { .. }
        | Scenario::Api { .. } => {
            unreachable!("no summary of this kind")
        }
    }
}

pub fn assert_exact(s: &Summary, subscribers: u64) {
    let d = s.delivery.as_ref().expect("a delivery section");
    assert_eq!(s.connections.connected, subscribers, "{}", s.table());
    assert!(d.published > 0, "{}", s.table());
    let c = &d.counts;
    assert_eq!(
        c.expected,
        d.published * subscribers / channels_of(s),
        "{}",
        s.table()
    );
    assert_eq!(c.delivered, c.expected, "{}", s.table());
    assert_eq!(
        (
            c.lost,
            c.duplicates,
            c.out_of_order,
            c.unexpected,
            c.foreign
        ),
        (0, 0, 0, 0, 0),
        "{}",
        s.table()
    );
    // Publications that came in a recovery reply have no live latency.
    let recovered = s
        .reconnection
        .as_ref()
        .map_or(0, |r| r.recovered_publications);
    assert_eq!(d.latency.count + recovered, c.delivered);
}

fn channels_of(s: &Summary) -> u64 {
    s.parameters["channels"].parse().unwrap()
}
