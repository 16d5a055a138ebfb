//! Which interfaces of the (current) network namespace carry pod traffic.
//!
//! Read over rtnetlink rather than `/sys/class/net`: sysfs shows the namespace
//! it was mounted in, not the one `--netns` moved us into.

use futures_util::TryStreamExt as _;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};

/// What kind of device an interface is, as far as tracer cares.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Veth,
    Bridge,
    Loopback,
    Other(String),
}

/// One interface of the namespace.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub kind: Kind,
    /// Index of the bridge (or other controller) this interface is a port of.
    pub master: Option<u32>,
    #[serde(skip)]
    pub mac: Option<[u8; 6]>,
}

/// Errors reading interfaces.
#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    #[error("opening a netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("listing links over netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("no interface named {0:?} in this network namespace")]
    NoSuchInterface(String),
}

/// Lists every link in the current network namespace.
pub async fn list() -> Result<Vec<Interface>, InterfaceError> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(connection);
    let links: Vec<LinkMessage> = handle.link().get().execute().try_collect().await?;
    task.abort();
    Ok(links.into_iter().map(from_message).collect())
}

fn from_message(msg: LinkMessage) -> Interface {
    let mut iface = Interface {
        index: msg.header.index,
        name: String::new(),
        kind: Kind::Other(String::new()),
        master: None,
        mac: None,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => iface.name = name,
            LinkAttribute::Controller(index) => iface.master = Some(index),
            LinkAttribute::Address(addr) => iface.mac = <[u8; 6]>::try_from(addr.as_slice()).ok(),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        iface.kind = match kind {
                            InfoKind::Veth => Kind::Veth,
                            InfoKind::Bridge => Kind::Bridge,
                            other => Kind::Other(format!("{other:?}").to_lowercase()),
                        };
                    }
                }
            }
            _ => {}
        }
    }
    if iface.name == "lo" {
        iface.kind = Kind::Loopback;
    }
    iface
}

/// The interfaces to trace: the named ones if any were given, else every veth
/// (host-side pod ends, bridged or routed) and every bridge with a veth port.
pub fn select(all: &[Interface], wanted: &[String]) -> Result<Vec<Interface>, InterfaceError> {
    if !wanted.is_empty() {
        return wanted
            .iter()
            .map(|name| {
                all.iter()
                    .find(|iface| &iface.name == name)
                    .cloned()
                    .ok_or_else(|| InterfaceError::NoSuchInterface(name.clone()))
            })
            .collect();
    }
    Ok(all
        .iter()
        .filter(|iface| match iface.kind {
            Kind::Veth => true,
            Kind::Bridge => all
                .iter()
                .any(|port| port.kind == Kind::Veth && port.master == Some(iface.index)),
            _ => false,
        })
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(index: u32, name: &str, kind: Kind, master: Option<u32>) -> Interface {
        Interface {
            index,
            name: name.into(),
            kind,
            master,
            mac: None,
        }
    }

    #[test]
    fn selects_veths_and_bridges_with_veth_ports() {
        let all = vec![
            iface(1, "lo", Kind::Loopback, None),
            iface(2, "azure0", Kind::Bridge, None),
            iface(3, "docker0", Kind::Bridge, None),
            iface(4, "azv1", Kind::Veth, Some(2)),
            iface(5, "eth0", Kind::Other("dummy".into()), Some(2)),
        ];
        let names: Vec<_> = select(&all, &[])
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["azure0", "azv1"]);
        let named = select(&all, &["eth0".into()]).unwrap();
        assert_eq!(named[0].index, 5);
        assert!(matches!(
            select(&all, &["nope".into()]),
            Err(InterfaceError::NoSuchInterface(_))
        ));
    }
}
