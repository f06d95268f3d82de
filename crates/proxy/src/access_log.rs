//! Istio's default access log: Envoy's TEXT format as Istio configures it
//! (meshConfig.accessLogFormat empty), or the same fields as JSON.

use std::fmt::Write as _;
use std::net::SocketAddr;

use chrono::{DateTime, SecondsFormat, Utc};

/// Where a proxy's access log lines go.
pub trait AccessLogSink: Send + Sync {
    /// Writes one complete line (without its newline).
    fn write_line(&self, line: &str);
}

/// How lines are encoded (`meshConfig.accessLogEncoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Envoy's TEXT format with Istio's default format string (`accessLogEncoding: TEXT`).
    Text,
    /// One JSON object per line with the same fields (`accessLogEncoding: JSON`).
    Json,
}

/// The facts of one request, gathered as it is served.
#[derive(Debug, Clone, Default)]
pub struct AccessLogEntry {
    /// `%START_TIME%`: when the request arrived (`None`: the time the line is written).
    pub start_time: Option<DateTime<Utc>>,
    /// `%REQ(:METHOD)%`: the request method.
    pub method: String,
    /// `X-ENVOY-ORIGINAL-PATH?:PATH`: the path before any rewrite.
    pub path: String,
    /// `%PROTOCOL%`: the downstream HTTP version, e.g. `HTTP/1.1`.
    pub protocol: &'static str,
    /// `%RESPONSE_CODE%`: the status sent downstream, the upstream's or the proxy's own.
    pub response_code: u16,
    /// Envoy response flags, e.g. `NR`, `UF`; empty for none.
    pub response_flags: &'static str,
    /// `%RESPONSE_CODE_DETAILS%`: why that status, e.g. `via_upstream`, `route_not_found`.
    pub response_code_details: &'static str,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`: the connection error, when the upstream
    /// failed (`UF`, `UC`).
    pub upstream_transport_failure_reason: Option<String>,
    /// `%BYTES_RECEIVED%`: request body bytes read from downstream.
    pub bytes_received: u64,
    /// `%BYTES_SENT%`: response body bytes sent downstream.
    pub bytes_sent: u64,
    /// `%DURATION%`: milliseconds from the request's arrival to the end of the response.
    pub duration_ms: u64,
    /// `%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%`: milliseconds until the upstream's response
    /// headers; `None` when no upstream answered.
    pub upstream_service_time_ms: Option<u64>,
    /// `%REQ(X-FORWARDED-FOR)%`, after a gateway has appended the client's address.
    pub x_forwarded_for: Option<String>,
    /// `%REQ(USER-AGENT)%`.
    pub user_agent: Option<String>,
    /// `%REQ(X-REQUEST-ID)%`: the client's, or the UUID the proxy generated.
    pub request_id: Option<String>,
    /// `%REQ(:AUTHORITY)%`: the Host header (or absolute-form authority) as received.
    pub authority: Option<String>,
    /// `%UPSTREAM_HOST%`: the endpoint address the request was sent to.
    pub upstream_host: Option<SocketAddr>,
    /// `%UPSTREAM_CLUSTER_RAW%`, e.g. `outbound|80||host`, `inbound|8080||`, `PassthroughCluster`.
    pub upstream_cluster: Option<String>,
    /// `%UPSTREAM_LOCAL_ADDRESS%`: the proxy's end of the upstream connection.
    pub upstream_local_address: Option<SocketAddr>,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%`: the listener address the request arrived on.
    pub downstream_local_address: Option<SocketAddr>,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`: the client's address.
    pub downstream_remote_address: Option<SocketAddr>,
    /// `%ROUTE_NAME%`: the route that matched, e.g. `default`, `allow_any`, `block_all`;
    /// `None` when unnamed.
    pub route_name: Option<String>,
    /// `%REQUESTED_SERVER_NAME%`: the SNI of a TLS connection the proxy read (TLS
    /// passthrough, CONNECT tunnels); `None` for plain text.
    pub requested_server_name: Option<String>,
}

fn dash<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "-".into())
}

