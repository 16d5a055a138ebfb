use std::{
    fs,
    net::IpAddr,
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::atomic::{AtomicU32, Ordering},
};

use super::{index::Facts, *};
use crate::{
    interfaces::{Interface, Kind},
    verdict::NodeDatapath,
};

fn iface(index: u32, name: &str, kind: Kind, master: Option<u32>) -> Interface {
    Interface {
        index,
        name: name.into(),
        kind,
        master,
        mac: None,
        peer: None,
    }
}

fn veth(index: u32, name: &str, master: Option<u32>, nsid: i32) -> Interface {
    Interface {
        peer: Some((2, nsid)),
        ..iface(index, name, Kind::Veth, master)
    }
}

fn host_route(ip: &str, oif: u32, proto: u8) -> Route {
    let dst: IpAddr = ip.parse().unwrap();
    Route {
        prefix_len: if dst.is_ipv4() { 32 } else { 128 },
        dst,
        oif: Some(oif),
        proto,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "tracer-pods-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// -- datapath ----------------------------------------------------------

#[test]
fn bridge_with_veth_ports_is_bridge_mode() {
    let all = vec![
        iface(1, "lo", Kind::Loopback, None),
        iface(2, "eth0", Kind::Other("hv_netvsc".into()), Some(3)),
        iface(3, "azure0", Kind::Bridge, None),
        veth(4, "azv1", Some(3), 0),
        veth(5, "azv2", Some(3), 1),
        iface(6, "docker0", Kind::Bridge, None),
    ];
    let routes = vec![Route {
        dst: ip("10.240.0.0"),
        prefix_len: 16,
        oif: Some(3),
        proto: RTPROT_KERNEL,
    }];
    let info = detect_datapath(&all, &routes);
    assert_eq!(info.mode, NodeDatapath::Bridge);
    assert_eq!(
        info.bridges,
        [BridgeInfo {
            name: "azure0".into(),
            ports: vec!["eth0".into(), "azv1".into(), "azv2".into()],
            veth_ports: 2,
        }],
        "docker0 without ports is no evidence"
    );
    assert!(info.routed_veths.is_empty());
}

#[test]
fn veths_with_host_routes_are_transparent_mode() {
    let all = vec![
        iface(2, "eth0", Kind::Other("hv_netvsc".into()), None),
        veth(7, "azv1", None, 0),
        veth(8, "cali2", None, 1),
        veth(9, "lxc3", None, 2),
    ];
    let routes = vec![
        host_route("10.240.0.7", 7, 4),              // Azure CNI: proto static
        host_route("10.240.0.8", 8, 3),              // Calico: proto boot
        host_route("fd00::9", 9, 4),                 // IPv6 /128
        host_route("10.240.0.4", 2, 4),              // not a veth
        host_route("169.254.1.1", 9, RTPROT_KERNEL), // kernel-derived
    ];
    let info = detect_datapath(&all, &routes);
    assert_eq!(info.mode, NodeDatapath::Transparent);
    assert_eq!(info.routed_veths, ["azv1", "cali2", "lxc3"]);
    assert!(info.bridges.is_empty());
}

#[test]
fn both_is_mixed_and_neither_is_unknown() {
    let all = vec![
        iface(3, "cbr0", Kind::Bridge, None),
        veth(4, "veth1", Some(3), 0),
        veth(5, "veth2", None, 1),
    ];
    let routes = vec![host_route("10.0.0.5", 5, 4)];
    assert_eq!(detect_datapath(&all, &routes).mode, NodeDatapath::Mixed);
    // An unrouted stray veth, a /24 to a veth, a kernel host route:
    // nothing says how pods are wired.
    let routes = vec![
        Route {
            dst: ip("10.0.0.0"),
            prefix_len: 24,
            oif: Some(5),
            proto: 4,
        },
        host_route("10.0.0.9", 5, RTPROT_KERNEL),
    ];
    let all = vec![veth(5, "veth2", None, 1)];
    let info = detect_datapath(&all, &routes);
    assert_eq!(info.mode, NodeDatapath::Unknown);
    assert_eq!(info, DatapathInfo::default());
}

#[test]
fn a_host_route_is_full_length_per_family() {
    let mut r = host_route("10.0.0.1", 1, 4);
    assert!(r.is_host());
    r.prefix_len = 31;
    assert!(!r.is_host());
    let r = Route {
        dst: ip("fd00::1"),
        prefix_len: 32,
        oif: Some(1),
        proto: 4,
    };
    assert!(!r.is_host(), "a /32 in IPv6 is a huge prefix");
}

// -- Azure CNI state ---------------------------------------------------

const AZURE_BRIDGE: &str = include_str!("testdata/azure-vnet-bridge.json");
const AZURE_TRANSPARENT: &str = include_str!("testdata/azure-vnet-transparent.json");
const AZURE_TRUNCATED: &str = include_str!("testdata/azure-vnet-truncated.json");
const AZURE_WRONG_SHAPE: &str = include_str!("testdata/azure-vnet-wrong-shape.json");

#[test]
fn parses_bridge_mode_state() {
    let eps = parse_azure_state(AZURE_BRIDGE).unwrap();
    assert_eq!(eps.len(), 3);
    let coredns = eps
        .iter()
        .find(|e| e.pod_name.as_deref() == Some("coredns-6f7d5c9b8-x2kqp"))
        .unwrap();
    assert_eq!(coredns.pod_namespace.as_deref(), Some("kube-system"));
    assert_eq!(coredns.host_if.as_deref(), Some("azv5e1a0c7d2f4"));
    assert_eq!(coredns.ips, [ip("10.240.0.31")]);
    assert_eq!(coredns.mode.as_deref(), Some("bridge"));
    assert_eq!(coredns.bridge.as_deref(), Some("azure0"));
    assert_eq!(coredns.network, "azure");
    assert_eq!(coredns.id, "3f9c2a1b-eth0");
    assert_eq!(
        coredns.netns_path.as_deref(),
        Some("/var/run/netns/cni-5b0e8a9c-0f5e-5f7e-2c44-9d1f0c3a7b21")
    );
    assert!(
        coredns
            .container_id
            .as_deref()
            .unwrap()
            .starts_with("3f9c2a1b")
    );
    // Missing PODName/PODNameSpace, null IPAddresses: still an endpoint.
    let bare = eps.iter().find(|e| e.id == "9a0b1c2d-eth0").unwrap();
    assert_eq!(bare.pod_name, None);
    assert_eq!(bare.pod_namespace, None);
    assert!(bare.ips.is_empty());
}

#[test]
fn parses_transparent_mode_state() {
    let eps = parse_azure_state(AZURE_TRANSPARENT).unwrap();
    assert_eq!(eps.len(), 2);
    assert!(eps.iter().all(|e| e.mode.as_deref() == Some("transparent")));
    assert!(eps.iter().all(|e| e.bridge.is_none()), "BridgeName is \"\"");
    let nginx = eps
        .iter()
        .find(|e| e.pod_name.as_deref() == Some("nginx"))
        .unwrap();
    assert_eq!(nginx.pod_namespace.as_deref(), Some("default"));
    assert_eq!(nginx.host_if.as_deref(), Some("azvc440f455693"));
    // Dual stack: both addresses, in the CNI's order.
    assert_eq!(nginx.ips, [ip("10.224.0.24"), ip("fd00:10:224::18")]);
}

#[test]
fn bad_state_is_a_clear_error_not_a_panic() {
    let err = parse_azure_state(AZURE_TRUNCATED).unwrap_err();
    assert!(matches!(err, AzureStateError::Json(_)), "{err}");
    assert!(err.to_string().starts_with("not valid JSON"), "{err}");
    let err = parse_azure_state(AZURE_WRONG_SHAPE).unwrap_err();
    assert!(err.to_string().contains("\"Network\""), "{err}");
    for text in [
        "[1, 2]",
        "{\"Network\": 3}",
        "{\"Network\": {\"ExternalInterfaces\": []}}",
    ] {
        assert!(
            matches!(parse_azure_state(text), Err(AzureStateError::Layout(_))),
            "{text}"
        );
    }
    // Odd members deep inside are skipped, not fatal.
    let odd = r#"{"Network": {"ExternalInterfaces": {"eth0": {"Networks": {"azure":
        {"Endpoints": {"a": 7, "b": {"PODName": "p", "IPAddresses": [{"IP": 5}, "10.1.2.3/16", {"IP": "bogus"}]}}}}}}}}"#;
    let eps = parse_azure_state(odd).unwrap();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].ips, [ip("10.1.2.3")]);
    // Empty store and empty state: no endpoints.
    assert!(parse_azure_state("  \n").unwrap().is_empty());
    assert!(parse_azure_state("{\"Network\": null}").unwrap().is_empty());
    assert!(
        parse_azure_state("{\"Network\": {\"ExternalInterfaces\": null}}")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn reading_state_files() {
    let dir = TempDir::new("azure");
    assert!(
        read_azure_state(&dir.0.join("absent.json"))
            .unwrap()
            .is_none()
    );
    let bad = dir.0.join("azure-vnet.json");
    fs::write(&bad, AZURE_TRUNCATED).unwrap();
    let err = read_azure_state(&bad).unwrap_err();
    assert!(
        err.to_string().contains("azure-vnet.json") && err.to_string().contains("JSON"),
        "{err}"
    );
}

#[test]
fn huge_and_endless_state_files_are_refused_without_reading_them() {
    let dir = TempDir::new("azure-huge");
    let huge = dir.0.join("azure-vnet.json");
    // Sparse: 1 GiB that costs nothing on disk.
    fs::File::create(&huge).unwrap().set_len(1 << 30).unwrap();
    let err = read_azure_state(&huge).unwrap_err().to_string();
    assert!(
        err.contains("1073741824 bytes") && err.contains("16 MiB"),
        "{err}"
    );
    // A character device reports size 0 and never ends: the cap holds.
    let endless = dir.0.join("endless.json");
    std::os::unix::fs::symlink("/dev/zero", &endless).unwrap();
    let err = read_azure_state(&endless).unwrap_err().to_string();
    assert!(err.contains("over the 16 MiB"), "{err}");
}

#[test]
fn pod_log_symlinks_are_names_only_never_followed() {
    let dir = TempDir::new("pod-log-links");
    let uid = "8d2f1c3e-0b7a-4c61-9f00-4d9c8f6e2a11";
    // A link to a secret outside, one to nowhere, one looping: only the
    // entry names are read, never the targets.
    for (target, name) in [
        ("/etc/shadow", format!("kube-system_coredns-1_{uid}")),
        (
            "/nonexistent",
            "default_web-0_1f0e8d7c-6b5a-4938-8271-605f4e3d2c1b".into(),
        ),
        ("loop", "loop".into()),
    ] {
        std::os::unix::fs::symlink(target, dir.0.join(name)).unwrap();
    }
    let logs = read_pod_logs(&dir.0).unwrap();
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[uid], ("kube-system".into(), "coredns-1".into()));
    // The root itself a symlink outside: listed like any directory.
    let root_link = dir.0.join("root-link");
    std::os::unix::fs::symlink(&dir.0, &root_link).unwrap();
    assert_eq!(read_pod_logs(&root_link).unwrap().len(), 2);
}

