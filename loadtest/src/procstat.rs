//! CPU time and resident memory of processes, from `/proc/<pid>/stat` and
//! `/proc/<pid>/status`: the server's cost per connection and per delivery, and
//! this tool's own (the two share the machine, so both are reported).

use serde::{Deserialize, Serialize};

/// Clock ticks per second of `/proc/<pid>/stat` times: Linux's `USER_HZ`, fixed at
/// 100 in the kernel's user-space ABI on every architecture it runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of one or more processes, summed.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    /// User + system CPU seconds since the processes started.
    pub cpu_s: f64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
}

impl Usage {
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            cpu_s: self.cpu_s + other.cpu_s,
            rss_kib: self.rss_kib + other.rss_kib,
        }
    }
}

/// Reads `pid` ("self" for this process); `None` if it is gone or unreadable.
pub fn read(pid: &str) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Usage {
        cpu_s: parse_cpu(&stat)?,
        rss_kib: parse_rss(&status)?,
    })
}

/// CPU seconds of the calling thread so far (`/proc/thread-self/schedstat`).
pub fn thread_cpu_s() -> Option<f64> {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = schedstat.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// Sums [`read`] over `pids`; those that cannot be read count as zero.
pub fn read_all(pids: &[u32]) -> Usage {
    pids.iter()
        .filter_map(|p| read(&p.to_string()))
        .fold(Usage::default(), Usage::plus)
}

/// utime + stime: fields 14 and 15, counted after the parenthesised command name
/// (which may itself hold spaces and parentheses).
fn parse_cpu(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so field n is at index n - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

fn parse_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let stat = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_cpu(stat), Some(3.25));
    }

    #[test]
    fn parses_rss() {
        let status = "Name:\tx\nVmPeak:\t 100 kB\nVmRSS:\t    5120 kB\n";
        assert_eq!(parse_rss(status), Some(5120));
    }

    #[test]
    fn reads_this_process() {
        let me = read("self").expect("own /proc entry");
        assert!(me.rss_kib > 0);
    }
}
