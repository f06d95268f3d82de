//! The downstream side of a plain HTTP/1.1 connection for requests without a body,
//! read and answered by the connection's own task; everything else is handed to
//! hyper's server with the bytes already read.
//!
//! Why: after the upstream side (h1.rs), hyper's server was the largest piece of a
//! request's cost (callgrind: about a quarter of the instructions of one gateway hop:
//! its dispatcher, parser and encoder around a request that only needs a head read and
//! a head written). The fast path takes a request only when it is HTTP/1.1, not
//! CONNECT, and carries no body, `Transfer-Encoding`, `Upgrade` or `Expect`; anything
//! else, anything `httparse` or the `http` types refuse, and the HTTP/2 preface
//! (`PRI * HTTP/2.0`) go to hyper (`hyper_util`'s auto builder) together with the rest
//! of the connection, which then answers them as before (a 400 for a malformed
//! request, h2c, upgrades). Responses are written as hyper's server writes them
//! (`Server::encode` in hyper's `proto/h1/role.rs` and `Conn::enforce_version` in
//! `conn.rs`): the same status line, `content-length` / `transfer-encoding` choices,
//! `connection: close` when the request asked to close, and a cached `date`; the unit
//! tests compare the bytes with hyper's for the same responses.

use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRAILER, TRANSFER_ENCODING,
    UPGRADE,
};
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::body::ProxyBody;

// Header fields read per request at most, and the longest head taken (a longer one
// goes to hyper, which answers it): as for answers (h1.rs).
use crate::h1::{field_spans, write_field, MAX_HEADERS, MAX_HEAD_BYTES};

/// Room made in the read buffer before each read.
const READ_SPACE: usize = 8 * 1024;

/// What a look at the start of the read buffer found.
// `Simple` is the common case and is moved once: boxing it would cost an allocation
// per request.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// Not for the fast path: hyper takes the connection from here.
    Other,
    /// A request without a body, taken from the buffer; `close`: it asked to close
    /// the connection after its answer.
    Simple {
        /// The request (an empty body).
        request: Request<ProxyBody>,
        /// `Connection: close`.
        close: bool,
        /// `TE: trailers`: the client takes trailers (hyper's server sends them only
        /// then).
        trailers: bool,
    },
}

/// Reads a request head at the start of `read` if the fast path can take it.
pub(crate) fn parse_request(read: &mut BytesMut) -> Parsed {
    let mut spans = [[0u16; 4]; MAX_HEADERS];
    let (len, method, path, count) = {
        let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len = match config.parse_request_with_uninit_headers(&mut parsed, read, &mut fields) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
            Ok(httparse::Status::Partial) if read.len() <= MAX_HEAD_BYTES => {
                return Parsed::Partial
            }
            _ => return Parsed::Other,
        };
        if parsed.version != Some(1) {
            return Parsed::Other;
        }
        let Some(Ok(method)) = parsed.method.map(|m| Method::from_bytes(m.as_bytes())) else {
            return Parsed::Other;
        };
        if method == Method::CONNECT {
            return Parsed::Other;
        }
        let Some(path) = parsed.path else {
            return Parsed::Other;
        };
        let path = (
            (path.as_ptr() as usize - read.as_ptr() as usize) as u16,
            path.len() as u16,
        );
        let count = field_spans(read, parsed.headers, &mut spans);
        (len, method, path, count)
    };
    // The head is taken from the buffer (the values share its memory); if the request
    // turns out not to be simple, it is put back for hyper to read (the rare case).
    let head = read.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count + 4);
    let mut close = false;
    let mut trailers = false;
    for &[name_start, name_end, value_start, value_end] in &spans[..count] {
        let Ok(name) =
            HeaderName::from_bytes(&head[usize::from(name_start)..usize::from(name_end)])
        else {
            return put_back(read, &head);
        };
        let value = head.slice(usize::from(value_start)..usize::from(value_end));
        if name == TRANSFER_ENCODING || name == UPGRADE || name == EXPECT {
            return put_back(read, &head);
        }
        if name == CONTENT_LENGTH && value.trim_ascii() != b"0" {
            return put_back(read, &head);
        }
        if name == CONNECTION && has_token(&value, b"close") {
            close = true;
        }
        if name == http::header::TE && has_token(&value, b"trailers") {
            trailers = true;
        }
        let Ok(value) = HeaderValue::from_maybe_shared(value) else {
            return put_back(read, &head);
        };
        headers.append(name, value);
    }
    let (path_start, path_len) = (usize::from(path.0), usize::from(path.1));
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path_start..path_start + path_len)) else {
        return put_back(read, &head);
    };
    let mut request = Request::new(crate::body::empty_body());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Parsed::Simple {
        request,
        close,
        trailers,
    }
}

