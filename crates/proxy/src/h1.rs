//! An HTTP/1.1 exchange with a plain-text upstream, driven in the request's own task,
//! for requests without a body (a mesh's GETs, HEADs and DELETEs: most of its calls).
//!
//! Why not hyper's client here: hyper's client connection runs in a task of its own
//! and hands each response to the request's task through a channel, so every request
//! wakes two tasks and crosses a channel both ways; callgrind put that connection task
//! at 12k of the 43k instructions a request costs one gateway hop (docs/PERFORMANCE.md).
//! Here the request's task writes the head and reads the answer itself. The messages are
//! parsed by `httparse` (hyper's own parser), framed as RFC 9112 §6.3 says and as
//! hyper's client decides (`Client::decoder` in hyper's `proto/h1/role.rs`): 1xx skipped,
//! no body for HEAD, 204 and 304, `Transfer-Encoding` (chunked, or else until close),
//! `Content-Length` (differing values refused), else until close. Requests with a body
//! still go through hyper's client (pool.rs), which sends a body while it reads the
//! answer.

use std::future::poll_fn;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Response, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Header fields read per message at most, as hyper's and Envoy's default
/// (`max_headers_count` 100).
pub(crate) const MAX_HEADERS: usize = 100;

/// The largest response head read: Envoy's default `max_response_headers_kb` (60 KiB).
pub(crate) const MAX_HEAD_BYTES: usize = 60 * 1024;

/// The longest chunk-size line accepted (size, extensions, CRLF).
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Room made in the read buffer before each read.
const READ_SPACE: usize = 8 * 1024;

/// Why an exchange or a response body failed. The texts are hyper's for the same
/// failures, as they appear in `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    /// The connection ended before a single byte of the answer: a connection the
    /// upstream closed while it sat idle, when it was reused.
    #[error("connection closed before message completed")]
    Unanswered,
    /// The connection ended in the middle of the answer.
    #[error("connection closed before message completed")]
    Incomplete,
    /// Reading or writing failed.
    #[error("connection error: {0}")]
    Io(std::io::Error),
    /// The answer is not HTTP/1.x as RFC 9112 writes it.
    #[error("invalid HTTP response parsed: {0}")]
    Invalid(&'static str),
    /// The response head is larger than [`MAX_HEAD_BYTES`].
    #[error("message head is too large")]
    TooLarge,
}

impl H1Error {
    /// Whether the upstream closed the connection without answering at all, so the
    /// request can be sent again on another connection (when it is idempotent).
    pub(crate) fn is_unanswered(&self) -> bool {
        matches!(self, H1Error::Unanswered)
    }
}

/// One keep-alive connection to an upstream, with its read buffer and the buffer a
/// request head is written into (both kept from one request to the next).
pub(crate) struct H1Connection {
    stream: TcpStream,
    local: SocketAddr,
    read: BytesMut,
    head: Vec<u8>,
}

impl H1Connection {
    /// Opens a connection to `addr`, giving up after `timeout`.
    pub(crate) async fn connect(
        addr: SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<H1Connection> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(s) => s?,
            Err(_) => {
                return Err(std::io::Error::new(
                    ErrorKind::TimedOut,
                    "connection timed out",
                ))
            }
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr()?;
        Ok(H1Connection {
            stream,
            local,
            read: BytesMut::new(),
            head: Vec::new(),
        })
    }

    /// The connection's local address (`%UPSTREAM_LOCAL_ADDRESS%`).
    pub(crate) fn local(&self) -> SocketAddr {
        self.local
    }

