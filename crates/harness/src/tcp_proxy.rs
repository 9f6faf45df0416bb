//! A TCP proxy in front of a server that a test can cut: from then on it forwards nothing and
//! closes nothing, like a network partition (requests hang until the client gives up).

use std::sync::Arc;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

pub struct TcpProxy {
    pub port: u16,
    cut: Arc<watch::Sender<bool>>,
}

impl TcpProxy {
    /// Forwards connections on a free loopback port to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let cut = Arc::new(watch::channel(false).0);
        let accepting = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, cut) = (upstream.clone(), accepting.subscribe());
                tokio::spawn(async move {
                    if *cut.borrow() {
                        // Held open, never answered.
                        return hold(client).await;
                    }
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, cut.clone()), pipe(sr, cw, cut));
                });
            }
        });
        TcpProxy { port, cut }
    }

    /// From now on nothing passes, in either direction, on old or new connections.
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }
}

async fn hold(socket: TcpStream) {
    std::future::pending::<()>().await;
    drop(socket);
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = cut.wait_for(|c| *c) => break,
        };
        if *cut.borrow() || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    // Cut: keep both halves open and silent.
    std::future::pending::<()>().await;
    drop((from, to));
}