/// Puts a head taken from `read` back in front of what follows it.
fn put_back(read: &mut BytesMut, head: &Bytes) -> Parsed {
    let mut whole = BytesMut::with_capacity(head.len() + read.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(read);
    *read = whole;
    Parsed::Other
}

/// Reads from `stream` until a request head is whole: `Simple` or `Other` (never
/// `Partial`); `None` when the connection ends or fails first.
pub(crate) async fn read_request(stream: &mut TcpStream, read: &mut BytesMut) -> Option<Parsed> {
    loop {
        match parse_request(read) {
            Parsed::Partial => {}
            parsed => return Some(parsed),
        }
        match poll_fn(|cx| poll_fill(stream, read, cx)).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// How the response body is framed on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Encoder {
    /// Exactly this many bytes (0: no body at all).
    Length(u64),
    /// Chunked; trailers are written only for the fields the `Trailer` header names
    /// (as hyper does).
    Chunked(Option<Vec<HeaderName>>),
    /// Until the connection closes.
    CloseDelimited,
}

/// What hyper knows of a body's length before sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyLength {
    /// The body has ended already.
    Empty,
    /// Exactly this many bytes.
    Known(u64),
    /// Unknown.
    Unknown,
}

fn can_chunked(is_head: bool, status: StatusCode) -> bool {
    !(is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

fn can_have_content_length(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// Writes the response head as hyper's server writes it for an HTTP/1.1 request;
/// returns how the body goes and whether the connection closes after it. `Err`: the
/// headers contradict each other (hyper refuses such a response too).
fn encode_head(
    parts: &mut http::response::Parts,
    body: BodyLength,
    is_head: bool,
    keep_alive: bool,
    out: &mut Vec<u8>,
) -> Result<(Encoder, bool), ()> {
    let status = parts.status;
    // hyper's `enforce_version`: a connection that will close says so.
    if !keep_alive
        && !parts
            .headers
            .get_all(CONNECTION)
            .iter()
            .any(|v| has_token(v.as_bytes(), b"close"))
    {
        parts
            .headers
            .append(CONNECTION, HeaderValue::from_static("close"));
    }
    let mut is_last = !keep_alive;
    if parts.version == Version::HTTP_11 && status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(if parts.version == Version::HTTP_10 {
            b"HTTP/1.0 "
        } else {
            b"HTTP/1.1 "
        });
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let can_have_body = can_chunked(is_head, status);
    let chunked_ok = parts.version != Version::HTTP_10 && can_have_body;
    let mut encoder = Encoder::Length(0);
    let mut wrote_len = false;
    let mut wrote_date = false;
    let mut content_length: Option<u64> = None;
    let mut trailer_names: Option<Vec<HeaderName>> = None;
    // transfer-encoding, connection and trailer are written once, their values joined,
    // where the name first comes (a header map yields a name's values together).
    let mut joined: Option<(&HeaderName, Vec<u8>)> = None;
    let mut previous: Option<&HeaderName> = None;
    for (name, value) in &parts.headers {
        let same_name = previous == Some(name);
        previous = Some(name);
        if !same_name {
            if let Some((n, v)) = joined.take() {
                flush_joined(out, n, v);
            }
        }
        if name == CONTENT_LENGTH {
            match body {
                BodyLength::Known(known) => {
                    if !same_name {
                        if wrote_len {
                            return Err(());
                        }
                        encoder = Encoder::Length(known);
                        write_field(out, "content-length", value.as_bytes());
                        wrote_len = true;
                    }
                }
                BodyLength::Unknown => {
                    let Some(len) = std::str::from_utf8(value.as_bytes())
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                    else {
                        return Err(());
                    };
                    match content_length {
                        Some(prev) if prev != len => return Err(()),
                        Some(_) => {}
                        None => {
                            if wrote_len {
                                return Err(());
                            }
                            encoder = Encoder::Length(len);
                            write_field(out, "content-length", value.as_bytes());
                            wrote_len = true;
                            content_length = Some(len);
                        }
                    }
                }
                BodyLength::Empty => {
                    if is_head {
                        write_field(out, "content-length", value.as_bytes());
                        wrote_len = true;
                    }
                }
            }
            continue;
        }
        let joins = name == TRANSFER_ENCODING || name == CONNECTION || name == TRAILER;
        if joins {
            if name == TRANSFER_ENCODING {
                if !chunked_ok {
                    continue;
                }
                if wrote_len && !same_name {
                    return Err(());
                }
                wrote_len = true;
                encoder = Encoder::Chunked(None);
            } else if name == CONNECTION {
                if has_token(value.as_bytes(), b"close") {
                    is_last = true;
                }
            } else {
                if !chunked_ok {
                    continue;
                }
                if let Ok(text) = value.to_str() {
                    trailer_names.get_or_insert_with(Vec::new).extend(
                        text.split(',')
                            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
                    );
                }
            }
            match &mut joined {
                Some((_, v)) => {
                    v.extend_from_slice(b", ");
                    v.extend_from_slice(value.as_bytes());
                }
                None => joined = Some((name, value.as_bytes().to_vec())),
            }
            continue;
        }
        if name == DATE {
            wrote_date = true;
        }
        write_field(out, name.as_str(), value.as_bytes());
    }
    if let Some((n, v)) = joined.take() {
        flush_joined(out, n, v);
    }
    if !wrote_len {
        encoder = match body {
            BodyLength::Unknown if !chunked_ok => Encoder::CloseDelimited,
            BodyLength::Unknown => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Encoder::Chunked(None)
            }
            BodyLength::Empty | BodyLength::Known(0) => {
                if can_have_content_length(status) && !is_head {
                    out.extend_from_slice(b"content-length: 0\r\n");
                }
                Encoder::Length(0)
            }
            BodyLength::Known(_) if !can_have_content_length(status) => Encoder::Length(0),
            BodyLength::Known(len) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
                out.extend_from_slice(b"\r\n");
                Encoder::Length(len)
            }
        };
    }
    if !can_have_body {
        encoder = Encoder::Length(0);
    }
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        push_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if encoder == Encoder::CloseDelimited {
        is_last = true;
    }
    if let (Encoder::Chunked(allowed), Some(names)) = (&mut encoder, trailer_names) {
        *allowed = Some(names);
    }
    Ok((encoder, is_last))
}

/// Writes a field whose values were joined; `transfer-encoding` ends in `chunked`.
fn flush_joined(out: &mut Vec<u8>, name: &HeaderName, mut value: Vec<u8>) {
    if *name == TRANSFER_ENCODING && !has_last_coding_chunked(&value) {
        value.extend_from_slice(b", chunked");
    }
    write_field(out, name.as_str(), &value);
}

fn has_last_coding_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

thread_local! {
    /// The `date` value of the current second, as hyper caches it.
    static DATE_CACHE: std::cell::RefCell<(u64, Vec<u8>)> = const {
        std::cell::RefCell::new((u64::MAX, Vec::new()))
    };
}

/// Appends the HTTP date of now (IMF-fixdate), formatted at most once a second.
fn push_date(out: &mut Vec<u8>) {
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != second {
            cache.1.clear();
            cache
                .1
                .extend_from_slice(httpdate::fmt_http_date(now).as_bytes());
            cache.0 = second;
        }
        out.extend_from_slice(&cache.1);
    });
}

