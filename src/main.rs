use clap::Parser;
use resource_controller::{
    cli::{Cli, run},
    telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format);
    run(cli).await
}
