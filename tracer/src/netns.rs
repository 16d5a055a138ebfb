//! Acting inside a named network namespace (`ip netns add NAME`).
//!
//! `setns(CLONE_NEWNET)` switches only the calling thread; threads created
//! afterwards inherit it. `tracer --netns` therefore enters the namespace on
//! the main thread before the async runtime starts its workers, so every
//! netlink socket, interface lookup and TCX attachment resolves there.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
};

use nix::sched::{CloneFlags, setns};

/// Where iproute2 keeps named namespaces (`/var/run` links here on Debian).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Errors entering a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {name:?} not found at {path} (see `ip netns list`)")]
    NotFound { name: String, path: PathBuf },
    #[error("opening network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("entering network namespace {name:?}: {source} (needs CAP_SYS_ADMIN)")]
    Setns {
        name: String,
        #[source]
        source: nix::Error,
    },
}

/// Path of a named namespace.
pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Moves the calling thread into the named network namespace.
pub fn enter(name: &str) -> Result<(), NetnsError> {
    let path = path_of(name);
    let file = File::open(&path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            NetnsError::NotFound {
                name: name.to_owned(),
                path: path.clone(),
            }
        } else {
            NetnsError::Open {
                path: path.clone(),
                source,
            }
        }
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Setns {
        name: name.to_owned(),
        source,
    })
}

/// Runs `f` on a new thread inside the named namespace and returns its result.
///
/// Used by the lab and the tests to open sockets "inside a pod" without
/// spawning processes; the caller's own thread is left where it was.
pub fn run_in<T, F>(name: &str, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    spawn_in(name, f)
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Spawns `f` on a new thread inside the named namespace, without waiting.
pub fn spawn_in<T, F>(name: &str, f: F) -> std::thread::JoinHandle<Result<T, NetnsError>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let name = name.to_owned();
    std::thread::spawn(move || {
        enter(&name)?;
        Ok(f())
    })
}
