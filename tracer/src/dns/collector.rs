//! Userspace aggregation of DNS observations.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapError, PerCpuArray, PerCpuHashMap},
};
use hdrhistogram::Histogram;
use serde::Serialize;
use tracer_common::dns::{
    DNS_STATS_LEN, DnsEvent, DnsHist, DnsHistKey, DnsKey, DnsPending, DnsStat, HIST_BUCKETS,
    RCODE_BASE, bucket_bounds_ns, flag, reason,
};

use super::{
    counts::DnsCounts,
    exchanges::{self, DnsExchanges, ExchangeId, LossLocation, LossSign, SideLatency, SideTally},
    question::{self, Question},
    role::{self, Side},
    server_use::{self, SendKey, SendTallies, ServerUse},
};
use crate::{
    area::{AreaError, InterfaceState},
    rekey,
    ring::{Ring, RingError},
};

/// Lost sends remembered for locating them (a bounded map: beyond it a loss
/// is still counted, only not located; the overflow is reported).
const LOSS_RECORDS_MAX: usize = 100_000;
/// Never-answered queries listed one by one (each holds its question, up
/// to 255 bytes); past it they are counted in `unanswered_not_listed`.
/// A pod asking a silent server 100 times a second for days must not
/// grow tracer without bound. 1 000: measured against a silent server
/// (190 lost queries a second, each seen at the client's and the server's
/// port), 10 000 listed took 14.5 MiB of tracer's RSS, most of it the
/// copies in the per-second snapshots (which now leave the lists out).
pub const UNANSWERED_LISTED: usize = 1_000;
/// Distinct names whose slow answers are tallied one by one; slow answers
/// for other names past it are counted in `slow_names_not_tracked`.
pub const SLOW_NAMES_TRACKED: usize = 4096;

/// Errors of the DNS collector.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("DNS map: {0}")]
    Map(#[from] MapError),
    #[error("DNS events: {0}")]
    Ring(#[from] RingError),
}

/// Userspace settings.
#[derive(Clone, Copy, Debug)]
pub struct DnsSettings {
    /// A query with no answer this long after its last send is unanswered
    /// (glibc's default resolver timeout is 5 s; a second of grace lets a
    /// retransmission at exactly 5 s still find its query).
    pub unanswered_after: Duration,
    /// Keep at most this many events in the report.
    pub max_events: usize,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            unanswered_after: Duration::from_secs(6),
            max_events: 1000,
        }
    }
}

/// A decoded ring-buffer event.
#[derive(Clone, Debug, Serialize)]
pub struct DnsEventRecord {
    /// Interface name, filled in by the report.
    pub interface: Option<String>,
    /// The side of the exchange it was seen on, filled in by the report.
    pub side: Option<Side>,
    #[serde(skip)]
    pub ifindex: u32,
    #[serde(skip)]
    pub query_dir: u8,
    pub kind: Vec<&'static str>,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub transport: &'static str,
    pub id: u16,
    pub question: Question,
    /// Since the query's first send (answers, re-sends), or between the two
    /// queries of a parallel pair, in milliseconds.
    pub elapsed_ms: f64,
    pub sends: u32,
    pub rcode: Option<String>,
    /// Id of the other query of a parallel pair.
    pub pair_id: Option<u16>,
}

/// A query never answered.
#[derive(Clone, Debug, Serialize)]
pub struct UnansweredQuery {
    #[serde(skip)]
    pub ifindex: u32,
    #[serde(skip)]
    pub query_dir: u8,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub transport: &'static str,
    pub id: u16,
    pub question: Question,
    /// Sends seen (1 + retransmissions with the same id and socket).
    pub sends: u32,
}

/// Counts of the resolver-timeout signature: events at ~5, ~10, ~15 s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TimeoutModes {
    pub around_5s: u64,
    pub around_10s: u64,
    pub around_15s: u64,
    pub other: u64,
}

impl TimeoutModes {
    /// Adds one observation `elapsed` after the first send.
    pub fn add(&mut self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        match secs {
            s if (4.0..6.5).contains(&s) => self.around_5s += 1,
            s if (9.0..11.5).contains(&s) => self.around_10s += 1,
            s if (14.0..16.5).contains(&s) => self.around_15s += 1,
            _ => self.other += 1,
        }
    }

    pub const fn total(&self) -> u64 {
        self.around_5s + self.around_10s + self.around_15s + self.other
    }

    pub const fn merge(&mut self, other: &Self) {
        self.around_5s += other.around_5s;
        self.around_10s += other.around_10s;
        self.around_15s += other.around_15s;
        self.other += other.other;
    }
}

/// Tallies from events and sweeps, per (interface, query direction).
#[derive(Clone, Debug, Default)]
struct IfaceTally {
    slow: u64,
    resent: u64,
    /// Re-sends of a query whose answer had passed here.
    resent_after_answer: u64,
    parallel_pairs: u64,
    /// Sends that never got their answer here: each re-send of a query
    /// still pending stands for one, and a swept query for its last send.
    unanswered_sends: u64,
    /// Queries swept with no answer at all.
    abandoned: u64,
    retry_modes: TimeoutModes,
    late_answer_modes: TimeoutModes,
}

impl IfaceTally {
    fn add(&mut self, o: &Self) {
        self.slow += o.slow;
        self.resent += o.resent;
        self.resent_after_answer += o.resent_after_answer;
        self.parallel_pairs += o.parallel_pairs;
        self.unanswered_sends += o.unanswered_sends;
        self.abandoned += o.abandoned;
        self.retry_modes.merge(&o.retry_modes);
        self.late_answer_modes.merge(&o.late_answer_modes);
    }

