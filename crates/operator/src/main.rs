use clap::Parser;
use resource_controller::{
    cli::{Cli, run},
    telemetry,
};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format);
    cli.runtime()?.block_on(run(cli))
}
