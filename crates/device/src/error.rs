//! [`DeviceError`]: why a device could not be opened or keeps failing, as one
//! line a person can act on. Shared by every device kind.

use std::fmt;
use std::io;

/// Why a device could not be opened, configured or kept running. Each
/// message says what is wrong and what to do about it.
#[derive(Debug)]
#[non_exhaustive]
pub enum DeviceError {
    /// `/dev/net/tun` does not exist or has no driver behind it.
    TunMissing {
        /// The `open` failure.
        source: io::Error,
    },
    /// The caller lacks `CAP_NET_ADMIN` (or does not own a persistent TAP).
    PermissionDenied {
        /// What was refused, e.g. "creating a TAP".
        action: &'static str,
        /// The `EPERM`/`EACCES` from the kernel.
        source: io::Error,
    },
    /// The interface name cannot be used.
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is refused (too long, a forbidden character, …).
        reason: &'static str,
    },
    /// The TAP exists and another file descriptor is attached to it.
    Busy {
        /// The interface name.
        name: String,
    },
    /// An interface with that name exists and is not a TAP.
    NotTap {
        /// The interface name.
        name: String,
    },
    /// The interface is not in this thread's network namespace (anymore).
    NoSuchInterface {
        /// The interface name.
        name: String,
    },
    /// An IPv4 prefix length above 32.
    InvalidPrefix {
        /// The prefix length as given.
        prefix: u8,
    },
    /// Any other system call failure.
    Io {
        /// The step that failed, e.g. "mapping the AF_PACKET rings".
        action: &'static str,
        /// The system call's error.
        source: io::Error,
    },
    /// A `--device` spec that does not parse, or names an option its kind
    /// does not have.
    Spec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it and what is accepted instead.
        reason: String,
    },
    /// The interface went away under a running stack (`ip link del`).
    Vanished {
        /// The interface name.
        name: String,
        /// The read or write failure that showed it (`ENODEV`, `EBADFD`, …).
        source: io::Error,
    },
    /// The capture file (`--pcap`) cannot be written.
    Capture {
        /// The capture file's path.
        path: std::path::PathBuf,
        /// The create or write failure.
        source: io::Error,
    },
    /// The kernel or the driver lacks what the device needs.
    Unsupported {
        /// What is missing, with the kernel's error, e.g. "this kernel has no
        /// AF_XDP sockets (…)".
        what: String,
        /// What to do instead (another mode, a kernel version, …).
        hint: &'static str,
    },
    /// A step needs capabilities beyond `CAP_NET_ADMIN` (`CAP_BPF`, `CAP_NET_RAW`).
    NeedsCapability {
        /// What was refused, e.g. "loading the XDP program".
        action: &'static str,
        /// The capabilities it needs, as named by `setcap`.
        caps: &'static str,
        /// The `EPERM` from the kernel.
        source: io::Error,
    },
    /// The interface has no receive queue with that number.
    NoSuchQueue {
        /// The interface name.
        name: String,
        /// The queue asked for.
        queue: u32,
        /// How many receive queues the interface has, where the kernel says.
        count: Option<u32>,
    },
    /// Another AF_XDP socket is bound to that queue.
    QueueBusy {
        /// The interface name.
        name: String,
        /// The queue asked for.
        queue: u32,
    },
    /// Another XDP program is attached to the interface.
    XdpBusy {
        /// The interface name.
        name: String,
    },
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::TunMissing { source } => write!(
                f,
                "cannot open /dev/net/tun ({source}): load the tun module (modprobe tun), \
                 or in a container pass the device in (--device /dev/net/tun)"
            ),
            DeviceError::PermissionDenied { action, source } => write!(
                f,
                "{action} needs CAP_NET_ADMIN ({source}): run as root, or grant the \
                 capability (setcap cap_net_admin+ep on the binary)"
            ),
            DeviceError::InvalidName { name, reason } => write!(
                f,
                "invalid interface name {name:?}: {reason}; use 1 to 15 bytes without \
                 '/', ':' or whitespace, e.g. \"ust0\""
            ),
            DeviceError::Busy { name } => write!(
                f,
                "TAP {name} is busy: another process has it open; stop that process or pick \
                 another name"
            ),
            DeviceError::NotTap { name } => write!(
                f,
                "an interface named {name} exists and is not a TAP: pick another name, or \
                 delete it (ip link del {name}) if it is a leftover"
            ),
            DeviceError::NoSuchInterface { name } => write!(
                f,
                "interface {name} is not in this network namespace: check the name (ip link \
                 show); if it lives in (or was moved to) another namespace, run ustack there \
                 (ip netns exec <ns> ustack ...) or configure it there (ip -n <ns> ...)"
            ),
            DeviceError::InvalidPrefix { prefix } => {
                write!(f, "prefix length /{prefix} is out of range: use 0 to 32")
            }
            DeviceError::Io { action, source } => write!(f, "{action} failed: {source}"),
            DeviceError::Spec { spec, reason } => write!(f, "bad device spec {spec:?}: {reason}"),
            DeviceError::Vanished { name, source } => write!(
                f,
                "interface {name} went away while the stack ran ({source}): was it deleted \
                 (ip link del {name})? recreate it and start ustack again"
            ),
            DeviceError::Unsupported { what, hint } => write!(f, "{what}: {hint}"),
            DeviceError::NeedsCapability { action, caps, source } => write!(
                f,
                "{action} needs {caps} ({source}): run as root, or grant the capabilities \
                 (setcap cap_net_admin,cap_net_raw,cap_bpf+ep on the binary)"
            ),
            DeviceError::NoSuchQueue { name, queue, count } => match count {
                Some(n) => write!(
                    f,
                    "{name} has no receive queue {queue} (it has {n}: queue=0 to queue={}); see `ethtool -l {name}`",
                    n.saturating_sub(1)
                ),
                None => write!(f, "{name} has no receive queue {queue}: see `ethtool -l {name}` for its queues"),
            },
            DeviceError::QueueBusy { name, queue } => write!(
                f,
                "queue {queue} of {name} is taken by another AF_XDP socket (another ustack?): stop it, or \
                 use another queue="
            ),
            DeviceError::XdpBusy { name } => write!(
                f,
                "{name} already has an XDP program attached (`ip link show {name}` shows it; one \
                 ustack per interface for now): stop the ustack or program that owns it, or detach \
                 a program attached by a tool (ip link set dev {name} xdp off)"
            ),
            DeviceError::Capture { path, source } => {
                write!(f, "cannot write capture file {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for DeviceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DeviceError::TunMissing { source }
            | DeviceError::PermissionDenied { source, .. }
            | DeviceError::Io { source, .. }
            | DeviceError::Vanished { source, .. }
            | DeviceError::NeedsCapability { source, .. }
            | DeviceError::Capture { source, .. } => Some(source),
            _ => None,
        }
    }
}