    fn side_tally(&self) -> SideTally {
        SideTally {
            slow_answers: self.slow,
            retries: self.resent,
            retry_modes: self.retry_modes,
            retries_after_answer: self.resent_after_answer,
            lost_sends: self.unanswered_sends,
            never_answered: self.abandoned,
            parallel_pairs: self.parallel_pairs,
        }
    }
}

/// One lost send as one observation point saw it.
#[derive(Clone, Copy, Debug)]
struct LossRecord {
    ifindex: u32,
    query_dir: u8,
    /// The server address where it was seen (before DNAT on a client's
    /// port: maybe a service address).
    server: IpAddr,
    sign: LossSign,
}

/// What the report needs to know about the node's interfaces.
pub struct NodeView<'a> {
    /// An interface's name.
    pub name_of: &'a dyn Fn(u32) -> String,
    /// Whether an interface is a bridge device (its TC directions are the
    /// other way round, see [`role`]).
    pub is_bridge: &'a dyn Fn(u32) -> bool,
    /// Whether an address belongs to a pod behind a traced port: a query to
    /// it that no server-side observation saw never reached that port.
    pub traced_pod_ip: &'a dyn Fn(IpAddr) -> bool,
}

/// The DNS collector of one trace.
pub struct DnsCollector {
    ring: Ring,
    settings: DnsSettings,
    stats_base: Vec<u64>,
    hist_base: HashMap<DnsHistKey, Vec<u64>>,
    /// Final histograms of vanished interfaces, whose kernel entries were
    /// deleted ([`Self::retire`]): the map is sized for the live pods, not
    /// for every pod a node ever ran.
    hist_retired: BTreeMap<DnsHistKey, Vec<u64>>,
    tally: BTreeMap<(u32, u8), IfaceTally>,
    losses: HashMap<ExchangeId, Vec<LossRecord>>,
    loss_records: usize,
    losses_unlocated: u64,
    slow_names: BTreeMap<Question, SlowName>,
    events: Vec<DnsEventRecord>,
    events_total: u64,
    unanswered: Vec<UnansweredQuery>,
    /// Never-answered queries past [`UNANSWERED_LISTED`].
    unanswered_not_listed: u64,
    /// Slow answers for names past [`SLOW_NAMES_TRACKED`].
    slow_names_not_tracked: u64,
    undecodable_events: u64,
    /// Pending entries at the start, and removed by the sweeper since.
    pending_at_start: u64,
    swept: u64,
    /// Re-sends and never-answered queries per (port, direction, server).
    server_sends: SendTallies,
    /// When each lost or re-sent query was first sent (bounded), for
    /// correlating losses with node events by time ([`crate::bridge_setup`]).
    loss_times: Vec<LossTime>,
    /// For [`round_first_send`].
    resend_rounds: ResendRounds,
}

/// One query that went wrong, with the time of its first send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LossTime {
    pub exchange: ExchangeId,
    /// CLOCK_MONOTONIC of the query's first send, as the probe saw it.
    pub first_send_ns: u64,
    /// Never answered (swept), rather than re-sent (and maybe answered).
    pub never_answered: bool,
}

/// A socket's send this close after its previous re-send belongs to the
/// same round of re-sends (glibc sends the pair within microseconds).
const RESEND_ROUND_NS: u64 = 1_000_000;
/// Sockets remembered for that; forgotten all at once past it.
const RESEND_ROUNDS_MAX: usize = 4096;

/// Loss times kept per trace (16 bytes of id + 9: a few MiB at most).
const LOSS_TIMES_MAX: usize = 65_536;

/// How often a name was slow, and its worst latency.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SlowName {
    pub count: u64,
    pub max_ms: f64,
}

impl DnsCollector {
    /// Takes the ring buffer out of `ebpf` and records the counters' current
    /// values, so the report covers only this trace.
    pub fn new(ebpf: &mut Ebpf, settings: DnsSettings) -> Result<Self, DnsError> {
        let ring = ebpf
            .take_map("DNS_EVENTS")
            .ok_or(DnsError::MissingMap("DNS_EVENTS"))?;
        let ring = Ring::new(ring)?;
        Ok(Self {
            ring,
            settings,
            stats_base: read_stats(ebpf)?,
            hist_base: read_hists(ebpf)?,
            hist_retired: BTreeMap::new(),
            tally: BTreeMap::new(),
            losses: HashMap::new(),
            loss_records: 0,
            losses_unlocated: 0,
            slow_names: BTreeMap::new(),
            events: Vec::new(),
            events_total: 0,
            unanswered: Vec::new(),
            unanswered_not_listed: 0,
            slow_names_not_tracked: 0,
            undecodable_events: 0,
            pending_at_start: count_pending(ebpf)?,
            swept: 0,
            server_sends: SendTallies::new(),
            loss_times: Vec::new(),
            resend_rounds: HashMap::new(),
        })
    }

    /// Waits until the ring buffer has events, then decodes them all.
    pub async fn readable(&mut self) -> Result<(), DnsError> {
        self.ring.readable().await?;
        self.drain();
        Ok(())
    }

    /// Decodes every event waiting in the ring buffer.
    pub fn drain(&mut self) {
        let (decoded, undecodable) = self.ring.drain_decoded::<DnsEvent>();
        self.undecodable_events += undecodable;
        for event in decoded {
            self.record(&event);
        }
    }

