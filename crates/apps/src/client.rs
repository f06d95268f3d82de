//! The outbound HTTP client of ServiceA and ServiceC, and the RestTemplate-like rendering of
//! what a call gave.

use std::error::Error as _;
use std::time::Duration;

use anyhow::Context;
use reqwest::header::{HeaderValue, ACCEPT};

/// Default bound on establishing a TCP connection (`CONNECT_TIMEOUT_MS`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default bound on a whole request, body included (`REQUEST_TIMEOUT_MS`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What Spring's RestTemplate sends as `Accept` when asked for a `String`.
const ACCEPT_VALUE: &str = "text/plain, application/json, application/*+json, */*";
const USER_AGENT: &str = "meshbox-app/0.1";

/// Settings of the outbound HTTP client.
///
/// The proxy is configured explicitly (reqwest's own environment lookup is switched off) so
/// that one code path serves both the binaries, which read the environment, and tests or
/// in-process callers, which pass values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Proxy for `http://` URLs, e.g. `http://127.0.0.1:15001`; `None` for direct calls.
    /// A value without a scheme is taken as `http://`.
    pub http_proxy: Option<String>,
    /// Comma-separated hosts, domains (`.example.com` or `example.com`, subdomains included),
    /// IPs or CIDRs reached directly even when a proxy is set; `*` matches every host.
    pub no_proxy: Option<String>,
    /// Bound on establishing a TCP connection.
    pub connect_timeout: Duration,
    /// Bound on a whole request, reading the body included.
    pub request_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            http_proxy: None,
            no_proxy: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl ClientConfig {
    /// Reads the process environment: `HTTP_PROXY` or `http_proxy` (falling back to
    /// `ALL_PROXY` / `all_proxy`), `NO_PROXY` or `no_proxy`, `CONNECT_TIMEOUT_MS` and
    /// `REQUEST_TIMEOUT_MS` (milliseconds). Empty values count as unset.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`ClientConfig::from_env`], with variables looked up by `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let first = |names: &[&str]| {
            names
                .iter()
                .filter_map(|name| lookup(name))
                .map(|v| v.trim().to_string())
                .find(|v| !v.is_empty())
        };
        let millis = |name: &str, default: Duration| -> anyhow::Result<Duration> {
            match first(&[name]) {
                Some(raw) => {
                    let ms: u64 = raw
                        .parse()
                        .with_context(|| format!("invalid {name} {raw:?} (milliseconds)"))?;
                    Ok(Duration::from_millis(ms))
                }
                None => Ok(default),
            }
        };
        Ok(ClientConfig {
            http_proxy: first(&["HTTP_PROXY", "http_proxy"])
                .or_else(|| first(&["ALL_PROXY", "all_proxy"])),
            no_proxy: first(&["NO_PROXY", "no_proxy"]),
            connect_timeout: millis("CONNECT_TIMEOUT_MS", DEFAULT_CONNECT_TIMEOUT)?,
            request_timeout: millis("REQUEST_TIMEOUT_MS", DEFAULT_REQUEST_TIMEOUT)?,
        })
    }
}

/// Builds the client a service keeps for its whole life (connections are pooled).
pub fn build_client(config: &ClientConfig) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .user_agent(USER_AGENT)
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout);
    if let Some(raw) = &config.http_proxy {
        let url = if raw.contains("://") {
            raw.clone()
        } else {
            format!("http://{raw}")
        };
        let no_proxy = config
            .no_proxy
            .as_deref()
            .and_then(reqwest::NoProxy::from_string);
        let proxy = reqwest::Proxy::http(&url)
            .with_context(|| format!("invalid HTTP proxy {raw:?}"))?
            .no_proxy(no_proxy);
        builder = builder.proxy(proxy);
    }
    builder.build().context("cannot build the HTTP client")
}

/// What a GET gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A 2xx answer and its body.
    Success(String),
    /// Any other answer, already rendered like Spring's `HttpStatusCodeException` message.
    Status(String),
    /// No answer, rendered like Spring's `ResourceAccessException` message.
    Io(String),
}

/// Sends `GET url` the way RestTemplate's `getForEntity(url, String.class)` would.
pub(crate) async fn get(client: &reqwest::Client, url: &str) -> Outcome {
    let sent = client
        .get(url)
        .header(ACCEPT, HeaderValue::from_static(ACCEPT_VALUE))
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(err) => {
            tracing::debug!(url, error = ?err, "outbound call failed");
            return Outcome::Io(io_error_message(url, &err));
        }
    };
    let status = response.status();
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(err) => return Outcome::Io(io_error_message(url, &err)),
    };
    let body = String::from_utf8_lossy(&body).into_owned();
    if status.is_success() {
        Outcome::Success(body)
    } else {
        Outcome::Status(status_message(
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            &body,
        ))
    }
}

