//! A static HTTP/1.1 server: GET and HEAD of the files under a root
//! directory (or of objects held in memory), with keep-alive and pipelining.
//!
//! Bounds, per connection: one request head of at most
//! [`HttpServerConfig::max_request_head`] bytes is buffered (pipelined
//! requests wait in it, and in TCP's receive window, until the response
//! before them is queued); one chunk of a file body is held in memory
//! (64 KiB), filled from disk as the send buffer drains, so a large file
//! never sits in memory whole. Requests are answered strictly in order.
//!
//! Files are read with ordinary blocking reads from the loop's thread: fine
//! for a page cache–warm root, and the reason the chunk is small.

use super::Server;
use crate::App;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use ustack_core::tcp::{RecvError, SendError};
use ustack_core::{Event, Instant, ListenError, Stack, TcpHandle};

/// Bytes of a file read from disk at a time for one connection.
const FILE_CHUNK: usize = 64 * 1024;
/// Headers a request may carry; more is answered with 431.
const MAX_HEADERS: usize = 64;
/// Bytes read and thrown away after a final response while waiting for the
/// peer's FIN, before the connection is reset instead.
const MAX_DRAIN: usize = 64 * 1024;

/// What the server serves.
pub enum Site {
    /// The regular files under this directory (canonical path).
    Dir(PathBuf),
    /// Objects by exact path ("/big.bin"), for tests and the demo.
    Memory(Vec<(String, Arc<[u8]>)>),
}

/// Why a site root cannot be served.
#[derive(Debug)]
pub struct SiteError {
    pub root: PathBuf,
    pub why: String,
}

impl fmt::Display for SiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot serve {}: {}", self.root.display(), self.why)
    }
}

impl std::error::Error for SiteError {}

impl Site {
    /// Serve the files under `root`, which must be a readable directory.
    pub fn dir(root: impl AsRef<Path>) -> Result<Site, SiteError> {
        let root = root.as_ref();
        let err = |why: String| SiteError { root: root.to_path_buf(), why };
        let canonical = root.canonicalize().map_err(|e| err(e.to_string()))?;
        if !canonical.is_dir() {
            return Err(err("not a directory".into()));
        }
        std::fs::read_dir(&canonical).map_err(|e| err(e.to_string()))?;
        Ok(Site::Dir(canonical))
    }

    /// An empty in-memory site; add objects with [`Site::insert`].
    pub fn memory() -> Site {
        Site::Memory(Vec::new())
    }

    /// Serve `bytes` at `path` (an in-memory site only).
    pub fn insert(&mut self, path: &str, bytes: Arc<[u8]>) {
        if let Site::Memory(objects) = self {
            objects.push((path.to_string(), bytes));
        }
    }

    /// Find the body for a decoded request path, or the status that says
    /// why there is none.
    fn lookup(&self, path: &str) -> Result<(Body, u64), Status> {
        match self {
            Site::Memory(objects) => {
                let wanted = if path == "/" { "/index.html" } else { path };
                let (_, bytes) = objects.iter().find(|(p, _)| p == wanted).ok_or(Status::NotFound)?;
                Ok((Body::Memory { bytes: bytes.clone(), offset: 0 }, bytes.len() as u64))
            }
            Site::Dir(root) => {
                let mut full = root.clone();
                for component in path.split('/') {
                    match component {
                        "" | "." => {}
                        // No way out of the root, whatever follows.
                        ".." => return Err(Status::BadRequest),
                        c => full.push(c),
                    }
                }
                let mut meta = std::fs::metadata(&full).map_err(|_| Status::NotFound)?;
                if meta.is_dir() {
                    full.push("index.html");
                    meta = std::fs::metadata(&full).map_err(|_| Status::NotFound)?;
                }
                if !meta.is_file() {
                    return Err(Status::NotFound);
                }
                // A symbolic link may point out of the root: serve only what
                // really lies under it.
                let real = full.canonicalize().map_err(|_| Status::NotFound)?;
                if !real.starts_with(root) {
                    return Err(Status::NotFound);
                }
                let file = File::open(&real).map_err(|_| Status::NotFound)?;
                let len = file.metadata().map_err(|_| Status::NotFound)?.len();
                Ok((Body::File { file, left: len }, len))
            }
        }
    }
}