    fn record(&mut self, raw: &DnsEvent) {
        self.events_total += 1;
        let elapsed = Duration::from_nanos(raw.elapsed_ns);
        let mut loss = None;
        let tally = self
            .tally
            .entry((raw.key.ifindex, raw.key.query_dir))
            .or_default();
        let question = decode_question(raw.question_len, &raw.question, raw.qtype, raw.flags);
        if raw.reasons & reason::SLOW != 0 {
            tally.slow += 1;
            tally.late_answer_modes.add(elapsed);
            let tracked = self.slow_names.len() < SLOW_NAMES_TRACKED
                || self.slow_names.contains_key(&question);
            if tracked {
                let slow = self.slow_names.entry(question.clone()).or_default();
                slow.count += 1;
                slow.max_ms = slow.max_ms.max(ms(elapsed));
            } else {
                self.slow_names_not_tracked += 1;
            }
        }
        if raw.reasons & reason::RESENT != 0 {
            self.server_sends
                .entry(send_key(&raw.key))
                .or_default()
                .resent += 1;
            loss = Some(if raw.flags & flag::ANSWERED_HERE != 0 {
                // Its answer passed here: this send was not lost here
                // (glibc re-sends A and AAAA when one answer is missing).
                tally.resent_after_answer += 1;
                LossSign::ResentAfterAnswer
            } else {
                // glibc re-sends only after its timeout: the previous send
                // of this query (same socket, same id) went unanswered.
                tally.resent += 1;
                tally.retry_modes.add(elapsed);
                tally.unanswered_sends += 1;
                LossSign::ResentUnanswered
            });
        }
        if raw.reasons & reason::PARALLEL != 0 {
            tally.parallel_pairs += 1;
        }
        if let Some(sign) = loss {
            self.remember_loss(&raw.key, sign);
            let first_send = round_first_send(&mut self.resend_rounds, raw);
            self.remember_time(&raw.key, first_send, false);
        }
        if self.events.len() < self.settings.max_events {
            self.events.push(event_record(raw, question, elapsed));
        }
    }

    fn remember_loss(&mut self, key: &DnsKey, sign: LossSign) {
        if self.loss_records >= LOSS_RECORDS_MAX {
            self.losses_unlocated += 1;
            return;
        }
        self.loss_records += 1;
        self.losses
            .entry(exchange_id(key))
            .or_default()
            .push(LossRecord {
                ifindex: key.ifindex,
                query_dir: key.query_dir,
                server: ip_addr(key.family, &key.server),
                sign,
            });
    }

    fn remember_time(&mut self, key: &DnsKey, first_send_ns: u64, never_answered: bool) {
        if self.loss_times.len() < LOSS_TIMES_MAX {
            self.loss_times.push(LossTime {
                exchange: exchange_id(key),
                first_send_ns,
                never_answered,
            });
        }
    }

    /// Queries re-sent or never answered so far, with their first send's
    /// time (the first [`LOSS_TIMES_MAX`]).
    pub fn loss_times(&self) -> &[LossTime] {
        &self.loss_times
    }

    /// Moves queries whose last send is older than the timeout out of the
    /// pending map into the unanswered list. `now_ns` is CLOCK_MONOTONIC
    /// (what bpf_ktime_get_ns reads).
    pub fn sweep(&mut self, ebpf: &mut Ebpf, now_ns: u64) -> Result<(), DnsError> {
        let timeout = u64::try_from(self.settings.unanswered_after.as_nanos()).unwrap_or(u64::MAX);
        let stale: Vec<(DnsKey, DnsPending)> = pending_entries(ebpf)?
            .into_iter()
            .filter(|(_, p)| now_ns.saturating_sub(p.last_ns) >= timeout)
            .collect();
        let map = ebpf
            .map_mut("DNS_PENDING")
            .ok_or(DnsError::MissingMap("DNS_PENDING"))?;
        let mut pending: BpfHashMap<_, DnsKey, DnsPending> = BpfHashMap::try_from(map)?;
        for (key, p) in stale {
            // The answer may have removed it meanwhile: then it was answered.
            if pending.remove(&key).is_err() {
                continue;
            }
            self.swept += 1;
            self.server_sends
                .entry(send_key(&key))
                .or_default()
                .never_answered += 1;
            let tally = self.tally.entry((key.ifindex, key.query_dir)).or_default();
            tally.abandoned += 1;
            // Re-sends of it were counted as they happened; this is the last.
            tally.unanswered_sends += 1;
            self.remember_loss(&key, LossSign::NeverAnswered);
            self.remember_time(&key, p.first_ns, true);
            if self.unanswered.len() >= UNANSWERED_LISTED {
                self.unanswered_not_listed += 1;
                continue;
            }
            let (client, server) = addrs(&key);
            let cut = if usize::from(p.question_len) >= p.question.len() {
                flag::QUESTION_CUT
            } else {
                0
            };
            self.unanswered.push(UnansweredQuery {
                ifindex: key.ifindex,
                query_dir: key.query_dir,
                client,
                server,
                transport: transport(&key),
                id: key.id,
                question: decode_question(p.question_len, &p.question, p.qtype, cut),
                sends: p.sends,
            });
        }
        Ok(())
    }

