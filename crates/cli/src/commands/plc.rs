//! `butterfly plc audit`: verify a DID's whole PLC operation log.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use butterfly_identity::plc::{self, AuditReport, PlcState};
use butterfly_syntax::Did;
use clap::{Args, Subcommand};
use serde_json::json;

use super::network::{runtime, NetworkArgs};

#[derive(Debug, Subcommand)]
pub enum PlcCommand {
    /// Verify a DID's PLC audit log (signatures, CIDs, the DID itself, nullification, tombstones), from
    /// the directory or from a saved file. Exits 0 if valid, 1 if not, 2 on errors.
    Audit(AuditArgs),
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The did:plc to audit (fetched from the directory unless --log is given).
    #[arg(value_name = "DID", required_unless_present = "log")]
    did: Option<String>,
    /// Read the audit log (the JSON of GET /{did}/log/audit) from this file instead; works offline.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// The PLC directory.
    #[arg(long = "plc", value_name = "URL", env = "BUTTERFLY_PLC_URL", default_value = butterfly_identity::DEFAULT_PLC_URL)]
    plc_url: url::Url,
    /// Accepted for symmetry with `resolve`; audits do not resolve handles.
    #[arg(
        long,
        value_name = "URL",
        env = "BUTTERFLY_HANDLE_RESOLVER",
        hide = true
    )]
    handle_resolver: Option<url::Url>,
    #[command(flatten)]
    network: NetworkArgs,
    /// Print one JSON object: {did, valid, error, handle, pds, signing_key, ops, nullified}.
    #[arg(long)]
    json: bool,
}

/// The outcome: `Ok(true)` valid, `Ok(false)` invalid (exit 1), `Err` could not check (exit 2).
pub fn run(command: PlcCommand) -> anyhow::Result<bool> {
    match command {
        PlcCommand::Audit(args) => audit(args),
    }
}

fn audit(args: AuditArgs) -> anyhow::Result<bool> {
    let given_did = args.did.as_deref().map(Did::parse).transpose()?;
    if let Some(did) = &given_did {
        if did.method() != "plc" {
            bail!("{did}: audit logs exist only for did:plc");
        }
    }
    let bytes = match (&args.log, &given_did) {
        (Some(path), _) => {
            std::fs::read(path).with_context(|| format!("reading audit log {}", path.display()))?
        }
        (None, Some(did)) => {
            let resolver = butterfly_identity::Resolver::new(
                args.network.http_client()?,
                butterfly_identity::ResolverConfig {
                    plc_url: args.plc_url.clone(),
                    ..butterfly_identity::ResolverConfig::default()
                },
            )?;
            runtime()?.block_on(resolver.fetch_plc_audit_log(did))?
        }
        (None, None) => bail!("give a DID or --log FILE"),
    };

    // A log that does not even parse is an invalid log, not a failure of the command.
    let (did, outcome) = match plc::parse_audit_log(&bytes) {
        Ok(entries) => {
            let did = match (&given_did, entries.first()) {
                (Some(did), _) => Some(did.clone()),
                (None, Some(first)) => Some(first.did().clone()),
                (None, None) => None,
            };
            let outcome = match &did {
                Some(did) => Ok(plc::verify_audit_log(did, &entries)),
                None => Err("the audit log is empty".to_owned()),
            };
            (did, outcome)
        }
        Err(error) => (given_did.clone(), Err(error.to_string())),
    };
    let report: Option<&AuditReport> = outcome.as_ref().ok();
    let error = match &outcome {
        Ok(report) => report.error().map(ToString::to_string),
        Err(message) => Some(message.clone()),
    };
    let valid = error.is_none();
    let state = report.and_then(AuditReport::state);
    let handle = state.and_then(PlcState::handle);
    let pds = state.and_then(PlcState::pds_endpoint);
    let signing_key = state.and_then(PlcState::signing_key);
    let tombstoned = state.is_some_and(PlcState::is_tombstoned);
    let ops = report.map_or(0, AuditReport::ops);
    let nullified = report.map_or(0, AuditReport::nullified);

    let mut out = std::io::stdout().lock();
    if args.json {
        let object = json!({
            "did": did.as_ref().map(Did::as_str),
            "valid": valid,
            "error": error,
            "handle": handle,
            "pds": pds,
            "signing_key": signing_key,
            "ops": ops,
            "nullified": nullified,
        });
        serde_json::to_writer(&mut out, &object)?;
        writeln!(out)?;
    } else {
        let none = "none";
        let did_text = did.as_ref().map_or("unknown", Did::as_str);
        match &error {
            None if tombstoned => {
                writeln!(out, "{did_text}: valid audit log; the DID is tombstoned")?
            }
            None => writeln!(out, "{did_text}: valid audit log")?,
            Some(error) => writeln!(out, "{did_text}: INVALID audit log: {error}")?,
        }
        writeln!(out, "operations   {ops} ({nullified} nullified)")?;
        writeln!(out, "handle       {}", handle.unwrap_or(none))?;
        writeln!(out, "pds          {}", pds.unwrap_or(none))?;
        writeln!(out, "signing key  {}", signing_key.unwrap_or(none))?;
    }
    Ok(valid)
}
