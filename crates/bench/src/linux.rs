//! The baseline: Linux kernel TCP over loopback, client and server threads.

use crate::report::{histogram, Figures};
use crate::{cpu_time, Params, Workload};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

pub(crate) fn run(workload: Workload, p: &Params) -> std::io::Result<Figures> {
    match workload {
        Workload::Stream => stream(p),
        Workload::Rr => rr(p),
        Workload::Crr => crr(p),
    }
}

fn stream(p: &Params) -> std::io::Result<Figures> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = thread::spawn(move || -> std::io::Result<(u64, std::time::Duration)> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        let start = Instant::now();
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok((total, start.elapsed()));
            }
            total += n as u64;
        }
    });
    let mut c = TcpStream::connect(addr)?;
    let chunk = vec![0x5au8; 128 * 1024];
    let cpu0 = cpu_time();
    let end = Instant::now() + p.duration;
    while Instant::now() < end {
        c.write_all(&chunk)?;
    }
    c.shutdown(Shutdown::Write)?;
    let (count, elapsed) = server.join().expect("server thread")?;
    Ok(Figures { count, elapsed, cpu: cpu_time() - cpu0, latency_ns: None })
}

fn rr(p: &Params) -> std::io::Result<Figures> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let size = p.message;
    let server = thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; size];
        loop {
            if s.read_exact(&mut buf).is_err() {
                return Ok(());
            }
            s.write_all(&buf)?;
        }
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let req = vec![0x11u8; size];
    let mut resp = vec![0u8; size];
    let mut h = histogram();
    let cpu0 = cpu_time();
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < p.duration {
        let t = Instant::now();
        c.write_all(&req)?;
        c.read_exact(&mut resp)?;
        h.saturating_record(t.elapsed().as_nanos() as u64);
        count += 1;
    }
    let elapsed = start.elapsed();
    let cpu = cpu_time() - cpu0;
    drop(c);
    server.join().expect("server thread")?;
    Ok(Figures { count, elapsed, cpu, latency_ns: Some(h) })
}

fn crr(p: &Params) -> std::io::Result<Figures> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let size = p.message;
    let stop = Arc::new(AtomicBool::new(false));
    let server_stop = Arc::clone(&stop);
    let server = thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; size];
        loop {
            let (mut s, _) = listener.accept()?;
            if server_stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            s.set_nodelay(true)?;
            if s.read_exact(&mut buf).is_ok() {
                s.write_all(&buf)?;
                // Wait for the client's close, as a server would.
                let _ = s.read(&mut buf);
            }
        }
    });
    let req = vec![0x22u8; size];
    let mut resp = vec![0u8; size];
    let mut h = histogram();
    let cpu0 = cpu_time();
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < p.duration {
        let t = Instant::now();
        let mut c = TcpStream::connect(addr)?;
        c.set_nodelay(true)?;
        c.write_all(&req)?;
        c.read_exact(&mut resp)?;
        drop(c);
        h.saturating_record(t.elapsed().as_nanos() as u64);
        count += 1;
    }
    let elapsed = start.elapsed();
    let cpu = cpu_time() - cpu0;
    stop.store(true, Ordering::SeqCst);
    let _ = TcpStream::connect(addr);
    server.join().expect("server thread")?;
    Ok(Figures { count, elapsed, cpu, latency_ns: Some(h) })
}
