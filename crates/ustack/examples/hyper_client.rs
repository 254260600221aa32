//! hyper's HTTP client (HTTP/1.1, or HTTP/2 with prior knowledge) on ustack
//! over a TAP device: fetches one URL and prints the status and body size.
//! As root, with a server on the kernel's side:
//!
//! ```text
//! cargo run -p ustack --example hyper_client -- ust0 10.0.0.2/24 10.0.0.1 http://10.0.0.1:8000/ [h2]
//! ```

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::net::SocketAddrV4;
use ustack::net::{LocalExec, Net, TcpStream};
use ustack::{os_seed, EthernetAddress, Ipv4Cidr, Stack, StackConfig, TapDevice};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (tap, ip, host, url, h2) = match &args[..] {
        [_, tap, ip, host, url] => (tap, ip, host, url, false),
        [_, tap, ip, host, url, h2] if h2 == "h2" => (tap, ip, host, url, true),
        _ => return Err("usage: hyper_client TAP STACK_IP/PREFIX HOST_IP URL [h2]".into()),
    };
    let (addr, prefix) = ip.split_once('/').ok_or("STACK_IP needs a /PREFIX")?;
    let cidr = Ipv4Cidr::new(addr.parse()?, prefix.parse()?).ok_or("prefix over 32")?;
    let uri: hyper::Uri = url.parse()?;
    let server = SocketAddrV4::new(uri.host().ok_or("URL without a host")?.parse()?, uri.port_u16().unwrap_or(80));
    let tap = TapDevice::open(tap)?;
    tap.set_host_addr(host.parse()?, cidr.prefix_len)?;
    let net = Net::new(Stack::new(StackConfig::new(EthernetAddress([2, 0, 0, 0, 0, 2]), cidr), os_seed()));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    tokio::task::LocalSet::new().block_on(&rt, async {
        tokio::task::spawn_local(net.clone().drive(tap));
        let io = TokioIo::new(TcpStream::connect(&net, server).await?);
        let req = Request::get(uri.clone()).header("host", server.to_string()).body(Empty::<Bytes>::new())?;
        let resp = if h2 {
            let (mut sender, conn) = hyper::client::conn::http2::handshake(LocalExec, io).await?;
            tokio::task::spawn_local(conn);
            sender.send_request(req).await?
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::task::spawn_local(conn);
            sender.send_request(req).await?
        };
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        println!("{url}: {status}, {} bytes", body.len());
        Ok(())
    })
}