    /// Builds the DNS section of the report. `lists`: with the unanswered
    /// queries and the events one by one (the final report); without them
    /// for the per-second snapshots (the live view and `/metrics` use only
    /// counts, and copying up to [`UNANSWERED_LISTED`] questions a second
    /// costs memory).
    pub fn report(
        &self,
        ebpf: &Ebpf,
        node: &NodeView<'_>,
        lists: bool,
    ) -> Result<DnsReport, DnsError> {
        let name_of = node.name_of;
        let side_of =
            |ifindex: u32, query_dir: u8| role::side((node.is_bridge)(ifindex), query_dir);
        let stats_now = read_stats(ebpf)?;
        let stat = |i: usize| stats_now[i].saturating_sub(*self.stats_base.get(i).unwrap_or(&0));
        let counters = DnsCounts::from_fn(|s| stat(s as usize));
        let rcodes = (0..16u8)
            .filter_map(|rc| {
                let n = stat(RCODE_BASE as usize + usize::from(rc));
                (n > 0).then(|| (question::rcode_name(rc), n))
            })
            .collect();

        let Latency {
            rows: latency,
            answered,
            side_buckets,
        } = self.latency(ebpf, node)?;

        let per_interface = self.per_interface(name_of);
        let slow_names = self.top_slow_names();
        let mut events = if lists {
            self.events.clone()
        } else {
            Vec::new()
        };
        for e in &mut events {
            e.interface = Some(name_of(e.ifindex));
            e.side = Some(side_of(e.ifindex, e.query_dir));
        }
        // The LRU evicts silently: what went in and is neither answered,
        // swept nor still there was evicted (exact once traffic is quiet).
        // One read of the pending map serves both the count and the
        // per-server tally (under a flood it holds 16 384 entries).
        let pending_now = pending_by_server(ebpf)?;
        let accounted =
            stat(DnsStat::Matched as usize) + self.swept + pending_now.values().sum::<u64>();
        let pending_evicted = (stat(DnsStat::PendingInserted as usize) + self.pending_at_start)
            .saturating_sub(accounted);
        let exchanges = self.exchanges(&side_of, node.traced_pod_ip, &side_buckets, &latency);
        let servers = server_use::rows(
            &server_use::UseInputs {
                answered: &answered,
                pending: &pending_now,
                tallies: &self.server_sends,
            },
            name_of,
            &side_of,
        );
        Ok(DnsReport {
            servers,
            exchanges,
            losses_unlocated: self.losses_unlocated,
            pending_evicted,
            counters,
            rcodes,
            latency,
            per_interface,
            top_slow_names: slow_names,
            slow_names_not_tracked: self.slow_names_not_tracked,
            unanswered_not_listed: self.unanswered_not_listed,
            unanswered: self
                .unanswered
                .iter()
                .filter(|_| lists)
                .map(|u| UnansweredReport {
                    interface: name_of(u.ifindex),
                    side: side_of(u.ifindex, u.query_dir),
                    query: u.clone(),
                    drop: None,
                })
                .collect(),
            events,
            events_total: self.events_total,
            undecodable_events: self.undecodable_events,
        })
    }
}

impl DnsCollector {
    /// Latency rows per (interface, server, side) from the live and the
    /// retired histograms, with answers per send key and the buckets merged
    /// per side.
    fn latency(&self, ebpf: &Ebpf, node: &NodeView<'_>) -> Result<Latency, DnsError> {
        let name_of = node.name_of;
        let side_of =
            |ifindex: u32, query_dir: u8| role::side((node.is_bridge)(ifindex), query_dir);
        let mut latency = Vec::new();
        let mut answered: BTreeMap<SendKey, u64> = BTreeMap::new();
        let mut side_buckets: BTreeMap<Side, Vec<u64>> = BTreeMap::new();
        let live = read_hists(ebpf)?
            .into_iter()
            .map(|(key, buckets)| (key, since(&buckets, self.hist_base.get(&key))));
        let retired = self.hist_retired.iter().map(|(k, v)| (*k, v.clone()));
        for (key, delta) in live.chain(retired) {
            if delta.iter().all(|&n| n == 0) {
                continue;
            }
            *answered
                .entry((key.ifindex, key.query_dir, ip_addr(key.family, &key.server)))
                .or_default() += delta.iter().sum::<u64>();
            let side = side_of(key.ifindex, key.query_dir);
            side_buckets
                .entry(side)
                .or_insert_with(|| vec![0; HIST_BUCKETS])
                .iter_mut()
                .zip(&delta)
                .for_each(|(total, n)| *total += n);
            let mut row = LatencyReport::from_buckets(
                name_of(key.ifindex),
                ip_addr(key.family, &key.server),
                &delta,
            );
            row.side = side;
            latency.push(row);
        }
        latency.sort_by(|a, b| {
            (&a.interface, &a.server, a.side).cmp(&(&b.interface, &b.server, b.side))
        });
        Ok(Latency {
            rows: latency,
            answered,
            side_buckets,
        })
    }

    /// The tallies per interface (both directions summed).
    fn per_interface(&self, name_of: &dyn Fn(u32) -> String) -> Vec<InterfaceDns> {
        let mut by_iface: BTreeMap<u32, IfaceTally> = BTreeMap::new();
        for (&(ifindex, _), t) in &self.tally {
            by_iface.entry(ifindex).or_default().add(t);
        }
        by_iface
            .iter()
            .map(|(&ifindex, t)| InterfaceDns {
                interface: name_of(ifindex),
                slow_answers: t.slow,
                resent: t.resent,
                resent_after_answer: t.resent_after_answer,
                parallel_pairs: t.parallel_pairs,
                unanswered_sends: t.unanswered_sends,
                abandoned: t.abandoned,
                retry_modes: t.retry_modes,
                late_answer_modes: t.late_answer_modes,
            })
            .collect()
    }

    /// The ten names with the most slow answers.
    fn top_slow_names(&self) -> Vec<SlowNameReport> {
        let mut slow_names: Vec<_> = self
            .slow_names
            .iter()
            .map(|(q, s)| SlowNameReport {
                name: q.name.clone(),
                qtype: q.qtype.clone(),
                count: s.count,
                max_ms: s.max_ms,
            })
            .collect();
        slow_names.sort_by(|a, b| b.count.cmp(&a.count).then(b.max_ms.total_cmp(&a.max_ms)));
        slow_names.truncate(10);
        slow_names
    }
}

