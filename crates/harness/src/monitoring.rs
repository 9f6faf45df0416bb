//! What checks `deploy/monitoring`: promtool, promql-names and the Prometheus Operator's CRDs,
//! built by `make monitoring-tools` into `target/tools` (or `MONITORING_TOOLS_DIR`).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

/// Where the tools are.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("MONITORING_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("target/tools"))
}

fn tool(name: &str) -> PathBuf {
    let path = tools_dir().join(name);
    assert!(
        path.is_file(),
        "no {}: run `make monitoring-tools`",
        path.display()
    );
    path
}

pub fn promtool() -> Command {
    Command::new(tool("promtool"))
}

/// The Prometheus Operator's CRDs for PrometheusRule and ServiceMonitor.
pub fn operator_crds() -> Vec<PathBuf> {
    ["prometheusrules", "servicemonitors"]
        .iter()
        .map(|c| {
            tools_dir()
                .join("crds")
                .join(format!("monitoring.coreos.com_{c}.yaml"))
        })
        .collect()
}

/// The component's files.
pub fn component() -> PathBuf {
    crate::repo_root().join("deploy/monitoring")
}

/// The metric names the PromQL expressions of `files` select; an expression that does not parse
/// is an error naming it.
pub fn queried_metrics(files: &[&Path]) -> Result<BTreeSet<String>, String> {
    let out = Command::new(tool("promql-names"))
        .args(files)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// The PrometheusRule's `spec` as a plain Prometheus rule file, for promtool.
pub fn rule_file(prometheus_rule: &Path) -> String {
    let text = std::fs::read_to_string(prometheus_rule).expect("read the PrometheusRule");
    let rule: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("PrometheusRule YAML");
    serde_yaml_ng::to_string(&rule["spec"]).expect("rule file")
}

/// Scrapes `ctx`'s controller as Prometheus would: its `/metrics` endpoint served on a free
/// local port, read over HTTP once.
pub async fn scrape(ctx: &std::sync::Arc<resource_controller::controller::Context>) -> String {
    use resource_controller::telemetry::http::{Ready, serve};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let collect = ctx.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    serve(
        addr,
        ctx.metrics.clone(),
        std::sync::Arc::new(|| Ready {
            ready: true,
            detail: String::new(),
        }),
        std::sync::Arc::new(move |_| collect.collect_metrics()),
        async {
            let _ = stopped.await;
        },
    )
    .await
    .expect("serve /metrics");
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .and_then(|r| r.error_for_status())
        .expect("scrape /metrics")
        .text()
        .await
        .expect("metrics text");
    let _ = stop.send(());
    body
}
