//! An HTTP/1.1 client: GET a list of paths from one server over one
//! connection, requests pipelined, bodies written in order to a sink.
//!
//! Bounds: one 64 KiB receive buffer holds the unparsed bytes (a response
//! head must fit in it); bodies stream through it to the sink, so their size
//! does not matter. Responses are framed by `Content-Length`,
//! `Transfer-Encoding: chunked`, or the end of the connection.
//!
//! A server that closes the connection after a complete response (HTTP/1.0,
//! `Connection: close`, or an idle keep-alive timeout) gets the requests it
//! did not answer again on a new connection: GET is idempotent, so RFC 9110
//! §9.2.2 allows the retry. A close in the middle of a response is an error.

use crate::App;
use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use ustack_core::tcp::{ConnError, RecvError, SendError};
use ustack_core::{ConnectError, Event, Instant, Interest, Socket, Stack, TcpHandle};

/// The receive buffer: the largest response head, and the unit bodies
/// stream through.
const RECV_BUFFER: usize = 64 * 1024;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Headers a response may carry.
const MAX_HEADERS: usize = 64;

/// One answered request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The URL requested, e.g. `http://10.0.0.2:8080/big.bin`.
    pub url: String,
    /// The final status code (2xx; anything else is an [`HttpClientError::Status`]).
    pub status: u16,
    /// Body bytes written to the sink.
    pub body_bytes: u64,
}

/// Why the client gave up. Each says which server or URL.
#[derive(Debug)]
pub enum HttpClientError {
    /// The stack refused to open the connection (no local port, no room).
    Connect {
        /// The server asked for.
        server: SocketAddr,
        /// The stack's reason.
        error: ConnectError,
    },
    /// The connection failed: refused, reset, timed out.
    Connection {
        /// The server asked for.
        server: SocketAddr,
        /// How it failed; `None` when the connection was already gone from
        /// the stack.
        error: Option<ConnError>,
    },
    /// A final status other than 2xx.
    Status {
        /// The URL requested.
        url: String,
        /// The status code.
        status: u16,
        /// The reason phrase, as sent.
        reason: String,
    },
    /// The server closed the connection in the middle of a response.
    EarlyClose {
        /// The URL requested.
        url: String,
        /// Body bytes received before the close.
        body_bytes: u64,
    },
    /// The response breaks HTTP/1.1 framing or exceeds a bound.
    Malformed {
        /// The URL requested.
        url: String,
        /// What is wrong, e.g. "bad Content-Length".
        why: &'static str,
    },
    /// Writing a body to the sink failed.
    Sink(io::Error),
}

impl fmt::Display for HttpClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpClientError::Connect { server, error } => write!(f, "cannot connect to {server}: {error}"),
            HttpClientError::Connection { server, error } => match error {
                Some(ConnError::Refused) => write!(f, "connection to {server} refused"),
                Some(ConnError::Reset) => write!(f, "connection to {server} reset by the server"),
                Some(ConnError::TimedOut) => write!(f, "connection to {server} timed out"),
                _ => write!(f, "connection to {server} failed"),
            },
            HttpClientError::Status { url, status, reason } => write!(f, "{url}: HTTP {status} {reason}"),
            HttpClientError::EarlyClose { url, body_bytes } => {
                write!(
                    f,
                    "{url}: the server closed the connection after {body_bytes} body bytes, before the response ended"
                )
            }
            HttpClientError::Malformed { url, why } => write!(f, "{url}: malformed response: {why}"),
            HttpClientError::Sink(e) => write!(f, "cannot write the body: {e}"),
        }
    }
}

impl std::error::Error for HttpClientError {}

/// Where the parser stands in the current response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Head,
    Body { left: u64 },
    UntilClose,
    ChunkSize,
    ChunkData { left: u64 },
    ChunkDataEnd,
    Trailers,
}

