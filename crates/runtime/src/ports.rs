//! Loopback ports: the proxies' listening sockets ([`proxy_listener`], with Envoy's accept
//! queue), and the ports of workload processes, reserved for as long as their pod lives.
//!
//! A pod's app listens on a port that meshbox picks. Picking a free port and releasing
//! it before the child binds it leaves a window in which another listener (one of this
//! mesh's own proxies, or any other process) can take the same port; the sidecar would
//! then forward inbound traffic to the wrong socket, or to itself in a loop. Instead,
//! meshbox keeps the port bound (not listening, so it takes no connections) with
//! `SO_REUSEPORT`, and tells the built-in apps, through [`REUSEPORT_ENV`], to bind it
//! with `SO_REUSEPORT` as well: the port is never free between the pick and the app's
//! listen, nor while the app restarts.

use std::net::SocketAddr;

use tokio::net::TcpSocket;

/// Set to `1` in the environment of a built-in app whose `PORT` meshbox holds reserved:
/// the app binds it with `SO_REUSEPORT` (see the apps crate).
pub const REUSEPORT_ENV: &str = "MESHBOX_REUSEPORT";

/// The accept queue of a proxy's listener, as Envoy sizes it: `net.core.somaxconn` on
/// Linux (listener.proto `tcp_backlog_size`: "If no value is provided
/// net.core.somaxconn will be used on Linux and 128 otherwise"). Binding with std's or
/// tokio's `bind` gives 128, which a burst of new connections (an HTTP/2 client opening
/// hundreds of streams that each need an upstream HTTP/1.1 connection) overflowed: the
/// kernel dropped the handshakes and each client waited out a one-second SYN retransmit.
pub fn listen_backlog() -> u32 {
    somaxconn(
        std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .as_deref(),
    )
}

/// `net.core.somaxconn` from its /proc text; 128 when unreadable.
fn somaxconn(text: Option<&str>) -> u32 {
    text.and_then(|t| t.trim().parse::<u32>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(128)
}

/// A listening socket for a proxy at `addr` (port 0: any free port), with
/// [`listen_backlog`]'s accept queue.
pub fn proxy_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std and tokio bind listeners: a restarted mesh can take its port again at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(listen_backlog())
}

/// A loopback port held by meshbox: bound, never listening. Dropping it frees the port.
#[derive(Debug)]
pub struct PortReservation {
    /// The bound socket is the reservation; it is only ever closed (on drop).
    _socket: TcpSocket,
    addr: SocketAddr,
}

impl PortReservation {
    /// Reserves a free port on 127.0.0.1.
    pub fn new() -> std::io::Result<PortReservation> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseport(true)?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = socket.local_addr()?;
        Ok(PortReservation {
            _socket: socket,
            addr,
        })
    }

    /// The reserved address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The reserved port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_is_somaxconn_else_128_as_envoy_sizes_it() {
        assert_eq!(somaxconn(Some("4096\n")), 4096);
        assert_eq!(somaxconn(Some("65535")), 65535);
        assert_eq!(somaxconn(None), 128);
        assert_eq!(somaxconn(Some("many")), 128);
        assert_eq!(somaxconn(Some("0")), 128);
    }

    /// A burst of connections that nobody has accepted yet all complete their handshake:
    /// with the 128 of a plain `bind`, those past the queue would wait on SYN
    /// retransmits (a second, then three, ...) until the deadline failed the test.
    #[tokio::test]
    async fn a_proxy_listener_queues_a_burst_of_connections_beyond_128() {
        const BURST: u32 = 300;
        if listen_backlog() < BURST {
            eprintln!("net.core.somaxconn is {}: skipped", listen_backlog());
            return;
        }
        let listener = proxy_listener(SocketAddr::from(([127, 0, 0, 1], 0))).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let mut connects = tokio::task::JoinSet::new();
        for _ in 0..BURST {
            connects.spawn(tokio::net::TcpStream::connect(addr));
        }
        let streams = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            let mut streams = Vec::new();
            while let Some(done) = connects.join_next().await {
                streams.push(done.expect("task").expect("connect"));
            }
            streams
        })
        .await
        .expect("every connection of the burst was queued");
        assert_eq!(streams.len(), BURST as usize);
        drop(listener);
    }

    #[tokio::test]
    async fn a_reserved_port_is_refused_to_plain_binds_and_given_to_reuseport_listeners() {
        let reserved = PortReservation::new().expect("reserve");
        // Another listener that does not opt in cannot take the port ...
        let plain = tokio::net::TcpListener::bind(reserved.addr()).await;
        assert!(plain.is_err(), "plain bind got the reserved port");
        // ... and bind(0) never hands it out.
        let others: Vec<_> = (0..200)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        assert!(others
            .iter()
            .all(|l| l.local_addr().expect("addr").port() != reserved.port()));
        // The app, binding with SO_REUSEPORT, gets it and is the one that accepts.
        let app = TcpSocket::new_v4().expect("socket");
        app.set_reuseport(true).expect("reuseport");
        app.bind(reserved.addr())
            .expect("app binds the reserved port");
        let listener = app.listen(16).expect("listen");
        let client = tokio::net::TcpStream::connect(reserved.addr());
        let (accepted, connected) = tokio::join!(listener.accept(), client);
        accepted.expect("accepted by the app");
        connected.expect("connected");
    }
}
