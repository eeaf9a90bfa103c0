//! Exact delivery accounting.
//!
//! Each receiver keeps one [`SeqTracker`] per channel it reads. Publishers number
//! each channel's publications 1, 2, 3 …; the tracker sorts every arrival into
//! *new in order*, *late* (fills a gap: out of order) or *duplicate*. Loss is
//! decided at the end, against what the publishers know they published:
//! `lost = Σ_channels published × subscribers − unique deliveries` ([`Tally`]),
//! which merges exactly across receivers, tasks and worker processes.

use serde::{Deserialize, Serialize};

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next sequence, or one past a gap.
    InOrder,
    /// A sequence below the highest seen that was still missing.
    Late,
    /// A sequence already seen.
    Duplicate,
}

/// The sequences one receiver has seen on one channel: the highest, and the gaps below it.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    max: u64,
    /// Missing sequences below `max`, as sorted, disjoint inclusive ranges. Empty
    /// unless something is lost or reordered.
    gaps: Vec<(u64, u64)>,
    unique: u64,
}

impl SeqTracker {
    /// A tracker expecting sequence 1 first.
    pub fn new() -> SeqTracker {
        SeqTracker::default()
    }

    /// A tracker for a receiver that joins mid-stream: the first arrival, whatever
    /// its sequence, is in order and nothing before it is expected.
    pub fn starting_at(first: u64) -> SeqTracker {
        SeqTracker {
            max: first.saturating_sub(1),
            ..SeqTracker::default()
        }
    }

    pub fn observe(&mut self, seq: u64) -> Arrival {
        if seq > self.max {
            if seq > self.max + 1 {
                self.gaps.push((self.max + 1, seq - 1));
            }
            self.max = seq;
            self.unique += 1;
            return Arrival::InOrder;
        }
        // Below the top: a late arrival if it fills a gap, else a duplicate.
        let i = self.gaps.partition_point(|&(_, end)| end < seq);
        match self.gaps.get(i).copied() {
            Some((start, end)) if start <= seq => {
                match (start == seq, end == seq) {
                    (true, true) => {
                        self.gaps.remove(i);
                    }
                    (true, false) => self.gaps[i].0 = seq + 1,
                    (false, true) => self.gaps[i].1 = seq - 1,
                    (false, false) => {
                        self.gaps[i].1 = seq - 1;
                        self.gaps.insert(i + 1, (seq + 1, end));
                    }
                }
                self.unique += 1;
                Arrival::Late
            }
            _ => Arrival::Duplicate,
        }
    }

    /// Distinct sequences seen.
    pub fn unique(&self) -> u64 {
        self.unique
    }

    /// The highest sequence seen (0: none).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Sequences missing below the highest seen.
    pub fn missing_below_max(&self) -> u64 {
        self.gaps.iter().map(|(s, e)| e - s + 1).sum()
    }

    /// The missing ranges below the highest seen (inclusive), for diagnostics.
    pub fn gaps(&self) -> &[(u64, u64)] {
        &self.gaps
    }
}

/// Delivery counts of a set of receivers, per channel where loss is computed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tally {
    /// Receivers subscribed to each channel (for the whole run).
    pub subscribers: Vec<u64>,
    /// Distinct publications received on each channel, summed over receivers.
    pub unique: Vec<u64>,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Publications whose payload carried no stamp of this run.
    pub foreign: u64,
}

impl Tally {
    pub fn with_channels(channels: usize) -> Tally {
        Tally {
            subscribers: vec![0; channels],
            unique: vec![0; channels],
            ..Tally::default()
        }
    }

    /// Adds one receiver's tracker of `channel`.
    pub fn add_receiver(&mut self, channel: usize, tracker: &SeqTracker) {
        self.grow(channel + 1);
        self.subscribers[channel] += 1;
        self.unique[channel] += tracker.unique();
    }

    pub fn merge(&mut self, other: &Tally) {
        self.grow(other.unique.len().max(other.subscribers.len()));
        for (i, n) in other.subscribers.iter().enumerate() {
            self.subscribers[i] += n;
        }
        for (i, n) in other.unique.iter().enumerate() {
            self.unique[i] += n;
        }
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.foreign += other.foreign;
    }

    fn grow(&mut self, len: usize) {
        if self.subscribers.len() < len {
            self.subscribers.resize(len, 0);
        }
        if self.unique.len() < len {
            self.unique.resize(len, 0);
        }
    }

