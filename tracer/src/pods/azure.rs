//! Azure CNI's state file (`/var/run/azure-vnet.json`): endpoints with pod
//! names, IPs and host veths.

use std::{collections::BTreeMap, fs, io, net::IpAddr, path::Path};

use serde::{Deserialize, Deserializer, de::DeserializeOwned};
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
    // Owned from here on: the typed view takes the members it knows.
    let externals: BTreeMap<String, Lenient<ExternalInterface>> =
        serde_json::from_value(Value::Object(externals.clone()))?;
    let mut out = Vec::new();
    for ext in externals.into_values().filter_map(|e| e.0) {
        for (network_id, net) in ext.networks.0.unwrap_or_default() {
            let Some(mut net) = net.0 else { continue };
            for (id, ep) in net.endpoints.0.take().unwrap_or_default() {
                let Some(ep) = ep.0 else { continue };
                out.push(ep.into_endpoint(id, &net, &network_id, &ext.bridge_name));
            }
        }
    }
    Ok(out)
}

/// `Network.ExternalInterfaces.<if>` (Azure CNI's `externalInterface`).
#[derive(Deserialize)]
struct ExternalInterface {
    #[serde(rename = "BridgeName", default)]
    bridge_name: Text,
    #[serde(rename = "Networks", default)]
    networks: Lenient<BTreeMap<String, Lenient<Network>>>,
}

/// `….Networks.<id>` (Azure CNI's `network`).
#[derive(Deserialize)]
struct Network {
    #[serde(rename = "Id", default)]
    id: Text,
    #[serde(rename = "Mode", default)]
    mode: Text,
    #[serde(rename = "Endpoints", default)]
    endpoints: Lenient<BTreeMap<String, Lenient<Endpoint>>>,
}

/// `….Endpoints.<id>` (Azure CNI's `endpoint`). Older and newer releases
/// spell some members differently; each spelling is its own field so that
/// a file carrying both is not a duplicate-key error.
#[derive(Deserialize)]
struct Endpoint {
    #[serde(rename = "Id", default)]
    id: Text,
    #[serde(rename = "HostIfName", default)]
    host_if: Text,
    #[serde(rename = "IPAddresses", default)]
    ips: Lenient<Vec<Lenient<IpEntry>>>,
    #[serde(rename = "PODName", default)]
    pod_name: Text,
    #[serde(rename = "PodName", default)]
    pod_name_alt: Text,
    #[serde(rename = "PODNameSpace", default)]
    pod_namespace: Text,
    #[serde(rename = "PodNamespace", default)]
    pod_namespace_alt: Text,
    #[serde(rename = "ContainerID", default)]
    container_id: Text,
    #[serde(rename = "NetworkNameSpace", default)]
    netns: Text,
    #[serde(rename = "NetNsPath", default)]
    netns_alt: Text,
    #[serde(rename = "NetNs", default)]
    netns_alt2: Text,
}

impl Endpoint {
    fn into_endpoint(
        self,
        key: String,
        net: &Network,
        net_key: &str,
        bridge: &Text,
    ) -> AzureEndpoint {
        AzureEndpoint {
            id: self.id.0.unwrap_or(key),
            network: net.id.0.clone().unwrap_or_else(|| net_key.to_owned()),
            mode: net.mode.0.clone(),
            bridge: bridge.0.clone(),
            host_if: self.host_if.0,
            ips: self
                .ips
                .0
                .unwrap_or_default()
                .into_iter()
                .filter_map(|ip| ip.0.and_then(IpEntry::ip))
                .collect(),
            pod_name: self.pod_name.0.or(self.pod_name_alt.0),
            pod_namespace: self.pod_namespace.0.or(self.pod_namespace_alt.0),
            container_id: self.container_id.0,
            netns_path: self.netns.0.or(self.netns_alt.0).or(self.netns_alt2.0),
        }
    }
}

/// A member of the wrong shape is skipped (`None`), not fatal: a field
/// Azure CNI renames or retypes costs that field, not the whole file.
struct Lenient<T>(Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(Self(T::deserialize(value).ok()))
    }
}

/// A string member, trimmed; empty, null or not a string is `None`.
#[derive(Default)]
struct Text(Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let text = value.as_str().map(str::trim).filter(|s| !s.is_empty());
        Ok(Self(text.map(str::to_owned)))
    }
}

/// A Go `net.IPNet` (`{"IP": "10.0.0.5", "Mask": "//8AAA=="}`) or a
/// `"10.0.0.5/16"` string.
#[derive(Deserialize)]
#[serde(untagged)]
enum IpEntry {
    Cidr(String),
    Net {
        #[serde(rename = "IP")]
        ip: String,
    },
}

impl IpEntry {
    fn ip(self) -> Option<IpAddr> {
        let (Self::Cidr(text) | Self::Net { ip: text }) = self;
        let ip: IpAddr = text.split('/').next()?.trim().parse().ok()?;
        (!ip.is_unspecified()).then_some(ip)
    }
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