// -- cgroups and /var/log/pods -----------------------------------------

#[test]
fn pod_uids_from_cgroup_paths() {
    let systemd_v2 = "0::/kubepods.slice/kubepods-burstable.slice/\
        kubepods-burstable-pod8a6f2f52_0c3b_4c4e_9e1d_2b5f7d0c9a11.slice/\
        cri-containerd-0123abcd.scope\n";
    assert_eq!(
        pod_uid_from_cgroup(systemd_v2).as_deref(),
        Some("8a6f2f52-0c3b-4c4e-9e1d-2b5f7d0c9a11")
    );
    let guaranteed = "0::/kubepods.slice/kubepods-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice/cri-containerd-ff.scope";
    assert_eq!(
        pod_uid_from_cgroup(guaranteed).as_deref(),
        Some("1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901")
    );
    let cgroupfs_v1 = "12:pids:/kubepods/besteffort/pod0D1E2F3A-4B5C-6D7E-8F90-A1B2C3D4E5F6/4f1c\n\
        11:memory:/kubepods/besteffort/pod0D1E2F3A-4B5C-6D7E-8F90-A1B2C3D4E5F6/4f1c\n";
    assert_eq!(
        pod_uid_from_cgroup(cgroupfs_v1).as_deref(),
        Some("0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6")
    );
    // Static pods: the UID is a 32-digit config hash.
    let static_pod = "0::/kubepods/burstable/pod5e4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a/abc";
    assert_eq!(
        pod_uid_from_cgroup(static_pod).as_deref(),
        Some("5e4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a")
    );
    // kind/nested kubelet: kubepods below another hierarchy.
    let nested = "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/\
        kubelet-kubepods-besteffort-pod11111111_2222_3333_4444_555555555555.slice/cri-containerd-9.scope";
    assert_eq!(
        pod_uid_from_cgroup(nested).as_deref(),
        Some("11111111-2222-3333-4444-555555555555")
    );
    for not_a_pod in [
        "0::/",
        "0::/user.slice/user-0.slice/session-3.scope",
        "0::/system.slice/containerd.service",
        "4:memory:/process_api/c29a891d0f8ef79a36fa508fc586cfe6",
        "0::/podman.slice/pod1234.slice", // not under kubepods
        "0::/kubepods.slice/kubepods-burstable.slice",
        "0::/kubepods/burstable/podnot-a-uid/x",
        "garbage without colons",
        "",
    ] {
        assert_eq!(pod_uid_from_cgroup(not_a_pod), None, "{not_a_pod:?}");
    }
}

