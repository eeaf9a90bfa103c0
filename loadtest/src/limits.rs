//! Making room for many connections on one machine.
//!
//! - File descriptors: the soft `RLIMIT_NOFILE` is raised to the hard limit at start.
//!   Beyond what one process may hold, connections are split over worker processes
//!   (see `workers`).
//! - Source ports: a client socket bound to `127.0.0.K:0` before connecting gets an
//!   ephemeral port of its own on that address, so each loopback source address
//!   gives another ~28,000 ports (the default `ip_local_port_range`).

use std::net::{IpAddr, Ipv4Addr};

/// Raises the soft open-files limit to the hard one; returns the limit now in force.
pub fn raise_nofile() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

/// The source address of connection `index`: 127.0.0.1 … 127.0.0.N in turn, when
/// the target is on loopback and more than one source is asked for.
pub fn source_for(index: u64, sources: u8, target: IpAddr) -> Option<IpAddr> {
    if sources <= 1 || !target.is_loopback() || !target.is_ipv4() {
        return None;
    }
    let k = (index % u64::from(sources)) as u8 + 1;
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, k)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_rotate_over_loopback_addresses_only() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(source_for(0, 4, lo), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(source_for(5, 4, lo), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(source_for(5, 1, lo), None);
        assert_eq!(source_for(5, 4, "10.0.0.1".parse().unwrap()), None);
    }
}
