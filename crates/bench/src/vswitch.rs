//! Process to process through `ustack switch`: ustack↔ustack on
//! `virtio-user` ports beside Linux↔Linux over loopback.
//!
//! ```text
//!   ustack: this process (client)  ── virtio-user:B ─┐
//!                                                     ustack switch (vhost-user:A, vhost-user:B)
//!           `ustack up` (server)   ── virtio-user:A ─┘
//!   Linux:  this process (client)  ── 127.0.0.1 loopback ── `ustack bench --kernel-server` (server)
//! ```
//!
//! No kernel on ustack's data path: frames move through shared-memory
//! virtqueues, the switch copying each between the two ports. Nothing
//! needs root. CPU time per operation adds everything each side ran: the
//! client (this process) and the server child, and for ustack the switch
//! child too. ustack's ports negotiate TSO both ways (MTU 1500, 64 KiB
//! super-segments passed whole by the switch); loopback's MTU is 65536.
//! `--device virtio-user,OPTS` gives both ports OPTS (`tso=off`,
//! `busy_poll=USEC`, which the switch gets as `--busy-poll` too).

use crate::p2p;
use crate::report::{BenchPath, Figures, Report};
use crate::{Params, Workload};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;
use ustack_device::DeviceSpec;

/// What the switch run needs.
#[derive(Clone, Debug)]
pub struct SwitchSetup {
    /// The `ustack` binary, for the switch and the server.
    pub ustack_bin: PathBuf,
    /// Options for both virtio-user ports (`ring=N,busy_poll=USEC`, as in
    /// `--device virtio-user,OPTS`); `busy_poll` is given to the switch too.
    pub port_options: Vec<(String, String)>,
    /// The switch's CPU, and the CPU both ends of each side run on.
    pub pin: Option<(usize, usize)>,
}

impl SwitchSetup {
    /// `,k=v,…` for a virtio-user spec.
    fn options(&self) -> String {
        self.port_options.iter().map(|(k, v)| format!(",{k}={v}")).collect()
    }

    fn busy_poll(&self) -> Option<&str> {
        self.port_options.iter().find(|(k, _)| k == "busy_poll").map(|(_, v)| v.as_str())
    }
}

/// Children killed (SIGINT, then SIGKILL after a bound) and a directory
/// removed when the run ends, however it ends.
struct Cleanup {
    children: Vec<Child>,
    dir: Option<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // The server first, then the switch it is plugged into.
        for mut child in self.children.drain(..).rev() {
            // SAFETY: kill has no memory effects; the pid is our own child's, not yet reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            let _ = p2p::wait_bounded(&mut child, Duration::from_secs(5));
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Run `workload` ustack↔ustack through the switch, then Linux↔Linux over
/// loopback, each between two processes: one report.
pub fn run_switch(workload: Workload, params: &Params, setup: &SwitchSetup) -> Result<Report, String> {
    let ustack =
        ustack_side(workload, params, setup).map_err(|e| format!("ustack to ustack through the switch: {e}"))?;
    let linux = linux_side(workload, params, setup).map_err(|e| format!("Linux to Linux over loopback: {e}"))?;
    Ok(Report::new(workload, params, ustack, linux).on(BenchPath::Switch { pin: setup.pin }))
}

fn ustack_side(workload: Workload, p: &Params, setup: &SwitchSetup) -> Result<Figures, String> {
    let dir = std::env::temp_dir().join(format!("ustack-bench-switch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    let mut run = Cleanup { children: Vec::new(), dir: Some(dir.clone()) };
    let sock = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (a, b) = (sock("server.sock"), sock("client.sock"));

    let mut cmd = Command::new(&setup.ustack_bin);
    cmd.args(["switch", "--port", &format!("vhost-user:{a}"), "--port", &format!("vhost-user:{b}")])
        .args(["--control", &sock("switch.ctl")]);
    if let Some(us) = setup.busy_poll() {
        cmd.args(["--busy-poll", us]);
    }
    if let Some((sw, _)) = setup.pin {
        cmd.args(["--cores", &sw.to_string()]);
    }
    run.children.push(p2p::spawn_until(cmd, "ustack switch", "ustack: switch")?);
    // From here this thread, the server it starts and the client's threads
    // run on the ends' CPU.
    let _pinned = Pinned::to(setup.pin.map(|(_, ends)| ends))?;
    let mut cmd = Command::new(&setup.ustack_bin);
    p2p::ustack_server_args(&mut cmd, workload, &format!("virtio-user:{a}{}", setup.options()));
    run.children.push(p2p::spawn_until(cmd, "the server (ustack up)", "on port")?);

    let spec: DeviceSpec = format!("virtio-user:{b}{}", setup.options()).parse().map_err(|e| format!("{e}"))?;
    measured(&run.children, || p2p::ustack_client(workload, p, spec))
}

fn linux_side(workload: Workload, p: &Params, setup: &SwitchSetup) -> Result<Figures, String> {
    // A free loopback port, released for the server to take.
    let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free loopback port: {e}"))?
        .port();
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let _pinned = Pinned::to(setup.pin.map(|(_, ends)| ends))?;
    let mut cmd = Command::new(&setup.ustack_bin);
    p2p::kernel_server_args(&mut cmd, workload, p.message, addr);
    let run = Cleanup { children: vec![p2p::spawn_until(cmd, "the kernel server", "kernel server on")?], dir: None };
    measured(&run.children, || crate::linux::client(workload, SocketAddr::V4(addr), p).map_err(|e| e.to_string()))
}

/// This thread, and the threads and processes it starts meanwhile, on one
/// CPU until dropped; then back on the CPUs it had.
struct Pinned(Option<Vec<usize>>);

impl Pinned {
    fn to(cpu: Option<usize>) -> Result<Pinned, String> {
        let Some(cpu) = cpu else { return Ok(Pinned(None)) };
        let had = ustack_runtime::shard::available_cores();
        ustack_runtime::shard::pin(cpu).map_err(|e| format!("cannot pin to CPU {cpu}: {e}"))?;
        Ok(Pinned(Some(had)))
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(had) = &self.0 {
            let _ = ustack_runtime::shard::pin_to(had);
        }
    }
}

/// Run the client here; its figures with the CPU time of this process and
/// of `children` over the run.
fn measured(children: &[Child], client: impl FnOnce() -> Result<Figures, String>) -> Result<Figures, String> {
    let others = || children.iter().map(|c| p2p::child_cpu_ns(c.id())).sum::<u64>();
    let (others0, cpu0) = (others(), crate::cpu_time());
    let figures = client()?;
    let cpu = crate::cpu_time() - cpu0 + Duration::from_nanos(others().saturating_sub(others0));
    Ok(Figures { cpu, ..figures })
}