    /// Whether an idle connection can take a request: the upstream has neither closed
    /// it nor sent anything unasked. Costs no system call unless the reactor has seen
    /// the socket become readable.
    pub(crate) fn is_open_when_idle(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable: the end of the stream, stray bytes, or readiness left from the
            // last answer. Only the last keeps the connection.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends the head of a request without a body (`parts`: origin-form URI, its own
    /// Host header) and reads the response head; the response body reads the rest and
    /// owns the connection until then.
    pub(crate) async fn exchange(
        mut self,
        parts: &http::request::Parts,
    ) -> Result<Response<H1Body>, H1Error> {
        encode_head(parts, &mut self.head);
        self.stream
            .write_all(&self.head)
            .await
            .map_err(H1Error::Io)?;
        let is_head = parts.method == Method::HEAD;
        let mut received = false;
        loop {
            if !self.read.is_empty() {
                received = true;
                match parse_head(&mut self.read, is_head)? {
                    Parsed::Partial => {}
                    Parsed::Informational => continue,
                    Parsed::Complete {
                        response,
                        framing,
                        keep_alive,
                    } => {
                        let mut body = H1Body {
                            conn: Some(self),
                            framing,
                            keep_alive,
                            reusable: None,
                        };
                        if body.framing == Framing::Done {
                            body.finish();
                        }
                        return Ok(response.map(|()| body));
                    }
                }
                if self.read.len() > MAX_HEAD_BYTES {
                    return Err(H1Error::TooLarge);
                }
            }
            match poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) if received => return Err(H1Error::Incomplete),
                Ok(0) => return Err(H1Error::Unanswered),
                Ok(_) => {}
                Err(e) if !received && e.kind() == ErrorKind::ConnectionReset => {
                    return Err(H1Error::Unanswered)
                }
                Err(e) => return Err(H1Error::Io(e)),
            }
        }
    }

    /// Reads what the socket has into the read buffer; `Ok(0)` at the end of the stream.
    /// Through `AsyncRead`, whose short reads tell tokio the socket is drained: the
    /// next read (or [`Self::is_open_when_idle`]) waits for the reactor instead of
    /// trying a `recv` that can only fail with `EAGAIN`.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_SPACE / 2 {
            self.read.reserve(READ_SPACE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read)
    }
}

/// `METHOD path HTTP/1.1`, the header fields, the empty line. A request without a
/// body carries no `Transfer-Encoding` (as hyper's client drops it).
fn encode_head(parts: &http::request::Parts, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name == TRANSFER_ENCODING {
            continue;
        }
        write_field(out, name.as_str(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one header field line, `name: value` and CRLF (requests here, answers in
/// h1_server.rs).
pub(crate) fn write_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How the end of a response body is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    /// Chunked transfer coding, at this point of a chunk.
    Chunked(Chunk),
    /// Everything until the upstream closes the connection.
    UntilClose,
    /// The body has ended.
    Done,
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields, then the empty line.
    Trailers,
}

/// What a look at the read buffer found.
enum Parsed {
    /// Not the whole head yet.
    Partial,
    /// A 1xx head, dropped from the buffer: the real answer follows.
    Informational,
    /// The response head, taken from the buffer.
    Complete {
        response: Response<()>,
        framing: Framing,
        keep_alive: bool,
    },
}

/// Parses a response head at the start of `read`, and decides the body's framing and
/// whether the connection can be reused after it.
fn parse_head(read: &mut BytesMut, is_head: bool) -> Result<Parsed, H1Error> {
    // Where each field's name and value lie in the head, so the values can share the
    // buffer's memory instead of being copied one by one. Offsets fit in `u16`: a head
    // longer than [`MAX_HEAD_BYTES`] is refused.
    let mut spans = [[0u16; 4]; MAX_HEADERS];
    let (len, status, version, count) = {
        let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len = match config.parse_response_with_uninit_headers(&mut parsed, read, &mut fields) {
            Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => {
                return Err(H1Error::TooLarge)
            }
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
            Err(e) => return Err(H1Error::Invalid(parse_error_text(e))),
        };
        let count = field_spans(read, parsed.headers, &mut spans);
        let version = if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        (len, parsed.code.unwrap_or(0), version, count)
    };
    let head = read.split_to(len).freeze();
    match status {
        // Switching protocols was not asked for: the proxy strips `Upgrade`.
        101 => {
            return Err(H1Error::Invalid(
                "101 Switching Protocols without an upgrade",
            ))
        }
        100..=199 => return Ok(Parsed::Informational),
        _ => {}
    }
    let status = StatusCode::from_u16(status).map_err(|_| H1Error::Invalid("status code"))?;
    // One more field fits without growing the map: the proxy adds
    // `x-envoy-upstream-service-time`.
    let mut headers = HeaderMap::with_capacity(count + 1);
    for &[name_start, name_end, value_start, value_end] in &spans[..count] {
        let name = HeaderName::from_bytes(&head[usize::from(name_start)..usize::from(name_end)])
            .map_err(|_| H1Error::Invalid("header name"))?;
        let value = HeaderValue::from_maybe_shared(
            head.slice(usize::from(value_start)..usize::from(value_end)),
        )
        .map_err(|_| H1Error::Invalid("header value"))?;
        headers.append(name, value);
    }
    let mut keep_alive = version == Version::HTTP_11;
    for value in headers.get_all(CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                keep_alive = false;
            } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                keep_alive = true;
            }
        }
    }
    let framing = body_framing(status, is_head, version, &headers)?;
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Parsed::Complete {
        response,
        framing,
        keep_alive,
    })
}

