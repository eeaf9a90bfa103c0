//! `api`: connections held on the gateways while a bounded loop calls the server
//! API through one of them, one call at a time: the latency of each cluster-wide
//! method (every live gateway answers before the call does).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::api::ApiClient;
use crate::cli::{ApiArgs, Common};
use crate::hist::{self, Percentiles};
use crate::payload::now_us;
use crate::receivers::Channels;

use super::{secs, Meter, Parts};

/// One method's calls.
#[derive(Debug, Default, Serialize)]
pub struct MethodResult {
    pub latency: Percentiles,
    /// Calls answered with an error (or not answered).
    pub errors: u64,
    /// The first error, for the report.
    pub first_error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct ApiSummary {
    pub parameters: BTreeMap<String, String>,
    /// Connections open while the calls ran.
    pub open: u64,
    pub methods: BTreeMap<String, MethodResult>,
}

impl ApiSummary {
    pub fn table(&self) -> String {
        let mut o = String::new();
        for (k, v) in &self.parameters {
            o += &format!("{k:<20} {v}\n");
        }
        o += &format!("{:<20} {}\n", "connections open", self.open);
        for (method, r) in &self.methods {
            let p = &r.latency;
            o += &format!(
                "{method:<20} p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n = {}, errors {})\n",
                p.p50_ms, p.p99_ms, p.max_ms, p.count, r.errors
            );
            if let Some(e) = &r.first_error {
                o += &format!("{:<20} first error: {e}\n", "");
            }
        }
        o
    }

    /// Calls that failed, by method.
    pub fn problems(&self) -> Vec<String> {
        self.methods
            .iter()
            .filter(|(_, r)| r.errors > 0)
            .map(|(m, r)| format!("{m}: {} errors", r.errors))
            .collect()
    }
}

/// The request body of `method`: calls that reach every gateway but leave the
/// held connections alone.
fn body(method: &str) -> &'static [u8] {
    match method {
        "disconnect" => br#"{"user":"switchboard-loadtest-nobody"}"#,
        "unsubscribe" => br#"{"user":"switchboard-loadtest-nobody","channel":"nowhere"}"#,
        _ => b"{}",
    }
}

pub async fn run(common: &Common, args: &ApiArgs) -> anyhow::Result<ApiSummary> {
    let mut summary = ApiSummary::default();
    let p = &mut summary.parameters;
    p.insert("connections".into(), args.connections.to_string());
    p.insert("channels".into(), args.channels.to_string());
    p.insert("gateways".into(), common.urls.len().to_string());
    p.insert("calls per method".into(), args.calls.to_string());
    let addr = match args.api_addr {
        Some(addr) => addr,
        None => common.urls[0].addr,
    };
    p.insert("api".into(), addr.to_string());
    let meter = Meter::new(common.quiet);
    let epoch = now_us();
    let bound = common.setup_timeout + common.duration + 30.0 + f64::from(args.calls) * 10.0;
    let channels = Channels {
        prefix: args.channel_prefix.clone(),
        count: args.channels.max(1),
    };
    let parts = Parts::start(
        common,
        args.connections,
        Some(channels),
        false,
        epoch,
        epoch + (bound * 1e6) as u64,
    )?;
    parts.settle(secs(common.setup_timeout), &meter).await;
    summary.open = parts.progress().open;
    let mut api = ApiClient::new(addr, &args.api_key, secs(common.timeout));
    for method in &args.methods {
        let method = method.as_str();
        let mut latency = hist::new_us();
        let mut result = MethodResult::default();
        for _ in 0..args.calls {
            let started = Instant::now();
            let answer = api.post(method, body(method).to_vec()).await;
            hist::record(&mut latency, started.elapsed().as_micros() as u64);
            let failure = match answer {
                Err(e) => Some(e.to_string()),
                Ok((200, reply)) => match serde_json::from_slice::<serde_json::Value>(&reply) {
                    Ok(v) if v.get("error").is_none() => None,
                    Ok(v) => Some(v["error"].to_string()),
                    Err(e) => Some(e.to_string()),
                },
                Ok((status, _)) => Some(format!("status {status}")),
            };
            if let Some(e) = failure {
                result.errors += 1;
                result.first_error.get_or_insert(e);
            }
        }
        result.latency = Percentiles::of(&latency);
        summary.methods.insert(method.to_owned(), result);
    }
    meter.done();
    parts.finish().await?;
    Ok(summary)
}
