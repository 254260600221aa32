//! Private network namespaces for the device runs.
//!
//! Each side of a device run lives in a namespace made with
//! `unshare(CLONE_NEWNET)` by one thread: the namespace has no name, so it,
//! its TAP and its veth vanish with the last thread in it, even when the
//! process is killed. Nothing the bench sets up (addresses, routes, sysctls)
//! is ever visible in the caller's namespace.

use std::io;
use std::process::Command;

/// Move the calling thread (and the threads and processes it starts from now
/// on) into a new, empty network namespace, with its loopback up.
pub(crate) fn enter_private() -> io::Result<()> {
    // SAFETY: unshare takes flags only; CLONE_NEWNET changes just this
    // thread's namespace, which is allowed in a multithreaded process.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EPERM) {
            return Err(io::Error::new(
                e.kind(),
                "--device needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to make its private network namespaces: \
                 run it with sudo",
            ));
        }
        return Err(io::Error::new(e.kind(), format!("cannot make a private network namespace: {e}")));
    }
    ip(&["link", "set", "lo", "up"])
}

/// Tune this thread's namespace for a client that opens tens of thousands of
/// connections (crr): the whole port range, and TIME-WAIT ports reused after
/// a second, as Linux does by default only on loopback. Both clients (against
/// ustack and against Linux) get the same settings.
/// IPv6 is off on links made from now on: its multicast chatter (router
/// solicitations, MLD) would only show up as frames ustack drops.
pub(crate) fn tune_client() -> io::Result<()> {
    sysctl("net/ipv4/ip_local_port_range", "1024 65535")?;
    sysctl("net/ipv4/tcp_tw_reuse", "1")?;
    // A kernel without IPv6 has no such key, and no chatter either.
    let _ = sysctl("net/ipv6/conf/default/disable_ipv6", "1");
    Ok(())
}

/// Segments TCP has retransmitted in the calling thread's namespace
/// (`RetransSegs`); `None` if the kernel does not say.
pub(crate) fn tcp_retransmits() -> Option<u64> {
    // thread-self, not self: /proc/self/net is the main thread's namespace.
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").ok()?;
    let mut tcp = snmp.lines().filter_map(|l| l.strip_prefix("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let at = names.split_whitespace().position(|n| n == "RetransSegs")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// /proc/sys/net shows the namespace of the thread that opens it.
fn sysctl(key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).map_err(|e| io::Error::new(e.kind(), format!("cannot set {path}: {e}")))
}

/// Run `ip ARGS` in the calling thread's namespace (a child inherits it).
pub(crate) fn ip(args: &[&str]) -> io::Result<()> {
    run("ip", args)
}

/// Run `ethtool ARGS` in the calling thread's namespace.
pub(crate) fn ethtool(args: &[&str]) -> io::Result<()> {
    run("ethtool", args)
}

fn run(program: &str, args: &[&str]) -> io::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program} (apt install iproute2 ethtool): {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().next().unwrap_or("failed").trim().to_string();
    Err(io::Error::other(format!("{program} {}: {line}", args.join(" "))))
}

/// The calling thread's id, which `ip link ... netns ID` accepts as the
/// namespace of that thread.
pub(crate) fn thread_id() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() as u32 }
}
