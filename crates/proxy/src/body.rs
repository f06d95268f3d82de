//! A response body that counts what it sends and writes the access log line when the
//! response is complete (or abandoned), as Envoy logs at the end of a stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};

use crate::access_log::{AccessLogEntry, AccessLogSink, Encoding};

/// The error of a [`ProxyBody`]: hyper's, or the upstream exchange's own (h1.rs).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type every proxy listener answers with.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// An access log line waiting for its response to finish.
pub struct PendingLog {
    /// The line's fields; byte counts and `%DURATION%` are filled in when the body ends.
    pub entry: AccessLogEntry,
    /// When the request arrived, for `%DURATION%`.
    pub start: Instant,
    /// Where the line is written.
    pub sink: Arc<dyn AccessLogSink>,
    /// TEXT or JSON (`meshConfig.accessLogEncoding`).
    pub encoding: Encoding,
    /// Request body bytes, counted as the upstream reads them; `None` for a request
    /// without a body (nothing to count, nothing to allocate).
    pub received: Option<Arc<AtomicU64>>,
}

/// Wraps a response body; emits the access log line once.
pub struct LoggedBody {
    inner: ProxyBody,
    sent: u64,
    /// Boxed: the entry is large and the body is moved whole as hyper serves it; with
    /// access logs off (Istio's default) it is `None` and costs nothing.
    log: Option<Box<PendingLog>>,
    hold: Option<Box<dyn Send + Sync>>,
    metric: Option<PendingMetric>,
}

/// A request's metrics, recorded when its response ends (Istio's standard metrics).
pub(crate) struct PendingMetric {
    pub(crate) metrics: Arc<crate::metrics::ProxyMetrics>,
    pub(crate) labels: crate::metrics::Labels,
    pub(crate) start: Instant,
    /// As [`PendingLog::received`].
    pub(crate) received: Option<Arc<AtomicU64>>,
}

/// The bytes a request body counter has counted (none without a counter).
fn counted(counter: &Option<Arc<AtomicU64>>) -> u64 {
    counter.as_ref().map_or(0, |c| c.load(Ordering::Relaxed))
}