    /// Loss against what was published: `published[c]` publications on channel `c`.
    pub fn settle(&self, published: &[u64]) -> Delivery {
        let mut d = Delivery {
            duplicates: self.duplicates,
            out_of_order: self.out_of_order,
            foreign: self.foreign,
            ..Delivery::default()
        };
        for c in 0..self.subscribers.len().max(published.len()) {
            let subs = self.subscribers.get(c).copied().unwrap_or(0);
            let got = self.unique.get(c).copied().unwrap_or(0);
            let expected = subs * published.get(c).copied().unwrap_or(0);
            d.expected += expected;
            d.delivered += got;
            d.lost += expected.saturating_sub(got);
            d.unexpected += got.saturating_sub(expected);
        }
        d
    }
}

/// The verdict on delivery.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Delivery {
    /// Σ published × subscribers.
    pub expected: u64,
    /// Distinct publications received.
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Distinct deliveries beyond the expected, e.g. of a publish the publisher saw fail.
    pub unexpected: u64,
    pub foreign: u64,
}

impl Delivery {
    /// Delivered share of the expected, in percent (100 when nothing was expected).
    pub fn rate_percent(&self) -> f64 {
        if self.expected == 0 {
            100.0
        } else {
            self.delivered.min(self.expected) as f64 * 100.0 / self.expected as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut SeqTracker, seqs: &[u64]) -> Vec<Arrival> {
        seqs.iter().map(|&s| t.observe(s)).collect()
    }

    #[test]
    fn in_order_stream_counts_every_message_once() {
        let mut t = SeqTracker::new();
        assert!(feed(&mut t, &[1, 2, 3, 4])
            .iter()
            .all(|a| *a == Arrival::InOrder));
        assert_eq!((t.unique(), t.max(), t.missing_below_max()), (4, 4, 0));
    }

    #[test]
    fn duplicates_are_recognised_at_and_below_the_top() {
        let mut t = SeqTracker::new();
        use Arrival::*;
        assert_eq!(
            feed(&mut t, &[1, 2, 2, 3, 1]),
            vec![InOrder, InOrder, Duplicate, InOrder, Duplicate]
        );
        assert_eq!(t.unique(), 3);
    }

    #[test]
    fn late_arrivals_fill_gaps_and_count_as_out_of_order() {
        let mut t = SeqTracker::new();
        use Arrival::*;
        assert_eq!(
            feed(&mut t, &[1, 5, 3, 2, 4, 3, 6]),
            vec![InOrder, InOrder, Late, Late, Late, Duplicate, InOrder]
        );
        assert_eq!((t.unique(), t.missing_below_max()), (6, 0));
    }

    #[test]
    fn gaps_split_when_filled_in_the_middle() {
        let mut t = SeqTracker::new();
        t.observe(10);
        assert_eq!(t.missing_below_max(), 9);
        assert_eq!(t.observe(5), Arrival::Late);
        assert_eq!(t.observe(5), Arrival::Duplicate);
        assert_eq!(t.observe(1), Arrival::Late);
        assert_eq!(t.observe(9), Arrival::Late);
        assert_eq!(t.missing_below_max(), 6);
        assert_eq!(t.observe(11), Arrival::InOrder);
    }

    #[test]
    fn a_mid_stream_joiner_expects_nothing_before_its_first() {
        let mut t = SeqTracker::starting_at(100);
        assert_eq!(t.observe(100), Arrival::InOrder);
        assert_eq!(t.observe(99), Arrival::Duplicate);
        assert_eq!(t.missing_below_max(), 0);
    }

    #[test]
    fn settle_computes_loss_against_published() {
        // Channel 0: 2 receivers, 10 published, one receiver missed 3.
        // Channel 1: 1 receiver, 5 published, all received.
        let mut a = SeqTracker::new();
        let mut b = SeqTracker::new();
        let mut c = SeqTracker::new();
        for s in 1..=10 {
            a.observe(s);
            if !(4..=6).contains(&s) {
                b.observe(s);
            }
        }
        for s in 1..=5 {
            c.observe(s);
        }
        let mut left = Tally::with_channels(2);
        left.add_receiver(0, &a);
        let mut right = Tally::with_channels(1);
        right.add_receiver(0, &b);
        right.add_receiver(1, &c);
        right.duplicates = 2;
        left.merge(&right);
        let d = left.settle(&[10, 5]);
        assert_eq!(d.expected, 25);
        assert_eq!(d.delivered, 22);
        assert_eq!(d.lost, 3);
        assert_eq!(d.duplicates, 2);
        assert_eq!(d.unexpected, 0);
        assert!((d.rate_percent() - 88.0).abs() < 1e-9);
    }

    #[test]
    fn tail_loss_counts_even_without_gaps() {
        let mut t = SeqTracker::new();
        for s in 1..=7 {
            t.observe(s);
        }
        let mut tally = Tally::default();
        tally.add_receiver(0, &t);
        assert_eq!(tally.settle(&[10]).lost, 3);
        assert_eq!(tally.settle(&[5]).unexpected, 2);
    }
}
