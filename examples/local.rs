//! `make run`: a local control plane (from the test harness), the CRDs, the samples on the
//! simulated provider, and the controller, all on this machine with no cloud account.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{path::Path, sync::Arc, time::Duration};

use resource_controller::{
    cli::{Cli, Command},
    controller::{self, Context},
};
use support::ControlPlane;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    // Flags as for `resource-controller run`, with demo-friendly intervals unless given.
    let mut argv = vec![
        "resource-controller".to_owned(),
        "run".to_owned(),
        "--poll-interval=2s".to_owned(),
    ];
    argv.extend(std::env::args().skip(1));
    let Command::Run(args) = <Cli as clap::Parser>::parse_from(argv).command else {
        anyhow::bail!("expected run arguments");
    };

    eprintln!("starting a local kube-apiserver and etcd ...");
    let cp = ControlPlane::shared();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let kubeconfig = root.join("target/local/kubeconfig");
    std::fs::create_dir_all(root.join("target/local"))?;
    std::fs::copy(&cp.kubeconfig, &kubeconfig)?;
    let samples = root.join("deploy/local-simulated");
    cp.kubectl_ok(&[
        "apply",
        "-n",
        "default",
        "-k",
        &samples.display().to_string(),
    ]);
    eprintln!(
        "\nLocal cluster ready; the samples run on the simulated provider. In another terminal:\n\n  \
         export KUBECONFIG={}\n  kubectl get wk -w          (workers go Pending -> Provisioning -> Running)\n  \
         kubectl get wkt,wk -o wide\n  kubectl describe wk personal-1\n\nCtrl-C stops the controller and the cluster.\n",
        kubeconfig.display()
    );
    let kubectl = cp.binaries.kubectl.display().to_string();
    eprintln!(
        "(kubectl {} is built from the same Kubernetes version)\n",
        kubectl
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = cp.client().await;
        let ctx = Arc::new(Context::new(
            client,
            args.settings(),
            args.providers(),
            "local",
        ));
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        controller::run(ctx, shutdown).await;
        // Give in-flight status writes a moment before the cluster goes away.
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    Ok(())
}
