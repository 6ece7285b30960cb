//! `butterfly sim`: synthetic data.

use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Write a validly signed repo CAR of realistic records, deterministic for a given seed.
    Repo(RepoArgs),
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

pub fn run(command: SimCommand) -> anyhow::Result<()> {
    match command {
        SimCommand::Repo(args) => repo(args),
    }
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