/// Writes the body frames after the head (already in `out`), coalescing what is ready
/// into as few writes as possible. `Err`: the body failed or the downstream went away.
async fn write_body<B>(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    body: &mut B,
    encoder: &Encoder,
    send_trailers: bool,
) -> Result<(), ()>
where
    B: Body<Data = Bytes> + Unpin,
{
    if *encoder == Encoder::Length(0) {
        return stream.write_all(out).await.map_err(|_| ());
    }
    let mut written: u64 = 0;
    loop {
        if body.is_end_stream() {
            finish_chunked(out, encoder, None);
            break;
        }
        let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
        let frame = match polled {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                // Nothing ready: send what is written so far, then wait.
                if !out.is_empty() {
                    stream.write_all(out).await.map_err(|_| ())?;
                    out.clear();
                }
                poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            }
        };
        match frame {
            None => {
                finish_chunked(out, encoder, None);
                break;
            }
            Some(Err(_)) => {
                // What came before the failure goes out first, as a proxy streaming the
                // response would have sent it; then the connection closes.
                if !out.is_empty() {
                    let _ = stream.write_all(out).await;
                }
                return Err(());
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if data.is_empty() {
                        continue;
                    }
                    match encoder {
                        Encoder::Length(len) => {
                            let room = len.saturating_sub(written);
                            let take = usize::try_from(room).unwrap_or(usize::MAX).min(data.len());
                            out.extend_from_slice(&data[..take]);
                            written += take as u64;
                        }
                        Encoder::Chunked(_) => {
                            let mut size = [0u8; 16];
                            let size = hex(data.len(), &mut size);
                            out.extend_from_slice(size);
                            out.extend_from_slice(b"\r\n");
                            out.extend_from_slice(&data);
                            out.extend_from_slice(b"\r\n");
                        }
                        Encoder::CloseDelimited => out.extend_from_slice(&data),
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        finish_chunked(out, encoder, Some(&trailers).filter(|_| send_trailers));
                        break;
                    }
                }
            },
        }
        if out.len() >= 64 * 1024 {
            stream.write_all(out).await.map_err(|_| ())?;
            out.clear();
        }
    }
    stream.write_all(out).await.map_err(|_| ())?;
    match encoder {
        // A body shorter than its length leaves the message unfinished: close, as hyper
        // does.
        Encoder::Length(len) if written < *len => Err(()),
        _ => Ok(()),
    }
}