#[test]
fn pod_log_dirs_name_namespace_pod_and_uid() {
    assert_eq!(
        parse_pod_log_dir(
            "kube-system_coredns-6f7d5c9b8-x2kqp_8a6f2f52-0c3b-4c4e-9e1d-2b5f7d0c9a11"
        ),
        Some((
            "kube-system".into(),
            "coredns-6f7d5c9b8-x2kqp".into(),
            "8a6f2f52-0c3b-4c4e-9e1d-2b5f7d0c9a11".into()
        ))
    );
    for bad in [
        "kube-system_coredns",
        "a_b_c_d",
        "_x_8a6f2f52-0c3b-4c4e-9e1d-2b5f7d0c9a11",
        "ns_pod_nope",
    ] {
        assert_eq!(parse_pod_log_dir(bad), None, "{bad}");
    }
    let root = TempDir::new("logs");
    for dir in [
        "kube-system_coredns-abc_8a6f2f52-0c3b-4c4e-9e1d-2b5f7d0c9a11",
        "default_web-0_0D1E2F3A-4B5C-6D7E-8F90-A1B2C3D4E5F6",
        "lost+found",
    ] {
        fs::create_dir(root.0.join(dir)).unwrap();
    }
    let logs = read_pod_logs(&root.0).unwrap();
    assert_eq!(logs.len(), 2);
    assert_eq!(
        logs["0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6"],
        ("default".into(), "web-0".into())
    );
    assert!(read_pod_logs(&root.0.join("absent")).unwrap().is_empty());
}

