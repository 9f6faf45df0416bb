//! Command-line interface: small argument structs, one per subcommand.

use std::{io::Write, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::crd;

/// Keeps a fleet of Cisco Modeling Labs workers on AWS EC2 in the shape the lab platform needs.
#[derive(Debug, Parser)]
#[command(name = "resource-controller", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the CustomResourceDefinitions as YAML (or write one file per CRD).
    Crds(CrdsArgs),
}

#[derive(Debug, Args)]
pub struct CrdsArgs {
    /// Write `<plural>.<group>.yaml` files into this directory instead of printing to stdout.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crds(args) => print_crds(&args),
    }
}

fn print_crds(args: &CrdsArgs) -> anyhow::Result<()> {
    match &args.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            for (file, crd) in crd::all() {
                std::fs::write(dir.join(file), crd::to_yaml(&crd)?)?;
            }
        }
        None => std::io::stdout().write_all(crd::all_yaml()?.as_bytes())?,
    }
    Ok(())
}