/// The last chunk, with the trailers the `Trailer` header announced (hyper's
/// `encode_trailers`: fields that may be trailers, and only those announced).
fn finish_chunked(out: &mut Vec<u8>, encoder: &Encoder, trailers: Option<&HeaderMap>) {
    let Encoder::Chunked(allowed) = encoder else {
        return;
    };
    out.extend_from_slice(b"0\r\n");
    if let (Some(allowed), Some(trailers)) = (allowed, trailers) {
        for (name, value) in trailers {
            if allowed.contains(name) && may_be_trailer(name) {
                write_field(out, name.as_str(), value.as_bytes());
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Fields that RFC 9110 §6.5.1 keeps out of trailers, as hyper filters them.
fn may_be_trailer(name: &HeaderName) -> bool {
    use http::header::{
        AUTHORIZATION, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_RANGE, CONTENT_TYPE, HOST,
        MAX_FORWARDS, SET_COOKIE, TE,
    };
    ![
        AUTHORIZATION,
        CACHE_CONTROL,
        CONTENT_ENCODING,
        CONTENT_LENGTH,
        CONTENT_RANGE,
        CONTENT_TYPE,
        HOST,
        MAX_FORWARDS,
        SET_COOKIE,
        TRAILER,
        TRANSFER_ENCODING,
        TE,
    ]
    .contains(name)
}

/// `n` in lower-case hexadecimal, at the end of `buf`.
fn hex(mut n: usize, buf: &mut [u8; 16]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = DIGITS[n & 0xF];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

/// Writes one response to `stream` as hyper's server would to an HTTP/1.1 request;
/// `Ok(true)`: the connection stays open for the next request.
pub(crate) async fn write_response<B>(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    response: http::Response<B>,
    is_head: bool,
    keep_alive: bool,
    send_trailers: bool,
) -> Result<bool, ()>
where
    B: Body<Data = Bytes> + Unpin,
{
    let (mut parts, mut body) = response.into_parts();
    let length = if body.is_end_stream() {
        BodyLength::Empty
    } else {
        match body.size_hint().exact() {
            Some(n) => BodyLength::Known(n),
            None => BodyLength::Unknown,
        }
    };
    out.clear();
    let Ok((encoder, is_last)) = encode_head(&mut parts, length, is_head, keep_alive, out) else {
        // hyper answers a response it cannot write with a 500 and closes.
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n");
        out.extend_from_slice(b"date: ");
        push_date(out);
        out.extend_from_slice(b"\r\n\r\n");
        let _ = stream.write_all(out).await;
        return Err(());
    };
    write_body(stream, out, &mut body, &encoder, send_trailers).await?;
    Ok(!is_last)
}

/// Fills `read` from the socket; `Ok(0)` at the end of the stream.
pub(crate) fn poll_fill(
    stream: &mut TcpStream,
    read: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if read.capacity() - read.len() < READ_SPACE / 2 {
        read.reserve(READ_SPACE);
    }
    tokio_util::io::poll_read_buf(Pin::new(stream), cx, read)
}

/// A connection handed to hyper: the bytes already read come first.
pub(crate) struct Prefixed {
    prefix: Bytes,
    stream: TcpStream,
}

impl Prefixed {
    /// `stream`, whose next bytes are `prefix`.
    pub(crate) fn new(prefix: Bytes, stream: TcpStream) -> Prefixed {
        Prefixed { prefix, stream }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    //! The fast path's answers are compared byte for byte with hyper's server's for the
    //! same responses (the `date` value aside), on real sockets.

    use super::*;
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::time::Duration;

    use http::Response;
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::body::{Frame, SizeHint};
    use hyper_util::rt::TokioIo;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use crate::body::BoxError;

    /// A body of frames given in advance whose length is not known up front (as an
    /// upstream's chunked answer).
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(Ok))
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::default()
        }
    }

    fn full(text: &'static str) -> ProxyBody {
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed()
    }

    fn empty() -> ProxyBody {
        Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed()
    }

    fn frames(trailers: bool) -> ProxyBody {
        let mut list = VecDeque::from([
            Frame::data(Bytes::from_static(b"hello")),
            Frame::data(Bytes::from_static(b" world")),
        ]);
        if trailers {
            let mut map = HeaderMap::new();
            map.insert("grpc-status", HeaderValue::from_static("0"));
            map.insert("x-not-announced", HeaderValue::from_static("1"));
            list.push_back(Frame::trailers(map));
        }
        Frames(list).boxed()
    }

    fn response(
        status: u16,
        headers: &[(&'static str, &'static str)],
        body: ProxyBody,
    ) -> Response<ProxyBody> {
        let mut r = Response::new(body);
        *r.status_mut() = StatusCode::from_u16(status).expect("status");
        for (name, value) in headers {
            r.headers_mut()
                .append(*name, HeaderValue::from_static(value));
        }
        r
    }

    /// Reads one whole response (by its own framing) or up to the end of the stream.
    async fn read_message(client: &mut TcpStream, is_head: bool) -> Vec<u8> {
        let mut buf = Vec::new();
        let read = async {
            loop {
                let mut chunk = [0u8; 4096];
                let n = client.read(&mut chunk).await.expect("read");
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let body = &buf[end + 4..];
                let status = head.get(9..12).unwrap_or_default();
                if is_head || status == "204" || status == "304" {
                    return;
                }
                if let Some(len) = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                {
                    if body.len() >= len {
                        return;
                    }
                } else if head.contains("transfer-encoding:") {
                    let last_chunk =
                        body.starts_with(b"0\r\n") || body.windows(5).any(|w| w == b"\r\n0\r\n");
                    if last_chunk && body.ends_with(b"\r\n\r\n") {
                        return;
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("a whole answer in time");
        buf
    }

    /// The answer hyper's HTTP/1 server writes for `request` when its service answers
    /// `make()`.
    async fn via_hyper(request: &'static [u8], make: fn() -> Response<ProxyBody>) -> Vec<u8> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let service =
                hyper::service::service_fn(move |_req| async move { Ok::<_, Infallible>(make()) });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client.write_all(request).await.expect("write");
        read_message(&mut client, request.starts_with(b"HEAD")).await
    }

    /// The answer of the fast path for the same.
    async fn via_fast_path(request: &'static [u8], make: fn() -> Response<ProxyBody>) -> Vec<u8> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut read = BytesMut::new();
            let Some(Parsed::Simple {
                request,
                close,
                trailers,
            }) = read_request(&mut stream, &mut read).await
            else {
                panic!("the fast path must take this request");
            };
            let is_head = request.method() == Method::HEAD;
            let mut out = Vec::new();
            let _ = write_response(&mut stream, &mut out, make(), is_head, !close, trailers).await;
        });
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client.write_all(request).await.expect("write");
        read_message(&mut client, request.starts_with(b"HEAD")).await
    }

    /// The `date` value varies with the second: the same placeholder on both sides.
    fn without_date(bytes: Vec<u8>) -> String {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        match text.find("date: ") {
            Some(at) => {
                let end = text[at..].find("\r\n").map_or(text.len(), |e| at + e);
                format!("{}date: D{}", &text[..at], &text[end..])
            }
            None => text,
        }
    }

    const GET: &[u8] = b"GET /a?b=c HTTP/1.1\r\nhost: svc\r\nuser-agent: t\r\n\r\n";
    const HEAD: &[u8] = b"HEAD / HTTP/1.1\r\nhost: svc\r\n\r\n";
    const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n";
    const GET_TRAILERS: &[u8] = b"GET / HTTP/1.1\r\nhost: svc\r\nte: trailers\r\n\r\n";

    /// A case: its name, the request, the response the service gives.
    type Case = (&'static str, &'static [u8], fn() -> Response<ProxyBody>);

    #[tokio::test]
    async fn answers_are_written_as_hyper_writes_them() {
        let cases: Vec<Case> = vec![
            ("200 with a known length", GET, || {
                response(200, &[("x-a", "1"), ("x-a", "2")], full("hello"))
            }),
            ("404 with a body", GET, || {
                response(404, &[], full("not here"))
            }),
            ("content-length given", GET, || {
                response(
                    200,
                    &[("content-length", "5"), ("server", "up")],
                    full("hello"),
                )
            }),
            ("unknown length: chunked", GET, || {
                response(200, &[], frames(false))
            }),
            ("trailers announced", GET, || {
                response(200, &[("trailer", "grpc-status")], frames(true))
            }),
            ("trailers announced, te: trailers", GET_TRAILERS, || {
                response(200, &[("trailer", "grpc-status")], frames(true))
            }),
            ("trailers not announced", GET, || {
                response(200, &[], frames(true))
            }),
            ("trailers not announced, te: trailers", GET_TRAILERS, || {
                response(200, &[], frames(true))
            }),
            ("204", GET, || response(204, &[], empty())),
            ("304 with a length", GET, || {
                response(304, &[("content-length", "9"), ("etag", "\"x\"")], empty())
            }),
            ("empty body", GET, || response(200, &[], empty())),
            ("HEAD with a known length", HEAD, || {
                response(200, &[], full("hello"))
            }),
            ("HEAD with content-length given", HEAD, || {
                response(200, &[("content-length", "5")], empty())
            }),
            ("answer says close", GET, || {
                response(200, &[("connection", "close")], full("bye"))
            }),
            ("request says close", GET_CLOSE, || {
                response(200, &[], full("bye"))
            }),
            ("date given", GET, || {
                response(200, &[("date", "Thu, 01 Jan 1970 00:00:00 GMT")], full("x"))
            }),
            ("transfer-encoding without chunked", GET, || {
                response(200, &[("transfer-encoding", "gzip")], frames(false))
            }),
            ("unknown reason phrase", GET, || response(599, &[], empty())),
            ("HTTP/1.0 answer of unknown length", GET, || {
                let mut r = response(200, &[], frames(false));
                *r.version_mut() = Version::HTTP_10;
                r
            }),
        ];
        for (name, request, make) in cases {
            let expected = without_date(via_hyper(request, make).await);
            let got = without_date(via_fast_path(request, make).await);
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn requests_the_fast_path_leaves_to_hyper() {
        for raw in [
            &b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n",
            b"GET / HTTP/1.0\r\nhost: a\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\nhost: a\r\n\r\n",
        ] {
            let mut read = BytesMut::from(raw);
            assert!(
                matches!(parse_request(&mut read), Parsed::Other),
                "{}",
                String::from_utf8_lossy(raw)
            );
            // Nothing is taken: hyper reads the request from the start.
            assert_eq!(&read[..], raw);
        }
    }

    #[test]
    fn a_simple_request_is_taken_whole_and_the_next_one_left() {
        let mut read = BytesMut::from(
            &b"GET http://svc:8000/p?q HTTP/1.1\r\nHost: svc:8000\r\nContent-Length: 0\r\nConnection: keep-alive, close\r\n\r\nGET /next"[..],
        );
        let Parsed::Simple { request, close, .. } = parse_request(&mut read) else {
            panic!("a simple request");
        };
        assert!(close);
        assert_eq!(
            request.uri().authority().map(|a| a.as_str()),
            Some("svc:8000")
        );
        assert_eq!(
            request.uri().path_and_query().map(|p| p.as_str()),
            Some("/p?q")
        );
        assert_eq!(request.headers()["host"], "svc:8000");
        assert!(request.body().is_end_stream());
        assert_eq!(&read[..], b"GET /next");
        assert!(matches!(parse_request(&mut read), Parsed::Partial));
    }
}
