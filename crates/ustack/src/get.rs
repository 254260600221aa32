//! `ustack get`: an HTTP/1.1 client on the stack, like a minimal curl.

use crate::config::ConfigArgs;
use crate::device::DeviceArgs;
use crate::error::CliError;
use clap::Args;
use std::io::{BufWriter, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Instant as WallInstant;
use ustack_core::Duration;
use ustack_runtime::apps::HttpClient;
use ustack_core::phy::Device;
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
    server: SocketAddrV4,
    path: String,
}

fn parse_url(url: &str) -> Result<Url, CliError> {
    let bad = |why: &str| CliError::Url(format!("bad URL '{url}': {why}"));
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => return Err(bad(&format!("{scheme} is not supported, only http://"))),
        None => return Err(bad("expected http://A.B.C.D[:PORT]/PATH")),
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
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => {
            let port = port.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| bad(&format!("bad port '{port}'")))?;
            (host, port)
        }
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err(bad("no server address"));
    }
    let ip: Ipv4Addr = host.parse().map_err(|_| {
        CliError::Url(format!(
            "'{host}' in '{url}' is not an IPv4 address: ustack get does no DNS lookups, give the server's address"
        ))
    })?;
    Ok(Url { server: SocketAddrV4::new(ip, port), path })
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
        let pairs: Vec<(SocketAddrV4, String)> = urls.iter().map(|u| (u.server, u.path.clone())).collect();
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
    }
}
