//! Device specs: `KIND:NAME[,key=value|flag…]`, the one way every command
//! names a device (`--device tap:ust0`, `--device af_packet:veth0,blocks=16`).
//!
//! A spec parses without touching the system; [`DeviceSpec::open`] then opens
//! the kind it names, and each kind takes its own options through
//! [`Options`], which refuses any option the kind does not know, so a typo
//! is an error rather than a silently ignored setting. [`ChainSpec`] adds the
//! wrappers any device can have (faults, capture) and builds the chain.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::{DeviceChain, DeviceError, FaultDevice, LinkConfig, PcapDevice, TapDevice};

/// The kinds a spec can name, with their options, for `--help` and errors.
pub const KINDS: &[(&str, &str)] = &[
    ("tap", "tap:NAME[,offload=off] (created if missing)"),
    ("af_xdp", crate::af_xdp::SPEC_FORM),
    ("af_packet", crate::af_packet::SPEC_FORM),
    ("vhost-user", crate::vhost_user::SPEC_FORM),
    ("virtio-user", crate::virtio_user::SPEC_FORM),
    ("dpdk", crate::dpdk::SPEC_FORM),
];

/// A device kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceKind {
    /// A TAP interface (`/dev/net/tun`), created if it does not exist.
    Tap,
    /// An AF_XDP socket on one queue of an existing interface.
    AfXdp,
    /// An existing interface through AF_PACKET rings (TPACKET_V3).
    AfPacket,
    /// A vhost-user backend port on a Unix socket (the device side of virtio-net).
    VhostUser,
    /// A virtio-user frontend on a vhost-user backend's socket (the driver side).
    VirtioUser,
    /// A DPDK port (virtual device or PCI address), with the `dpdk` feature.
    Dpdk,
}

impl DeviceKind {
    fn parse(s: &str) -> Option<DeviceKind> {
        match s {
            "tap" => Some(DeviceKind::Tap),
            "af_xdp" => Some(DeviceKind::AfXdp),
            "af_packet" => Some(DeviceKind::AfPacket),
            "vhost-user" => Some(DeviceKind::VhostUser),
            "virtio-user" => Some(DeviceKind::VirtioUser),
            "dpdk" => Some(DeviceKind::Dpdk),
            _ => None,
        }
    }

    /// How a spec of this kind is written, from [`KINDS`].
    pub fn form(self) -> &'static str {
        KINDS.iter().find(|(k, _)| *k == self.as_str()).map_or("", |(_, f)| *f)
    }

    /// The spelling used in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Tap => "tap",
            DeviceKind::AfXdp => "af_xdp",
            DeviceKind::AfPacket => "af_packet",
            DeviceKind::VhostUser => "vhost-user",
            DeviceKind::VirtioUser => "virtio-user",
            DeviceKind::Dpdk => "dpdk",
        }
    }
}

/// A parsed `KIND:NAME[,options]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    /// What kind of device.
    pub kind: DeviceKind,
    /// The interface (or socket path) it names.
    pub name: String,
    /// `key=value` options in order; a bare word is a flag with an empty value.
    pub options: Vec<(String, String)>,
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<DeviceSpec, DeviceError> {
        let bad = |reason: String| DeviceError::Spec { spec: s.to_owned(), reason };
        let kinds = || KINDS.iter().map(|(_, form)| *form).collect::<Vec<_>>().join(", ");
        let Some((kind, rest)) = s.split_once(':') else {
            return Err(bad(format!("expected KIND:NAME, one of {}", kinds())));
        };
        let kind = DeviceKind::parse(kind).ok_or_else(|| bad(format!("unknown kind '{kind}': use {}", kinds())))?;
        let mut parts = rest.split(',');
        let name = parts.next().unwrap_or_default().trim();
        if name.is_empty() {
            return Err(bad(format!("no name after '{}:': the form is {}", kind.as_str(), kind.form())));
        }
        let mut options = Vec::new();
        for part in parts.map(str::trim) {
            if part.is_empty() {
                return Err(bad("an empty option (two commas in a row?)".into()));
            }
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            if options.iter().any(|(k, _)| k == key) {
                return Err(bad(format!("option '{key}' given twice")));
            }
            options.push((key.to_owned(), value.to_owned()));
        }
        Ok(DeviceSpec { kind, name: name.to_owned(), options })
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.name)?;
        for (k, v) in &self.options {
            if v.is_empty() {
                write!(f, ",{k}")?;
            } else {
                write!(f, ",{k}={v}")?;
            }
        }
        Ok(())
    }
}

impl DeviceSpec {
    /// Open the device the spec names, in the calling thread's namespace.
    pub fn open(&self) -> Result<crate::AnyDevice, DeviceError> {
        self.open_with(true, None)
    }

