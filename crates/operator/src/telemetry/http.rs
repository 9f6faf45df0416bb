//! HTTP on `HEALTH_PORT` (warp): `/health` (liveness), `/readyz` (200 once the caches are synced,
//! with a body saying so) and `/metrics` (OpenMetrics text).

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use warp::{Filter, http::StatusCode, reply::Reply};

use super::Metrics;

/// Whether the controller is ready, and what `/readyz` says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    pub ready: bool,
    pub detail: String,
}

impl Ready {
    /// Ready once the caches are synced; the detail says which.
    pub fn caches(synced: bool) -> Ready {
        let detail = if synced {
            "ready: caches synced"
        } else {
            "not ready: caches syncing"
        };
        Ready {
            ready: synced,
            detail: detail.into(),
        }
    }
}

/// Asked at each `/readyz`.
pub type Readiness = Arc<dyn Fn() -> Ready + Send + Sync>;
/// Brings pull-style figures (counters kept elsewhere) into the metrics before a scrape.
pub type Collect = Arc<dyn Fn(&Metrics) + Send + Sync>;

pub fn routes(
    metrics: Arc<Metrics>,
    ready: Readiness,
    collect: Collect,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
+ Clone
+ Send
+ Sync
+ 'static {
    let health = warp::path!("health")
        .and(warp::get())
        .map(|| warp::reply::with_status("ok", StatusCode::OK).into_response());
    let readyz = warp::path!("readyz").and(warp::get()).map(move || {
        let Ready { ready, detail } = ready();
        let code = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        warp::reply::with_status(detail, code).into_response()
    });
    let scrape = warp::path!("metrics").and(warp::get()).map(move || {
        collect(&metrics);
        warp::reply::with_header(
            metrics.encode(),
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .into_response()
    });
    health.or(readyz).unify().or(scrape).unify()
}

/// Serves until `shutdown` resolves; an address that cannot be bound is an error at start-up.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Readiness,
    collect: Collect,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), std::io::Error> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let routes = routes(metrics, ready, collect).recover(|_| async {
        Ok::<_, Infallible>(warp::reply::with_status("not found", StatusCode::NOT_FOUND))
    });
    tokio::spawn(
        warp::serve(routes)
            .incoming(listener)
            .graceful(shutdown)
            .run(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn health_readiness_and_metrics_answer() {
        let metrics = Arc::new(Metrics::default());
        let synced = Arc::new(AtomicBool::new(false));
        let flag = synced.clone();
        let ready: Readiness = Arc::new(move || Ready::caches(flag.load(Ordering::Relaxed)));
        let collect: Collect = Arc::new(|m: &Metrics| m.audit_dropped_total(2));
        let routes = routes(metrics.clone(), ready, collect);

        let r = warp::test::request().path("/health").reply(&routes).await;
        assert_eq!(r.status(), 200);
        let r = warp::test::request().path("/readyz").reply(&routes).await;
        assert_eq!(
            (r.status().as_u16(), r.body().as_ref()),
            (503, &b"not ready: caches syncing"[..])
        );
        synced.store(true, Ordering::Relaxed);
        let r = warp::test::request().path("/readyz").reply(&routes).await;
        assert_eq!(r.status(), 200);

        metrics.reconciled("template", true, std::time::Duration::from_millis(5));
        let r = warp::test::request().path("/metrics").reply(&routes).await;
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .expect("header")
                .starts_with("application/openmetrics-text")
        );
        let body = String::from_utf8_lossy(r.body());
        assert!(
            body.contains("ccm_reconciles_total{controller=\"template\",result=\"ok\"} 1"),
            "{body}"
        );
        assert!(body.contains("ccm_audit_records_dropped_total 2"), "{body}");
    }
}
