//! `--report FILE.svg|FILE.html`: a latency histogram and a timeline of the run,
//! drawn as plain SVG (no plotting library: two charts do not need one, and the
//! build stays small). The HTML report is the summary table plus the same SVG.

use std::fmt::Write as _;

use crate::report::Summary;

const W: f64 = 900.0;
const PANEL: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 70.0;
const TOP: f64 = 40.0;

/// The report for `path`: HTML when it ends in `.html`, else SVG.
pub fn render(summary: &Summary, path: &str) -> String {
    let svg = svg(summary);
    if path.ends_with(".html") || path.ends_with(".htm") {
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>switchboard-loadtest {}</title></head>\
             <body style=\"font-family:sans-serif\"><h1>switchboard-loadtest {}</h1><pre>{}</pre>{}</body></html>\n",
            esc(&summary.scenario),
            esc(&summary.scenario),
            esc(&summary.table()),
            svg
        )
    } else {
        svg
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The two panels, one above the other.
pub fn svg(summary: &Summary) -> String {
    let height = TOP + 2.0 * (PANEL + 70.0);
    let mut o = String::new();
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{LEFT}\" y=\"20\" font-size=\"14\">{} — {}</text>",
        esc(&summary.scenario),
        esc(&summary.command)
    );
    histogram(&mut o, summary, TOP);
    timeline(&mut o, summary, TOP + PANEL + 70.0);
    o.push_str("</svg>\n");
    o
}

fn frame(o: &mut String, y0: f64, title: &str) {
    let _ = write!(
        o,
        "<text x=\"{LEFT}\" y=\"{}\" font-size=\"13\">{}</text>\
         <rect x=\"{LEFT}\" y=\"{}\" width=\"{}\" height=\"{PANEL}\" fill=\"none\" stroke=\"#888\"/>",
        y0 + 14.0,
        esc(title),
        y0 + 20.0,
        W - LEFT - RIGHT
    );
}

fn histogram(o: &mut String, s: &Summary, y0: f64) {
    let lat = s.delivery.as_ref().map(|d| &d.latency);
    let title = match lat {
        Some(p) => format!(
            "delivery latency (log ms): p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2} ms",
            p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms
        ),
        None => "delivery latency: no deliveries".into(),
    };
    frame(o, y0, &title);
    let b = &s.latency_buckets;
    if b.is_empty() {
        return;
    }
    let max = b.iter().map(|x| x.1).max().unwrap_or(1).max(1) as f64;
    let plot_w = W - LEFT - RIGHT;
    let bar_w = plot_w / b.len() as f64;
    let base = y0 + 20.0 + PANEL;
    for (i, (upper_ms, n)) in b.iter().enumerate() {
        let h = *n as f64 / max * (PANEL - 10.0);
        let x = LEFT + i as f64 * bar_w;
        let _ = write!(
            o,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#4a7ebb\"><title>≤ {upper_ms:.3} ms: {n}</title></rect>",
            base - h,
            (bar_w - 1.0).max(0.5)
        );
        if i % 5 == 0 {
            let _ = write!(
                o,
                "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
                base + 14.0,
                short(*upper_ms)
            );
        }
    }
    let _ = write!(
        o,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">count (max {max})</text>",
        8.0,
        y0 + 34.0
    );
}

fn short(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0}µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.1}s", ms / 1000.0)
    }
}

fn timeline(o: &mut String, s: &Summary, y0: f64) {
    frame(
        o,
        y0,
        "timeline: deliveries/s (blue), open connections (grey), p50 (green) and p99 (red) latency, right axis ms",
    );
    let t = &s.timeline;
    if t.len() < 2 {
        return;
    }
    let t_max = t.last().map_or(1.0, |p| p.t_s).max(1.0);
    let plot_w = W - LEFT - RIGHT;
    let base = y0 + 20.0 + PANEL;
    let x = |ts: f64| LEFT + ts / t_max * plot_w;
    let series = |o: &mut String, values: Vec<(f64, f64)>, max: f64, color: &str| {
        let max = if max > 0.0 { max } else { 1.0 };
        let pts: Vec<String> = values
            .iter()
            .map(|(ts, v)| format!("{:.1},{:.1}", x(*ts), base - v / max * (PANEL - 10.0)))
            .collect();
        let _ = write!(
            o,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
            pts.join(" ")
        );
    };
    let rate: Vec<(f64, f64)> = t.iter().map(|p| (p.t_s, p.delivered_per_s)).collect();
    let rate_max = rate.iter().map(|v| v.1).fold(0.0, f64::max);
    let open: Vec<(f64, f64)> = t.iter().map(|p| (p.t_s, p.open as f64)).collect();
    let open_max = open.iter().map(|v| v.1).fold(0.0, f64::max);
    let p50: Vec<(f64, f64)> = t.iter().filter_map(|p| Some((p.t_s, p.p50_ms?))).collect();
    let p99: Vec<(f64, f64)> = t.iter().filter_map(|p| Some((p.t_s, p.p99_ms?))).collect();
    let lat_max = p99.iter().map(|v| v.1).fold(0.0, f64::max);
    series(o, open, open_max, "#999");
    series(o, rate, rate_max, "#4a7ebb");
    series(o, p50, lat_max, "#3a3");
    series(o, p99, lat_max, "#c33");
    let _ = write!(
        o,
        "<text x=\"8\" y=\"{:.1}\" font-size=\"10\">{rate_max:.0}/s</text>\
         <text x=\"8\" y=\"{:.1}\" font-size=\"10\">{open_max:.0} conns</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{lat_max:.1} ms</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{t_max:.0} s</text>",
        y0 + 34.0,
        y0 + 48.0,
        W - RIGHT + 4.0,
        y0 + 34.0,
        W - RIGHT - 20.0,
        base + 14.0
    );
}
