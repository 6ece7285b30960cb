//! `butterfly sim`: synthetic data.

use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Write a validly signed repo CAR of realistic records, deterministic for a given seed.
    Repo(RepoArgs),
    /// Write a frame log of validly signed sync 1.1 traffic from many repos, and their DID documents.
    Firehose(FirehoseArgs),
    /// Serve a frame log and its DID documents as a local network (firehose, sync XRPC, PLC), with
    /// optional faults, until Ctrl-C.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct RepoArgs {
    /// Number of records (a profile, then posts, likes, reposts, follows and blocks).
    #[arg(long)]
    records: u64,
    /// Seed for the DID, the key and every record.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the CAR.
    #[arg(long)]
    out: PathBuf,
    /// Also write the signing key's did:key to this file.
    #[arg(long)]
    did_key_out: Option<PathBuf>,
    /// Also write a DID document (for `car inspect --did-doc`) to this file.
    #[arg(long)]
    did_doc_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FirehoseArgs {
    /// Number of repos (each gets a DID document; each starts empty).
    #[arg(long)]
    repos: u64,
    /// Number of events (frames), with `seq` from 1.
    #[arg(long)]
    events: u64,
    /// Seed for every DID, key, choice and record.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the frame log.
    #[arg(long)]
    out: PathBuf,
    /// Where to write the DID documents, as one JSON array.
    #[arg(long)]
    identities_out: PathBuf,
    /// Also write every repo's state after the last event to this file, as JSON lines sorted by
    /// DID: `{"did","active","rev","data","records":[[collection, rkey, cid], ...]}`.
    #[arg(long)]
    expected: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The frame log to serve (from `sim firehose`).
    #[arg(long)]
    frames: PathBuf,
    /// The DID documents (from `sim firehose --identities-out`).
    #[arg(long)]
    identities: PathBuf,
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Events per second the firehose head advances; 0 releases the whole log at startup.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Close each WebSocket after this many frames.
    #[arg(long)]
    disconnect_every: Option<u64>,
    /// Go silent once per connection after this many frames (for --stall-secs).
    #[arg(long)]
    stall_after: Option<u64>,
    /// How long a stall lasts, in seconds.
    #[arg(long, default_value_t = 10.0, requires = "stall_after")]
    stall_secs: f64,
    /// Send a garbage frame before every Nth frame on a connection (no seq is lost).
    #[arg(long)]
    malformed_every: Option<u64>,
    /// Re-sign every Nth #commit with a wrong key.
    #[arg(long)]
    forge_every: Option<u64>,
    /// Answer every Nth XRPC request with 429 and Retry-After: 1.
    #[arg(long)]
    rate_limit_every: Option<u64>,
    /// Stamp each event's `time` with the moment it is sent, as a relay does, so that a
    /// consumer's lag is measured against the stream rather than the generated log's clock.
    #[arg(long)]
    retime: bool,
}

pub fn run(command: SimCommand) -> anyhow::Result<()> {
    match command {
        SimCommand::Repo(args) => repo(args),
        SimCommand::Firehose(args) => firehose(args),
        SimCommand::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = butterfly_simnet::SimConfig::from_files(&args.frames, &args.identities)?;
    config.listen = args.listen;
    config.rate = args.rate;
    config.retime = args.retime;
    let stall = match args.stall_after {
        Some(after) => {
            let duration = std::time::Duration::try_from_secs_f64(args.stall_secs)
                .context("--stall-secs must be a non-negative number of seconds")?;
            Some(butterfly_simnet::Stall { after, duration })
        }
        None => None,
    };
    config.faults = butterfly_simnet::Faults {
        disconnect_every: args.disconnect_every.unwrap_or(0),
        stall,
        malformed_every: args.malformed_every.unwrap_or(0),
        forge_every: args.forge_every.unwrap_or(0),
        rate_limit_every: args.rate_limit_every.unwrap_or(0),
    };
    super::network::runtime()?.block_on(async move {
        let sim = butterfly_simnet::SimNetwork::start(config).await?;
        println!("{}", sim.ready_json());
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        let stats = serde_json::to_value(sim.stats())?;
        sim.shutdown().await;
        println!("{}", serde_json::json!({ "stopped": true, "stats": stats }));
        Ok(())
    })
}

fn firehose(args: FirehoseArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.repos > 0, "--repos must be at least 1");
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let spec = butterfly_sim::firehose::FirehoseSpec {
        repos: args.repos,
        events: args.events,
        seed: args.seed,
        mix: butterfly_sim::firehose::EventMix::default(),
    };
    let generated = butterfly_sim::firehose::generate_firehose(&spec, file)
        .with_context(|| format!("writing {}", args.out.display()))?;
    std::fs::write(
        &args.identities_out,
        butterfly_sim::firehose::identities_json(&generated.identities),
    )
    .with_context(|| format!("writing {}", args.identities_out.display()))?;
    if let Some(path) = &args.expected {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        butterfly_sim::firehose::write_expected_state(&generated.expected, file)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let summary = &generated.summary;
    let json = serde_json::json!({
        "out": args.out,
        "identities_out": args.identities_out,
        "expected": args.expected,
        "repos": summary.repos,
        "repos_with_commits": summary.repos_with_commits,
        "events": summary.events,
        "frames": {
            "#commit": summary.commits,
            "#sync": summary.syncs,
            "#identity": summary.identities,
            "#account": summary.accounts,
        },
        "ops": summary.ops,
        "bytes": summary.bytes,
    });
    println!("{json}");
    Ok(())
}

fn repo(args: RepoArgs) -> anyhow::Result<()> {
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let spec = butterfly_sim::RepoSpec {
        records: args.records,
        seed: args.seed,
    };
    let repo = butterfly_sim::generate_repo(&spec, file)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let did_key = repo.key.public_key().to_did_key();
    if let Some(path) = &args.did_key_out {
        std::fs::write(path, format!("{did_key}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.did_doc_out {
        std::fs::write(path, repo.did_document_json())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let summary = serde_json::json!({
        "out": args.out,
        "did": repo.did.as_str(),
        "did_key": did_key,
        "root": repo.commit.to_string(),
        "rev": repo.rev.as_str(),
        "data": repo.data.to_string(),
        "records": repo.n_records,
        "blocks": repo.n_blocks,
    });
    println!("{summary}");
    Ok(())
}