/// Where a field's name and value lie in a head: `[name start, name end, value
/// start, value end]`.
pub(crate) type FieldSpan = [u16; 4];

/// Records where each of `fields` (parsed from `buf`) lies in `buf`, so that the
/// values can later share the head's memory; returns how many were recorded. The
/// offsets fit in `u16`: heads are limited to [`MAX_HEAD_BYTES`] before this is called.
pub(crate) fn field_spans(
    buf: &[u8],
    fields: &[httparse::Header<'_>],
    spans: &mut [FieldSpan],
) -> usize {
    let base = buf.as_ptr() as usize;
    let offset = |part: &[u8]| (part.as_ptr() as usize - base) as u16;
    let mut count = 0;
    for (span, field) in spans.iter_mut().zip(fields) {
        let (name, value) = (offset(field.name.as_bytes()), offset(field.value));
        *span = [
            name,
            name + field.name.len() as u16,
            value,
            value + field.value.len() as u16,
        ];
        count += 1;
    }
    count
}

/// RFC 9112 §6.3, as hyper's client applies it.
fn body_framing(
    status: StatusCode,
    is_head: bool,
    version: Version,
    headers: &HeaderMap,
) -> Result<Framing, H1Error> {
    if is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Done);
    }
    if let Some(last) = headers.get_all(TRANSFER_ENCODING).iter().next_back() {
        if version == Version::HTTP_10 {
            return Err(H1Error::Invalid("transfer-encoding in HTTP/1.0"));
        }
        let chunked = last
            .as_bytes()
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        return Ok(if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::UntilClose
        });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            let n = std::str::from_utf8(part)
                .ok()
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u64>().ok())
                .ok_or(H1Error::Invalid("content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::Invalid("content-length"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Done,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

fn parse_error_text(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid new line",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// A response body read straight from the upstream connection as it is polled. When
/// it ends and the connection can carry another request, the connection waits in
/// [`H1Body::take_reusable`] for its owner to put it back in a pool.
pub(crate) struct H1Body {
    conn: Option<H1Connection>,
    framing: Framing,
    keep_alive: bool,
    reusable: Option<H1Connection>,
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body")
            .field("framing", &self.framing)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

/// What one step of decoding gave.
enum Step {
    Frame(Frame<Bytes>),
    NeedMore,
    End,
}

impl H1Body {
    /// The connection, once the body has ended on a connection that stays open.
    pub(crate) fn take_reusable(&mut self) -> Option<H1Connection> {
        self.reusable.take()
    }

    /// The body has ended: the connection is kept if the upstream keeps it alive and
    /// sent nothing beyond the message; otherwise it is closed.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.read.is_empty() {
                self.reusable = Some(conn);
            }
        }
    }

    /// Decodes what the read buffer holds.
    fn step(&mut self) -> Result<Step, H1Error> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Step::End);
        };
        let read = &mut conn.read;
        match self.framing {
            Framing::Done => Ok(Step::End),
            Framing::Length(_) | Framing::Chunked(Chunk::Data(_)) if read.is_empty() => {
                Ok(Step::NeedMore)
            }
            Framing::Length(left) => {
                let data = take_data(read, left);
                let left = left - data.len() as u64;
                self.framing = Framing::Length(left);
                if left == 0 {
                    self.finish();
                }
                Ok(Step::Frame(Frame::data(data)))
            }
            Framing::UntilClose if read.is_empty() => Ok(Step::NeedMore),
            Framing::UntilClose => Ok(Step::Frame(Frame::data(read.split().freeze()))),
            Framing::Chunked(Chunk::Size) => match httparse::parse_chunk_size(read) {
                Ok(httparse::Status::Complete((line, size))) => {
                    let _ = read.split_to(line);
                    self.framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    });
                    self.step()
                }
                Ok(httparse::Status::Partial) if read.len() > MAX_CHUNK_LINE => {
                    Err(H1Error::Invalid("chunk size line too long"))
                }
                Ok(httparse::Status::Partial) => Ok(Step::NeedMore),
                Err(_) => Err(H1Error::Invalid("invalid chunk size")),
            },
            Framing::Chunked(Chunk::Data(left)) => {
                let data = take_data(read, left);
                let left = left - data.len() as u64;
                self.framing = Framing::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
                Ok(Step::Frame(Frame::data(data)))
            }
            Framing::Chunked(Chunk::DataEnd) => {
                if read.len() < 2 {
                    return Ok(Step::NeedMore);
                }
                if &read[..2] != b"\r\n" {
                    return Err(H1Error::Invalid("chunk not ended by CRLF"));
                }
                let _ = read.split_to(2);
                self.framing = Framing::Chunked(Chunk::Size);
                self.step()
            }
            Framing::Chunked(Chunk::Trailers) => {
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let (len, trailers) = match httparse::parse_headers(read, &mut fields) {
                    Ok(httparse::Status::Complete((len, fields))) => {
                        let mut trailers = HeaderMap::with_capacity(fields.len());
                        for f in fields.iter() {
                            let name = HeaderName::from_bytes(f.name.as_bytes())
                                .map_err(|_| H1Error::Invalid("trailer name"))?;
                            let value = HeaderValue::from_bytes(f.value)
                                .map_err(|_| H1Error::Invalid("trailer value"))?;
                            trailers.append(name, value);
                        }
                        (len, trailers)
                    }
                    Ok(httparse::Status::Partial) if read.len() > MAX_HEAD_BYTES => {
                        return Err(H1Error::TooLarge)
                    }
                    Ok(httparse::Status::Partial) => return Ok(Step::NeedMore),
                    Err(e) => return Err(H1Error::Invalid(parse_error_text(e))),
                };
                let _ = read.split_to(len);
                self.finish();
                if trailers.is_empty() {
                    Ok(Step::End)
                } else {
                    Ok(Step::Frame(Frame::trailers(trailers)))
                }
            }
        }
    }
}

