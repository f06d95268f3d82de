//! Name resolution for upstream hosts: curl-style overrides first (`--resolve
//! HOST:PORT:ADDR`, `--connect-to HOST:PORT:HOST2:PORT2`), then the system's DNS
//! (resolv.conf and /etc/hosts) through hickory-resolver, which also caches.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::ResolveHosts;
use hickory_resolver::TokioResolver;

/// A `--resolve` or `--connect-to` override, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Override {
    /// `--resolve HOST:PORT:ADDR`: connections to HOST:PORT go to ADDR:PORT.
    Resolve {
        /// The host overridden, lower-case, without a trailing dot.
        host: String,
        /// The port the override applies to.
        port: u16,
        /// The address to connect to instead, on the same port.
        addr: IpAddr,
    },
    /// `--connect-to HOST:PORT:HOST2:PORT2`: connections to HOST:PORT go to HOST2:PORT2.
    ConnectTo {
        /// The host overridden, lower-case, without a trailing dot.
        host: String,
        /// The port the override applies to.
        port: u16,
        /// The host (or IP address) to connect to instead.
        target_host: String,
        /// The port to connect to instead.
        target_port: u16,
    },
}

impl Override {
    /// Parses `HOST:PORT:ADDR` (IPv6 ADDR may be bracketed).
    pub fn parse_resolve(s: &str) -> Result<Override, String> {
        let mut parts = s.splitn(3, ':');
        let (Some(host), Some(port), Some(addr)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("--resolve {s:?}: expected HOST:PORT:ADDR"));
        };
        let port = port
            .parse()
            .map_err(|_| format!("--resolve {s:?}: bad port {port:?}"))?;
        let addr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("--resolve {s:?}: {addr:?} is not an IP address"))?;
        Ok(Override::Resolve {
            host: normalize(host),
            port,
            addr,
        })
    }

    /// Parses `HOST:PORT:HOST2:PORT2`.
    pub fn parse_connect_to(s: &str) -> Result<Override, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let [host, port, target_host, target_port] = parts.as_slice() else {
            return Err(format!(
                "--connect-to {s:?}: expected HOST:PORT:HOST2:PORT2"
            ));
        };
        let port = port
            .parse()
            .map_err(|_| format!("--connect-to {s:?}: bad port {port:?}"))?;
        let target_port = target_port
            .parse()
            .map_err(|_| format!("--connect-to {s:?}: bad port {target_port:?}"))?;
        Ok(Override::ConnectTo {
            host: normalize(host),
            port,
            target_host: normalize(target_host),
            target_port,
        })
    }
}

fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Why a name could not be resolved.
#[derive(Debug, Clone, thiserror::Error)]
#[error("DNS lookup of {host} failed: {reason}")]
pub struct ResolveError {
    /// The name looked up (after any `--connect-to` override); the 503 `DF` body names it.
    pub host: String,
    /// The resolver's error, e.g. `no addresses`.
    pub reason: String,
}

/// Resolves upstream names.
pub struct Resolver {
    overrides: HashMap<(String, u16), Override>,
    dns: Option<TokioResolver>,
    dns_error: Option<String>,
}

impl Resolver {
    /// A resolver with these overrides over the system's DNS.
    pub fn new(overrides: Vec<Override>) -> Resolver {
        let map = overrides
            .into_iter()
            .map(|o| {
                let key = match &o {
                    Override::Resolve { host, port, .. }
                    | Override::ConnectTo { host, port, .. } => (host.clone(), *port),
                };
                (key, o)
            })
            .collect();
        let (dns, dns_error) = match TokioResolver::builder_tokio() {
            Ok(mut builder) => {
                let opts = builder.options_mut();
                opts.timeout = Duration::from_secs(2);
                opts.attempts = 1;
                opts.use_hosts_file = ResolveHosts::Always;
                (Some(builder.build()), None)
            }
            Err(e) => (None, Some(e.to_string())),
        };
        Resolver {
            overrides: map,
            dns,
            dns_error,
        }
    }

    /// Whether an override names this host (on any port).
    pub fn has_override(&self, host: &str) -> bool {
        let host = normalize(host);
        self.overrides.keys().any(|(h, _)| *h == host)
    }

    /// The addresses to connect to for `host:port`.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        let host_n = normalize(host);
        let (host, port) = match self.overrides.get(&(host_n.clone(), port)) {
            Some(Override::Resolve { addr, .. }) => return Ok(vec![SocketAddr::new(*addr, port)]),
            Some(Override::ConnectTo {
                target_host,
                target_port,
                ..
            }) => (target_host.clone(), *target_port),
            None => (host_n, port),
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let Some(dns) = &self.dns else {
            return Err(ResolveError {
                host,
                reason: self
                    .dns_error
                    .clone()
                    .unwrap_or_else(|| "no resolver".into()),
            });
        };
        match dns.lookup_ip(format!("{host}.")).await {
            Ok(lookup) => {
                let addrs: Vec<SocketAddr> =
                    lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
                if addrs.is_empty() {
                    Err(ResolveError {
                        host,
                        reason: "no addresses".into(),
                    })
                } else {
                    Ok(addrs)
                }
            }
            Err(e) => Err(ResolveError {
                host,
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_curl_style_overrides() {
        assert_eq!(
            Override::parse_resolve("worldtimeapi.org:80:127.0.0.1").unwrap(),
            Override::Resolve {
                host: "worldtimeapi.org".into(),
                port: 80,
                addr: "127.0.0.1".parse().unwrap()
            }
        );
        assert!(Override::parse_resolve("x:80").is_err());
        assert_eq!(
            Override::parse_connect_to("WorldTimeAPI.org:80:127.0.0.1:9000").unwrap(),
            Override::ConnectTo {
                host: "worldtimeapi.org".into(),
                port: 80,
                target_host: "127.0.0.1".into(),
                target_port: 9000
            }
        );
        assert!(Override::parse_connect_to("a:b:c:d").is_err());
    }

    #[tokio::test]
    async fn overrides_win_and_ip_literals_resolve() {
        let r = Resolver::new(vec![Override::parse_connect_to(
            "worldtimeapi.org:80:127.0.0.1:9000",
        )
        .unwrap()]);
        assert_eq!(
            r.resolve("worldtimeapi.org", 80).await.unwrap(),
            vec!["127.0.0.1:9000".parse().unwrap()]
        );
        assert_eq!(
            r.resolve("127.0.0.2", 81).await.unwrap(),
            vec!["127.0.0.2:81".parse().unwrap()]
        );
        assert!(r.resolve("no-such-host.invalid", 80).await.is_err());
    }
}