/// What [`DnsCollector::latency`] reads from the histograms.
struct Latency {
    rows: Vec<LatencyReport>,
    answered: BTreeMap<SendKey, u64>,
    side_buckets: BTreeMap<Side, Vec<u64>>,
}

impl DnsCollector {
    /// The figures counted once per exchange (see [`exchanges`]).
    fn exchanges(
        &self,
        side_of: &dyn Fn(u32, u8) -> Side,
        traced_pod_ip: &dyn Fn(IpAddr) -> bool,
        side_buckets: &BTreeMap<Side, Vec<u64>>,
        latency: &[LatencyReport],
    ) -> DnsExchanges {
        let mut tallies: BTreeMap<Side, IfaceTally> = BTreeMap::new();
        for (&(ifindex, dir), t) in &self.tally {
            tallies.entry(side_of(ifindex, dir)).or_default().add(t);
        }
        let seen =
            |side: Side| tallies.contains_key(&side) || latency.iter().any(|l| l.side == side);
        let observed_at = if seen(Side::Client) || !seen(Side::Server) {
            Side::Client
        } else {
            Side::Server
        };
        let server_traced = seen(Side::Server);
        let mut lost_at: BTreeMap<LossLocation, u64> = BTreeMap::new();
        for records in self.losses.values() {
            let server_signs: Vec<LossSign> = records
                .iter()
                .filter(|r| side_of(r.ifindex, r.query_dir) == Side::Server)
                .map(|r| r.sign)
                .collect();
            for r in records {
                if side_of(r.ifindex, r.query_dir) != observed_at
                    || r.sign == LossSign::ResentAfterAnswer
                {
                    continue;
                }
                let traced = server_traced || traced_pod_ip(r.server);
                let at = exchanges::locate(observed_at, r.sign, &server_signs, traced);
                *lost_at.entry(at).or_default() += 1;
            }
            // Seen only as "asked again after the answer passed" at the
            // server: the client's side had no record (untraced client).
            if observed_at == Side::Server {
                let after = records
                    .iter()
                    .filter(|r| r.sign == LossSign::ResentAfterAnswer)
                    .count() as u64;
                if after > 0 {
                    *lost_at.entry(LossLocation::AfterServerPort).or_default() += after;
                }
            }
        }
        let side_latency = |side: Side| {
            side_buckets
                .get(&side)
                .map(|b| SideLatency::from_buckets(b))
        };
        DnsExchanges {
            observed_at,
            answers: side_latency(observed_at).map_or(0, |l| l.answers),
            tally: tallies
                .get(&observed_at)
                .map(IfaceTally::side_tally)
                .unwrap_or_default(),
            lost_at,
            client_latency: side_latency(Side::Client),
            server_latency: side_latency(Side::Server),
        }
    }
}

/// Per client socket (family, address, port): its last re-send's time and
/// that round's first send.
type ResendRounds = HashMap<(u8, [u8; 16], u16), (u64, u64)>;

/// When a re-sent query was first sent. A re-send of a still pending query
/// knows (`elapsed_ns` since its first send); one whose answer had passed
/// only knows the gap since its socket's previous send. glibc re-sends A
/// and AAAA back to back: for the second, that previous send is the first's
/// re-send, and the round's first send is the first's.
fn round_first_send(rounds: &mut ResendRounds, raw: &DnsEvent) -> u64 {
    let estimate = raw.ts_ns.saturating_sub(raw.elapsed_ns);
    let socket = (raw.key.family, raw.key.client, raw.key.client_port);
    let first = match rounds.get(&socket) {
        Some(&(last_resend, first))
            if raw.flags & flag::ANSWERED_HERE != 0
                && estimate.abs_diff(last_resend) < RESEND_ROUND_NS =>
        {
            first
        }
        _ => estimate,
    };
    if rounds.len() >= RESEND_ROUNDS_MAX {
        rounds.clear();
    }
    rounds.insert(socket, (raw.ts_ns, first));
    first
}

fn exchange_id(key: &DnsKey) -> ExchangeId {
    ExchangeId {
        family: key.family,
        client: key.client,
        client_port: key.client_port,
        proto: key.proto,
        id: key.id,
    }
}