/// Up to `left` bytes from the front of `read`, sharing its memory.
fn take_data(read: &mut BytesMut, left: u64) -> Bytes {
    let n = usize::try_from(left).unwrap_or(usize::MAX).min(read.len());
    read.split_to(n).freeze()
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = self.get_mut();
        loop {
            match this.step() {
                Ok(Step::Frame(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(Step::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(e) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.framing == Framing::UntilClose => {
                    // The end of a close-delimited body; the connection goes with it.
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(H1Error::Incomplete)));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(H1Error::Io(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// An upstream on loopback that reads one request head per entry of `answers` and
    /// writes that entry's pieces (each a separate write, to split messages across
    /// reads), then closes. Returns its address and the request heads it saw.
    async fn upstream(
        answers: Vec<Vec<&'static [u8]>>,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            let mut buf = Vec::new();
            for pieces in answers {
                let end = loop {
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break end + 4;
                    }
                    let mut chunk = [0u8; 1024];
                    let n = stream.read(&mut chunk).await.expect("read");
                    if n == 0 {
                        return seen;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                };
                seen.push(String::from_utf8_lossy(&buf[..end]).into_owned());
                buf.drain(..end);
                for piece in pieces {
                    stream.write_all(piece).await.expect("write");
                    stream.flush().await.expect("flush");
                    tokio::task::yield_now().await;
                }
            }
            seen
        });
        (addr, task)
    }

    fn request(method: Method) -> http::request::Parts {
        let (parts, ()) = http::Request::builder()
            .method(method)
            .uri("/path?q=1")
            .header("host", "svc.default:8000")
            .header("x-custom", "a")
            .header("transfer-encoding", "chunked")
            .body(())
            .expect("request")
            .into_parts();
        parts
    }

    /// A GET exchanged with an upstream that answers it with `pieces`.
    async fn get_once(pieces: Vec<&'static [u8]>) -> Result<Response<H1Body>, H1Error> {
        let (addr, _seen) = upstream(vec![pieces]).await;
        connect(addr).await.exchange(&request(Method::GET)).await
    }

    async fn connect(addr: SocketAddr) -> H1Connection {
        H1Connection::connect(addr, Duration::from_secs(5))
            .await
            .expect("connect")
    }

    /// The body's data and trailers, and the connection if it can be reused.
    async fn read_all(resp: Response<H1Body>) -> (Bytes, Option<HeaderMap>, Option<H1Connection>) {
        let mut body = resp.into_body();
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("frame");
            match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
        (Bytes::from(data), trailers, body.take_reusable())
    }

    #[tokio::test]
    async fn a_content_length_answer_split_across_reads_is_read_whole_and_the_connection_kept() {
        let (addr, seen) = upstream(vec![
            vec![
                b"HTTP/1.1 200 OK\r\ncontent-le",
                b"ngth: 11\r\nx-a: 1\r\nx-a: 2\r\n\r\nhello",
                b" world",
            ],
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"],
        ])
        .await;
        let conn = connect(addr).await;
        let resp = conn.exchange(&request(Method::GET)).await.expect("answer");
        assert_eq!(resp.status(), 200);
        let values: Vec<_> = resp.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(resp.body().size_hint().exact(), Some(11));
        let (data, _, conn) = read_all(resp).await;
        assert_eq!(data, "hello world");
        let mut conn = conn.expect("kept alive");
        assert!(conn.is_open_when_idle());
        let resp = conn.exchange(&request(Method::GET)).await.expect("answer");
        assert_eq!(read_all(resp).await.0, "ok");
        let seen = seen.await.expect("upstream");
        // The request as written: origin form, the fields in order, no
        // Transfer-Encoding for a request without a body.
        assert_eq!(
            seen[0],
            "GET /path?q=1 HTTP/1.1\r\nhost: svc.default:8000\r\nx-custom: a\r\n\r\n"
        );
        assert_eq!(seen.len(), 2);
    }

    #[tokio::test]
    async fn a_chunked_answer_is_decoded_with_its_trailers() {
        let resp = get_once(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhel",
            b"lo\r\n6\r\n world\r\n0\r\ngrpc-status: 0\r\n\r\n",
        ])
        .await
        .expect("answer");
        let (data, trailers, conn) = read_all(resp).await;
        assert_eq!(data, "hello world");
        assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
        assert!(conn.is_some(), "a chunked answer keeps the connection");
    }

    #[tokio::test]
    async fn an_answer_without_length_lasts_until_close_and_takes_the_connection() {
        let resp = get_once(vec![b"HTTP/1.1 200 OK\r\n\r\nall of", b" it"])
            .await
            .expect("answer");
        let (data, _, conn) = read_all(resp).await;
        assert_eq!(data, "all of it");
        assert!(conn.is_none());
    }

    /// RFC 9112 §6.3: no body after HEAD, 204 or 304, whatever Content-Length says;
    /// 1xx answers are skipped.
    #[tokio::test]
    async fn head_204_and_304_have_no_body_and_1xx_is_skipped() {
        let (addr, _seen) = upstream(vec![
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"],
            vec![b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"],
            vec![b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n"],
        ])
        .await;
        let mut conn = connect(addr).await;
        for (method, status) in [(Method::HEAD, 200), (Method::GET, 204), (Method::GET, 304)] {
            let resp = conn.exchange(&request(method)).await.expect("answer");
            assert_eq!(resp.status(), status);
            assert!(resp.body().is_end_stream());
            let (data, _, next) = read_all(resp).await;
            assert!(data.is_empty());
            conn = next.expect("kept alive");
        }
    }

    #[tokio::test]
    async fn connection_close_and_http_1_0_end_the_connection_after_the_answer() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"[..],
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ] {
            let resp = get_once(vec![answer]).await.expect("answer");
            let (data, _, conn) = read_all(resp).await;
            assert_eq!(data, "ok");
            assert!(conn.is_none(), "{}", String::from_utf8_lossy(answer));
        }
    }

    #[tokio::test]
    async fn differing_content_lengths_are_refused() {
        let err = get_once(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
        ])
        .await
        .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "invalid HTTP response parsed: content-length"
        );
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_and_a_close_before_any_answer_is_unanswered() {
        let resp = get_once(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"])
            .await
            .expect("answer");
        let mut body = resp.into_body();
        let first = body.frame().await.expect("frame").expect("data");
        assert_eq!(first.into_data().expect("data"), "short");
        let err = body.frame().await.expect("frame").expect_err("cut short");
        assert_eq!(
            err.to_string(),
            "connection closed before message completed"
        );
        assert!(!err.is_unanswered());

        let err = get_once(vec![]).await.expect_err("closed");
        assert!(err.is_unanswered(), "{err:?}");
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_not_open() {
        let (addr, seen) = upstream(vec![vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ]])
        .await;
        let resp = connect(addr)
            .await
            .exchange(&request(Method::GET))
            .await
            .expect("answer");
        let (_, _, conn) = read_all(resp).await;
        let mut conn = conn.expect("kept alive");
        // The upstream task ends after its one answer, closing the connection.
        seen.await.expect("upstream");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while conn.is_open_when_idle() {
            assert!(tokio::time::Instant::now() < deadline, "close never seen");
            tokio::task::yield_now().await;
        }
    }
}