/// Tunables of the HTTP server, with their defaults.
#[derive(Clone, Copy, Debug)]
pub struct HttpServerConfig {
    /// Connections held at once; more are reset. Default 1024.
    pub max_connections: usize,
    /// Largest request head (request line and headers); a longer one is
    /// answered with 431 and the connection closed. Default 8 KiB.
    pub max_request_head: usize,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig { max_connections: super::DEFAULT_MAX_CONNECTIONS, max_request_head: 8 * 1024 }
    }
}

/// What the server has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpStats {
    pub requests: u64,
    /// Responses with a 2xx status.
    pub ok: u64,
    /// Responses with a 4xx status.
    pub client_errors: u64,
    /// Body bytes queued for sending.
    pub body_bytes: u64,
    /// Connections that ended with an error (reset, timeout, a file that shrank).
    pub failed: u64,
}

/// Serves a [`Site`] over HTTP/1.1 on one port.
pub struct HttpServer {
    server: Server<HttpConn>,
    site: Site,
    max_request_head: usize,
    pub stats: HttpStats,
}

impl HttpServer {
    pub fn listen(stack: &mut Stack, port: u16, site: Site, cfg: HttpServerConfig) -> Result<HttpServer, ListenError> {
        Ok(HttpServer {
            server: Server::listen(stack, port, cfg.max_connections)?,
            site,
            max_request_head: cfg.max_request_head.max(64),
            stats: HttpStats::default(),
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.server.conns.len()
    }
}

impl App for HttpServer {
    fn poll(&mut self, stack: &mut Stack, _now: Instant, events: &[Event]) {
        let max_head = self.max_request_head;
        self.server.accept(stack, events, true, || HttpConn::new(max_head));
        let (site, stats) = (&self.site, &mut self.stats);
        self.server.drive(stack, events, |stack, h, c| match c.drive(stack, h, site, stats) {
            Ok(Next::Wait) => true,
            Ok(Next::Close) => {
                stack.tcp_close(h);
                false
            }
            Err(()) => {
                stats.failed += 1;
                stack.tcp_abort(h);
                false
            }
        });
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    HeadersTooLarge,
}

impl Status {
    fn line(self) -> (u16, &'static str) {
        match self {
            Status::Ok => (200, "OK"),
            Status::BadRequest => (400, "Bad Request"),
            Status::NotFound => (404, "Not Found"),
            Status::MethodNotAllowed => (405, "Method Not Allowed"),
            Status::HeadersTooLarge => (431, "Request Header Fields Too Large"),
        }
    }

    /// The short text body of an error response.
    fn text(self) -> &'static [u8] {
        match self {
            Status::Ok => b"",
            Status::BadRequest => b"bad request\n",
            Status::NotFound => b"not found\n",
            Status::MethodNotAllowed => b"only GET and HEAD are served\n",
            Status::HeadersTooLarge => b"request head too large\n",
        }
    }
}

enum Body {
    None,
    Static { bytes: &'static [u8], offset: usize },
    Memory { bytes: Arc<[u8]>, offset: usize },
    File { file: File, left: u64 },
}

enum Next {
    /// Blocked on the peer (data or send-buffer space); the stack will
    /// report the connection ready again.
    Wait,
    /// Done: close gracefully.
    Close,
}

struct HttpConn {
    /// Received bytes not yet parsed: at most one request head (and the
    /// start of the next pipelined one).
    request: Box<[u8]>,
    request_len: usize,
    /// The response head being sent, and how much of it the send buffer took.
    head: Vec<u8>,
    head_sent: usize,
    body: Body,
    /// A file body's bytes read from disk and not yet sent, allocated on the
    /// first file response.
    chunk: Option<Box<[u8]>>,
    chunk_start: usize,
    chunk_end: usize,
    /// Close once the response in progress is queued.
    close_after: bool,
    /// Our FIN is queued; reading only to see the peer's.
    draining: usize,
    closing: bool,
}

impl HttpConn {
    fn new(max_head: usize) -> HttpConn {
        HttpConn {
            request: vec![0; max_head].into_boxed_slice(),
            request_len: 0,
            head: Vec::with_capacity(256),
            head_sent: 0,
            body: Body::None,
            chunk: None,
            chunk_start: 0,
            chunk_end: 0,
            close_after: false,
            draining: 0,
            closing: false,
        }
    }

    fn drive(&mut self, stack: &mut Stack, h: TcpHandle, site: &Site, stats: &mut HttpStats) -> Result<Next, ()> {
        loop {
            if self.closing {
                return self.drain(stack, h);
            }
            if !self.send_response(stack, h, stats)? {
                return Ok(Next::Wait);
            }
            if self.close_after {
                // Our FIN goes after the response; the peer may still be
                // sending (pipelined requests we will not answer), and
                // closing with unread data would reset the connection and
                // could lose the response, so read to its FIN first.
                stack.tcp_shutdown(h).map_err(|_| ())?;
                self.closing = true;
                continue;
            }
            if self.next_request(site, stats) {
                continue;
            }
            if self.request_len == self.request.len() {
                self.start_response(Status::HeadersTooLarge, false, None, stats);
                continue;
            }
            match stack.tcp_recv(h, &mut self.request[self.request_len..]) {
                // The peer is done; a half-sent request gets no answer.
                Ok(0) => return Ok(Next::Close),
                Ok(n) => self.request_len += n,
                Err(RecvError::WouldBlock) => return Ok(Next::Wait),
                Err(_) => return Err(()),
            }
        }
    }

    fn drain(&mut self, stack: &mut Stack, h: TcpHandle) -> Result<Next, ()> {
        loop {
            match stack.tcp_recv(h, &mut self.request) {
                Ok(0) => return Ok(Next::Close),
                Ok(n) => {
                    self.draining += n;
                    if self.draining > MAX_DRAIN {
                        return Err(());
                    }
                }
                Err(RecvError::WouldBlock) => return Ok(Next::Wait),
                Err(_) => return Err(()),
            }
        }
    }

    /// Parse one request from the buffer and start its response. False when
    /// the buffer holds no complete request head yet.
    fn next_request(&mut self, site: &Site, stats: &mut HttpStats) -> bool {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let (consumed, status, keep_alive, head_only, found) = match req.parse(&self.request[..self.request_len]) {
            Ok(httparse::Status::Partial) => return false,
            Err(httparse::Error::TooManyHeaders) => (self.request_len, Status::HeadersTooLarge, false, false, None),
            Err(_) => (self.request_len, Status::BadRequest, false, false, None),
            Ok(httparse::Status::Complete(n)) => {
                let (status, keep_alive, head_only, found) = respond_to(&req, site);
                (n, status, keep_alive, head_only, found)
            }
        };
        self.request.copy_within(consumed..self.request_len, 0);
        self.request_len -= consumed;
        stats.requests += 1;
        self.start_response(status, !keep_alive, found.map(|(body, len, ctype)| (body, len, ctype, head_only)), stats);
        true
    }

    /// Write the response head and set up the body.
    fn start_response(
        &mut self,
        status: Status,
        close: bool,
        found: Option<(Body, u64, &'static str, bool)>,
        stats: &mut HttpStats,
    ) {
        // Errors that leave the request stream in doubt end the connection.
        let close = close || matches!(status, Status::BadRequest | Status::HeadersTooLarge | Status::MethodNotAllowed);
        let (code, reason) = status.line();
        let (body, len, ctype) = match found {
            Some((body, len, ctype, head_only)) => (if head_only { Body::None } else { body }, len, ctype),
            None => {
                let text = status.text();
                (Body::Static { bytes: text, offset: 0 }, text.len() as u64, "text/plain; charset=utf-8")
            }
        };
        if (200..300).contains(&code) {
            stats.ok += 1;
        } else {
            stats.client_errors += 1;
        }
        self.head.clear();
        self.head_sent = 0;
        // Writing to a Vec cannot fail.
        let _ = write!(
            self.head,
            "HTTP/1.1 {code} {reason}\r\nServer: ustack\r\nContent-Length: {len}\r\nContent-Type: {ctype}\r\n"
        );
        if status == Status::MethodNotAllowed {
            self.head.extend_from_slice(b"Allow: GET, HEAD\r\n");
        }
        self.head.extend_from_slice(if close {
            b"Connection: close\r\n\r\n"
        } else {
            b"Connection: keep-alive\r\n\r\n"
        });
        self.body = body;
        self.close_after = close;
    }

    /// Queue as much of the response as the send buffer takes. True when all
    /// of it is queued (or there is none).
    fn send_response(&mut self, stack: &mut Stack, h: TcpHandle, stats: &mut HttpStats) -> Result<bool, ()> {
        while self.head_sent < self.head.len() {
            match stack.tcp_send(h, &self.head[self.head_sent..]) {
                Ok(n) => self.head_sent += n,
                Err(SendError::Full) => return Ok(false),
                Err(_) => return Err(()),
            }
        }
        loop {
            let sent = match &mut self.body {
                Body::None => return Ok(true),
                Body::Static { bytes, offset } => send_slice(stack, h, bytes, offset)?,
                Body::Memory { bytes, offset } => send_slice(stack, h, bytes, offset)?,
                Body::File { file, left } => {
                    let chunk = self.chunk.get_or_insert_with(|| vec![0; FILE_CHUNK].into_boxed_slice());
                    if self.chunk_start == self.chunk_end {
                        if *left == 0 {
                            self.body = Body::None;
                            continue;
                        }
                        let want = (*left).min(chunk.len() as u64) as usize;
                        // A file that shrank under us cannot keep the promised
                        // Content-Length: reset rather than send a short body.
                        let n = file.read(&mut chunk[..want]).map_err(|_| ())?;
                        if n == 0 {
                            return Err(());
                        }
                        *left -= n as u64;
                        self.chunk_start = 0;
                        self.chunk_end = n;
                    }
                    let mut offset = self.chunk_start;
                    let sent = send_slice(stack, h, &chunk[..self.chunk_end], &mut offset)?;
                    stats.body_bytes += (offset - self.chunk_start) as u64;
                    self.chunk_start = offset;
                    if !sent {
                        return Ok(false);
                    }
                    continue;
                }
            };
            if !sent {
                return Ok(false);
            }
            if let Body::Static { bytes, .. } = &self.body {
                stats.body_bytes += bytes.len() as u64;
            } else if let Body::Memory { bytes, .. } = &self.body {
                stats.body_bytes += bytes.len() as u64;
            }
            self.body = Body::None;
        }
    }
}

/// Send `bytes[*offset..]`; true when all of it went.
fn send_slice(stack: &mut Stack, h: TcpHandle, bytes: &[u8], offset: &mut usize) -> Result<bool, ()> {
    while *offset < bytes.len() {
        match stack.tcp_send(h, &bytes[*offset..]) {
            Ok(n) => *offset += n,
            Err(SendError::Full) => return Ok(false),
            Err(_) => return Err(()),
        }
    }
    Ok(true)
}

/// The answer to a parsed request: status, keep-alive, HEAD, and the body
/// with its length and type when found.
fn respond_to(req: &httparse::Request<'_, '_>, site: &Site) -> (Status, bool, bool, Option<(Body, u64, &'static str)>) {
    let version = req.version.unwrap_or(1);
    // HTTP/1.1 keeps the connection by default, HTTP/1.0 closes unless asked
    // (RFC 9112 §9.3).
    let mut keep_alive = version == 1;
    let mut has_body = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length") && h.value.trim_ascii() != b"0")
        {
            has_body = true;
        }
    }
    let head_only = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return (Status::MethodNotAllowed, false, false, None),
    };
    // A GET with a body leaves us unsure where the next request starts.
    if has_body {
        return (Status::BadRequest, false, head_only, None);
    }
    let target = req.path.unwrap_or("");
    let Some(path) = decode_path(target) else { return (Status::BadRequest, false, head_only, None) };
    match site.lookup(&path) {
        Ok((body, len)) => (Status::Ok, keep_alive, head_only, Some((body, len, content_type(&path)))),
        Err(status) => (status, keep_alive, head_only, None),
    }
}

/// The request target's path, percent-decoded; `None` when it is not an
/// origin-form path or decodes to something unsafe (NUL, invalid UTF-8).
fn decode_path(target: &str) -> Option<String> {
    let path = target.split(['?', '#']).next()?;
    if !path.starts_with('/') {
        return None;
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

fn content_type(path: &str) -> &'static str {
    let name = if path.ends_with('/') || path.is_empty() { "index.html" } else { path };
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e).to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" => "text/plain; charset=utf-8",
        "css" => "text/css",
        "js" => "text/javascript",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}