fn decode_question(len: u16, bytes: &[u8], qtype: u16, flags: u8) -> Question {
    let len = usize::from(len).min(bytes.len());
    question::decode(&bytes[..len], qtype, flags & flag::QUESTION_CUT != 0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn transport(key: &DnsKey) -> &'static str {
    if key.proto == 6 { "tcp" } else { "udp" }
}

fn ip_addr(family: u8, bytes: &[u8; 16]) -> IpAddr {
    if family == 4 {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        IpAddr::from(*bytes)
    }
}

/// One event as the report lists it (interface and side are filled in by
/// the report, which knows the names and the bridges).
fn event_record(raw: &DnsEvent, question: Question, elapsed: Duration) -> DnsEventRecord {
    let (client, server) = addrs(&raw.key);
    let mut kind = Vec::new();
    for (bit, name) in [
        (reason::SLOW, "slow"),
        (reason::RCODE, "rcode"),
        (reason::TRUNCATED, "truncated"),
        (reason::RESENT, "resent"),
        (reason::PARALLEL, "parallel_pair"),
    ] {
        if raw.reasons & bit != 0 {
            kind.push(name);
        }
    }
    if raw.flags & flag::ANSWERED_HERE != 0 {
        // Asked again although its answer had passed here.
        kind.retain(|k| *k != "resent");
        kind.push("resent_after_answer");
    }
    let is_answer = raw.flags & flag::RESPONSE != 0;
    DnsEventRecord {
        interface: None,
        side: None,
        ifindex: raw.key.ifindex,
        query_dir: raw.key.query_dir,
        kind,
        client,
        server,
        transport: transport(&raw.key),
        id: raw.key.id,
        question,
        elapsed_ms: ms(elapsed),
        sends: raw.sends,
        rcode: is_answer.then(|| question::rcode_name(raw.rcode)),
        pair_id: (raw.reasons & reason::PARALLEL != 0).then_some(raw.other_id),
    }
}

/// The client's and the server's address and port.
fn addrs(key: &DnsKey) -> (SocketAddr, SocketAddr) {
    let endpoint = |addr: &[u8; 16], port: u16| SocketAddr::new(ip_addr(key.family, addr), port);
    (
        endpoint(&key.client, key.client_port),
        endpoint(&key.server, key.server_port),
    )
}

/// The key a send is counted under in the server-use tally.
fn send_key(key: &DnsKey) -> SendKey {
    (key.ifindex, key.query_dir, ip_addr(key.family, &key.server))
}

/// Queries waiting for an answer now, per (port, direction, server).
fn pending_by_server(ebpf: &Ebpf) -> Result<BTreeMap<SendKey, u64>, DnsError> {
    let mut out = BTreeMap::new();
    for (key, _) in pending_entries(ebpf)? {
        *out.entry(send_key(&key)).or_default() += 1;
    }
    Ok(out)
}

/// Entries in the pending-query LRU.
fn count_pending(ebpf: &Ebpf) -> Result<u64, DnsError> {
    Ok(pending_entries(ebpf)?.len() as u64)
}

/// The pending-query LRU's entries (bounded: the map is). One batched read
/// where the kernel has it (5.6+), else a walk of two calls per entry.
fn pending_entries(ebpf: &Ebpf) -> Result<Vec<(DnsKey, DnsPending)>, DnsError> {
    let map = ebpf
        .map("DNS_PENDING")
        .ok_or(DnsError::MissingMap("DNS_PENDING"))?;
    // Entries come and go during a walk; bound it all the same.
    let limit = 4 * tracer_common::dns::PENDING_MAX_ENTRIES as usize;
    if let Ok(entries) = crate::sys::lookup_batch(map, limit) {
        return Ok(entries);
    }
    let pending: BpfHashMap<_, DnsKey, DnsPending> = BpfHashMap::try_from(map)?;
    Ok(pending.iter().take(limit).filter_map(Result::ok).collect())
}

/// The kernel's DNS outcome counters (`DnsStat` indices, then rcodes), summed
/// over CPUs.
pub fn read_stats(ebpf: &Ebpf) -> Result<Vec<u64>, DnsError> {
    let map = ebpf
        .map("DNS_STATS")
        .ok_or(DnsError::MissingMap("DNS_STATS"))?;
    let stats: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
    (0..DNS_STATS_LEN)
        .map(|i| Ok(stats.get(&i, 0)?.iter().sum()))
        .collect()
}

/// Answers in every latency histogram, summed over keys, buckets and CPUs.
pub fn read_hist_totals(ebpf: &Ebpf) -> Result<u64, DnsError> {
    Ok(read_hists(ebpf)?
        .values()
        .map(|buckets| buckets.iter().sum::<u64>())
        .sum())
}

/// `buckets` minus `base` (counts since the trace began).
fn since(buckets: &[u64], base: Option<&Vec<u64>>) -> Vec<u64> {
    buckets
        .iter()
        .enumerate()
        .map(|(i, n)| n.saturating_sub(base.and_then(|b| b.get(i).copied()).unwrap_or(0)))
        .collect()
}

/// Adds `more` into `total`, bucket by bucket (an empty `total` grows).
fn add_buckets(total: &mut Vec<u64>, more: &[u64]) {
    if total.len() < more.len() {
        total.resize(more.len(), 0);
    }
    for (t, n) in total.iter_mut().zip(more) {
        *t += n;
    }
}

/// Deletes `key` from `DNS_HIST` and `DNS_HIST_SPILL` (absent is fine).
fn remove_hist(ebpf: &mut Ebpf, key: &DnsHistKey) -> Result<(), DnsError> {
    let map = ebpf
        .map_mut("DNS_HIST")
        .ok_or(DnsError::MissingMap("DNS_HIST"))?;
    let mut hists: PerCpuHashMap<_, DnsHistKey, DnsHist> = PerCpuHashMap::try_from(map)?;
    let _ = hists.remove(key);
    let spill = ebpf
        .map_mut("DNS_HIST_SPILL")
        .ok_or(DnsError::MissingMap("DNS_HIST_SPILL"))?;
    let mut spill: BpfHashMap<_, DnsHistKey, DnsHist> = BpfHashMap::try_from(spill)?;
    let _ = spill.remove(key);
    Ok(())
}

fn read_hists(ebpf: &Ebpf) -> Result<HashMap<DnsHistKey, Vec<u64>>, DnsError> {
    let map = ebpf
        .map("DNS_HIST")
        .ok_or(DnsError::MissingMap("DNS_HIST"))?;
    let hists: PerCpuHashMap<_, DnsHistKey, DnsHist> = PerCpuHashMap::try_from(map)?;
    let mut out: HashMap<DnsHistKey, Vec<u64>> = HashMap::new();
    let mut add = |key: DnsHistKey, hist: &DnsHist| {
        let sum = out.entry(key).or_insert_with(|| vec![0u64; HIST_BUCKETS]);
        for (total, n) in sum.iter_mut().zip(hist.buckets.iter()) {
            *total += n;
        }
    };
    for entry in hists.iter() {
        let (key, per_cpu) = entry?;
        for hist in per_cpu.iter() {
            add(key, hist);
        }
    }
    // Answers whose per-CPU entry could not be created at that moment.
    let spill = ebpf
        .map("DNS_HIST_SPILL")
        .ok_or(DnsError::MissingMap("DNS_HIST_SPILL"))?;
    let spill: BpfHashMap<_, DnsHistKey, DnsHist> = BpfHashMap::try_from(spill)?;
    for entry in spill.iter() {
        let (key, hist) = entry?;
        add(key, &hist);
    }
    Ok(out)
}

/// The DNS section of a report.
#[derive(Debug, Serialize)]
pub struct DnsReport {
    /// Per port and server: query packets sent and answered (the traffic
    /// side of the `dns_servers` finding).
    pub servers: Vec<ServerUse>,
    /// Each exchange counted once, from the client's side, with where lost
    /// sends were lost. What findings, the lab table, `check` and the
    /// `tracer_dns_exchange_*` metrics use; everything else here is per
    /// interface (an exchange crossing two traced ports shows on both).
    pub exchanges: DnsExchanges,
    /// Lost sends past the bounded record kept for locating them: counted
    /// in the tallies, not in `exchanges.lost_at`.
    pub losses_unlocated: u64,
    /// Queries the full pending LRU evicted before an answer or the sweep:
    /// their answers count as unmatched, and if none came they are missing
    /// from `unanswered` (a loss, also listed under `losses`).
    pub pending_evicted: u64,
    /// Kernel outcome counters over the trace (queries, answers, matched,
    /// unmatched, malformed, …).
    pub counters: DnsCounts,
    /// Answers per rcode.
    pub rcodes: BTreeMap<String, u64>,
    /// Latency per (interface, server).
    pub latency: Vec<LatencyReport>,
    pub per_interface: Vec<InterfaceDns>,
    pub top_slow_names: Vec<SlowNameReport>,
    /// Slow answers for names beyond the first 4 096 distinct ones (not
    /// in `top_slow_names`; counted in the per-interface figures).
    pub slow_names_not_tracked: u64,
    /// Queries never answered, one by one (at most [`UNANSWERED_LISTED`]; see
    /// `unanswered_not_listed` for the rest).
    pub unanswered: Vec<UnansweredReport>,
    pub unanswered_not_listed: u64,
    /// The first events (see `events_total`).
    pub events: Vec<DnsEventRecord>,
    pub events_total: u64,
    /// Ring-buffer records too short to be an event (never expected).
    pub undecodable_events: u64,
}

#[derive(Debug, Serialize)]
pub struct UnansweredReport {
    pub interface: String,
    /// The side of the exchange it was seen on (the same query unanswered
    /// at the server's port shows there too).
    pub side: Side,
    #[serde(flatten)]
    pub query: UnansweredQuery,
    /// The drop the kernel reported for this exchange's query or answer,
    /// when one was seen (kernels with drop reasons, v5.17+; absent
    /// otherwise: the report's `drops.unavailable` says why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop: Option<crate::drops::DropSeen>,
}

#[derive(Debug, Serialize)]
pub struct SlowNameReport {
    pub name: String,
    pub qtype: String,
    pub count: u64,
    pub max_ms: f64,
}

/// DNS tallies of one interface.
#[derive(Debug, Serialize)]
pub struct InterfaceDns {
    pub interface: String,
    pub slow_answers: u64,
    /// Re-sends of a query still unanswered here.
    pub resent: u64,
    /// Re-sends of a query whose answer had passed here (at the server's
    /// port: the answer left and was lost on the way to the client).
    pub resent_after_answer: u64,
    pub parallel_pairs: u64,
    /// Sends whose answer never came (the client timed out on each).
    pub unanswered_sends: u64,
    /// Queries never answered at all (listed under `unanswered`).
    pub abandoned: u64,
    /// Re-sends by time since the first send.
    pub retry_modes: TimeoutModes,
    /// Slow answers by latency.
    pub late_answer_modes: TimeoutModes,
}

impl DnsReport {
    /// Replaces every DNS name with `<redacted>` (for exports: names can be
    /// sensitive; `--dns-names` keeps them).
    pub fn redact_names(&mut self) {
        let redact = |q: &mut Question| q.name = "<redacted>".to_owned();
        self.events.iter_mut().for_each(|e| redact(&mut e.question));
        self.unanswered
            .iter_mut()
            .for_each(|u| redact(&mut u.query.question));
        self.top_slow_names
            .iter_mut()
            .for_each(|s| s.name = "<redacted>".to_owned());
    }
}

/// Latency of the answers seen on one interface from one server.
#[derive(Debug, Serialize)]
pub struct LatencyReport {
    pub interface: String,
    pub server: IpAddr,
    /// The side of the exchanges this interface saw: `client` (the client's
    /// port: what the client waits) or `server` (the server's own time).
    pub side: Side,
    pub answers: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Non-empty kernel buckets: `[low_ns, high_ns, count]`.
    pub buckets: Vec<[u64; 3]>,
}

impl LatencyReport {
    /// Builds percentiles from kernel buckets (each bucket's count recorded
    /// at its midpoint, in microseconds, into an HdrHistogram).
    pub fn from_buckets(interface: String, server: IpAddr, buckets: &[u64]) -> Self {
        let (hist, nonzero, max_hi) = histogram(buckets);
        let q = |quantile| hist.value_at_quantile(quantile) as f64 / 1000.0;
        Self {
            interface,
            server,
            // The report sets the side it knows; a client's view is what an
            // unlabelled histogram is.
            side: Side::Client,
            answers: hist.len(),
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            max_ms: max_hi as f64 / 1e6,
            buckets: nonzero,
        }
    }
}

impl SideLatency {
    /// A side's figures from its merged kernel buckets.
    fn from_buckets(buckets: &[u64]) -> Self {
        let (hist, _, _) = histogram(buckets);
        let q = |quantile| hist.value_at_quantile(quantile) as f64 / 1000.0;
        Self {
            answers: hist.len(),
            p50_ms: q(0.5),
            p99_ms: q(0.99),
        }
    }
}

/// Kernel buckets as an HdrHistogram in µs (each bucket's count at its
/// midpoint), with the non-empty buckets (`[low_ns, high_ns, count]`) and
/// the highest one's upper bound in ns.
fn histogram(buckets: &[u64]) -> (Histogram<u64>, Vec<[u64; 3]>, u64) {
    {
        let mut hist = Histogram::<u64>::new(3).expect("3 significant figures is valid");
        let mut nonzero = Vec::new();
        let mut max_hi = 0;
        for (index, &count) in buckets.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let (lo, hi) = bucket_bounds_ns(index as u32);
            let mid_us = (lo + hi) / 2 / 1000;
            let _ = hist.record_n(mid_us.max(1), count);
            nonzero.push([lo, hi, count]);
            max_hi = hi;
        }
        (hist, nonzero, max_hi)
    }
}