/// A body with nothing in it, as a [`ProxyBody`] (boxing it allocates nothing).
pub(crate) fn empty_body() -> ProxyBody {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// `bytes` whole, as a [`ProxyBody`]; empty bytes make an [`empty_body`] (no
/// allocation: a replayed bodiless request, a local reply without a body).
pub(crate) fn bytes_body(bytes: Bytes) -> ProxyBody {
    if bytes.is_empty() {
        return empty_body();
    }
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed()
}

impl LoggedBody {
    /// Wraps `inner`; `log` is written when the body ends or is dropped.
    pub fn new(inner: ProxyBody, log: Option<Box<PendingLog>>) -> LoggedBody {
        LoggedBody {
            hold: None,
            metric: None,
            inner,
            sent: 0,
            log,
        }
    }

    /// Keeps `hold` alive until the body is done (for connection-pool admissions).
    pub fn holding(mut self, hold: Option<Box<dyn Send + Sync>>) -> LoggedBody {
        self.hold = hold;
        self
    }

    /// Records `metric` when the body is done.
    pub(crate) fn with_metric(mut self, metric: Option<PendingMetric>) -> LoggedBody {
        self.metric = metric;
        self
    }

    /// The response broke off after it had started: its route's timeout passed
    /// (flag UT, details `response_timeout`) or the upstream's answer did (flag UC or
    /// UPE, details `upstream_reset_after_response_started{...}`). The line and the
    /// metric say so as Envoy's do; the status already sent stays.
    fn mark_broken_off(&mut self, error: &BoxError) {
        let (flag, details) = if error.is::<RouteTimeoutElapsed>() {
            ("UT", "response_timeout")
        } else {
            let reason = crate::reset::ResetReason::of(&**error);
            (reason.flag(), reason.after_response())
        };
        if let Some(p) = self.log.as_mut() {
            p.entry.response_flags = crate::proxy::add_flag(p.entry.response_flags, flag);
            p.entry.response_code_details = details;
        }
        if let Some(m) = self.metric.as_mut() {
            m.labels.response_flags = crate::proxy::add_flag(m.labels.response_flags, flag);
        }
    }

    fn finish(&mut self) {
        self.hold = None;
        if let Some(m) = self.metric.take() {
            m.metrics.record_request(
                &m.labels,
                m.start.elapsed().as_secs_f64() * 1000.0,
                counted(&m.received),
                self.sent,
            );
        }
        if let Some(p) = self.log.take() {
            p.emit(self.sent);
        }
    }
}

impl PendingLog {
    /// Completes the entry with the byte counts and duration and writes the line.
    pub fn emit(mut self, bytes_sent: u64) {
        self.entry.bytes_sent = bytes_sent;
        self.entry.bytes_received = counted(&self.received);
        self.entry.duration_ms =
            u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let line = match self.encoding {
            Encoding::Text => self.entry.to_text(),
            Encoding::Json => self.entry.to_json(),
        };
        self.sink.write_line(&line);
    }
}

/// Holds a request's access log entry while the proxy works on it. If the work is
/// abandoned (the downstream went away, so hyper dropped the request future), the
/// line is written on drop as Envoy writes it: response code 0, flag `DC`,
/// details `downstream_remote_disconnect`.
/// The entry is boxed (as in [`LoggedBody`]): it lives in the request's future, which
/// is moved whole; with access logs off it is `None`.
pub struct AbandonGuard(pub Option<Box<PendingLog>>);

impl AbandonGuard {
    /// Takes the entry back when the request produced a response.
    pub fn complete(&mut self) -> Option<Box<PendingLog>> {
        self.0.take()
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if let Some(mut p) = self.0.take() {
            p.entry.response_code = 0;
            p.entry.response_flags = "DC";
            p.entry.response_code_details = "downstream_remote_disconnect";
            p.emit(0);
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(Some(Err(e))) => {
                this.mark_broken_off(e);
                this.finish();
            }
            Poll::Ready(None) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A request body that counts the bytes read from it (`%BYTES_RECEIVED%`) and keeps
/// its size hint, so a body of known length can be kept for retries.
pub struct CountingBody<B> {
    inner: B,
    counter: Arc<AtomicU64>,
}

impl<B> CountingBody<B> {
    /// Wraps `inner`, adding the bytes of each data frame to `counter`.
    pub fn new(inner: B, counter: Arc<AtomicU64>) -> Self {
        CountingBody { inner, counter }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for CountingBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.counter.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How a response body ends when its route's timeout passes before the upstream has
/// sent all of it. Envoy's route timeout covers the whole response ("the amount of
/// time that Envoy will wait for the upstream to respond with a complete response",
/// Envoy's timeouts FAQ); once the response has started, the router cannot answer
/// 504 any more and resets the stream instead (router.cc `onUpstreamAbort`), logging
/// flag UT and details `response_timeout`. A body error makes the downstream side do
/// the same: HTTP/1.1 closes the connection mid-body, HTTP/2 resets the stream.
#[derive(Debug)]
pub(crate) struct RouteTimeoutElapsed;

impl std::fmt::Display for RouteTimeoutElapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the route timeout passed before the upstream response was complete")
    }
}

impl std::error::Error for RouteTimeoutElapsed {}

/// A response body that must be complete by its route's deadline, else it ends with
/// [`RouteTimeoutElapsed`]. Only responses on routes with a `timeout` are wrapped.
pub(crate) struct DeadlineBody {
    inner: ProxyBody,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    /// `body`, bounded by `deadline`.
    pub(crate) fn bound(body: ProxyBody, deadline: tokio::time::Instant) -> ProxyBody {
        if body.is_end_stream() {
            return body;
        }
        DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
        .boxed()
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(RouteTimeoutElapsed)))),
                Poll::Pending => Poll::Pending,
            },
            ready => ready,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A response body whose upstream never sends another byte.
    struct Stalled;

    impl Body for Stalled {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Pending
        }
    }

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);

    impl AccessLogSink for Lines {
        fn write_line(&self, line: &str) {
            if let Ok(mut lines) = self.0.lock() {
                lines.push(line.to_string());
            }
        }
    }

    /// A stalled body ends with `RouteTimeoutElapsed` at its deadline, not before; its
    /// line then says UT, after a delay fault `UT,DI` (Envoy's flag order).
    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_ends_at_its_deadline_and_its_line_says_ut() {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        let sink = Arc::new(Lines::default());
        let log = PendingLog {
            entry: AccessLogEntry {
                response_code: 200,
                response_flags: "DI",
                response_code_details: "via_upstream",
                ..Default::default()
            },
            start: Instant::now(),
            sink: sink.clone(),
            encoding: Encoding::Text,
            received: None,
        };
        let stalled = Stalled.boxed();
        let mut body = LoggedBody::new(DeadlineBody::bound(stalled, deadline), Some(Box::new(log)));
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(1900), body.frame()).await;
        assert!(early.is_err(), "still waiting before the deadline");
        let ended = body.frame().await;
        let error = match ended {
            Some(Err(e)) => e,
            _ => panic!("the body ends with an error"),
        };
        assert!(error.is::<RouteTimeoutElapsed>(), "{error}");
        assert_eq!(tokio::time::Instant::now(), deadline);
        let lines = sink.0.lock().expect("lines").clone();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].contains(" 200 UT,DI response_timeout "),
            "{}",
            lines[0]
        );
    }
}
