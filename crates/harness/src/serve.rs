//! The accept loop of the test servers: warp routes over plain TCP or TLS, with a switch that
//! makes the server drop every new connection (a server that is down).

use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use warp::Filter;

/// Serves `routes` on `listener` for as long as the test's runtime lives.
pub fn spawn<F>(
    listener: TcpListener,
    routes: F,
    tls: Option<TlsAcceptor>,
    down: impl Fn() -> bool + Send + 'static,
) where
    F: Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
        + Clone
        + Send
        + Sync
        + 'static,
{
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
            tokio::spawn(async move {
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
            });
        }
    });
}
