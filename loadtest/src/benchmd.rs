//! `--bench-md FILE --bench-section NAME`: writes a run into a section of a
//! markdown benchmark record (BENCHMARKS.md), replacing the section's previous
//! content between its markers or appending it, with the machine, the command, the
//! numbers and, for each `--target`, whether it was met.

use std::fmt::Write as _;
use std::path::Path;

use crate::report::Summary;

/// A target such as `p99_ms<=5`: a figure, a comparison, a number.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub figure: String,
    pub at_most: bool,
    pub value: f64,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        let (figure, at_most, value) = if let Some((f, v)) = s.split_once("<=") {
            (f, true, v)
        } else if let Some((f, v)) = s.split_once(">=") {
            (f, false, v)
        } else {
            return Err(format!("{s}: expected FIGURE<=NUMBER or FIGURE>=NUMBER"));
        };
        let figure = figure.trim().to_owned();
        if figure_of(&Summary::default(), &figure).is_none() && !FIGURES.contains(&figure.as_str())
        {
            return Err(format!(
                "{figure}: unknown figure; known: {}",
                FIGURES.join(", ")
            ));
        }
        Ok(Target {
            figure,
            at_most,
            value: value
                .trim()
                .parse()
                .map_err(|_| format!("{s}: not a number"))?,
        })
    }
}

/// The figures a target can name.
pub const FIGURES: &[&str] = &[
    "success_rate_percent",
    "connect_rate_per_s",
    "connect_p99_ms",
    "rss_per_connection_bytes",
    "p50_ms",
    "p99_ms",
    "lost",
    "duplicates",
    "out_of_order",
    "cpu_us_per_delivery",
    "deliveries_per_cpu_s",
    "reconnect_p99_ms",
    "not_back",
    "hook_failures",
];

/// The value of a figure in a summary, when the run measured it.
pub fn figure_of(s: &Summary, figure: &str) -> Option<f64> {
    let d = s.delivery.as_ref();
    Some(match figure {
        "success_rate_percent" => s.connections.success_rate_percent,
        "connect_rate_per_s" => s.connections.connect_rate_per_s,
        "connect_p99_ms" => s.connections.connect_latency.p99_ms,
        "rss_per_connection_bytes" => s.server.as_ref()?.rss_per_connection_bytes,
        "p50_ms" => d?.latency.p50_ms,
        "p99_ms" => d?.latency.p99_ms,
        "lost" => d?.counts.lost as f64,
        "duplicates" => d?.counts.duplicates as f64,
        "out_of_order" => d?.counts.out_of_order as f64,
        "cpu_us_per_delivery" => s.server.as_ref()?.cpu_us_per_delivery?,
        "deliveries_per_cpu_s" => s.server.as_ref()?.deliveries_per_cpu_s?,
        "reconnect_p99_ms" => s.reconnection.as_ref()?.reconnect_time.p99_ms,
        "not_back" => s.reconnection.as_ref()?.not_back as f64,
        "hook_failures" => s.reconnection.as_ref()?.hook_failures as f64,
        _ => return None,
    })
}

/// One line per target: met or missed, with the measured value.
pub fn verdicts(s: &Summary, targets: &[Target]) -> Vec<String> {
    targets
        .iter()
        .map(|t| {
            let op = if t.at_most { "≤" } else { "≥" };
            match figure_of(s, &t.figure) {
                Some(v) => {
                    let met = if t.at_most {
                        v <= t.value
                    } else {
                        v >= t.value
                    };
                    format!(
                        "{} {op} {}: measured {} — **{}**",
                        t.figure,
                        t.value,
                        round(v),
                        if met { "met" } else { "MISSED" }
                    )
                }
                None => format!("{} {op} {}: not measured by this run", t.figure, t.value),
            }
        })
        .collect()
}

/// Whether the run met every target (a figure it did not measure counts as missed).
pub fn all_met(s: &Summary, targets: &[Target]) -> bool {
    targets.iter().all(|t| {
        figure_of(s, &t.figure).is_some_and(|v| {
            if t.at_most {
                v <= t.value
            } else {
                v >= t.value
            }
        })
    })
}

