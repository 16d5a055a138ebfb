//! Azure CNI's state file (`/var/run/azure-vnet.json`): endpoints with pod
//! names, IPs and host veths.

use std::{fs, io, net::IpAddr, path::Path};

use serde_json::Value;

use super::{AZURE_STATE_MAX_BYTES, AzureStateError, PodsError};

/// One endpoint (pod interface) of Azure CNI's state file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AzureEndpoint {
    /// Key of the endpoint (`<container id prefix>-eth0`).
    pub id: String,
    /// The network it belongs to (`azure`) and that network's `Mode`
    /// (`bridge`, `transparent`, …).
    pub network: String,
    pub mode: Option<String>,
    /// `BridgeName` of the external interface, in bridge mode.
    pub bridge: Option<String>,
    /// Host-side veth (`HostIfName`).
    pub host_if: Option<String>,
    pub ips: Vec<IpAddr>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub container_id: Option<String>,
    /// The pod's network namespace (`/var/run/netns/cni-…`).
    pub netns_path: Option<String>,
}

/// Parses Azure CNI's state (`{"Network": {"ExternalInterfaces": {<if>:
/// {"BridgeName", "Networks": {<id>: {"Mode", "Endpoints": {<id>: {…}}}}}}}}`).
/// Unknown fields are ignored, missing or null ones are `None`; an empty
/// file (Azure CNI's empty store) has no endpoints. Bad JSON or a
/// top-level shape that is not Azure CNI's is an error.
pub fn parse_azure_state(text: &str) -> Result<Vec<AzureEndpoint>, AzureStateError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let root: Value = serde_json::from_str(text)?;
    let root = root
        .as_object()
        .ok_or_else(|| AzureStateError::Layout("top level is not a JSON object".into()))?;
    let network = root
        .get("Network")
        .ok_or_else(|| AzureStateError::Layout("no \"Network\" key at the top level".into()))?;
    if network.is_null() {
        return Ok(Vec::new());
    }
    let network = network
        .as_object()
        .ok_or_else(|| AzureStateError::Layout("\"Network\" is not an object".into()))?;
    let externals = match network.get("ExternalInterfaces") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(AzureStateError::Layout(
                "\"Network.ExternalInterfaces\" is not an object".into(),
            ));
        }
    };
    let mut out = Vec::new();
    for ext in externals.values() {
        let bridge = text_field(ext, &["BridgeName"]);
        let Some(networks) = ext.get("Networks").and_then(Value::as_object) else {
            continue;
        };
        for (network_id, net) in networks {
            let mode = text_field(net, &["Mode"]);
            let Some(endpoints) = net.get("Endpoints").and_then(Value::as_object) else {
                continue;
            };
            for (id, ep) in endpoints {
                if !ep.is_object() {
                    continue;
                }
                out.push(AzureEndpoint {
                    id: text_field(ep, &["Id"]).unwrap_or_else(|| id.clone()),
                    network: text_field(net, &["Id"]).unwrap_or_else(|| network_id.clone()),
                    mode: mode.clone(),
                    bridge: bridge.clone(),
                    host_if: text_field(ep, &["HostIfName"]),
                    ips: ep
                        .get("IPAddresses")
                        .and_then(Value::as_array)
                        .map(|list| list.iter().filter_map(ip_of).collect())
                        .unwrap_or_default(),
                    pod_name: text_field(ep, &["PODName", "PodName"]),
                    pod_namespace: text_field(ep, &["PODNameSpace", "PodNamespace"]),
                    container_id: text_field(ep, &["ContainerID"]),
                    netns_path: text_field(ep, &["NetworkNameSpace", "NetNsPath", "NetNs"]),
                });
            }
        }
    }
    Ok(out)
}

/// Reads and parses the state file; `Ok(None)` when there is none.
pub fn read_azure_state(path: &Path) -> Result<Option<Vec<AzureEndpoint>>, PodsError> {
    let text = match read_capped(path, AZURE_STATE_MAX_BYTES) {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(None),
        Err(ReadCapped::TooLarge(size)) => {
            return Err(PodsError::AzureState {
                path: path.to_owned(),
                source: AzureStateError::TooLarge { size },
            });
        }
        Err(ReadCapped::Io(source)) => {
            return Err(PodsError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    parse_azure_state(&text)
        .map(Some)
        .map_err(|source| PodsError::AzureState {
            path: path.to_owned(),
            source,
        })
}

pub(super) enum ReadCapped {
    TooLarge(u64),
    Io(io::Error),
}

/// A whole text file of at most `cap` bytes; `None` if there is none.
/// Reads at most `cap + 1` bytes, so a file that grows while read (or a
/// FIFO, or /dev/zero behind a symlink) costs no more than the cap.
pub(super) fn read_capped(path: &Path, cap: u64) -> Result<Option<String>, ReadCapped> {
    use std::io::Read as _;
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(ReadCapped::Io(err)),
    };
    let size = file.metadata().map_err(ReadCapped::Io)?.len();
    if size > cap {
        return Err(ReadCapped::TooLarge(size));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadCapped::Io)?;
    if bytes.len() as u64 > cap {
        return Err(ReadCapped::TooLarge(bytes.len() as u64));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|err| ReadCapped::Io(io::Error::new(io::ErrorKind::InvalidData, err)))
}

/// The first of `keys` holding a non-empty string.
pub(super) fn text_field(v: &Value, keys: &[&str]) -> Option<String> {
    keys.iter()
        .filter_map(|k| v.get(*k).and_then(Value::as_str))
        .map(str::trim)
        .find(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A Go `net.IPNet` (`{"IP": "10.0.0.5", "Mask": "//8AAA=="}`) or a
/// `"10.0.0.5/16"` string.
pub(super) fn ip_of(v: &Value) -> Option<IpAddr> {
    let text = match v {
        Value::String(s) => s.as_str(),
        _ => v.get("IP")?.as_str()?,
    };
    let ip: IpAddr = text.split('/').next()?.trim().parse().ok()?;
    (!ip.is_unspecified()).then_some(ip)
}