    /// As [`DeviceSpec::open`]; with `offloads` false a device that could
    /// move super-segments or partial checksums is opened without them (for
    /// wrappers that copy frames and carry no metadata); with `shard`, the
    /// queue of that shard.
    fn open_with(&self, offloads: bool, shard: Option<&ShardQueue>) -> Result<crate::AnyDevice, DeviceError> {
        let mut opts = Options::new(self);
        match self.kind {
            DeviceKind::Tap => {
                // Checksum and TCP segmentation offload through the
                // virtio-net header, unless `offload=off`.
                let offload = opts.switch("offload", true)? && offloads;
                opts.finish()?;
                let config = crate::TapConfig { offload, multi_queue: shard.is_some() };
                let tap = TapDevice::open_with(&self.name, config)?;
                if let Some(q) = shard.filter(|q| q.index == 0) {
                    crate::steer_bpf::steer_tap(&tap, q)?;
                }
                Ok(crate::AnyDevice::Tap(tap))
            }
            DeviceKind::AfXdp => {
                let config = crate::af_xdp::AfXdpConfig::from_options(&mut opts)?;
                opts.finish()?;
                if shard.is_some_and(|q| q.count > 1) {
                    let reason = "af_xdp runs one queue per process for now: use tap or af_packet with --cores";
                    return Err(DeviceError::Spec { spec: self.to_string(), reason: reason.into() });
                }
                Ok(crate::AnyDevice::AfXdp(crate::AfXdpDevice::open(&self.name, config)?))
            }
            DeviceKind::AfPacket => {
                let mut config = crate::AfPacketConfig::from_options(&mut opts)?;
                // With shards: fan-out steered by ustack's hash (the
                // default), or by the kernel's own flow hash (`steer=kernel`:
                // frames that land on the wrong shard are handed over).
                let ours = match opts.take("steer") {
                    None | Some("ustack") => true,
                    Some("kernel") => false,
                    Some(v) => return Err(opts.error(format!("steer={v}: expected ustack or kernel"))),
                };
                opts.finish()?;
                if let Some(q) = shard {
                    crate::steer_bpf::shard_fanout(&mut config, q);
                    if !ours {
                        config.fanout_steer = None;
                    }
                }
                Ok(crate::AnyDevice::AfPacket(crate::AfPacketDevice::open_with(&self.name, config)?))
            }
            DeviceKind::VhostUser => {
                let config = crate::VhostUserConfig::from_options(&mut opts)?;
                opts.finish()?;
                let path = std::path::Path::new(&self.name);
                Ok(crate::AnyDevice::VhostUser(crate::VhostUserDevice::open(path, config)?))
            }
            DeviceKind::VirtioUser => {
                let config = crate::VirtioUserConfig::from_options(&mut opts)?;
                opts.finish()?;
                let path = std::path::Path::new(&self.name);
                Ok(crate::AnyDevice::VirtioUser(crate::VirtioUserDevice::open(path, config)?))
            }
            DeviceKind::Dpdk => {
                let dev = crate::dpdk::open(&mut opts, &self.name, shard)?;
                opts.finish()?;
                Ok(dev)
            }
        }
    }
}

/// A kind's view of a spec's options: it takes the ones it knows, and
/// [`finish`](Options::finish) refuses the rest.
pub struct Options<'a> {
    spec: &'a DeviceSpec,
    taken: Vec<bool>,
}

impl<'a> Options<'a> {
    /// Options of `spec`, none taken yet.
    pub fn new(spec: &'a DeviceSpec) -> Options<'a> {
        Options { spec, taken: vec![false; spec.options.len()] }
    }

    /// The value of `key` (empty for a bare flag), if given.
    pub fn take(&mut self, key: &str) -> Option<&'a str> {
        let i = self.spec.options.iter().position(|(k, _)| k == key)?;
        self.taken[i] = true;
        Some(self.spec.options[i].1.as_str())
    }

    /// Every option not taken yet, in order, now taken (for a kind that
    /// passes unknown options on, like `dpdk:` to its driver).
    pub fn take_rest(&mut self) -> Vec<(String, String)> {
        let rest = self.spec.options.iter().zip(&self.taken).filter(|(_, t)| !**t).map(|(o, _)| o.clone()).collect();
        self.taken.iter_mut().for_each(|t| *t = true);
        rest
    }

