//! `run`: the controller as one process: the parts wired, health and metrics served, leadership
//! won through the Lease, and a clean stop on SIGTERM.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Args;
use tokio::{sync::watch, task::JoinHandle};

use super::{RunArgs, wiring::remotes};
use crate::{
    controller::{self, Context},
    leader::{ElectionConfig, Elector},
    telemetry::http::Ready,
};

#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// Threads running the controller's tasks. One thread (the default) spends least: its work
    /// is waiting on the network, and a second thread costs a wake-up for each hand-over.
    #[arg(long, env = "RUNTIME_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub runtime_threads: u16,
}

impl RuntimeArgs {
    /// One thread runs everything on the thread that starts it; more share the work.
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = match self.runtime_threads {
            1 => tokio::runtime::Builder::new_current_thread(),
            n => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(usize::from(n));
                b
            }
        };
        builder.enable_all().build()
    }
}

/// Whether this replica leads, as the elector last said (always, without election).
type Leading = watch::Receiver<bool>;

/// `run`: builds the controller, serves health and metrics, waits to lead, then reconciles
/// until SIGTERM (releasing the Lease) or until the Lease is lost (exiting at once).
pub(super) async fn run_controller(args: RunArgs) -> anyhow::Result<()> {
    args.election.check()?;
    let client = kube::Client::try_default().await?;
    let identity = args.controller.identity();
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            args.settings(),
            args.providers()?,
            &identity,
        )
        .with_remotes(remotes(&args, &client).await?),
    );
    let (leading_tx, mut leading) = watch::channel(!args.election.leader_election);
    if args.election.leader_election {
        ctx.stand_by();
    }
    if args.controller.health_port != 0 {
        serve_health(args.controller.health_port, &ctx, leading.clone()).await?;
    }
    let (stop_elector, elector_stop) = watch::channel(false);
    let elector = args.election.leader_election.then(|| {
        let config = election_config(&args, &identity);
        tracing::info!(lease = %config.name, namespace = %config.namespace, %identity, "waiting to lead");
        start_elector(client, config, ctx.clone(), leading_tx, elector_stop)
    });
    let mut signal = Box::pin(shutdown_signal());
    let stopped_before_leading = tokio::select! {
        _ = leading.wait_for(|l| *l) => false,
        _ = &mut signal => true,
    };
    if !stopped_before_leading {
        lead(ctx, leading, signal).await;
    }
    // Release the Lease (when still held) so a standby takes over at once.
    let _ = stop_elector.send(true);
    if let Some(e) = elector {
        let _ = e.await;
    }
    Ok(())
}

/// `/health`, `/readyz` (the leader's caches, or standing by) and `/metrics` on `port`.
async fn serve_health(port: u16, ctx: &Arc<Context>, leading: Leading) -> anyhow::Result<()> {
    let addr = std::net::SocketAddr::from(([0, 0, 0, 0], port));
    let (ready, collect) = (ctx.clone(), ctx.clone());
    crate::telemetry::http::serve(
        addr,
        ctx.metrics.clone(),
        Arc::new(move || {
            if *leading.borrow() {
                let Ready { ready, detail } = ready.readiness();
                Ready {
                    ready,
                    detail: format!("leader: {detail}"),
                }
            } else {
                Ready {
                    ready: true,
                    detail: "standby: another replica leads".to_owned(),
                }
            }
        }),
        Arc::new(move |_| collect.collect_metrics()),
        std::future::pending(),
    )
    .await
    .with_context(|| format!("serving health and metrics on {addr}"))
}

fn election_config(args: &RunArgs, identity: &str) -> ElectionConfig {
    let e = &args.election;
    ElectionConfig {
        name: e.leader_lease_name.clone(),
        namespace: e.lease_namespace(),
        identity: identity.to_owned(),
        lease_duration: Duration::from_secs(e.leader_lease_ttl.max(1)),
        renew_deadline: e.leader_renew_deadline.as_std(),
        retry_period: e.leader_retry_period.as_std(),
    }
}

/// Runs the elector until `stop`; each change of leadership goes to `ctx` and `leading`.
fn start_elector(
    client: kube::Client,
    config: ElectionConfig,
    ctx: Arc<Context>,
    leading: watch::Sender<bool>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (tx, mut rx) = watch::channel(false);
        let forward = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let now = *rx.borrow();
                ctx.set_leading(now);
                let _ = leading.send(now);
            }
        });
        Elector::new(client, config).run(tx, stop).await;
        forward.abort();
    })
}

/// Reconciles until `signal`. A replica that loses the Lease exits at once, as
/// controller-runtime does: nothing it had in flight may go on once another replica can lead,
/// and it starts afresh as a standby.
async fn lead(
    ctx: Arc<Context>,
    leading: Leading,
    signal: impl Future<Output = ()> + Send + Sync + 'static,
) {
    tracing::info!(
        cluster_id = %ctx.settings.cluster_id,
        namespace = ?ctx.settings.namespace,
        control_plane = ?ctx.remotes.control_plane().map(|c| c.base_url().to_owned()),
        etcd = ctx.remotes.etcd().is_some(),
        "starting"
    );
    let mut lease_held = leading;
    let lost = async move {
        if lease_held.wait_for(|l| !*l).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = controller::run(ctx, signal) => {}
        _ = lost => {
            tracing::error!("lost the leader lease; exiting so this replica starts afresh");
            std::process::exit(1);
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
