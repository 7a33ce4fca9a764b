//! A TCP proxy in front of a mock server that goes away and comes back on the
//! same port, as a restarting homeserver does: while it is down, new
//! connections are refused and open ones are cut.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

pub struct OutageProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    accept: Mutex<Option<JoinHandle<()>>>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl OutageProxy {
    /// A proxy on a free loopback port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let proxy = OutageProxy {
            addr: listener.local_addr().expect("its address"),
            upstream,
            accept: Mutex::new(None),
            connections: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&self, listener: TcpListener) {
        let (upstream, connections) = (self.upstream, self.connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                connections.lock().unwrap().push(conn.abort_handle());
            }
        });
        *self.accept.lock().unwrap() = Some(accept);
    }

    /// The server goes away: the port is closed and every open connection cut.
    pub async fn go_down(&self) {
        if let Some(accept) = self.accept.lock().unwrap().take() {
            accept.abort();
        }
        for conn in self.connections.lock().unwrap().drain(..) {
            conn.abort();
        }
        // Let the aborted tasks drop their sockets.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            std::net::TcpStream::connect(self.addr).is_err(),
            "the port refuses connections while down"
        );
    }

    /// The server is back on the same port.
    pub async fn come_back(&self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("the same port again");
        self.serve(listener);
    }
}
