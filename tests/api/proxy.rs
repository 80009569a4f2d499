//! A TCP forwarder for fault injection: put it between the application and a back-end (the
//! database, Redis) and switch the back-end "off" and "on" without touching the real server.
//!
//! While down, every forwarded connection is closed at once and new connections are accepted and
//! closed immediately, so clients see errors quickly instead of hanging. Dropping the proxy ends
//! every task it spawned.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub struct Proxy {
    address: SocketAddr,
    down: watch::Sender<bool>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy on a loopback port");
        let address = listener.local_addr().expect("proxy address");
        let (down, watching) = watch::channel(false);
        let accepting = tokio::spawn(accept_loop(listener, upstream, watching));
        Self {
            address,
            down,
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
        self.down.send_replace(down);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (a JoinSet): aborting it aborts them all.
        self.accepting.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, down: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                if *down.borrow() {
                    drop(client);
                    continue;
                }
                connections.spawn(forward(client, upstream, down.clone()));
            }
            // Reap finished connections so the set does not grow for the proxy's lifetime.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Copies bytes both ways until either side closes or the proxy goes down; both sockets are
/// closed when this returns.
async fn forward(mut client: TcpStream, upstream: SocketAddr, mut down: watch::Receiver<bool>) {
    let went_down = async move {
        // An error means the proxy itself is gone: close too.
        let _ = down.wait_for(|is_down| *is_down).await;
    };
    tokio::select! {
        _ = went_down => {}
        _ = async {
            if let Ok(mut server) = TcpStream::connect(upstream).await {
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        } => {}
    }
}
