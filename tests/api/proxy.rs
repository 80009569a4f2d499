//! A TCP forwarder for fault injection: put it between the application and a back-end (the
//! database, Redis, the cloud store) and switch the back-end "off", "hung" and "on" without
//! touching the real server.
//!
//! Down: every forwarded connection is closed at once and new connections are accepted and
//! closed immediately, so clients see errors quickly instead of hanging. Blackholed: every
//! connection stays open, new ones are accepted, and no byte goes either way (a partition, a
//! stuck server, a firewall dropping packets); what was sent meanwhile is delivered once the
//! proxy forwards again, as TCP would after a partition heals. Dropping the proxy ends every
//! task it spawned.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Down,
    Blackhole,
}

pub struct Proxy {
    address: SocketAddr,
    mode: watch::Sender<Mode>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy on a loopback port");
        let address = listener.local_addr().expect("proxy address");
        let (mode, watching) = watch::channel(Mode::Forward);
        let accepting = tokio::spawn(accept_loop(listener, upstream, watching));
        Self {
            address,
            mode,
            accepting,
        }
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// `true`: cut every forwarded connection now and refuse (accept, then close) new ones.
    /// `false`: forward again.
    pub fn set_down(&self, down: bool) {
        self.set_mode(if down { Mode::Down } else { Mode::Forward });
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (a JoinSet): aborting it aborts them all.
        self.accepting.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                if *mode.borrow() == Mode::Down {
                    drop(client);
                    continue;
                }
                connections.spawn(forward(client, upstream, mode.clone()));
            }
            // Reap finished connections so the set does not grow for the proxy's lifetime.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Waits until the proxy forwards: `false` if it went down (or is gone) instead.
async fn forwarding(mode: &mut watch::Receiver<Mode>) -> bool {
    match mode.wait_for(|m| *m != Mode::Blackhole).await {
        Ok(m) => *m == Mode::Forward,
        Err(_) => false,
    }
}

/// Copies bytes both ways until either side closes or the proxy goes down; both sockets are
/// closed when this returns. A connection opened while blackholed reaches the upstream only
/// once the proxy forwards again.
async fn forward(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    if !forwarding(&mut mode).await {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut went_down = mode.clone();
    tokio::select! {
        _ = went_down.wait_for(|m| *m == Mode::Down) => {}
        _ = pump(client_read, server_write, mode.clone()) => {}
        _ = pump(server_read, client_write, mode) => {}
    }
}

/// One direction: reads only while forwarding, and holds what it read while blackholed.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if !forwarding(&mut mode).await {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            // Stop reading the moment the proxy blackholes (or goes down), then look again.
            _ = mode.wait_for(|m| *m != Mode::Forward) => continue,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !forwarding(&mut mode).await || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
