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
//!
//! A request body (`Content-Length` or chunked) is read and thrown away, so
//! the next request on the connection is found where it starts; a single
//! `Range: bytes=…` is answered with 206 (416 when it cannot be satisfied),
//! several ranges with the whole body. Connections follow a [`ConnPolicy`]:
//! a request head must arrive within `fairness.request_timeout`, an idle
//! keep-alive connection closes after `fairness.idle_timeout`, one address
//! holds at most `fairness.max_per_source` connections, and a full table
//! makes room for a new client by resetting the connection that has waited
//! longest for its request.

use super::{ConnPolicy, FairnessConfig, FairnessStats, Phase, Server};
use crate::App;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
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
/// Longest chunk-size line (size, extensions) or trailer line of a chunked
/// body we skip; a longer one is not a body we will wait for.
const MAX_CHUNK_LINE: usize = 1024;

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
    /// The directory as given.
    pub root: PathBuf,
    /// What is wrong with it (missing, not a directory, unreadable).
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
                Ok((Body::Memory { bytes: bytes.clone(), start: 0, offset: 0, end: bytes.len() }, bytes.len() as u64))
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
    /// Request and idle timeouts, the cap per source address (see
    /// [`FairnessConfig`] for the defaults).
    pub fairness: FairnessConfig,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            max_connections: super::DEFAULT_MAX_CONNECTIONS,
            max_request_head: 8 * 1024,
            fairness: FairnessConfig::default(),
        }
    }
}

/// What the server has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpStats {
    /// Request heads parsed, whatever their answer.
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
    /// What the server has done so far.
    pub stats: HttpStats,
}

