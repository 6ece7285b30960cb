//! `butterfly`: the command-line interface. Flags and wiring only; the work happens in the library
//! crates.
//!
//! Exit codes: 0 on success (also when stdout is closed early, as by `head`), 1 when a check ran and
//! failed (`plc audit` of an invalid log), 2 on any error, with the error chain printed on one line to
//! stderr.

mod commands;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Err(error) = commands::load_config_file(&args) {
        eprintln!("butterfly: {error:#}");
        return ExitCode::from(2);
    }
    let cli = commands::Cli::parse_from(args);
    match commands::run(cli) {
        Ok(commands::Outcome::Success) => ExitCode::SUCCESS,
        Ok(commands::Outcome::CheckFailed) => ExitCode::from(1),
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("butterfly: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let io_kind = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| {
                cause
                    .downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
            });
        io_kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}