impl AccessLogEntry {
    /// Istio's TEXT line:
    /// `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%`
    /// (istio/istio pkg/config/mesh: DefaultAccessLogFormat / EnvoyTextLogFormat).
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(320);
        let _ = write!(
            s,
            "[{}] \"{} {} {}\" {} {} {} - \"{}\" {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} {} {} {} {} {}",
            self.start_time_str(),
            self.method,
            self.path,
            self.protocol,
            self.response_code,
            if self.response_flags.is_empty() { "-" } else { self.response_flags },
            self.response_code_details,
            dash(&self.upstream_transport_failure_reason),
            self.bytes_received,
            self.bytes_sent,
            self.duration_ms,
            dash(&self.upstream_service_time_ms),
            dash(&self.x_forwarded_for),
            dash(&self.user_agent),
            dash(&self.request_id),
            dash(&self.authority),
            dash(&self.upstream_host),
            dash(&self.upstream_cluster),
            dash(&self.upstream_local_address),
            dash(&self.downstream_local_address),
            dash(&self.downstream_remote_address),
            dash(&self.requested_server_name),
            dash(&self.route_name),
        );
        s
    }

    /// The same fields as Istio's JSON encoding names them.
    pub fn to_json(&self) -> String {
        let v = serde_json::json!({
            "start_time": self.start_time_str(),
            "method": self.method,
            "path": self.path,
            "protocol": self.protocol,
            "response_code": self.response_code,
            "response_flags": if self.response_flags.is_empty() { "-" } else { self.response_flags },
            "response_code_details": self.response_code_details,
            "connection_termination_details": serde_json::Value::Null,
            "upstream_transport_failure_reason": self.upstream_transport_failure_reason,
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "duration": self.duration_ms,
            "upstream_service_time": self.upstream_service_time_ms.map(|t| t.to_string()),
            "x_forwarded_for": self.x_forwarded_for,
            "user_agent": self.user_agent,
            "request_id": self.request_id,
            "authority": self.authority,
            "upstream_host": self.upstream_host.map(|a| a.to_string()),
            "upstream_cluster": self.upstream_cluster,
            "upstream_local_address": self.upstream_local_address.map(|a| a.to_string()),
            "downstream_local_address": self.downstream_local_address.map(|a| a.to_string()),
            "downstream_remote_address": self.downstream_remote_address.map(|a| a.to_string()),
            "requested_server_name": self.requested_server_name,
            "route_name": self.route_name,
        });
        v.to_string()
    }

    fn start_time_str(&self) -> String {
        self.start_time
            .unwrap_or_else(Utc::now)
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_line_has_istio_field_order() {
        let e = AccessLogEntry {
            start_time: DateTime::parse_from_rfc3339("2020-11-25T21:26:18.409Z")
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            method: "GET".into(),
            path: "/status/418".into(),
            protocol: "HTTP/1.1",
            response_code: 418,
            response_flags: "",
            response_code_details: "via_upstream",
            bytes_sent: 135,
            duration_ms: 4,
            upstream_service_time_ms: Some(4),
            user_agent: Some("curl/7.73.0-DEV".into()),
            request_id: Some("84961386-6d84-929d-98bd-c5aee93b5c88".into()),
            authority: Some("httpbin:8000".into()),
            upstream_host: "127.0.0.1:80".parse().ok(),
            upstream_cluster: Some("inbound|8000||".into()),
            upstream_local_address: "127.0.0.1:41854".parse().ok(),
            downstream_local_address: "10.44.1.27:80".parse().ok(),
            downstream_remote_address: "10.44.1.23:37652".parse().ok(),
            route_name: Some("default".into()),
            ..Default::default()
        };
        // The example line of istio.io's "Envoy Access Logs" task, field for field.
        assert_eq!(
            e.to_text(),
            "[2020-11-25T21:26:18.409Z] \"GET /status/418 HTTP/1.1\" 418 - via_upstream - \"-\" 0 135 4 4 \"-\" \"curl/7.73.0-DEV\" \"84961386-6d84-929d-98bd-c5aee93b5c88\" \"httpbin:8000\" \"127.0.0.1:80\" inbound|8000|| 127.0.0.1:41854 10.44.1.27:80 10.44.1.23:37652 - default"
        );
    }
}