/// GETs `paths` from `server`, writing the bodies in order to `sink`.
pub struct HttpClient<W: Write> {
    server: SocketAddr,
    host: String,
    paths: Vec<String>,
    sink: W,
    handle: Option<TcpHandle>,
    /// The pipelined requests of the current connection, and how much the
    /// send buffer took.
    requests: Vec<u8>,
    requests_sent: usize,
    buf: Box<[u8]>,
    /// `buf[start..end]` is received and not yet parsed.
    start: usize,
    end: usize,
    phase: Phase,
    /// The response being read: its index, and whether the server will
    /// close after it.
    current: usize,
    server_closes: bool,
    current_status: u16,
    current_body: u64,
    /// Responses completed on the current connection.
    answered_here: usize,
    /// The responses completed so far, in request order.
    pub responses: Vec<HttpResponse>,
    /// Connections opened (1 unless the server closed between responses).
    pub connections: u32,
    outcome: Option<Result<(), HttpClientError>>,
}

impl<W: Write> HttpClient<W> {
    /// A client for `paths` (each starting with '/'); it connects on its
    /// first poll.
    pub fn new(server: impl Into<SocketAddr>, paths: Vec<String>, sink: W) -> HttpClient<W> {
        let server = server.into();
        // RFC 9110 §7.2: an IPv6 host is bracketed (RFC 3986 IP-literal).
        let host = match (server, server.port()) {
            (SocketAddr::V4(a), 80) => a.ip().to_string(),
            (SocketAddr::V6(a), 80) => format!("[{}]", a.ip()),
            _ => server.to_string(),
        };
        let outcome = if paths.is_empty() { Some(Ok(())) } else { None };
        HttpClient {
            server,
            host,
            paths,
            sink,
            handle: None,
            requests: Vec::new(),
            requests_sent: 0,
            buf: vec![0; RECV_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            phase: Phase::Head,
            current: 0,
            server_closes: false,
            current_status: 0,
            current_body: 0,
            answered_here: 0,
            responses: Vec::new(),
            connections: 0,
            outcome,
        }
    }

    /// `Some` once every response arrived or the client gave up.
    pub fn outcome(&self) -> Option<&Result<(), HttpClientError>> {
        self.outcome.as_ref()
    }

    /// The result, and the sink back.
    pub fn into_result(self) -> (Option<Result<(), HttpClientError>>, W) {
        (self.outcome, self.sink)
    }

    /// Body bytes written to the sink so far.
    pub fn body_bytes(&self) -> u64 {
        self.responses.iter().map(|r| r.body_bytes).sum::<u64>() + self.current_body
    }

    fn url(&self, i: usize) -> String {
        format!("http://{}{}", self.host, self.paths.get(i).map_or("", String::as_str))
    }

    fn malformed(&self, why: &'static str) -> HttpClientError {
        HttpClientError::Malformed { url: self.url(self.current), why }
    }

    fn connect(&mut self, stack: &mut Stack, now: Instant) -> Result<(), HttpClientError> {
        let h = stack
            .tcp_connect(now, self.server)
            .map_err(|error| HttpClientError::Connect { server: self.server, error })?;
        stack.tcp_set_nodelay(h, true);
        stack.register(h, super::APP_TOKEN, Interest::READABLE | Interest::WRITABLE).expect("just connected");
        self.handle = Some(h);
        self.connections += 1;
        self.requests.clear();
        self.requests_sent = 0;
        for path in &self.paths[self.current..] {
            // Writing to a Vec cannot fail.
            let _ = write!(
                self.requests,
                "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ustack\r\nAccept: */*\r\n\r\n",
                self.host
            );
        }
        self.start = 0;
        self.end = 0;
        self.phase = Phase::Head;
        self.answered_here = 0;
        Ok(())
    }

    /// Everything the client can do now without waiting.
    fn drive(&mut self, stack: &mut Stack, now: Instant) -> Result<(), HttpClientError> {
        let h = match self.handle {
            Some(h) => h,
            None => {
                self.connect(stack, now)?;
                self.handle.expect("just connected")
            }
        };
        while self.requests_sent < self.requests.len() {
            match stack.tcp_send(h, &self.requests[self.requests_sent..]) {
                Ok(n) => self.requests_sent += n,
                Err(SendError::Full) => break,
                // The failure itself shows on the receive side.
                Err(_) => break,
            }
        }
        loop {
            while self.parse()? {
                if self.outcome.is_some() {
                    return Ok(());
                }
                if self.handle.is_none() {
                    // The server closes after that response: the rest go
                    // on a new connection.
                    stack.tcp_close(h);
                    return self.drive(stack, now);
                }
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.end == self.buf.len() {
                if self.start == 0 {
                    return Err(self.malformed("a response head or chunk line larger than the receive buffer"));
                }
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            match stack.tcp_recv(h, &mut self.buf[self.end..]) {
                Ok(0) => return self.end_of_stream(stack, now, h),
                Ok(n) => self.end += n,
                Err(RecvError::WouldBlock) => return Ok(()),
                Err(RecvError::Connection(e)) => {
                    return Err(HttpClientError::Connection { server: self.server, error: Some(e) })
                }
                Err(RecvError::Closed) => return Err(HttpClientError::Connection { server: self.server, error: None }),
            }
        }
    }

    fn end_of_stream(&mut self, stack: &mut Stack, now: Instant, h: TcpHandle) -> Result<(), HttpClientError> {
        match self.phase {
            Phase::UntilClose => {
                self.finish_response();
                stack.tcp_close(h);
                self.handle = None;
                if self.outcome.is_none() {
                    return self.drive(stack, now);
                }
                Ok(())
            }
            // Closed between responses, after answering some on this
            // connection: an idle or HTTP/1.0 server. Ask again elsewhere.
            Phase::Head if self.start == self.end && self.answered_here > 0 => {
                stack.tcp_close(h);
                self.handle = None;
                self.drive(stack, now)
            }
            _ => Err(HttpClientError::EarlyClose { url: self.url(self.current), body_bytes: self.current_body }),
        }
    }

    /// Parse what is buffered. True when progress was made.
    fn parse(&mut self) -> Result<bool, HttpClientError> {
        let avail = self.end - self.start;
        match self.phase {
            Phase::Head => {
                if avail == 0 {
                    return Ok(false);
                }
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut headers);
                let n = match resp.parse(&self.buf[self.start..self.end]) {
                    Ok(httparse::Status::Partial) => return Ok(false),
                    Ok(httparse::Status::Complete(n)) => n,
                    Err(httparse::Error::TooManyHeaders) => return Err(self.malformed("too many headers")),
                    Err(_) => return Err(self.malformed("not an HTTP/1.x status line and headers")),
                };
                let status = resp.code.unwrap_or(0);
                let version = resp.version.unwrap_or(1);
                let reason = resp.reason.unwrap_or("").to_string();
                let mut length: Option<u64> = None;
                let mut chunked = false;
                let mut closes = version == 0;
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        let v = std::str::from_utf8(h.value).ok().map(str::trim);
                        let Some(len) = v
                            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                            .and_then(|v| v.parse().ok())
                        else {
                            return Err(self.malformed("bad Content-Length"));
                        };
                        if length.is_some_and(|l| l != len) {
                            return Err(self.malformed("conflicting Content-Length headers"));
                        }
                        length = Some(len);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"").trim_ascii();
                        if !last.eq_ignore_ascii_case(b"chunked") {
                            return Err(self.malformed("a transfer coding other than chunked"));
                        }
                        chunked = true;
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        for token in h.value.split(|&b| b == b',') {
                            let token = token.trim_ascii();
                            if token.eq_ignore_ascii_case(b"close") {
                                closes = true;
                            } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                                closes = false;
                            }
                        }
                    }
                }
                self.start += n;
                // 1xx responses are interim; the final one follows.
                if (100..200).contains(&status) {
                    return Ok(true);
                }
                if !(200..300).contains(&status) {
                    return Err(HttpClientError::Status { url: self.url(self.current), status, reason });
                }
                self.current_status = status;
                self.current_body = 0;
                self.server_closes = closes;
                // RFC 9112 §6.3: no body for 204 and 304; chunked wins over
                // Content-Length; neither means the body runs to the close.
                self.phase = if status == 204 || status == 304 {
                    Phase::Body { left: 0 }
                } else if chunked {
                    Phase::ChunkSize
                } else if let Some(left) = length {
                    Phase::Body { left }
                } else {
                    self.server_closes = true;
                    Phase::UntilClose
                };
                Ok(true)
            }
            Phase::Body { left } => {
                if left == 0 {
                    self.finish_response();
                    return Ok(true);
                }
                let k = (avail as u64).min(left) as usize;
                if k == 0 {
                    return Ok(false);
                }
                self.write_body(k)?;
                self.phase = Phase::Body { left: left - k as u64 };
                Ok(true)
            }
            Phase::UntilClose => {
                if avail == 0 {
                    return Ok(false);
                }
                self.write_body(avail)?;
                Ok(true)
            }
            Phase::ChunkSize => {
                let Some(line) = self.line()? else { return Ok(false) };
                let hex = line.split(|&b| b == b';').next().unwrap_or(b"").trim_ascii();
                let size = std::str::from_utf8(hex)
                    .ok()
                    .filter(|h| !h.is_empty() && h.len() <= 16)
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    .ok_or_else(|| self.malformed("bad chunk size"))?;
                self.phase = if size == 0 { Phase::Trailers } else { Phase::ChunkData { left: size } };
                Ok(true)
            }
            Phase::ChunkData { left } => {
                let k = (avail as u64).min(left) as usize;
                if k == 0 {
                    return Ok(false);
                }
                self.write_body(k)?;
                let left = left - k as u64;
                self.phase = if left == 0 { Phase::ChunkDataEnd } else { Phase::ChunkData { left } };
                Ok(true)
            }
            Phase::ChunkDataEnd => {
                let Some(line) = self.line()? else { return Ok(false) };
                if !line.is_empty() {
                    return Err(self.malformed("chunk data longer than its size"));
                }
                self.phase = Phase::ChunkSize;
                Ok(true)
            }
            Phase::Trailers => {
                let Some(line) = self.line()? else { return Ok(false) };
                if line.is_empty() {
                    self.finish_response();
                }
                Ok(true)
            }
        }
    }

    /// Take one CRLF-terminated line (without the CRLF) from the buffer.
    fn line(&mut self) -> Result<Option<&[u8]>, HttpClientError> {
        let window = &self.buf[self.start..self.end];
        match window.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                let line = self.start..self.start + i;
                self.start += i + 2;
                Ok(Some(&self.buf[line]))
            }
            None if window.len() > MAX_LINE => Err(self.malformed("a chunk line longer than 4 KiB")),
            None => Ok(None),
        }
    }

    fn write_body(&mut self, k: usize) -> Result<(), HttpClientError> {
        self.sink.write_all(&self.buf[self.start..self.start + k]).map_err(HttpClientError::Sink)?;
        self.start += k;
        self.current_body += k as u64;
        Ok(())
    }

    fn finish_response(&mut self) {
        self.responses.push(HttpResponse {
            url: self.url(self.current),
            status: self.current_status,
            body_bytes: self.current_body,
        });
        self.current_body = 0;
        self.current += 1;
        self.answered_here += 1;
        self.phase = Phase::Head;
        if self.current == self.paths.len() {
            self.outcome = Some(self.sink.flush().map_err(HttpClientError::Sink));
        } else if self.server_closes {
            self.handle = None;
        }
    }
}

impl<W: Write> App for HttpClient<W> {
    fn poll(&mut self, stack: &mut Stack, now: Instant, events: &[Event]) {
        if self.outcome.is_some() {
            return;
        }
        // Connect on the first turn, then work when the connection has news.
        if let Some(h) = self.handle {
            if !events.iter().any(|e| e.socket == Socket::Tcp(h)) {
                return;
            }
        }
        let result = self.drive(stack, now);
        if let Err(e) = result {
            if let Some(h) = self.handle.take() {
                stack.tcp_abort(h);
            }
            self.outcome = Some(Err(e));
        } else if self.outcome.is_some() {
            if let Some(h) = self.handle.take() {
                stack.tcp_close(h);
            }
        }
    }

    fn finished(&self) -> bool {
        self.outcome.is_some()
    }
}