/// Spring's message for a non-2xx answer: `502 Bad Gateway: [no body]`, or the body in
/// double quotes, on one line (line breaks shown as `<EOL>`), cut after 200 characters
/// followed by `... (N bytes)` as Spring 5.2 did.
pub(crate) fn status_message(code: u16, reason: &str, body: &str) -> String {
    const MAX_CHARS: usize = 200;
    let preface = format!("{code} {reason}: ");
    if body.is_empty() {
        return preface + "[no body]";
    }
    let one_line = |s: &str| s.replace("\r\n", "<EOL>").replace(['\n', '\r'], "<EOL>");
    if body.chars().count() <= MAX_CHARS {
        format!("{preface}\"{}\"", one_line(body))
    } else {
        let head: String = body.chars().take(MAX_CHARS).collect();
        format!("{preface}\"{}\"... ({} bytes)", one_line(&head), body.len())
    }
}

/// Spring's message for a call that got no answer, on one line:
/// `I/O error on GET request for "URL": DESCRIPTION`.
pub(crate) fn io_error_message(url: &str, err: &reqwest::Error) -> String {
    format!(
        "I/O error on GET request for \"{url}\": {}",
        describe_error(err)
    )
}

/// Joins the messages of the error's cause chain with `: `, leaving out reqwest's and
/// hyper-util's wrappers that only repeat the URL or say "client error".
fn describe_error(err: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = one_line(&cause.to_string());
        let wrapper =
            text.starts_with("client error (") || text.starts_with("error sending request");
        if !text.is_empty() && !wrapper && !parts.iter().any(|p| p == &text) {
            parts.push(text);
        }
        source = cause.source();
    }
    if parts.is_empty() {
        parts.push(one_line(&without_url(err)));
    }
    if err.is_timeout() && !parts.iter().any(|p| p.contains("timed out")) {
        parts.push("operation timed out".to_string());
    }
    parts.join(": ")
}

fn one_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// reqwest's own message without the URL (it is named once, in the preface).
fn without_url(err: &reqwest::Error) -> String {
    let text = err.to_string();
    match text.find(" for url (") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_messages_follow_spring() {
        assert_eq!(
            status_message(502, "Bad Gateway", ""),
            "502 Bad Gateway: [no body]"
        );
        assert_eq!(
            status_message(404, "Not Found", "no such\nthing\r\n"),
            "404 Not Found: \"no such<EOL>thing<EOL>\""
        );
        let long = "é".repeat(250);
        let msg = status_message(503, "Service Unavailable", &long);
        assert_eq!(
            msg,
            format!(
                "503 Service Unavailable: \"{}\"... (500 bytes)",
                "é".repeat(200)
            )
        );
    }

    #[test]
    fn config_from_lookup() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = ClientConfig::from_lookup(env(&[])).unwrap();
        assert_eq!(c, ClientConfig::default());
        let c = ClientConfig::from_lookup(env(&[
            ("HTTP_PROXY", ""),
            ("http_proxy", "127.0.0.1:15001"),
            ("ALL_PROXY", "http://other:1"),
            ("no_proxy", "localhost,127.0.0.1"),
            ("CONNECT_TIMEOUT_MS", "150"),
            ("REQUEST_TIMEOUT_MS", " 900 "),
        ]))
        .unwrap();
        assert_eq!(c.http_proxy.as_deref(), Some("127.0.0.1:15001"));
        assert_eq!(c.no_proxy.as_deref(), Some("localhost,127.0.0.1"));
        assert_eq!(c.connect_timeout, Duration::from_millis(150));
        assert_eq!(c.request_timeout, Duration::from_millis(900));
        let c = ClientConfig::from_lookup(env(&[("all_proxy", "http://p:3128")])).unwrap();
        assert_eq!(c.http_proxy.as_deref(), Some("http://p:3128"));
        assert!(ClientConfig::from_lookup(env(&[("CONNECT_TIMEOUT_MS", "2s")])).is_err());
        assert!(build_client(&ClientConfig {
            http_proxy: Some("127.0.0.1:15001".into()),
            no_proxy: Some("localhost".into()),
            ..ClientConfig::default()
        })
        .is_ok());
    }
}