    /// `key=N` as a number in `range`, or `default` when absent.
    pub fn number(
        &mut self,
        key: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, DeviceError> {
        let Some(v) = self.take(key) else { return Ok(default) };
        v.parse::<u64>().ok().filter(|n| range.contains(n)).ok_or_else(|| {
            self.error(format!("{key}={v}: expected a number from {} to {}", range.start(), range.end()))
        })
    }

    /// `key=on|off` (or the bare flag `key`, meaning on), `default` when absent.
    pub fn switch(&mut self, key: &str, default: bool) -> Result<bool, DeviceError> {
        match self.take(key) {
            None => Ok(default),
            Some("" | "on" | "true" | "1") => Ok(true),
            Some("off" | "false" | "0") => Ok(false),
            Some(v) => Err(self.error(format!("{key}={v}: expected on or off"))),
        }
    }

    /// An error about this spec.
    pub fn error(&self, reason: String) -> DeviceError {
        DeviceError::Spec { spec: self.spec.to_string(), reason }
    }

    /// Refuse options the kind did not take.
    pub fn finish(self) -> Result<(), DeviceError> {
        let unknown: Vec<&str> = self
            .spec
            .options
            .iter()
            .zip(&self.taken)
            .filter(|(_, taken)| !**taken)
            .map(|((k, _), _)| k.as_str())
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let form = self.spec.kind.form();
        Err(self.error(format!("{} has no option {}: the form is {form}", self.spec.kind.as_str(), unknown.join(", "))))
    }
}

/// Which queue of a device one shard of a sharded stack opens: shard
/// `index` of `count`, flows steered by the Toeplitz hash with `key`. A TAP
/// is opened multi-queue (the first shard installs the steering program),
/// AF_PACKET joins a fan-out group steered by the same hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardQueue {
    /// This shard.
    pub index: usize,
    /// How many shards.
    pub count: usize,
    /// The RSS key.
    pub key: [u8; ustack_core::rss::KEY_LEN],
}

/// A device with the wrappers any device can have: faults nearest the wire,
/// the capture nearest the stack (so the pcap shows what the stack received
/// and sent).
#[derive(Clone, Debug)]
pub struct ChainSpec {
    /// The device itself.
    pub device: DeviceSpec,
    /// Faults both ways, with their seed (`--impair`).
    pub impair: Option<(LinkConfig, u64)>,
    /// Capture every frame to this pcap file (`--pcap`).
    pub pcap: Option<PathBuf>,
}

impl ChainSpec {
    /// Open the device and wrap it.
    pub fn open(&self) -> Result<DeviceChain, DeviceError> {
        self.open_queue(None)
    }

    /// Open the device's queue for one shard of several (see
    /// [`ShardQueue`]) and wrap it; with several shards, each captures to
    /// the pcap file named with `.N` added for shard `N`.
    pub fn open_queue(&self, shard: Option<&ShardQueue>) -> Result<DeviceChain, DeviceError> {
        // The fault queues copy frames of up to their MTU and carry no
        // offload metadata: no super-segments or partial checksums through them.
        let dev = self.device.open_with(self.impair.is_none(), shard)?;
        let pcap = match (shard, &self.pcap) {
            (Some(q), Some(p)) if q.count > 1 => {
                let mut name = p.clone().into_os_string();
                name.push(format!(".{}", q.index));
                Some(PathBuf::from(name))
            }
            (_, p) => p.clone(),
        };
        let capture = |source| DeviceError::Capture { path: pcap.clone().unwrap_or_default(), source };
        Ok(match (self.impair, &pcap) {
            (None, None) => DeviceChain::Plain(dev),
            (Some((link, seed)), None) => DeviceChain::Fault(FaultDevice::new(dev, link, seed)),
            (None, Some(path)) => DeviceChain::Pcap(PcapDevice::create(dev, path).map_err(capture)?),
            (Some((link, seed)), Some(path)) => {
                DeviceChain::PcapFault(PcapDevice::create(FaultDevice::new(dev, link, seed), path).map_err(capture)?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kind_name_and_options() {
        let s: DeviceSpec = "tap:ust0".parse().unwrap();
        assert_eq!((s.kind, s.name.as_str(), s.options.len()), (DeviceKind::Tap, "ust0", 0));
        let s: DeviceSpec = "tap:ust0,offload=off,copy".parse().unwrap();
        assert_eq!(s.options, vec![("offload".into(), "off".into()), ("copy".into(), String::new())]);
        assert_eq!(s.to_string(), "tap:ust0,offload=off,copy");
    }

    #[test]
    fn refuses_malformed_specs_with_a_reason() {
        for bad in ["ust0", "nosuch:x", "tap:", "tap:,x=1", "tap:a,,b", "tap:a,x=1,x=2"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(matches!(err, DeviceError::Spec { .. }), "{bad}: {err}");
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn options_take_known_keys_and_refuse_the_rest() {
        let s: DeviceSpec = "tap:a,ring=64,offload=off,typo=1".parse().unwrap();
        let mut o = Options::new(&s);
        assert_eq!(o.number("ring", 32, 1..=4096).unwrap(), 64);
        assert!(!o.switch("offload", true).unwrap());
        assert_eq!(o.number("absent", 7, 1..=8).unwrap(), 7);
        let err = o.finish().unwrap_err().to_string();
        assert!(err.contains("typo"), "{err}");
        let s: DeviceSpec = "tap:a,ring=0".parse().unwrap();
        assert!(Options::new(&s).number("ring", 32, 1..=4096).unwrap_err().to_string().contains("1 to 4096"));
    }
}