impl HttpServer {
    /// Listen on `port` of `stack` and serve `site` under `cfg`'s limits.
    /// Fails as [`Stack::tcp_listen`] does (the port is taken, no room).
    pub fn listen(stack: &mut Stack, port: u16, site: Site, cfg: HttpServerConfig) -> Result<HttpServer, ListenError> {
        Ok(HttpServer {
            server: Server::listen(stack, port, cfg.max_connections)?.with_policy(cfg.fairness),
            site,
            max_request_head: cfg.max_request_head.max(64),
            stats: HttpStats::default(),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.server.conns.len()
    }

    /// Connections accepted so far, and those reset at once (over a bound).
    pub fn accepted(&self) -> (u64, u64) {
        (self.server.accepted, self.server.refused)
    }

    /// What the fairness policy has done: timeouts, evictions, refusals.
    pub fn fairness(&self) -> FairnessStats {
        self.server.policy.as_ref().map_or_else(FairnessStats::default, |p: &ConnPolicy| p.stats)
    }
}

impl App for HttpServer {
    fn poll(&mut self, stack: &mut Stack, now: Instant, events: &[Event]) {
        let max_head = self.max_request_head;
        self.server.accept(stack, now, events, true, || HttpConn::new(max_head));
        let (site, stats) = (&self.site, &mut self.stats);
        self.server.drive(stack, now, events, |stack, h, c| match c.drive(stack, h, site, stats) {
            Ok(Next::Wait) => Some(c.phase()),
            Ok(Next::Close) => {
                stack.tcp_close(h);
                None
            }
            Err(()) => {
                stats.failed += 1;
                stack.tcp_abort(h);
                None
            }
        });
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.server.policy.as_ref().and_then(|p| p.next_deadline())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    PartialContent,
    RangeNotSatisfiable,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    HeadersTooLarge,
}

impl Status {
    fn line(self) -> (u16, &'static str) {
        match self {
            Status::Ok => (200, "OK"),
            Status::PartialContent => (206, "Partial Content"),
            Status::RangeNotSatisfiable => (416, "Range Not Satisfiable"),
            Status::BadRequest => (400, "Bad Request"),
            Status::NotFound => (404, "Not Found"),
            Status::MethodNotAllowed => (405, "Method Not Allowed"),
            Status::HeadersTooLarge => (431, "Request Header Fields Too Large"),
        }
    }

    /// The short text body of an error response.
    fn text(self) -> &'static [u8] {
        match self {
            Status::Ok | Status::PartialContent => b"",
            Status::RangeNotSatisfiable => b"range not satisfiable\n",
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
    Memory { bytes: Arc<[u8]>, start: usize, offset: usize, end: usize },
    File { file: File, left: u64 },
}

enum Next {
    /// Blocked on the peer (data or send-buffer space); the stack will
    /// report the connection ready again.
    Wait,
    /// Done: close gracefully.
    Close,
}

/// A request body being read and thrown away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Skip {
    None,
    /// This many bytes of a `Content-Length` body.
    Bytes(u64),
    /// A chunk-size line (`line` bytes of it seen so far), then its data.
    ChunkSize { size: u64, digits: bool, ext: bool, line: usize },
    /// Chunk data, then its CRLF (`crlf` of the 2 bytes still due).
    ChunkData { left: u64 },
    ChunkCrlf { crlf: u8 },
    /// Trailer lines after the last chunk, up to an empty line (`line`
    /// bytes of the current one seen).
    Trailer { line: usize },
}

impl Skip {
    /// Consume what of `data` belongs to the body; returns bytes consumed,
    /// or `Err` for a chunked body that is malformed.
    fn consume(&mut self, data: &[u8]) -> Result<usize, ()> {
        let mut i = 0;
        while i < data.len() {
            match self {
                Skip::None => break,
                Skip::Bytes(left) => {
                    let n = (*left).min((data.len() - i) as u64);
                    i += n as usize;
                    *left -= n;
                    if *left == 0 {
                        *self = Skip::None;
                    }
                }
                Skip::ChunkSize { size, digits, ext, line } => {
                    let b = data[i];
                    i += 1;
                    *line += 1;
                    if *line > MAX_CHUNK_LINE {
                        return Err(());
                    }
                    match b {
                        b'\n' if *digits => {
                            *self = if *size == 0 { Skip::Trailer { line: 0 } } else { Skip::ChunkData { left: *size } };
                        }
                        b'\n' => return Err(()),
                        _ if *ext => {}
                        b';' | b'\r' | b' ' | b'\t' => *ext = true,
                        _ => {
                            let d = (b as char).to_digit(16).ok_or(())?;
                            *size = size.checked_mul(16).and_then(|s| s.checked_add(u64::from(d))).ok_or(())?;
                            *digits = true;
                        }
                    }
                }
                Skip::ChunkData { left } => {
                    let n = (*left).min((data.len() - i) as u64);
                    i += n as usize;
                    *left -= n;
                    if *left == 0 {
                        *self = Skip::ChunkCrlf { crlf: 2 };
                    }
                }
                Skip::ChunkCrlf { crlf } => {
                    let b = data[i];
                    i += 1;
                    match (b, *crlf) {
                        (b'\r', 2) => *crlf = 1,
                        (b'\n', _) => *self = Skip::ChunkSize { size: 0, digits: false, ext: false, line: 0 },
                        _ => return Err(()),
                    }
                }
                Skip::Trailer { line } => {
                    let b = data[i];
                    i += 1;
                    match b {
                        b'\n' if *line == 0 => *self = Skip::None,
                        b'\n' => *line = 0,
                        b'\r' if *line == 0 => {}
                        _ => {
                            *line += 1;
                            if *line > MAX_CHUNK_LINE {
                                return Err(());
                            }
                        }
                    }
                }
            }
        }
        Ok(i)
    }
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
    /// The body of the last request, still being skipped.
    skip: Skip,
    /// Requests answered on this connection.
    served: u64,
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
            skip: Skip::None,
            served: 0,
        }
    }

    /// What the connection waits for, for the fairness policy.
    fn phase(&self) -> Phase {
        let served = self.served;
        if self.closing {
            // Waiting only for the peer's FIN.
            Phase::Idle { served: served + 1 }
        } else if self.head_sent < self.head.len() || !matches!(self.body, Body::None) {
            Phase::Busy
        } else if self.request_len > 0 || served == 0 || self.skip != Skip::None {
            Phase::Request { served }
        } else {
            Phase::Idle { served }
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
        if self.skip != Skip::None {
            let Ok(n) = self.skip.consume(&self.request[..self.request_len]) else {
                // A chunked body we cannot follow: the stream is lost.
                self.skip = Skip::None;
                self.request_len = 0;
                stats.requests += 1;
                self.start_response(Status::BadRequest, true, None, stats);
                return true;
            };
            self.request.copy_within(n..self.request_len, 0);
            self.request_len -= n;
            if self.skip != Skip::None {
                return false;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let (consumed, answer) = match req.parse(&self.request[..self.request_len]) {
            Ok(httparse::Status::Partial) => return false,
            Err(httparse::Error::TooManyHeaders) => (self.request_len, Answer::error(Status::HeadersTooLarge)),
            Err(_) => (self.request_len, Answer::error(Status::BadRequest)),
            Ok(httparse::Status::Complete(n)) => (n, respond_to(&req, site)),
        };
        self.request.copy_within(consumed..self.request_len, 0);
        self.request_len -= consumed;
        self.skip = answer.skip;
        stats.requests += 1;
        self.served += 1;
        let found = answer.found.map(|f| (f, answer.head_only));
        self.start_response(answer.status, !answer.keep_alive, found, stats);
        true
    }

    /// Write the response head and set up the body.
    fn start_response(
        &mut self,
        status: Status,
        close: bool,
        found: Option<(Found, bool)>,
        stats: &mut HttpStats,
    ) {
        // Errors that leave the request stream in doubt end the connection.
        let close = close || matches!(status, Status::BadRequest | Status::HeadersTooLarge | Status::MethodNotAllowed);
        let (code, reason) = status.line();
        let mut content_range = None;
        let (body, len, ctype) = match found {
            Some((f, head_only)) => {
                content_range = f.range;
                (if head_only { Body::None } else { f.body }, f.len, f.ctype)
            }
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
        match content_range {
            Some(ContentRange::Part { first, last, total }) => {
                let _ = write!(self.head, "Content-Range: bytes {first}-{last}/{total}\r\n");
            }
            Some(ContentRange::Unsatisfiable { total }) => {
                let _ = write!(self.head, "Content-Range: bytes */{total}\r\n");
            }
            None => {}
        }
        if matches!(status, Status::Ok | Status::PartialContent) {
            self.head.extend_from_slice(b"Accept-Ranges: bytes\r\n");
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
                Body::Memory { bytes, offset, end, .. } => send_slice(stack, h, &bytes[..*end], offset)?,
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
            } else if let Body::Memory { start, end, .. } = &self.body {
                stats.body_bytes += (end - start) as u64;
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

/// A found object's body, its length on the wire, type and range.
struct Found {
    body: Body,
    len: u64,
    ctype: &'static str,
    range: Option<ContentRange>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ContentRange {
    Part { first: u64, last: u64, total: u64 },
    Unsatisfiable { total: u64 },
}

/// The answer to a parsed request.
struct Answer {
    status: Status,
    keep_alive: bool,
    head_only: bool,
    found: Option<Found>,
    /// The request's body, to skip before the next request.
    skip: Skip,
}

impl Answer {
    fn error(status: Status) -> Answer {
        Answer { status, keep_alive: false, head_only: false, found: None, skip: Skip::None }
    }
}

fn respond_to(req: &httparse::Request<'_, '_>, site: &Site) -> Answer {
    let version = req.version.unwrap_or(1);
    // HTTP/1.1 keeps the connection by default, HTTP/1.0 closes unless asked
    // (RFC 9112 §9.3).
    let mut keep_alive = version == 1;
    let mut content_length: Option<u64> = None;
    let mut chunked = None;
    let mut range = None;
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
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // RFC 9112 §6.3: chunked must be the final coding of a request;
            // anything else leaves the body's end unknown.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"").trim_ascii();
            chunked = Some(chunked.unwrap_or(true) && last.eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // RFC 9112 §6.3: an invalid length, or two that differ, is an
            // unrecoverable error.
            let n = std::str::from_utf8(h.value.trim_ascii()).ok().filter(|v| v.bytes().all(|b| b.is_ascii_digit()));
            match (n.and_then(|v| v.parse::<u64>().ok()), content_length) {
                (Some(n), None) => content_length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Answer::error(Status::BadRequest),
            }
        } else if h.name.eq_ignore_ascii_case("range") {
            range = Some(h.value);
        }
    }
    let skip = match (chunked, content_length) {
        // Both: a smuggling attempt as often as not (RFC 9112 §6.1 lets a
        // server reject it); neither side can be trusted.
        (Some(_), Some(_)) | (Some(false), None) => return Answer::error(Status::BadRequest),
        (Some(true), None) => Skip::ChunkSize { size: 0, digits: false, ext: false, line: 0 },
        (None, Some(0) | None) => Skip::None,
        (None, Some(n)) => Skip::Bytes(n),
    };
    let head_only = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Answer::error(Status::MethodNotAllowed),
    };
    let target = req.path.unwrap_or("");
    let Some(path) = decode_path(target) else { return Answer::error(Status::BadRequest) };
    let (status, found) = match site.lookup(&path) {
        Ok((body, len)) => {
            let ctype = content_type(&path);
            match range.map(|r| parse_range(r, len)) {
                None | Some(RangeSpec::Ignore) => (Status::Ok, Some(Found { body, len, ctype, range: None })),
                Some(RangeSpec::Unsatisfiable) => {
                    (Status::RangeNotSatisfiable, Some(Found::unsatisfiable(len)))
                }
                Some(RangeSpec::Part(first, last)) => match body.select(first, last) {
                    Some(body) => {
                        let range = Some(ContentRange::Part { first, last, total: len });
                        (Status::PartialContent, Some(Found { body, len: last - first + 1, ctype, range }))
                    }
                    None => (Status::NotFound, None),
                },
            }
        }
        Err(status) => (status, None),
    };
    Answer { status, keep_alive, head_only, found, skip }
}

impl Found {
    /// The 416 answer: a short text body and `Content-Range: bytes */len`.
    fn unsatisfiable(total: u64) -> Found {
        let text = Status::RangeNotSatisfiable.text();
        Found {
            body: Body::Static { bytes: text, offset: 0 },
            len: text.len() as u64,
            ctype: "text/plain; charset=utf-8",
            range: Some(ContentRange::Unsatisfiable { total }),
        }
    }
}

impl Body {
    /// Only bytes `first..=last` of this body (the range is within it).
    fn select(self, first: u64, last: u64) -> Option<Body> {
        match self {
            Body::Memory { bytes, .. } => {
                Some(Body::Memory { bytes, start: first as usize, offset: first as usize, end: last as usize + 1 })
            }
            Body::File { mut file, .. } => {
                file.seek(SeekFrom::Start(first)).ok()?;
                Some(Body::File { file, left: last - first + 1 })
            }
            other => Some(other),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RangeSpec {
    /// Serve the whole body: no byte range, several ranges, or a form we do
    /// not read (RFC 9110 §14.2: a server MAY ignore the Range header).
    Ignore,
    /// `first..=last`, within the body.
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=a-b`, `bytes=a-` or `bytes=-n` range of a body of `len` bytes
/// (RFC 9110 §14.1.2).
fn parse_range(value: &[u8], len: u64) -> RangeSpec {
    let Ok(value) = std::str::from_utf8(value) else { return RangeSpec::Ignore };
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return RangeSpec::Ignore };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return RangeSpec::Ignore };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        // More digits than a u64 holds: larger than any body.
        Some(s.parse().unwrap_or(u64::MAX))
    };
    match (a.trim().is_empty(), num(a), num(b)) {
        // bytes=-n: the last n bytes.
        (true, _, Some(n)) => match n {
            0 => RangeSpec::Unsatisfiable,
            _ if len == 0 => RangeSpec::Unsatisfiable,
            n => RangeSpec::Part(len.saturating_sub(n), len - 1),
        },
        (false, Some(first), last) if b.trim().is_empty() || last.is_some() => {
            if last.is_some_and(|l| l < first) {
                return RangeSpec::Ignore; // invalid: RFC 9110 says ignore it
            }
            if first >= len {
                return RangeSpec::Unsatisfiable;
            }
            RangeSpec::Part(first, last.unwrap_or(u64::MAX).min(len - 1))
        }
        _ => RangeSpec::Ignore,
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
