//! Flood episodes from the per-CPU victim-flow counters: one continuous
//! flood is one episode, however often it is sampled and whichever CPUs the
//! sender runs on.
//!
//! An episode ends when its flow has been silent for [`EPISODE_GAP_NS`]
//! (judged from the kernel's timestamps, not from sampling), and a new one
//! starts at the earliest per-CPU burst start after that silence
//! (`FloodCount::burst_ns`). A silence and a restart that both fall between
//! two samples are seen only if some CPU's burst starts after the silence;
//! the frames of both sides then count for the new episode.

use std::collections::BTreeMap;

use tracer_common::flood::{EPISODE_GAP_NS, FloodCount};

/// A flooded flow as episodes group it (no port: one flood reaches many).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub dst_ip: [u8; 4],
    pub ip_proto: u8,
    pub dport: u16,
}

/// One episode, open or closed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Episode {
    pub start_ns: u64,
    pub last_ns: u64,
    /// Copies per victim port.
    pub copies: BTreeMap<u32, u64>,
    pub bytes: u64,
}

/// Totals of one (flow, port) over CPUs at the last sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Seen {
    packets: u64,
    bytes: u64,
    last_ns: u64,
}

/// Episodes of every flow over a trace.
#[derive(Debug, Default)]
pub struct Episodes {
    seen: BTreeMap<(Flow, u32), Seen>,
    open: BTreeMap<Flow, Episode>,
    closed: std::collections::VecDeque<(Flow, Episode)>,
    /// Closed episodes dropped from `closed` (the oldest first) past
    /// [`CLOSED_KEPT`].
    dropped: u64,
}

/// Closed episodes kept one by one: a flood recurring every few seconds
/// for weeks must not grow tracer without bound.
pub const CLOSED_KEPT: usize = 1000;

impl Episodes {
    /// Takes what was counted before the trace as the baseline: no episode.
    pub fn baseline(&mut self, flow: Flow, port: u32, slots: &[FloodCount]) {
        self.seen.insert((flow, port), totals(slots));
    }

    /// One sample of `flow` on victim `port`: its per-CPU slots.
    pub fn observe(&mut self, flow: Flow, port: u32, slots: &[FloodCount]) {
        let now = totals(slots);
        let before = self.seen.insert((flow, port), now).unwrap_or_default();
        let new = now.packets.saturating_sub(before.packets);
        if new == 0 {
            return;
        }
        let after = self
            .open
            .get(&flow)
            .map_or(before.last_ns, |e| e.last_ns.max(before.last_ns));
        let start = if before.packets == 0 && after == 0 {
            earliest(slots, |s| s.first_ns, 0)
        } else {
            earliest(slots, |s| s.burst_ns, after)
        };
        let restarted = start.is_some_and(|s| s >= after.saturating_add(EPISODE_GAP_NS));
        if restarted && let Some(old) = self.open.remove(&flow) {
            self.close(flow, old);
        }
        let episode = self.open.entry(flow).or_insert_with(|| Episode {
            // No burst start after the last frame seen: the flow went on
            // past the previous sample; its oldest new frame is no earlier
            // than that sample's last.
            start_ns: start.unwrap_or(if after > 0 { after } else { now.last_ns }),
            ..Episode::default()
        });
        *episode.copies.entry(port).or_default() += new;
        episode.bytes += now.bytes.saturating_sub(before.bytes);
        episode.last_ns = episode.last_ns.max(now.last_ns);
    }

    /// Victim `port` vanished and its kernel counters of `flow` were
    /// deleted: its last copies count, then its sample is forgotten.
    pub fn forget(&mut self, flow: Flow, port: u32, slots: &[FloodCount]) {
        self.observe(flow, port, slots);
        self.seen.remove(&(flow, port));
    }

    /// Merges the copies vanished `port` received into `into`'s.
    pub fn fold_port(&mut self, port: u32, into: u32) {
        let episodes = self
            .open
            .values_mut()
            .chain(self.closed.iter_mut().map(|(_, e)| e));
        for e in episodes {
            if let Some(n) = e.copies.remove(&port) {
                *e.copies.entry(into).or_default() += n;
            }
        }
    }

