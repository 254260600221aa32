//! hyper's HTTP/1.1 and HTTP/2 server (h2c, prior knowledge, on the same
//! port) on ustack over a TAP device. As root:
//!
//! ```text
//! cargo run -p ustack --example hyper_server -- ust0 10.0.0.2/24 10.0.0.1
//! curl http://10.0.0.2:8080/            # HTTP/1.1
//! curl --http2-prior-knowledge http://10.0.0.2:8080/bytes/1000000 -o /dev/null
//! ```

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use ustack::net::{LocalExec, Net, TcpListener};
use ustack::{os_seed, EthernetAddress, Ipv4Cidr, Stack, StackConfig, TapDevice};

/// `/bytes/N` answers N bytes; anything else a greeting.
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.uri().path().strip_prefix("/bytes/").and_then(|n| n.parse::<usize>().ok()) {
        Some(n) => Bytes::from(vec![b'x'; n.min(64 << 20)]),
        None => Bytes::from(format!("hello from hyper on ustack ({:?})\n", req.version())),
    };
    Ok(Response::new(Full::new(body)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, tap, ip, host] = &args[..] else {
        return Err("usage: hyper_server TAP STACK_IP/PREFIX HOST_IP (e.g. ust0 10.0.0.2/24 10.0.0.1)".into());
    };
    let (addr, prefix) = ip.split_once('/').ok_or("STACK_IP needs a /PREFIX")?;
    let cidr = Ipv4Cidr::new(addr.parse()?, prefix.parse()?).ok_or("prefix over 32")?;
    let tap = TapDevice::open(tap)?;
    tap.set_host_addr(host.parse()?, cidr.prefix_len)?;
    let net = Net::new(Stack::new(StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, 2]), cidr), os_seed()));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    tokio::task::LocalSet::new().block_on(&rt, async {
        tokio::task::spawn_local(net.clone().drive(tap));
        let listener = TcpListener::bind(&net, 8080)?;
        eprintln!("hyper on ustack: http://{}:8080/ (HTTP/1.1 and h2c)", cidr.addr);
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::task::spawn_local(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(LocalExec);
                let service = hyper::service::service_fn(handle);
                if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                    eprintln!("connection: {e}");
                }
            });
        }
    })
}
