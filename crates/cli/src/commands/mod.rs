//! The command tree.

mod car;
mod did_doc;
mod network;
mod resolve;
mod sim;

use clap::{Parser, Subcommand};

/// Butterfly: a sync engine and SDK for the AT Protocol.
#[derive(Debug, Parser)]
#[command(name = "butterfly", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read, verify and list repo CAR files.
    #[command(subcommand)]
    Car(car::CarCommand),
    /// Resolve a handle or DID, checking the handle both ways.
    Resolve(resolve::ResolveArgs),
    /// Generate synthetic data for tests and benchmarks.
    #[command(subcommand)]
    Sim(sim::SimCommand),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Car(command) => car::run(command),
        Command::Resolve(args) => resolve::run(args),
        Command::Sim(command) => sim::run(command),
    }
}
