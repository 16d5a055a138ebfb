//! A process's kubepods cgroup → pod UID, and `/var/log/pods` → the pod's
//! namespace and name.

use std::{collections::HashMap, fs, io, path::Path};

use super::PodsError;

/// The pod UID in a `/proc/<pid>/cgroup`, if the process is in a kubepods
/// cgroup: systemd driver
/// `…/kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope`,
/// cgroupfs driver `/kubepods/burstable/pod<uid>/<id>`; v1 or v2.
/// Returned lowercase with dashes.
pub fn pod_uid_from_cgroup(text: &str) -> Option<String> {
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let mut in_kubepods = false;
        for component in path.split('/') {
            in_kubepods |= component.contains("kubepods");
            if !in_kubepods {
                continue;
            }
            let candidate = if let Some(slice) = component.strip_suffix(".slice") {
                slice.rfind("-pod").map(|at| &slice[at + 4..])
            } else {
                component.strip_prefix("pod")
            };
            if let Some(uid) = candidate.and_then(normalize_uid) {
                return Some(uid);
            }
        }
    }
    None
}

/// A pod UID as the kubelet writes it: a UUID (36 characters), or the
/// 32-hex-digit hash of a static pod. `_` (systemd's escape) becomes `-`.
pub(super) fn normalize_uid(raw: &str) -> Option<String> {
    let uid = raw.replace('_', "-").to_ascii_lowercase();
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let groups: Vec<&str> = uid.split('-').collect();
    let uuid = groups.len() == 5
        && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| hex(g));
    let hash = uid.len() == 32 && hex(&uid);
    (uuid || hash).then_some(uid)
}

/// `/var/log/pods/<namespace>_<name>_<uid>` directory names, by UID.
/// Names and namespaces are DNS labels, so `_` only separates.
pub fn parse_pod_log_dir(dir_name: &str) -> Option<(String, String, String)> {
    let mut parts = dir_name.split('_');
    let (namespace, name, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || namespace.is_empty() || name.is_empty() {
        return None;
    }
    Some((namespace.to_owned(), name.to_owned(), normalize_uid(uid)?))
}

/// Lists the pod log root: UID → (namespace, name). A missing root is empty.
pub fn read_pod_logs(root: &Path) -> Result<HashMap<String, (String, String)>, PodsError> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(source) => {
            return Err(PodsError::Read {
                path: root.to_owned(),
                source,
            });
        }
    };
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|e| parse_pod_log_dir(e.file_name().to_str()?))
        .map(|(namespace, name, uid)| (uid, (namespace, name)))
        .collect())
}
