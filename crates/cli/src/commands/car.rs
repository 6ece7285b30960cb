//! `butterfly car`: inspect and list repo CAR files.
//!
//! Both commands make one streaming pass over the file to check every block's hash and index where
//! it is, then walk the MST in key order reading nodes and records back by offset. Memory stays near
//! 48 bytes per block however large the repo.

use super::did_doc;
use anyhow::{anyhow, bail, Context};
use butterfly_data::{Cid, Value};
use butterfly_repo::car::CarLimits;
use butterfly_repo::commit::Commit;
use butterfly_repo::mst::{self, WalkItem};
use butterfly_repo::{BlockSource, IndexedCar, SharedSource};
use clap::{Args, Subcommand};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum CarCommand {
    /// Parse and verify a repo CAR: hashes, commit, MST, and the signature if a DID document is given.
    Inspect(InspectArgs),
    /// Print every record as one JSON line: {"uri", "cid", "value"} (value null if its block is missing).
    Records(RecordsArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The CAR file.
    file: PathBuf,
    /// A DID document (JSON) holding the repo's signing key; without it the signature is "unchecked".
    #[arg(long)]
    did_doc: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RecordsArgs {
    /// The CAR file.
    file: PathBuf,
}

pub fn run(command: CarCommand) -> anyhow::Result<()> {
    match command {
        CarCommand::Inspect(args) => inspect(args),
        CarCommand::Records(args) => records(args),
    }
}

/// A CAR opened for walking, shared so that presence checks can run while a walk holds the source.
struct OpenRepo {
    car: RefCell<IndexedCar<File>>,
    root: Cid,
    commit: Commit,
}

fn open_repo(path: &Path) -> anyhow::Result<OpenRepo> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut car = IndexedCar::build(file, CarLimits::default())
        .with_context(|| format!("reading {}", path.display()))?;
    let root = match car.header().roots.as_slice() {
        [root] => *root,
        roots => bail!(
            "{}: a repo CAR has exactly one root, found {}",
            path.display(),
            roots.len()
        ),
    };
    let commit_bytes = car
        .get_block(&root)?
        .ok_or_else(|| anyhow!("{}: the commit block {root} is missing", path.display()))?;
    let commit = Commit::decode(&root, &commit_bytes)?;
    Ok(OpenRepo {
        car: RefCell::new(car),
        root,
        commit,
    })
}

fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let repo = open_repo(&args.file)?;
    let signature = match &args.did_doc {
        None => "unchecked",
        Some(path) => {
            let identity = did_doc::read(path)?;
            if identity.did.as_str() != repo.commit.did.as_str() {
                "did-mismatch"
            } else if repo.commit.verify_signature(&identity.key).is_ok() {
                "valid"
            } else {
                "invalid"
            }
        }
    };

    let mut collections: BTreeMap<String, u64> = BTreeMap::new();
    let (mut n_records, mut missing_blocks) = (0u64, 0u64);
    let mut source = SharedSource(&repo.car);
    for item in mst::walk(repo.commit.data, &mut source) {
        match item.with_context(|| format!("walking the MST of {}", args.file.display()))? {
            WalkItem::Record { key, cid } => {
                n_records += 1;
                let collection = key.split_once('/').map_or(key.as_str(), |(c, _)| c);
                match collections.get_mut(collection) {
                    Some(count) => *count += 1,
                    None => {
                        collections.insert(collection.to_owned(), 1);
                    }
                }
                if !repo.car.borrow().contains(&cid) {
                    missing_blocks += 1;
                }
            }
            WalkItem::MissingNode(_) => missing_blocks += 1,
        }
    }
    let commit = &repo.commit;
    let n_blocks = repo.car.borrow().n_blocks();
    let report = serde_json::json!({
        "root": repo.root.to_string(),
        "did": commit.did.as_str(),
        "rev": commit.rev.as_ref().map(|rev| rev.as_str()),
        "version": commit.version,
        "data": commit.data.to_string(),
        "prev": commit.prev.map(|cid| cid.to_string()),
        "blocks": n_blocks,
        "records": n_records,
        "collections": collections,
        "missing_blocks": missing_blocks,
        "complete": missing_blocks == 0,
        "signature": signature,
    });
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{report}")?;
    } else {
        writeln!(
            out,
            "repo      {} (commit v{}, rev {})",
            commit.did,
            commit.version,
            commit.rev.as_ref().map_or("none", |r| r.as_str())
        )?;
        writeln!(out, "root      {}", repo.root)?;
        writeln!(out, "data      {}", commit.data)?;
        writeln!(out, "blocks    {n_blocks}")?;
        writeln!(out, "records   {n_records}")?;
        for (collection, count) in &collections {
            writeln!(out, "  {count:>9}  {collection}")?;
        }
        writeln!(
            out,
            "missing   {missing_blocks} blocks ({})",
            if missing_blocks == 0 {
                "complete"
            } else {
                "partial"
            }
        )?;
        writeln!(out, "signature {signature}")?;
    }
    Ok(())
}

fn records(args: RecordsArgs) -> anyhow::Result<()> {
    let repo = open_repo(&args.file)?;
    let did = repo.commit.did.as_str().to_owned();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut source = SharedSource(&repo.car);
    for item in mst::walk(repo.commit.data, &mut source) {
        match item.with_context(|| format!("walking the MST of {}", args.file.display()))? {
            WalkItem::Record { key, cid } => {
                let mut line = serde_json::Map::new();
                line.insert("uri".into(), format!("at://{did}/{key}").into());
                line.insert("cid".into(), cid.to_string().into());
                let decoded = repo
                    .car
                    .borrow_mut()
                    .get_block(&cid)?
                    .map(|bytes| Value::from_cbor(&bytes));
                match decoded {
                    Some(Ok(value)) => {
                        line.insert("value".into(), value.to_json());
                    }
                    Some(Err(error)) => {
                        line.insert("value".into(), serde_json::Value::Null);
                        line.insert("error".into(), error.to_string().into());
                    }
                    None => {
                        line.insert("value".into(), serde_json::Value::Null);
                    }
                }
                serde_json::to_writer(&mut out, &line)?;
                out.write_all(b"\n")?;
            }
            WalkItem::MissingNode(cid) => {
                eprintln!(
                    "butterfly: mst node {cid} is missing; the records under it are not listed"
                );
            }
        }
    }
    out.flush()?;
    Ok(())
}
