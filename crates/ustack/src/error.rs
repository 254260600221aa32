//! Errors the command reports to a person: one line, what is wrong and what to do.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CliError {
    #[error("--device: {0}")]
    DeviceSpec(ustack_device::DeviceError),
    #[error("--host-ip gives the kernel's side of a TAP an address; {0} is not a TAP: configure its peer with `ip addr add` instead")]
    HostIpNeedsTap(String),
    #[error("{0}")]
    DeviceFailed(String),
    #[error("{0}")]
    Device(#[from] ustack_device::DeviceError),
    #[error("--ip {0}: the stack's address must not be the network or broadcast address")]
    BadAddress(String),
    #[error("{0}")]
    Gateway6(String),
    #[error("--gateway {gateway} is not inside the stack's subnet {subnet}")]
    GatewayOutsideSubnet { gateway: std::net::Ipv4Addr, subnet: ustack_core::Ipv4Cidr },
    #[error("cannot serve UDP echo on port {port}: {source}")]
    Bind { port: u16, source: ustack_core::BindError },
    #[error("cannot listen on TCP port {port}: {source}")]
    Listen { port: u16, source: ustack_core::ListenError },
    #[error("--http-root: {0}")]
    Site(#[from] ustack_runtime::apps::SiteError),
    #[error("{0}")]
    Url(String),
    #[error("{0}")]
    Http(#[from] ustack_runtime::apps::HttpClientError),
    #[error("gave up after {secs} s (--timeout) with {done} of {total} URLs done; waiting for {url}")]
    Timeout { secs: u64, done: usize, total: usize, url: String },
    #[error("interrupted with {done} of {total} URLs done")]
    Interrupted { done: usize, total: usize },
    #[error("cannot write {path}: {source}")]
    Output { path: String, source: std::io::Error },
    /// A bad config file or `--set` (exit status 2, like a bad flag).
    #[error("{0}")]
    Config(String),
    #[error("cannot serve --metrics on {addr}: {source}")]
    Metrics { addr: String, source: std::io::Error },
    #[error("{0}")]
    Demo(String),
    #[error("perf: {0}")]
    Perf(String),
    #[error("switch: {0}")]
    Switch(String),
    #[error("bench: {0}")]
    Bench(String),
    #[error("cannot draw {path}: {why}")]
    Plot { path: String, why: String },
    #[error("cannot open control socket {addr}: {source} (is another ustack already running on this device?)")]
    Control { addr: String, source: std::io::Error },
    #[error("no ustack answers on {addr}: {source} (is `ustack up` running in this network namespace?)")]
    NoStack { addr: String, source: std::io::Error },
    #[error("the stack on {addr} sent a snapshot that is not JSON: {source}")]
    BadSnapshot { addr: String, source: serde_json::Error },
}