/// `YYYY-MM-DD HH:MM UTC` of a Unix time (civil-from-days, proleptic Gregorian).
pub fn utc(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

fn round(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// The markdown of one section.
pub fn section(s: &Summary, name: &str, title: &str, note: &str, targets: &[Target]) -> String {
    let mut o = String::new();
    let m = &s.machine;
    let _ = writeln!(o, "<!-- bench:{name} begin (written by switchboard-loadtest; edits inside are overwritten) -->");
    let _ = writeln!(o, "### {title}\n");
    let _ = writeln!(o, "```sh\n{}\n```\n", s.command);
    if !note.is_empty() {
        let _ = writeln!(o, "{note}\n");
    }
    let _ = writeln!(
        o,
        "Measured {} on {} CPUs ({}), {} MiB, Linux {}; the load generator and the server share the machine.\n",
        utc(s.started_unix_s), m.nproc, m.cpu_model, m.memory_mib, m.kernel
    );
    for v in verdicts(s, targets) {
        let _ = writeln!(o, "- target {v}");
    }
    if !targets.is_empty() {
        o.push('\n');
    }
    o.push_str("```text\n");
    // The table without its first line (the command, already shown).
    for line in s.table().lines().skip(1) {
        let _ = writeln!(o, "{line}");
    }
    o.push_str("```\n");
    let _ = writeln!(o, "<!-- bench:{name} end -->");
    o
}

/// Replaces section `name` in the file (or appends it; creates the file).
pub fn update(path: &Path, name: &str, content: &str) -> std::io::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let begin = format!("<!-- bench:{name} begin");
    let end = format!("<!-- bench:{name} end -->");
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            let after = e + end.len();
            let after = after + usize::from(old[after..].starts_with('\n'));
            format!("{}{}{}", &old[..b], content, &old[after..])
        }
        _ => {
            let sep = if old.is_empty() || old.ends_with("\n\n") {
                ""
            } else if old.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            format!("{old}{sep}{content}")
        }
    };
    std::fs::write(path, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_795_557_228), "2026-11-24 21:53 UTC");
    }

    #[test]
    fn targets_parse_and_judge() {
        let t: Target = "p99_ms<=5".parse().unwrap();
        assert_eq!(
            t,
            Target {
                figure: "p99_ms".into(),
                at_most: true,
                value: 5.0
            }
        );
        assert!("nonsense<=1".parse::<Target>().is_err());
        assert!("p99_ms=1".parse::<Target>().is_err());
        let mut s = Summary::default();
        s.connections.success_rate_percent = 99.0;
        let v = verdicts(
            &s,
            &[
                "success_rate_percent>=100".parse().unwrap(),
                "p99_ms<=5".parse().unwrap(),
            ],
        );
        assert!(v[0].contains("MISSED"), "{v:?}");
        assert!(v[1].contains("not measured"), "{v:?}");
        assert!(!all_met(
            &s,
            &["success_rate_percent>=100".parse().unwrap()]
        ));
        assert!(!all_met(&s, &["p99_ms<=5".parse().unwrap()]));
        assert!(all_met(&s, &["success_rate_percent>=99".parse().unwrap()]));
    }

    #[test]
    fn sections_are_replaced_in_place_and_appended_otherwise() {
        let dir = std::env::temp_dir().join(format!("sb-benchmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("B.md");
        std::fs::write(&path, "# Bench\n\nintro\n").unwrap();
        update(
            &path,
            "a",
            "<!-- bench:a begin -->\nA1\n<!-- bench:a end -->\n",
        )
        .unwrap();
        update(
            &path,
            "b",
            "<!-- bench:b begin -->\nB1\n<!-- bench:b end -->\n",
        )
        .unwrap();
        update(
            &path,
            "a",
            "<!-- bench:a begin -->\nA2\n<!-- bench:a end -->\n",
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Bench\n\nintro\n"));
        assert!(text.contains("A2") && !text.contains("A1") && text.contains("B1"));
        assert!(text.find("A2").unwrap() < text.find("B1").unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
