//! `ustack get`: an HTTP/1.1 client on the stack, like a minimal curl.

use crate::config::ConfigArgs;
use crate::device::DeviceArgs;
use crate::error::CliError;
use clap::Args;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Instant as WallInstant;
use ustack_core::phy::Device;
use ustack_core::Duration;
use ustack_runtime::apps::HttpClient;
use ustack_runtime::{EventLoop, RunEnd, StopSignal, Waitable};

#[derive(Args, Debug)]
#[command(after_help = "Consecutive URLs to the same server share one connection, their requests pipelined; \
    each change of server opens a new connection, in URL order. The bodies are written in URL order, \
    concatenated, to stdout or to the -o file. Exits 0 only when every URL answered 2xx.")]
pub struct GetArgs {
    /// What to fetch: http://A.B.C.D[:PORT]/PATH (IPv4 address literals only: no DNS).
    #[arg(value_name = "URL", required = true)]
    pub urls: Vec<String>,
    #[command(flatten)]
    pub dev: DeviceArgs,
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Write all the bodies, concatenated in URL order, to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Give up when everything has not arrived after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
    /// With shards, the URLs are shared out in order: shard k fetches the k-th contiguous share over
    /// its own connections, whose ports hash back to it.
    #[command(flatten)]
    pub cores: crate::shards::CoresArgs,
}

/// A URL split into what the client needs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Url {
    server: SocketAddr,
    path: String,
}

fn parse_url(url: &str) -> Result<Url, CliError> {
    let bad = |why: &str| CliError::Url(format!("bad URL '{url}': {why}"));
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => return Err(bad(&format!("{scheme} is not supported, only http://"))),
        None => return Err(bad("expected http://A.B.C.D[:PORT]/PATH or http://[IPV6][:PORT]/PATH")),
    };
    let rest = rest.split('#').next().unwrap_or("");
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad("spaces and control characters must be percent-encoded"));
    }
    if authority.contains('@') {
        return Err(bad("user names and passwords are not supported"));
    }
    // An IPv6 address comes in brackets (RFC 3986 §3.2.2), the port after them.
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']').ok_or_else(|| bad("no ']' after the IPv6 address"))?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(|| bad("expected ':PORT' after ']'"))?)),
            }
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(port) => port.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| bad(&format!("bad port '{port}'")))?,
        None => 80,
    };
    if host.is_empty() {
        return Err(bad("no server address"));
    }
    let ip: IpAddr = host.parse().ok().filter(|ip: &IpAddr| ip.is_ipv6() == authority.starts_with('[')).ok_or_else(|| {
        CliError::Url(format!(
            "'{host}' in '{url}' is not an IPv4 address or a bracketed IPv6 one: ustack get does no DNS lookups, give the server's address"
        ))
    })?;
    Ok(Url { server: SocketAddr::new(ip, port), path })
}

pub fn run(args: GetArgs) -> Result<(), CliError> {
    let settings = args.cfg.load()?;
    let urls = args.urls.iter().map(|u| parse_url(u)).collect::<Result<Vec<_>, _>>()?;
    args.dev.check()?;
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .map_err(|source| CliError::Output { path: path.display().to_string(), source })?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut sink = BufWriter::with_capacity(256 * 1024, out);
    let start = WallInstant::now();
    let bytes = if args.cores.sharded() {
        let v4 = |u: &Url| match u.server {
            SocketAddr::V4(a) => Ok((a, u.path.clone())),
            SocketAddr::V6(_) => Err(CliError::Url(format!(
                "http://{}{}: --cores fetches over IPv4 only; drop --cores for an IPv6 server",
                u.server, u.path
            ))),
        };
        let pairs: Vec<(SocketAddrV4, String)> = urls.iter().map(v4).collect::<Result<_, _>>()?;
        crate::shards::get(&args, &settings, &pairs, &mut sink)?
    } else {
        let opened = args.dev.open(&settings)?;
        fetch(EventLoop::new(opened.stack, opened.device), &args, &urls, &mut sink)?
    };
    sink.flush().map_err(|source| CliError::Output {
        path: args.output.as_ref().map_or("stdout".into(), |p| p.display().to_string()),
        source,
    })?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "ustack: got {} URL{}, {bytes} bytes in {secs:.3} s ({:.1} Mbit/s)",
        urls.len(),
        if urls.len() == 1 { "" } else { "s" },
        bytes as f64 * 8.0 / secs.max(1e-9) / 1e6
    );
    Ok(())
}

