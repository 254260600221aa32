//! Helpers for the C API and LD_PRELOAD tests: namespaces, bounded
//! processes, the built libraries. (The `ustack` crate's test helpers name
//! its binary, so they cannot be shared from here.)
//!
//! Ground rules (/work/shared/TESTING.md): traffic stays inside a namespace
//! the test made; every process and wait is bounded; guards clean up on drop,
//! also when a test panics; names carry the pid so tests run in parallel.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why these tests cannot run here (not root, a tool missing), if so.
pub fn skip_reason(tools: &[&str]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun missing".into());
    }
    for t in ["ip"].iter().chain(tools) {
        let found = Command::new("sh").args(["-c", &format!("command -v {t}")]).stdout(Stdio::null()).status();
        if !found.is_ok_and(|s| s.success()) {
            return Some(format!("`{t}` not installed"));
        }
    }
    None
}

#[macro_export]
macro_rules! skip_unless {
    ($($tool:expr),* $(,)?) => {
        if let Some(reason) = support::skip_reason(&[$($tool),*]) {
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
}

/// The target directory's profile folder (where the libraries are built).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf()
}

/// `lib<name>.so`, built by cargo if this test run has not built it.
pub fn cdylib(package: &str, name: &str) -> PathBuf {
    let path = profile_dir().join(format!("lib{name}.so"));
    let profile = profile_dir().file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", package]);
    if profile == "release" {
        cmd.arg("--release");
    }
    // Always ask: cargo returns at once when it is fresh.
    let st = cmd.status().expect("run cargo build");
    assert!(st.success(), "cargo build -p {package} failed");
    assert!(path.exists(), "{} missing after cargo build", path.display());
    path
}

/// A short unique interface name (at most 15 bytes).
pub fn short_name(prefix: &str, idx: u8) -> String {
    let name = format!("{prefix}{idx}p{}", std::process::id() % 100_000);
    assert!(name.len() <= 15, "interface name {name} too long");
    name
}

/// A network namespace, deleted (with its processes killed) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("ustc-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
        let st = Command::new("ip").args(["netns", "add", &name]).status().expect("ip netns add");
        assert!(st.success(), "ip netns add {name}");
        let ns = Netns { name };
        ns.run(&["ip", "link", "set", "lo", "up"], Duration::from_secs(5)).ok();
        ns
    }

    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(argv);
        c
    }

    /// Run to completion within `limit`; `Err` names what went wrong.
    pub fn run(&self, argv: &[&str], limit: Duration) -> Result<Output, Output> {
        let out = run_bounded(self.command(argv), None, limit);
        if out.ok() {
            Ok(out)
        } else {
            Err(out)
        }
    }

    /// Start `argv` in the background, killed on drop.
    pub fn spawn(&self, argv: &[&str], env: &[(&str, &str)]) -> Bg {
        let mut c = self.command(argv);
        c.envs(env.iter().copied());
        Bg::spawn(c)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill what still runs inside, then delete the namespace.
        let _ = Command::new("ip").args(["netns", "pids", &self.name]).output().map(|o| {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        });
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// What a bounded run produced.
#[derive(Debug)]
pub struct Output {
    pub status: Option<std::process::ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub timed_out: bool,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let out = String::from_utf8_lossy(&self.stdout);
        let out: String = out.chars().take(2000).collect();
        write!(f, "status {:?}{}\n--- stdout ---\n{out}\n--- stderr ---\n{}", self.status, if self.timed_out { " (killed at deadline)" } else { "" }, self.stderr)
    }
}

fn drain<R: Read + Send + 'static>(mut r: R, buf: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 65536];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
}

/// A background process whose output is collected; killed on drop.
pub struct Bg {
    child: Option<Child>,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
}

impl Bg {
    pub fn spawn(mut cmd: Command) -> Bg {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let (out, err) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        drain(child.stdout.take().unwrap(), out.clone());
        drain(child.stderr.take().unwrap(), err.clone());
        Bg { child: Some(child), out, err }
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    /// Wait until stdout or stderr contains `needle`, or the process ends,
    /// or `limit` passes; true if found.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.stdout().contains(needle) || self.stderr().contains(needle) {
                return true;
            }
            if self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some()) {
                std::thread::sleep(Duration::from_millis(50));
                return self.stdout().contains(needle) || self.stderr().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Wait for the exit within `limit` (then kill it).
    pub fn finish(mut self, limit: Duration) -> Output {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + limit;
        let mut status = None;
        let mut timed_out = false;
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                status = Some(s);
                break;
            }
            if Instant::now() >= deadline {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(50));
        Output { status, stdout: self.out.lock().unwrap().clone(), stderr: self.stderr(), timed_out }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Run `cmd` (stdin from `input`) to completion or until `limit`.
pub fn run_bounded(mut cmd: Command, input: Option<&[u8]>, limit: Duration) -> Output {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if let Some(data) = input {
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&data);
        });
    }
    let (out, err) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    drain(child.stdout.take().unwrap(), out.clone());
    drain(child.stderr.take().unwrap(), err.clone());
    Bg { child: Some(child), out, err }.finish(limit)
}

/// `len` pseudo-random bytes (xorshift), the same for the same seed.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("ustack-capi-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
