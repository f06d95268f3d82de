//! Reading the SNI of a TLS connection without terminating it, as Envoy's
//! `tls_inspector` listener filter does for TLS passthrough and SNI-matched filter
//! chains: the ClientHello is buffered, parsed with rustls's `Acceptor` (which stops
//! after the ClientHello and never answers), and the buffered bytes are then sent on
//! unchanged.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Envoy's `tls_inspector` gives up on ClientHellos larger than this.
const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// What the first bytes of a connection turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspected {
    /// A TLS ClientHello, with its SNI (lower-case, without a trailing dot) if it has one.
    Tls {
        /// The `server_name` extension.
        sni: Option<String>,
    },
    /// Not TLS (or a ClientHello rustls cannot parse): plain bytes.
    NotTls,
    /// The peer closed, or sent nothing within the timeout, before a whole ClientHello.
    Incomplete,
}

/// Reads from `stream` until the ClientHello is complete (or the data is clearly not
/// TLS), appending every byte read to `buf`, which the caller forwards unchanged.
pub async fn inspect<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Inspected {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut acceptor = rustls::server::Acceptor::default();
    let mut fed = 0;
    loop {
        if fed < buf.len() {
            // A TLS record starts with content type 22 (handshake).
            if buf[0] != 0x16 {
                return Inspected::NotTls;
            }
            let mut rest = &buf[fed..];
            while !rest.is_empty() {
                match acceptor.read_tls(&mut rest) {
                    Ok(0) | Err(_) => return Inspected::NotTls,
                    Ok(_) => {}
                }
            }
            fed = buf.len();
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    let sni = accepted
                        .client_hello()
                        .server_name()
                        .map(|s| s.trim_end_matches('.').to_ascii_lowercase());
                    return Inspected::Tls { sni };
                }
                Ok(None) => {}
                Err(_) => return Inspected::NotTls,
            }
        }
        if buf.len() >= MAX_CLIENT_HELLO {
            return Inspected::NotTls;
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Inspected::Incomplete,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The bytes a rustls client sends first for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn reads_the_sni_and_keeps_every_byte() {
        let hello = client_hello("Edition.CNN.com");
        // Delivered in small pieces, as a slow client would.
        let mut reader = tokio_test_reader(hello.clone(), 7);
        let mut buf = Vec::new();
        let got = inspect(&mut reader, &mut buf, Duration::from_secs(5)).await;
        assert_eq!(
            got,
            Inspected::Tls {
                sni: Some("edition.cnn.com".into())
            }
        );
        assert_eq!(buf, hello, "the ClientHello is forwarded unchanged");
    }

    #[tokio::test]
    async fn plain_text_and_ip_hellos() {
        let mut buf = Vec::new();
        let mut reader = &b"GET / HTTP/1.1\r\n\r\n"[..];
        assert_eq!(
            inspect(&mut reader, &mut buf, Duration::from_secs(5)).await,
            Inspected::NotTls
        );
        // rustls sends no SNI for an IP address.
        let mut buf = Vec::new();
        let hello = client_hello("127.0.0.1");
        let mut reader = &hello[..];
        assert_eq!(
            inspect(&mut reader, &mut buf, Duration::from_secs(5)).await,
            Inspected::Tls { sni: None }
        );
        let mut buf = Vec::new();
        let truncated = &hello[..20];
        let mut reader = truncated;
        assert_eq!(
            inspect(&mut reader, &mut buf, Duration::from_secs(5)).await,
            Inspected::Incomplete
        );
    }

    /// A reader that hands out `data` `step` bytes at a time.
    fn tokio_test_reader(data: Vec<u8>, step: usize) -> impl AsyncRead + Unpin {
        struct Slow(Vec<u8>, usize, usize);
        impl AsyncRead for Slow {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                out: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let (pos, step) = (self.1, self.2);
                let end = (pos + step).min(self.0.len()).min(pos + out.remaining());
                out.put_slice(&self.0[pos..end]);
                self.1 = end;
                std::task::Poll::Ready(Ok(()))
            }
        }
        Slow(data, 0, step)
    }
}
