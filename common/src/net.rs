//! Listening sockets for the actix-web services.
//!
//! The services bind their listeners themselves (to learn the port of `port = 0` before the
//! server starts). `std::net::TcpListener::bind` asks the kernel for a backlog of 128
//! connections: a burst of new connections beyond that (a gateway opening one per concurrent
//! join authorization after a restart, a wave of log-ins) is dropped at the handshake and
//! retried by the client a second or more later, which shows as seconds of latency and
//! timeouts. [`listen`] asks for [`BACKLOG`] (the kernel caps it at `net.core.somaxconn`).

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use anyhow::Context;
use socket2::{Domain, Socket, Type};

/// Connections the kernel completes before the service accepts them.
pub const BACKLOG: i32 = 4096;

/// A listener on `address` (`host:port`) with a backlog of [`BACKLOG`].
pub fn listen(address: &str) -> anyhow::Result<TcpListener> {
    let resolved: SocketAddr = address
        .to_socket_addrs()
        .with_context(|| format!("resolving {address}"))?
        .next()
        .with_context(|| format!("{address} resolves to no address"))?;
    let socket = Socket::new(Domain::for_address(resolved), Type::STREAM, None)?;
    // As std does: a restarted service binds again while old connections wait in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket
        .bind(&resolved.into())
        .with_context(|| format!("binding {address}"))?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_listener_accepts_on_the_port_it_was_given() {
        let listener = super::listen("127.0.0.1:0").expect("listening");
        let port = listener.local_addr().expect("address").port();
        assert_ne!(port, 0);
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connected");
        let (_, peer) = listener.accept().expect("accepted");
        assert!(peer.ip().is_loopback());
    }
}
