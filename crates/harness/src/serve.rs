//! The accept loop of the test servers: warp routes over plain TCP or TLS, with a switch that
//! makes the server drop every new connection (a server that is down), and a handle that closes
//! the open ones (a server that restarted).

use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use std::sync::Arc;

use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;
use warp::Filter;

/// Closes a server's open connections.
#[derive(Clone, Debug)]
pub struct Connections(Arc<watch::Sender<u64>>);

impl Connections {
    /// Closes every open connection; clients must connect again.
    pub fn close_all(&self) {
        self.0.send_modify(|generation| *generation += 1);
    }
}

/// Serves `routes` on `listener` for as long as the test's runtime lives.
pub fn spawn<F>(
    listener: TcpListener,
    routes: F,
    tls: Option<TlsAcceptor>,
    down: impl Fn() -> bool + Send + 'static,
) -> Connections
where
    F: Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let (closer, closed) = watch::channel(0u64);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            if down() {
                drop(stream);
                continue;
            }
            let service = TowerToHyperService::new(warp::service(routes.clone()));
            let tls = tls.clone();
            let mut closed = closed.clone();
            closed.mark_unchanged();
            let connection = async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            };
            tokio::spawn(async move {
                tokio::select! {
                    () = connection => {}
                    // Only a close: a dropped handle leaves the connection alone.
                    Ok(()) = closed.changed() => {}
                }
            });
        }
    });
    Connections(Arc::new(closer))
}
