use clap::Parser;
use resource_controller::cli::{Cli, run};

fn main() -> anyhow::Result<()> {
    run(Cli::parse())
}