#[test]
fn namespaces_are_grouped_by_inode() {
    // A fake proc root: the ns/net "links" are plain files here, so
    // their inodes stand in for namespace inodes.
    let proc = TempDir::new("proc");
    let netns = TempDir::new("netns");
    let make = |pid: &str, target: Option<&Path>| {
        let dir = proc.0.join(pid).join("ns");
        fs::create_dir_all(&dir).unwrap();
        match target {
            Some(t) => std::os::unix::fs::symlink(t, dir.join("net")).unwrap(),
            None => fs::write(dir.join("net"), "").unwrap(),
        }
        dir.join("net")
    };
    let a = make("100", None);
    make("102", Some(&a));
    make("101", Some(&a));
    make("200", None);
    fs::create_dir_all(proc.0.join("self")).unwrap(); // not a pid
    fs::create_dir_all(proc.0.join("300")).unwrap(); // no ns: skipped
    std::os::unix::fs::symlink(&a, netns.0.join("cni-1234")).unwrap();
    let groups = scan_namespaces(&proc.0, &netns.0);
    assert_eq!(groups.len(), 2);
    let meta = fs::metadata(&a).unwrap();
    let group_a = &groups[&(meta.dev(), meta.ino())];
    assert_eq!(group_a.pids, [100, 101, 102]);
    assert_eq!(group_a.name.as_deref(), Some("cni-1234"));
    assert_eq!(group_a.handles[0], netns.0.join("cni-1234"));
    assert!(groups.values().any(|g| g.pids == [200] && g.name.is_none()));
}

// -- assembly ----------------------------------------------------------

const UID_WEB: &str = "0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6";

fn link(nsid: i32, name: Option<&str>, pids: &[u32]) -> NetnsLink {
    NetnsLink {
        nsid,
        inode: 4_026_532_000 + u64::try_from(nsid).unwrap(),
        name: name.map(str::to_owned),
        pids: pids.to_vec(),
    }
}