/// Fetch every URL in order over `lp`'s stack; returns the body bytes.
fn fetch<D: Device + Waitable>(
    mut lp: EventLoop<D>,
    args: &GetArgs,
    urls: &[Url],
    sink: &mut impl Write,
) -> Result<u64, CliError> {
    let stop = StopSignal::install();
    let deadline = lp.clock.now() + Duration::from_secs(args.timeout.min(1 << 32));
    // An IPv6 source address is usable once duplicate address detection
    // ends (about a second after start): wait for it, within the timeout.
    if let Some(dst) = urls.iter().find_map(|u| match u.server.ip() {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    }) {
        let mut wait = AwaitSource { dst, ready: false, next: None };
        lp.run_until(&mut [&mut wait], &stop, Some(deadline));
    }
    let (mut bytes, mut done) = (0u64, 0usize);
    let mut rest = urls;
    while let Some(first) = rest.first() {
        // One connection for each run of URLs to the same server.
        let n = rest.iter().take_while(|u| u.server == first.server).count();
        let paths = rest[..n].iter().map(|u| u.path.clone()).collect();
        let mut client = HttpClient::new(first.server, paths, &mut *sink);
        let end = lp.run_until(&mut [&mut client], &stop, Some(deadline));
        bytes += client.body_bytes();
        let answered = client.responses.len();
        let (outcome, _) = client.into_result();
        match (end, outcome) {
            (_, Some(Ok(()))) => {}
            (_, Some(Err(e))) => return Err(e.into()),
            (RunEnd::Stopped, None) => return Err(CliError::Interrupted { done: done + answered, total: urls.len() }),
            (RunEnd::DeviceFailed, None) => return Err(crate::perf::device_failed(&lp)),
            (_, None) => {
                let u = &rest[answered.min(n - 1)];
                return Err(CliError::Timeout {
                    secs: args.timeout,
                    done: done + answered,
                    total: urls.len(),
                    url: format!("http://{}{}", u.server, u.path),
                });
            }
        }
        done += n;
        rest = &rest[n..];
    }
    Ok(bytes)
}

/// Finishes once the stack has the IPv6 address to reach `dst` from
/// (duplicate address detection over).
struct AwaitSource {
    dst: std::net::Ipv6Addr,
    ready: bool,
    next: Option<ustack_core::Instant>,
}

impl ustack_runtime::App for AwaitSource {
    fn poll(&mut self, stack: &mut ustack_core::Stack, now: ustack_core::Instant, _events: &[ustack_core::Event]) {
        // The settled source, not any usable one: while the global address
        // is tentative the link-local one is usable, and a connection keeps
        // the source it starts with.
        self.ready = stack.ipv6().is_some_and(|l| l.settled_source(self.dst).is_some());
        self.next = Some(now + Duration::from_millis(20));
    }
    fn next_deadline(&self) -> Option<ustack_core::Instant> {
        self.next
    }
    fn finished(&self) -> bool {
        self.ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://10.88.0.1:8000/a/b?x=1#frag").unwrap();
        assert_eq!(u.server, "10.88.0.1:8000".parse().unwrap());
        assert_eq!(u.path, "/a/b?x=1");
        assert_eq!(parse_url("http://10.0.0.2").unwrap().path, "/");
        assert_eq!(parse_url("HTTP://10.0.0.2?q").unwrap().path, "/?q");
        assert_eq!(parse_url("http://10.0.0.2").unwrap().server.port(), 80);
        let e = parse_url("http://example.com/").unwrap_err().to_string();
        assert!(e.contains("no DNS"), "{e}");
        assert!(parse_url("https://10.0.0.2/").is_err());
        assert!(parse_url("10.0.0.2/x").is_err());
        assert!(parse_url("http://10.0.0.2:0/").is_err());
        assert!(parse_url("http://10.0.0.2:99999/").is_err());
        assert!(parse_url("http:///x").is_err());
        let u = parse_url("http://[2001:db8::2]/f").unwrap();
        assert_eq!(u.server, "[2001:db8::2]:80".parse().unwrap());
        assert_eq!(u.path, "/f");
        assert_eq!(parse_url("http://[2001:db8::2]:8080").unwrap().server, "[2001:db8::2]:8080".parse().unwrap());
        assert!(parse_url("http://2001:db8::2/").is_err());
        assert!(parse_url("http://[10.0.0.2]/").is_err());
        assert!(parse_url("http://[2001:db8::2/").is_err());
        assert!(parse_url("http://[2001:db8::2]x/").is_err());
    }
}
