//! `butterfly resolve`: a handle or DID, checked both ways.

use std::io::Write;

use butterfly_syntax::AtIdentifier;
use clap::Args;
use serde_json::json;

use super::network::{runtime, IdentityArgs};

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// A handle (alice.bsky.social) or a DID (did:plc:..., did:web:...).
    #[arg(value_name = "HANDLE_OR_DID")]
    identifier: String,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Print one JSON object: {did, handle, handle_verified, pds, signing_key, doc}.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ResolveArgs) -> anyhow::Result<()> {
    let identifier = AtIdentifier::parse(&args.identifier)?;
    let directory = args.identity.directory()?;
    let identity = runtime()?.block_on(directory.resolve(&identifier))?;
    let signing_key = identity.signing_key.as_ref().map(|key| key.to_did_key());
    let mut out = std::io::stdout().lock();
    if args.json {
        let object = json!({
            "did": identity.did.as_str(),
            "handle": identity.handle.as_ref().map(|handle| handle.as_str()),
            "handle_verified": identity.handle_verified,
            "pds": identity.pds.as_ref().map(|url| url.as_str().trim_end_matches('/')),
            "signing_key": signing_key,
            "doc": &*identity.document,
        });
        serde_json::to_writer(&mut out, &object)?;
        writeln!(out)?;
    } else {
        let handle = match &identity.handle {
            Some(handle) if identity.handle_verified => format!("{handle} (verified both ways)"),
            Some(handle) => format!("{handle} (NOT verified: does not check out both ways)"),
            None => "none".to_owned(),
        };
        let none = || "none".to_owned();
        writeln!(out, "did          {}", identity.did)?;
        writeln!(out, "handle       {handle}")?;
        writeln!(
            out,
            "pds          {}",
            identity
                .pds
                .as_ref()
                .map_or_else(none, |url| url.as_str().trim_end_matches('/').to_owned())
        )?;
        writeln!(out, "signing key  {}", signing_key.unwrap_or_else(none))?;
    }
    Ok(())
}