#[test]
fn a_mixed_nodes_uplink_veth_is_no_pod() {
    // Bridge cbr0 with a pod port and the node's uplink veth (its peer
    // has no address), plus a routed pod veth.
    let ifaces = vec![
        iface(3, "cbr0", Kind::Bridge, None),
        veth(4, "veth1", Some(3), 0),
        veth(5, "eth0", Some(3), 1),
        veth(6, "azv2", None, 2),
        veth(7, "azv3", None, 3), // peer unreadable: kept
    ];
    let routes = vec![host_route("10.0.0.6", 6, 4)];
    assert_eq!(detect_datapath(&ifaces, &routes).mode, NodeDatapath::Mixed);
    let mut facts = Facts::default();
    facts.peer_addrs.insert(4, vec![ip("10.0.0.4")]);
    facts.peer_addrs.insert(5, Vec::new());
    facts.peer_addrs.insert(6, Vec::new());
    let index = assemble(&ifaces, &routes, facts);
    assert!(index.pod_of_ifindex(5).is_none(), "the uplink");
    assert_eq!(index.pod_of_ifindex(4).unwrap().label(), "veth1");
    assert_eq!(index.pod_of_ifindex(6).unwrap().ips, [ip("10.0.0.6")]);
    assert!(index.pod_of_ifindex(7).is_some());
}

#[test]
fn azure_first_then_cgroup_then_interface() {
    let ifaces = vec![
        iface(2, "eth0", Kind::Other("hv_netvsc".into()), None),
        veth(10, "azvc440f455693", None, 0), // Azure, by HostIfName
        veth(11, "azv2", None, 1),           // Azure, by netns path
        veth(12, "azv3", None, 2),           // cgroup → /var/log/pods
        veth(13, "azv4", None, 3),           // process, not a pod
        veth(14, "azv5", None, 4),           // nothing known
    ];
    let routes = vec![
        host_route("10.224.0.24", 10, 4),
        host_route("10.224.0.40", 12, 4),
        host_route("10.224.0.50", 14, 4),
    ];
    let mut facts = Facts {
        azure: parse_azure_state(AZURE_TRANSPARENT).unwrap(),
        ..Facts::default()
    };
    // The coredns endpoint lost its HostIfName and azv2 has no route
    // for its IP: only its netns path (cni-aaaa, nsid 1) ties them.
    facts.azure[0].host_if = None;
    facts.netns.insert(1, link(1, Some("cni-aaaa"), &[]));
    facts.netns.insert(2, link(2, None, &[500, 501]));
    facts.netns.insert(3, link(3, Some("lab-pod"), &[600]));
    facts.uids.insert(2, UID_WEB.into());
    facts
        .pod_logs
        .insert(UID_WEB.into(), ("shop".into(), "web-0".into()));
    facts.peer_addrs.insert(12, vec![ip("10.224.0.40")]);
    facts.peer_addrs.insert(13, vec![ip("10.224.0.60")]);

    let index = assemble(&ifaces, &routes, facts);
    assert_eq!(index.len(), 5, "every veth, not eth0");
    assert!(index.pod_of_ifindex(2).is_none());

    let nginx = index.pod_of_ifindex(10).unwrap();
    assert_eq!(nginx.label(), "default/nginx");
    assert_eq!(nginx.source, SOURCE_AZURE);
    assert_eq!(nginx.ips, [ip("10.224.0.24"), ip("fd00:10:224::18")]);
    assert_eq!(index.pod_of_ip(ip("fd00:10:224::18")), Some(nginx));

    let dns = index.pod_of_ifindex(11).unwrap();
    assert_eq!(dns.label(), "kube-system/coredns-597bb9d4db-l9xps");
    assert_eq!(dns.host_if.as_deref(), Some("azv2"));
    assert_eq!(
        dns.netns.as_ref().unwrap().name.as_deref(),
        Some("cni-aaaa")
    );

    let web = index.pod_of_ifindex(12).unwrap();
    assert_eq!(web.label(), "shop/web-0");
    assert_eq!(web.source, SOURCE_CGROUP);
    assert_eq!(web.uid.as_deref(), Some(UID_WEB));
    assert_eq!(web.ips, [ip("10.224.0.40")], "route and address, once");
    assert_eq!(web.netns.as_ref().unwrap().pids, [500, 501]);

    let stray = index.pod_of_ifindex(13).unwrap();
    assert_eq!(stray.label(), "azv4");
    assert_eq!(stray.source, SOURCE_INTERFACE);
    assert_eq!(stray.netns.as_ref().unwrap().pids, [600]);
    assert_eq!(index.pod_of_ip(ip("10.224.0.60")).unwrap().label(), "azv4");

    let bare = index.pod_of_ifindex(14).unwrap();
    assert_eq!(
        (bare.label(), bare.source),
        ("azv5".into(), SOURCE_INTERFACE)
    );
    assert_eq!(bare.ips, [ip("10.224.0.50")]);
    assert!(bare.netns.is_none() && bare.uid.is_none());
}