    /// Closes the episodes silent for [`EPISODE_GAP_NS`] at `now_ns`.
    pub fn close_quiet(&mut self, now_ns: u64) {
        let quiet: Vec<Flow> = self
            .open
            .iter()
            .filter(|(_, e)| now_ns.saturating_sub(e.last_ns) >= EPISODE_GAP_NS)
            .map(|(f, _)| *f)
            .collect();
        for flow in quiet {
            if let Some(e) = self.open.remove(&flow) {
                self.close(flow, e);
            }
        }
    }

    fn close(&mut self, flow: Flow, episode: Episode) {
        if self.closed.len() >= CLOSED_KEPT {
            self.closed.pop_front();
            self.dropped += 1;
        }
        self.closed.push_back((flow, episode));
    }

    /// Closed episodes no longer listed (the oldest, past [`CLOSED_KEPT`]).
    pub const fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Every episode, oldest first, with whether it is still going on.
    pub fn all(&self) -> Vec<(Flow, Episode, bool)> {
        let mut out: Vec<(Flow, Episode, bool)> = self
            .closed
            .iter()
            .map(|(f, e)| (*f, e.clone(), false))
            .chain(self.open.iter().map(|(f, e)| (*f, e.clone(), true)))
            .collect();
        out.sort_by_key(|(_, e, _)| e.start_ns);
        out
    }
}

fn totals(slots: &[FloodCount]) -> Seen {
    slots.iter().fold(Seen::default(), |acc, s| Seen {
        packets: acc.packets + s.packets,
        bytes: acc.bytes + s.bytes,
        last_ns: acc.last_ns.max(s.last_ns),
    })
}

/// The earliest non-zero `field` after `after` among the slots that saw
/// frames (a CPU's slot that never did is all zero).
fn earliest(slots: &[FloodCount], field: impl Fn(&FloodCount) -> u64, after: u64) -> Option<u64> {
    slots
        .iter()
        .filter(|s| s.packets > 0)
        .map(field)
        .filter(|&t| t != 0 && t > after)
        .min()
}

/// Frames per second of an episode of `packets` frames spanning
/// `duration_s`, measured over at least [`MIN_RATE_SPAN_S`]: a burst
/// shorter than that (a single frame whose copies reach two ports 7 µs
/// apart) counts as that many frames in one second, not as a rate.
pub fn rate(packets: u64, duration_s: f64) -> f64 {
    if duration_s >= MIN_RATE_SPAN_S {
        // N frames paced evenly span N-1 gaps.
        packets.saturating_sub(1) as f64 / duration_s
    } else {
        packets as f64 / MIN_RATE_SPAN_S
    }
}

