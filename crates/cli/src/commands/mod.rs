//! The command tree.

mod car;
mod did_doc;
mod firehose;
mod firehose_json;
mod network;
mod plc;
mod resolve;
mod serve;
mod signals;
mod sim;
mod sync;

pub use sync::load_config_file;

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
    /// Follow a firehose (subscribeRepos or Jetstream) or replay a frame log, verifying every
    /// message; or inspect a frame log offline.
    Firehose(firehose::FirehoseArgs),
    /// Work with did:plc identities.
    #[command(subcommand)]
    Plc(plc::PlcCommand),
    /// Resolve a handle or DID, checking the handle both ways.
    Resolve(resolve::ResolveArgs),
    /// Generate synthetic data for tests and benchmarks.
    #[command(subcommand)]
    Sim(sim::SimCommand),
    /// Sync what a selector document selects into a store, backfilling and then following the
    /// network live.
    Sync(sync::SyncArgs),
    /// Run SQL against a database `sync` wrote (read-only).
    Query(sync::QueryArgs),
    /// Counts per tag, collection and state, and the stream cursor, of a database `sync` wrote.
    Status(sync::StatusArgs),
    /// Sync and serve an HTTP API over the database (XRPC reads, backlinks, a Jetstream-compatible
    /// stream, webhooks, admin, metrics); without a selector, serve a database read-only.
    Serve(serve::ServeArgs),
}

/// What a command found, beyond success or error: checks that ran and failed exit with code 1.
pub enum Outcome {
    Success,
    CheckFailed,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let succeeded = |()| Outcome::Success;
    match cli.command {
        Command::Car(command) => car::run(command).map(succeeded),
        Command::Firehose(args) => firehose::run(args).map(|all_good| {
            if all_good {
                Outcome::Success
            } else {
                Outcome::CheckFailed
            }
        }),
        Command::Plc(command) => plc::run(command).map(|valid| {
            if valid {
                Outcome::Success
            } else {
                Outcome::CheckFailed
            }
        }),
        Command::Resolve(args) => resolve::run(args).map(succeeded),
        Command::Sim(command) => sim::run(command).map(succeeded),
        Command::Sync(args) => sync::run_sync(args).map(succeeded),
        Command::Query(args) => sync::run_query(args).map(succeeded),
        Command::Serve(args) => serve::run_serve(args).map(succeeded),
        Command::Status(args) => sync::run_status(args).map(succeeded),
    }
}