#[test]
fn azure_endpoints_without_a_live_interface_still_name_their_ips() {
    // Bridge mode: no routes; one endpoint's veth is gone, and a live
    // veth (by cgroup) has since taken one of its IPs.
    let ifaces = vec![
        iface(3, "azure0", Kind::Bridge, None),
        veth(20, "azv5e1a0c7d2f4", Some(3), 0),
        veth(21, "azvnew", Some(3), 1),
    ];
    let mut facts = Facts {
        azure: parse_azure_state(AZURE_BRIDGE).unwrap(),
        ..Facts::default()
    };
    facts.peer_addrs.insert(21, vec![ip("10.240.0.45")]);
    let index = assemble(&ifaces, &[], facts);
    let coredns = index.pod_of_ifindex(20).unwrap();
    assert_eq!(coredns.label(), "kube-system/coredns-6f7d5c9b8-x2kqp");
    assert_eq!(
        index
            .pod_of_ip(ip("10.240.0.31"))
            .unwrap()
            .host_if
            .as_deref(),
        Some("azv5e1a0c7d2f4")
    );
    // konnectivity's veth is gone: its IP still maps to it …
    let gone = index.pod_of_ip(ip("10.240.0.52")).unwrap();
    assert_eq!(gone.label(), "kube-system/konnectivity-agent-7c9d8-abcde");
    assert_eq!(gone.host_if.as_deref(), Some("azv0dead0beef1"));
    // … but the live interface claiming 10.240.0.45 wins over the
    // stale endpoint that listed it too.
    assert_eq!(
        index.pod_of_ip(ip("10.240.0.45")).unwrap().label(),
        "azvnew"
    );
    // The endpoint without a pod name attributes nothing.
    assert_eq!(index.by_ifindex().len(), 2);
}

// -- privileged: real namespaces -----------------------------------------
// They build their nodes with the lab's topology.
#[cfg(feature = "lab")]
mod in_namespaces {
    use super::*;

    use crate::{
        interfaces,
        lab::topology::{Datapath, Topology},
        netns,
        privileges::{self, Cap},
    };

