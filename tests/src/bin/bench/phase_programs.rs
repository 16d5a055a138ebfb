//! Phase 1: per-packet cost by test run.

use super::*;

pub(crate) const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 240, 1, 2);
pub(crate) const SERVER: Ipv4Addr = Ipv4Addr::new(10, 240, 1, 1);

pub(crate) fn query_frame(id: u16, sport: u16) -> Vec<u8> {
    let q = DnsMsg::query(id, QNAME, 1).bytes();
    Frame::ipv4(
        CLIENT,
        SERVER,
        L4::Udp {
            src: sport,
            dst: 53,
        },
        &q,
    )
    .build()
}

pub(crate) fn answer_frame(id: u16, dport: u16) -> Vec<u8> {
    let a = DnsMsg::response(id, QNAME, 1, 0, 1).bytes();
    Frame::ipv4(
        SERVER,
        CLIENT,
        L4::Udp {
            src: 53,
            dst: dport,
        },
        &a,
    )
    .build()
}

pub(crate) fn phase_programs(b: &mut Bench) -> Result<()> {
    let runs = b.args.runs;
    let t0 = Instant::now();
    let kernel = probes::kernel_info();
    let t_btf = t0.elapsed();
    let mut ebpf = probes::load_full(&ProbeSettings::default(), &kernel)?;
    let t_object = t0.elapsed();
    let deployed = tc_programs();
    let _tc = TcAttachments::load(&mut ebpf, &deployed)?;
    let t_verified = t0.elapsed();
    let _areas = TcAttachments::load(&mut ebpf, &area_programs())?;
    let programs: Vec<TcProgram> = deployed.iter().copied().chain(area_programs()).collect();
    // test_run's skb comes in on the loopback device (ifindex 1): give it a
    // pod MAC equal to the frames' destination, so flood_tc_egress takes the
    // path of every frame addressed to its pod.
    flood::set_port_macs(&mut ebpf, &[(1, frames::DST_MAC)])?;
    let empty = EmptyProgram::load()?;

    let udp = Frame::ipv4(
        CLIENT,
        SERVER,
        L4::Udp {
            src: 40000,
            dst: SINK_PORT,
        },
        &[0x5a; PACKET_PAYLOAD],
    )
    .build();
    // A DNS header cut after 6 bytes: counted as malformed.
    let malformed = Frame::ipv4(
        CLIENT,
        SERVER,
        L4::Udp {
            src: 40000,
            dst: 53,
        },
        &DnsMsg::query(1, QNAME, 1).bytes(),
    )
    .truncate(14 + 20 + 8 + 6)
    .build();
    let unmatched = answer_frame(0x7777, 40001);
    // Not IP: the parser stops after the Ethernet header (diagnostic).
    let mut arp = udp.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let fixed: [(&str, &[u8]); 4] = [
        ("non-DNS UDP", &udp),
        ("ARP (stops after Ethernet)", &arp),
        ("malformed DNS", &malformed),
        ("DNS answer, no query", &unmatched),
    ];
    // Stateful paths: (query's program, answer's program). An answer leaves
    // the way its query came (the kernel matches by the query's direction):
    // a client pod's query is its host veth's ingress, the answer its
    // egress; a server pod's the other way round. DNS's own programs once.
    let dns_pairs: [(&str, &str); 3] = [
        (watch::TC_PROGRAMS[0].name, watch::TC_PROGRAMS[1].name),
        (watch::TC_PROGRAMS[1].name, watch::TC_PROGRAMS[0].name),
        (dns::PROGRAMS[0].name, dns::PROGRAMS[1].name),
    ];

    // ns per program run, net of the empty program's figure.
    let mut cost: BTreeMap<(String, &'static str), Series> = BTreeMap::new();
    let mut floor = Series::default();
    let mut floor_single = Series::default();
    let mut id: u16 = 1;
    for _ in 0..runs {
        check_stop()?;
        let base = empty.run(&udp, TEST_RUN_REPEAT)?;
        floor.push(base);
        for (path, frame) in fixed {
            for p in &programs {
                let v = test_run(&ebpf, p.name, frame, TEST_RUN_REPEAT)?;
                cost.entry((path.to_owned(), p.name))
                    .or_default()
                    .push(v - base);
            }
        }
        // Stateful paths: one repetition per test run, so each run also
        // pays the timer and cold caches once; the empty program timed the
        // same way is subtracted.
        let mut single = 0.0;
        for _ in 0..DNS_LOOP {
            single += empty.run(&udp, 1)?;
        }
        let base1 = single / DNS_LOOP as f64;
        floor_single.push(base1);
        // A new query and its matched answer, a new id and one of 1024
        // source ports each time; then queries whose QDCOUNT (2) makes the
        // probe skip copying the question (diagnostic).
        for (name, answer_name) in dns_pairs {
            let (mut q_ns, mut a_ns, mut q2_ns) = (0.0, 0.0, 0.0);
            for k in 0..DNS_LOOP {
                id = id.wrapping_add(1);
                let sport = 30000 + (k % 1024) as u16;
                q_ns += test_run(&ebpf, name, &query_frame(id, sport), 1)?;
                a_ns += test_run(&ebpf, answer_name, &answer_frame(id, sport), 1)?;
            }
            for k in 0..DNS_LOOP {
                id = id.wrapping_add(1);
                let sport = 30000 + (k % 1024) as u16;
                let q = DnsMsg::query(id, QNAME, 1).qdcount(2).bytes();
                let f = Frame::ipv4(
                    CLIENT,
                    SERVER,
                    L4::Udp {
                        src: sport,
                        dst: 53,
                    },
                    &q,
                )
                .build();
                q2_ns += test_run(&ebpf, name, &f, 1)?;
                test_run(&ebpf, answer_name, &answer_frame(id, sport), 1)?;
            }
            let n = DNS_LOOP as f64;
            for (path, prog, total) in [
                ("DNS query (new)", name, q_ns),
                ("DNS answer (matched)", answer_name, a_ns),
                ("DNS query (new), question not copied", name, q2_ns),
            ] {
                cost.entry((path.into(), prog))
                    .or_default()
                    .push(total / n - base1);
            }
        }
    }
    let stats = dns::collector::read_stats(&ebpf)?;
    let matched = stats[tracer_common::dns::DnsStat::Matched as usize];
    // A "matched answer" that found no query would time the unmatched path.
    let expected = (runs * dns_pairs.len() * 2 * DNS_LOOP) as u64;
    ensure!(
        matched == expected,
        "{matched} of {expected} test-run answers matched their query"
    );

    // Table per path: each program, worst program against the target.
    let paths = [
        ("non-DNS UDP", Some(TARGET_NS_OTHER)),
        ("DNS query (new)", Some(TARGET_NS_DNS)),
        ("DNS answer (matched)", Some(TARGET_NS_DNS)),
        ("DNS answer, no query", Some(TARGET_NS_DNS)),
        ("malformed DNS", Some(TARGET_NS_DNS)),
        ("ARP (stops after Ethernet)", None),
        ("DNS query (new), question not copied", None),
    ];
    let mut md = String::from(
        "### Per-packet cost by `BPF_PROG_TEST_RUN` (ns per program run, net of an empty \
         program; median (min–max)). `tracer_ingress`/`tracer_egress` are what `tracer watch` \
         attaches; the others are the same code split by area.\n\n",
    );
    let names: Vec<&str> = programs.iter().map(|p| p.name).collect();
    let _ = writeln!(md, "| path | {} |", names.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(programs.len()));
    let mut json_paths = serde_json::Map::new();
    for (path, target) in paths {
        let mut cells = Vec::new();
        let mut per_prog = serde_json::Map::new();
        let mut worst: Option<(&str, f64, &Series)> = None;
        for p in &programs {
            match cost.get(&(path.to_owned(), p.name)) {
                Some(s) => {
                    cells.push(s.show(|v| format!("{v:.1}")));
                    per_prog.insert(p.name.into(), s.json());
                    let m = s.median().unwrap_or(f64::NAN);
                    // Targets apply to what nodes run.
                    let is_deployed = deployed.iter().any(|d| d.name == p.name);
                    if is_deployed && worst.is_none_or(|(_, w, _)| m > w) {
                        worst = Some((p.name, m, s));
                    }
                }
                None => cells.push("–".into()),
            }
        }
        let _ = writeln!(md, "| {path} | {} |", cells.join(" | "));
        json_paths.insert(path.into(), Value::Object(per_prog));
        if let (Some((name, m, s)), Some(target)) = (worst, target) {
            b.row(
                &format!("test run, {path}: slowest program ({name})"),
                s.show(ns),
                &format!("≤ {target:.0} ns"),
                Some(m <= target),
            );
        }
    }
    let _ = writeln!(
        md,
        "\nFixed paths: repeat {TEST_RUN_REPEAT}, minus the empty program's {} per \
         repetition (the harness: `local_bh_disable`, timer, loop). New query / matched \
         answer: {DNS_LOOP} pairs per run and program, one repetition per test run, minus \
         the empty program timed the same way ({}). Test runs call the program directly: \
         the TCX dispatch is not in them (see the packet path). {matched} answers matched \
         in total. Load: BTF {:.0} ms, object {:.0} ms, verifier (the 2 deployed TC \
         programs) {:.0} ms.",
        floor.show(ns),
        floor_single.show(ns),
        t_btf.as_secs_f64() * 1e3,
        (t_object - t_btf).as_secs_f64() * 1e3,
        (t_verified - t_object).as_secs_f64() * 1e3,
    );
    // What dominates, from differences between paths (medians).
    let med = |path: &str, prog: &str| {
        cost.get(&(path.to_owned(), prog))
            .and_then(Series::median)
            .unwrap_or(f64::NAN)
    };
    let d = "dns_tc_ingress";
    let (udp_ns, arp_ns) = (med("non-DNS UDP", d), med("ARP (stops after Ethernet)", d));
    let (new_q, no_copy) = (
        med("DNS query (new)", d),
        med("DNS query (new), question not copied", d),
    );
    // The answer to a query seen on ingress is timed in the egress program.
    let (matched_a, unmatched_a) = (
        med("DNS answer (matched)", dns::PROGRAMS[1].name),
        med("DNS answer, no query", dns::PROGRAMS[1].name),
    );
    let malformed_ns = med("malformed DNS", d);
    let parts = |path: &str| {
        (
            med(path, "tracer_egress"),
            med(path, "counter_tc_egress"),
            med(path, "dns_tc_egress"),
            med(path, "flood_tc_egress"),
        )
    };
    let (te, tc, td, tf) = parts("non-DNS UDP");
    let largest = [("counter", tc), ("DNS", td), ("flood", tf)]
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or("?", |(n, _)| n);
    let deployed_line = format!(
        "- Deployed `tracer_egress` on a non-DNS packet: {te:.0} ns; the same code as separate \
         programs: counter {tc:.0} + DNS {td:.0} + flood {tf:.0} = {:.0} ns; the largest part \
         is {largest}.\n",
        tc + td + tf
    );
    let dominates = format!(
        "\n**What dominates** (differences of the medians above, `{d}`):\n\n{deployed_line}\
         - Non-DNS packets: {udp_ns:.0} ns, of which {arp_ns:.0} ns reach the end of the \
         Ethernet header (one `bpf_skb_load_bytes`); IPv4 and UDP headers (two more helper \
         calls) add {:.0} ns, about {:.0} ns per call. The counter's single per-CPU hash \
         update costs {:.0} ns; flood_tc_egress's array lookup plus one load {:.0} ns.\n\
         - New query: {new_q:.0} ns. Copying and walking the question is {:.0} ns of it; \
         the rest ({:.0} ns more than a packet whose DNS header is cut, which stops before any map) is the per-socket \
         LRU lookup and the pending LRU's insert of a {}-byte entry.\n\
         - Matched answer: {matched_a:.0} ns, {:.0} ns more than an answer with no query: \
         the pending hit, the per-CPU histogram update and the LRU delete.\n",
        udp_ns - arp_ns,
        (udp_ns - arp_ns) / 2.0,
        med("non-DNS UDP", "counter_tc_ingress"),
        med("non-DNS UDP", "flood_tc_egress"),
        new_q - no_copy,
        no_copy - malformed_ns,
        size_of::<tracer_common::dns::DnsPending>(),
        matched_a - unmatched_a,
    );
    md.push_str(&dominates);
    b.detail(md);
    b.json.insert(
        "test_run".into(),
        json!({
            "repeat": TEST_RUN_REPEAT,
            "stateful_pairs_per_run": DNS_LOOP,
            "empty_program_ns_repeat": floor.json(),
            "empty_program_ns_single": floor_single.json(),
            "net_ns_per_run": json_paths,
            "load_ms": {
                "btf": t_btf.as_secs_f64() * 1e3,
                "object": (t_object - t_btf).as_secs_f64() * 1e3,
                "verify_deployed_tc": (t_verified - t_object).as_secs_f64() * 1e3,
            },
        }),
    );
    Ok(())
}
