//! `ustack up --metrics ADDR:PORT`: Prometheus's `/metrics` over HTTP on a
//! kernel socket, served by a thread of its own.
//!
//! The thread is a client of the stack's control socket, like `ustack
//! stats`: the event loop answers it between turns and never waits on it, and
//! a scrape sees exactly what `ustack stats --json` would (rendered by
//! [`ustack_runtime::control::prometheus_text`]). One scrape at a time; a
//! scraper that stalls is cut off by the timeouts below.

use crate::error::CliError;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;
use ustack_runtime::control::prometheus_text;
use ustack_runtime::ControlAddr;

/// A request longer than this is refused.
const MAX_REQUEST: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Bind `addr` now (so a taken port fails before the stack starts) and serve
/// from a detached thread for the life of the process.
pub fn serve(addr: SocketAddr, control: ControlAddr) -> Result<SocketAddr, CliError> {
    let listener = TcpListener::bind(addr).map_err(|source| CliError::Metrics { addr: addr.to_string(), source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = answer(conn, &control);
            }
        })
        .map_err(|source| CliError::Metrics { addr: addr.to_string(), source })?;
    Ok(bound)
}

fn answer(mut conn: TcpStream, control: &ControlAddr) -> std::io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 || request.len() + n > MAX_REQUEST {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, path) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let (status, kind, body) = match (method, path) {
        (b"GET" | b"HEAD", b"/metrics") => match control.read_snapshot().map(|t| serde_json::from_str(&t)) {
            Ok(Ok(snap)) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", prometheus_text(&snap)),
            Ok(Err(e)) => ("503 Service Unavailable", "text/plain", format!("bad snapshot from {control}: {e}\n")),
            Err(e) => ("503 Service Unavailable", "text/plain", format!("no answer from {control}: {e}\n")),
        },
        (b"GET" | b"HEAD", _) => ("404 Not Found", "text/plain", "only /metrics is here\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "GET /metrics\n".to_string()),
    };
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    conn.write_all(head.as_bytes())?;
    if method != b"HEAD" {
        conn.write_all(body.as_bytes())?;
    }
    Ok(())
}