impl InterfaceState for DnsCollector {
    fn area(&self) -> &'static str {
        "dns"
    }

    /// Interfaces `ifindexes` vanished: keeps their latency histograms'
    /// counts and deletes their kernel entries (`DNS_HIST` and its spill),
    /// so a node whose pods come and go for weeks never fills the map.
    fn retire(&mut self, ebpf: &mut Ebpf, ifindexes: &BTreeSet<u32>) -> Result<(), AreaError> {
        let now = read_hists(ebpf)?;
        for (key, buckets) in now
            .into_iter()
            .filter(|(k, _)| ifindexes.contains(&k.ifindex))
        {
            let delta = since(&buckets, self.hist_base.remove(&key).as_ref());
            add_buckets(self.hist_retired.entry(key).or_default(), &delta);
            remove_hist(ebpf, &key)?;
        }
        Ok(())
    }

    /// Merges what was counted on the vanished `ifindex` (histograms and
    /// tallies) into `into`: the report then lists the oldest vanished
    /// interfaces as one row and still counts every answer and loss.
    fn fold_interface(&mut self, ifindex: u32, into: u32) {
        rekey::fold(
            &mut self.hist_retired,
            |k| k.ifindex == ifindex,
            |k| DnsHistKey { ifindex: into, ..k },
            |total, buckets| add_buckets(total, buckets),
        );
        rekey::fold(
            &mut self.tally,
            |k| k.0 == ifindex,
            |k| (into, k.1),
            IfaceTally::add,
        );
        server_use::fold_sends(&mut self.server_sends, ifindex, into);
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::dns::latency_bucket;

    use super::*;

    #[test]
    fn percentiles_from_buckets_are_within_two_percent() {
        let mut buckets = vec![0u64; HIST_BUCKETS];
        // 1000 answers: 50 ms … 149.9 ms uniformly.
        let values: Vec<u64> = (0..1000).map(|i| 50_000_000 + i * 100_000).collect();
        for &v in &values {
            buckets[latency_bucket(v) as usize] += 1;
        }
        let r = LatencyReport::from_buckets("x".into(), IpAddr::from([10, 0, 0, 1]), &buckets);
        assert_eq!(r.answers, 1000);
        for (got, want) in [(r.p50_ms, 100.0), (r.p90_ms, 140.0), (r.p99_ms, 149.0)] {
            assert!((got - want).abs() / want < 0.02, "got {got}, want {want}");
        }
    }

    #[test]
    fn a_resend_after_an_answer_takes_its_rounds_first_send() {
        let event = |id: u16, ts_ns: u64, elapsed_ns: u64, flags: u8| DnsEvent {
            ts_ns,
            elapsed_ns,
            key: DnsKey {
                id,
                client_port: 40000,
                family: 4,
                ..DnsKey::default()
            },
            reasons: tracer_common::dns::reason::RESENT,
            sends: 2,
            qtype: 1,
            other_id: 0,
            rcode: 0,
            flags,
            question_len: 0,
            question: [0; tracer_common::dns::QUESTION_CAP],
        };
        const S: u64 = 1_000_000_000;
        let mut rounds = ResendRounds::new();
        // A re-sent 5 s after the pair went out at 10 s (its answer had
        // passed: the gap is to the AAAA's first send, 10 µs after the A's).
        let a = event(1, 15 * S, 5 * S - 10_000, flag::ANSWERED_HERE);
        assert_eq!(round_first_send(&mut rounds, &a), 10 * S + 10_000);
        // AAAA re-sent 20 µs later: its gap is to the A's re-send.
        let aaaa = event(2, 15 * S + 20_000, 20_000, flag::ANSWERED_HERE);
        assert_eq!(round_first_send(&mut rounds, &aaaa), 10 * S + 10_000);
        // A pending query's re-send knows its first send.
        let pending = event(3, 30 * S, 5 * S, 0);
        assert_eq!(round_first_send(&mut rounds, &pending), 25 * S);
    }

    #[test]
    fn timeout_modes() {
        let mut m = TimeoutModes::default();
        for s in [5.0, 5.2, 10.1, 15.0, 2.0, 30.0] {
            m.add(Duration::from_secs_f64(s));
        }
        assert_eq!(
            m,
            TimeoutModes {
                around_5s: 2,
                around_10s: 1,
                around_15s: 1,
                other: 2
            }
        );
    }
}