/// The shortest span a flood rate is measured over, seconds.
pub const MIN_RATE_SPAN_S: f64 = 1.0;

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn flow() -> Flow {
        Flow {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            dst_ip: [10, 0, 0, 2],
            ip_proto: 17,
            dport: 9000,
        }
    }

    /// A paced stream on one CPU's slot from `from` to `to` at 1 kpps.
    fn stream(slot: &mut FloodCount, from: u64, to: u64) {
        let mut t = from;
        while t < to {
            slot.add(64, t);
            t += MS;
        }
    }

    #[test]
    fn one_continuous_flood_is_one_episode_at_any_sampling() {
        for interval in [100 * MS, 230 * MS, S, 5 * S] {
            let mut e = Episodes::default();
            let mut slot = FloodCount::default();
            let mut t = 10 * S;
            while t < 20 * S {
                stream(&mut slot, t, t + interval);
                t += interval;
                e.observe(flow(), 7, &[slot]);
                e.close_quiet(t);
                // The report samples again right after a tick.
                e.observe(flow(), 7, &[slot]);
                e.close_quiet(t + MS);
            }
            let all = e.all();
            assert_eq!(all.len(), 1, "interval {interval}: {all:?}");
            assert_eq!(all[0].1.start_ns, 10 * S);
            assert_eq!(all[0].1.copies[&7], slot.packets);
        }
    }

    #[test]
    fn a_sender_moving_between_cpus_keeps_start_and_rate() {
        // CPU 0 inserts the key; CPU 1's slot starts zeroed and is first
        // used later: its first_ns must not read as 0.
        let mut e = Episodes::default();
        let mut cpus = [FloodCount::default(); 2];
        for second in 0..6u64 {
            let cpu = usize::try_from(second % 2).unwrap();
            stream(&mut cpus[cpu], (10 + second) * S, (11 + second) * S);
            e.observe(flow(), 7, &cpus);
            e.close_quiet((11 + second) * S);
        }
        let all = e.all();
        assert_eq!(all.len(), 1, "{all:?}");
        let ep = &all[0].1;
        assert_eq!(ep.start_ns, 10 * S);
        let duration = (ep.last_ns - ep.start_ns) as f64 / 1e9;
        let pps = rate(ep.copies[&7], duration);
        assert!((pps - 1000.0).abs() < 1.0, "{pps}");
    }

    #[test]
    fn closed_episodes_past_the_bound_drop_the_oldest_and_are_counted() {
        let mut e = Episodes::default();
        let mut slot = FloodCount::default();
        let n = u64::try_from(CLOSED_KEPT).unwrap() + 5;
        for i in 0..n {
            // One second of flood every 10 s: each its own episode.
            let t = (10 + 10 * i) * S;
            stream(&mut slot, t, t + S);
            e.observe(flow(), 7, &[slot]);
            e.close_quiet(t + 9 * S);
        }
        let all = e.all();
        assert_eq!(all.len(), CLOSED_KEPT);
        assert_eq!(e.dropped(), 5);
        assert_eq!(all[0].1.start_ns, (10 + 10 * 5) * S, "the oldest went");
    }

    #[test]
    fn a_flood_that_stops_and_restarts_is_two_episodes_with_the_restart_time() {
        let mut e = Episodes::default();
        let mut cpus = [FloodCount::default(); 2];
        stream(&mut cpus[0], 10 * S, 12 * S);
        e.observe(flow(), 7, &cpus);
        // Silence from 12 s, restart at 15.5 s on the other CPU, both
        // between two samples.
        stream(&mut cpus[1], 15 * S + 500 * MS, 17 * S);
        e.observe(flow(), 7, &cpus);
        e.close_quiet(17 * S);
        let all = e.all();
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all[0].1.start_ns, 10 * S);
        assert!(!all[0].2, "the first ended");
        assert_eq!(all[1].1.start_ns, 15 * S + 500 * MS);
        assert!(all[1].2, "the second goes on");
    }

    #[test]
    fn a_flood_silent_past_the_gap_is_closed() {
        let mut e = Episodes::default();
        let mut slot = FloodCount::default();
        stream(&mut slot, 10 * S, 11 * S);
        e.observe(flow(), 7, &[slot]);
        e.close_quiet(11 * S + 500 * MS);
        assert!(e.all()[0].2, "still within the gap");
        e.close_quiet(12 * S);
        assert!(!e.all()[0].2);
    }

    #[test]
    fn single_frames_make_no_rate() {
        // One frame copied to two ports 7 µs apart.
        assert!((rate(1, 7e-6) - 1.0).abs() < f64::EPSILON);
        assert!((rate(25, 0.2) - 25.0).abs() < f64::EPSILON);
        assert!((rate(25 * 60 + 1, 60.0) - 25.0).abs() < 1e-9);
    }

    #[test]
    fn the_baseline_is_no_episode() {
        let mut e = Episodes::default();
        let mut slot = FloodCount::default();
        stream(&mut slot, S, 2 * S);
        e.baseline(flow(), 7, &[slot]);
        e.observe(flow(), 7, &[slot]);
        assert!(e.all().is_empty());
    }
}
