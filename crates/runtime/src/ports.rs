//! Loopback ports for workload processes, reserved for as long as their pod lives.
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