    fn privileged(test: &str) -> bool {
        let Some(reason) = privileges::check(&[Cap::NetAdmin, Cap::SysAdmin]) else {
            return true;
        };
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test} cannot run: {reason}. Under CI=true a skipped privileged test is a failure."
        );
        eprintln!("SKIPPED {test}: {reason}");
        false
    }

    /// Reads links and routes inside `node` and builds the index there.
    fn detect_in(node: &str, sources: Sources) -> (DatapathInfo, PodIndex, Vec<Interface>) {
        netns::run_in(node, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let all = interfaces::list().await.unwrap();
                let routes = read_routes().await.unwrap();
                let info = detect_datapath(&all, &routes);
                let index = PodIndex::build(&all, &routes, &sources).await;
                (info, index, all)
            })
        })
        .unwrap()
    }

    fn no_azure(dir: &TempDir) -> Sources {
        Sources {
            azure_state: dir.0.join("azure-vnet.json"),
            pods_log_root: dir.0.join("pods"),
            ..Sources::default()
        }
    }

    /// A process in a pod's namespace; killed (by its PID) on drop.
    struct PodProcess(std::process::Child);

    impl PodProcess {
        fn start(netns: &str) -> Self {
            let child = std::process::Command::new("ip")
                .args(["netns", "exec", netns, "sleep", "30"])
                .spawn()
                .unwrap();
            let pid = child.id();
            let me = PodProcess(child);
            // `ip netns exec` enters the namespace, then execs sleep in the
            // same process: wait for the exec.
            let comm = format!("/proc/{pid}/comm");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while fs::read_to_string(&comm)
                .map(|c| c.trim() != "sleep")
                .unwrap_or(true)
            {
                assert!(std::time::Instant::now() < deadline, "sleep never started");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            me
        }

        fn pid(&self) -> u32 {
            self.0.id()
        }
    }

    impl Drop for PodProcess {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn lab_transparent_node_is_detected_and_routed_veths_map_to_pod_ips() {
        if !privileged("lab_transparent_node_is_detected_and_routed_veths_map_to_pod_ips") {
            return;
        }
        let topo = Topology::build(Datapath::Transparent, 2).unwrap();
        let dir = TempDir::new("lab-t");
        let (info, index, all) = detect_in(&topo.node, no_azure(&dir));
        assert_eq!(info.mode, NodeDatapath::Transparent, "{info:?}");
        assert!(info.bridges.is_empty());
        let mut expected: Vec<String> = topo.pods.iter().map(|p| p.host_if.clone()).collect();
        expected.sort();
        let mut routed = info.routed_veths.clone();
        routed.sort();
        assert_eq!(routed, expected, "eth0 (the uplink veth) has no /32");
        let uplink = all.iter().find(|i| i.name == "eth0").unwrap();
        assert!(index.pod_of_ifindex(uplink.index).is_none(), "the uplink");
        for pod in &topo.pods {
            let host = all.iter().find(|i| i.name == pod.host_if).unwrap();
            let by_if = index.pod_of_ifindex(host.index).unwrap();
            assert_eq!(by_if.source, SOURCE_INTERFACE, "no pods here: {by_if:?}");
            assert_eq!(by_if.label(), pod.host_if);
            assert_eq!(
                by_if.ips,
                [IpAddr::V4(pod.ip)],
                "route and pod address agree"
            );
            assert_eq!(index.pod_of_ip(IpAddr::V4(pod.ip)), Some(by_if));
            // The pod namespace is named (ip netns), though empty of processes.
            let link = by_if.netns.as_ref().expect("namespace found");
            assert_eq!(link.name.as_deref(), Some(pod.netns.as_str()));
        }
        assert!(index.warnings().is_empty(), "{:?}", index.warnings());
    }

    #[test]
    fn lab_bridge_node_is_detected_and_pod_ips_come_from_the_peers() {
        if !privileged("lab_bridge_node_is_detected_and_pod_ips_come_from_the_peers") {
            return;
        }
        let topo = Topology::build(Datapath::Bridge, 2).unwrap();
        let dir = TempDir::new("lab-b");
        let (info, index, all) = detect_in(&topo.node, no_azure(&dir));
        assert_eq!(info.mode, NodeDatapath::Bridge, "{info:?}");
        assert_eq!(info.bridges.len(), 1);
        let bridge = &info.bridges[0];
        assert_eq!(bridge.name, "azure0");
        // The pods' veths, and the node's eth0 (a veth to the uplink here).
        assert_eq!(bridge.veth_ports, 3);
        for pod in &topo.pods {
            assert!(bridge.ports.contains(&pod.host_if));
            let host = all.iter().find(|i| i.name == pod.host_if).unwrap();
            let by_if = index.pod_of_ifindex(host.index).unwrap();
            assert_eq!(
                by_if.ips,
                [IpAddr::V4(pod.ip)],
                "read from the pod side; warnings: {:?}",
                index.warnings()
            );
            assert_eq!(
                index.pod_of_ip(IpAddr::V4(pod.ip)).unwrap().host_if,
                Some(pod.host_if.clone())
            );
        }
        assert!(info.routed_veths.is_empty());
        let uplink = all.iter().find(|i| i.name == "eth0").unwrap();
        assert!(index.pod_of_ifindex(uplink.index).is_none(), "the uplink");
    }

    #[test]
    fn lab_processes_in_a_pod_namespace_are_found() {
        if !privileged("lab_processes_in_a_pod_namespace_are_found") {
            return;
        }
        let topo = Topology::build(Datapath::Transparent, 2).unwrap();
        let pod = &topo.pods[1];
        let sleeper = PodProcess::start(&pod.netns);
        let dir = TempDir::new("lab-p");

        // Real /proc: the sleeper's cgroup is not kubepods, so the pod
        // stays its interface, with the namespace and process linked.
        let (_, index, all) = detect_in(&topo.node, no_azure(&dir));
        let host = all.iter().find(|i| i.name == pod.host_if).unwrap();
        let found = index.pod_of_ifindex(host.index).unwrap();
        assert_eq!(found.source, SOURCE_INTERFACE);
        assert_eq!(found.label(), pod.host_if);
        let link = found
            .netns
            .as_ref()
            .unwrap_or_else(|| panic!("no namespace; warnings: {:?}", index.warnings()));
        assert_eq!(link.nsid, host.peer.unwrap().1);
        assert!(link.pids.contains(&sleeper.pid()), "{link:?}");
        assert_eq!(link.name.as_deref(), Some(pod.netns.as_str()));
        let inode = fs::metadata(format!("/proc/{}/ns/net", sleeper.pid()))
            .unwrap()
            .ino();
        assert_eq!(link.inode, inode);
        let other = index.pod_of_ifindex(
            all.iter()
                .find(|i| i.name == topo.pods[0].host_if)
                .unwrap()
                .index,
        );
        assert!(
            !other
                .unwrap()
                .netns
                .as_ref()
                .unwrap()
                .pids
                .contains(&sleeper.pid())
        );

        // A proc root where that process sits in a kubepods cgroup (its
        // ns/net links to the real one), and the kubelet's log directory:
        // the full veth → netns → process → cgroup → pod chain.
        let proc = TempDir::new("lab-proc");
        let fake_pid = proc.0.join("4242");
        fs::create_dir_all(fake_pid.join("ns")).unwrap();
        std::os::unix::fs::symlink(
            format!("/proc/{}/ns/net", sleeper.pid()),
            fake_pid.join("ns/net"),
        )
        .unwrap();
        fs::write(
        fake_pid.join("cgroup"),
        format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-1.scope\n",
            UID_WEB.replace('-', "_")
        ),
    )
    .unwrap();
        fs::create_dir_all(dir.0.join("pods").join(format!("shop_web-0_{UID_WEB}"))).unwrap();
        let sources = Sources {
            proc_root: proc.0.clone(),
            netns_dir: dir.0.join("no-named-namespaces"),
            ..no_azure(&dir)
        };
        let (_, index, all) = detect_in(&topo.node, sources);
        let host = all.iter().find(|i| i.name == pod.host_if).unwrap();
        let web = index.pod_of_ifindex(host.index).unwrap();
        assert_eq!(web.label(), "shop/web-0");
        assert_eq!(web.source, SOURCE_CGROUP);
        assert_eq!(web.uid.as_deref(), Some(UID_WEB));
        assert_eq!(web.netns.as_ref().unwrap().pids, [4242]);
        assert_eq!(
            index.pod_of_ip(IpAddr::V4(pod.ip)).unwrap().label(),
            "shop/web-0"
        );
        drop(sleeper);
    }

    #[test]
    fn lab_azure_state_names_the_pods() {
        if !privileged("lab_azure_state_names_the_pods") {
            return;
        }
        let topo = Topology::build(Datapath::Transparent, 2).unwrap();
        let dir = TempDir::new("lab-a");
        // Pod 0 by HostIfName; pod 1 by its netns path only.
        let state = serde_json::json!({"Network": {"ExternalInterfaces": {"eth0": {
        "Name": "eth0", "BridgeName": "",
        "Networks": {"azure": {"Id": "azure", "Mode": "transparent", "Endpoints": {
            "aaaa-eth0": {"Id": "aaaa-eth0", "HostIfName": topo.pods[0].host_if,
                "IPAddresses": [{"IP": topo.pods[0].ip.to_string(), "Mask": "//8AAA=="}],
                "PODName": "coredns-abc", "PODNameSpace": "kube-system"},
            "bbbb-eth0": {"Id": "bbbb-eth0",
                "NetworkNameSpace": format!("/var/run/netns/{}", topo.pods[1].netns),
                "IPAddresses": [{"IP": topo.pods[1].ip.to_string(), "Mask": "//8AAA=="}],
                "PODName": "web-0", "PODNameSpace": "shop"}
        }}}}}}});
        let sources = Sources {
            azure_state: dir.0.join("azure-vnet.json"),
            ..no_azure(&dir)
        };
        fs::write(&sources.azure_state, state.to_string()).unwrap();
        let (_, index, all) = detect_in(&topo.node, sources);
        for (pod, label) in topo
            .pods
            .iter()
            .zip(["kube-system/coredns-abc", "shop/web-0"])
        {
            let host = all.iter().find(|i| i.name == pod.host_if).unwrap();
            let found = index.pod_of_ifindex(host.index).unwrap();
            assert_eq!(
                (found.label().as_str(), found.source),
                (label, SOURCE_AZURE)
            );
            assert_eq!(index.pod_of_ip(IpAddr::V4(pod.ip)).unwrap().label(), label);
        }
    }
}
