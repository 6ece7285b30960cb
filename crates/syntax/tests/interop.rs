//! Runs the shared atproto interop vectors in `shared/interop/syntax`.
//!
//! The folder is `$BUTTERFLY_INTEROP_DIR/syntax` if that variable is set,
//! else `shared/interop/syntax` next to the workspace. A missing folder is a
//! failure, never a skip.

#![allow(clippy::unwrap_used)]

use butterfly_syntax::{
    AtIdentifier, AtUri, CidString, Datetime, Did, Handle, Language, Nsid, RecordKey, Tid, Uri,
};
use std::path::PathBuf;

fn interop_dir() -> PathBuf {
    butterfly_interop::folder("syntax")
}

/// Parses `s` with the type for `kind` and prints it back, or says why not.
/// `None` means the kind is unknown.
fn parse_as(kind: &str, s: &str) -> Option<Result<String, String>> {
    fn run<T: std::fmt::Display, E: std::fmt::Display>(
        r: Result<T, E>,
    ) -> Option<Result<String, String>> {
        Some(r.map(|v| v.to_string()).map_err(|e| e.to_string()))
    }
    match kind {
        "atidentifier" => run(AtIdentifier::parse(s)),
        "aturi" => run(AtUri::parse(s)),
        "cid" => run(CidString::parse(s)),
        "datetime" => run(Datetime::parse(s)),
        "did" => run(Did::parse(s)),
        "handle" => run(Handle::parse(s)),
        "language" => run(Language::parse(s)),
        "nsid" => run(Nsid::parse(s)),
        "recordkey" => run(RecordKey::parse(s)),
        "tid" => run(Tid::parse(s)),
        "uri" => run(Uri::parse(s)),
        _ => None,
    }
}

/// The syntax-only check, for the kinds that have one.
fn syntax_only(kind: &str, s: &str) -> Option<bool> {
    match kind {
        "datetime" => Some(Datetime::is_valid_syntax(s)),
        "language" => Some(Language::is_valid_syntax(s)),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    SyntaxValid,
    SyntaxInvalid,
    ParseInvalid,
}

fn split_name(name: &str) -> Option<(&str, Mode)> {
    let stem = name.strip_suffix(".txt")?;
    for (suffix, mode) in [
        ("_syntax_valid", Mode::SyntaxValid),
        ("_syntax_invalid", Mode::SyntaxInvalid),
        ("_parse_invalid", Mode::ParseInvalid),
    ] {
        if let Some(kind) = stem.strip_suffix(suffix) {
            return Some((kind, mode));
        }
    }
    None
}

/// Checks one line; returns a failure description, if any.
fn check_line(kind: &str, mode: Mode, line: &str) -> Option<String> {
    let parsed = parse_as(kind, line)?;
    let syntax = syntax_only(kind, line);
    match mode {
        Mode::SyntaxValid => match parsed {
            Err(e) => Some(format!("should parse but failed: {e}")),
            Ok(printed) if printed != line => {
                Some(format!("parsed but printed back as {printed:?}"))
            }
            Ok(_) if syntax == Some(false) => {
                Some("parses but is_valid_syntax says false".to_string())
            }
            Ok(_) => None,
        },
        Mode::SyntaxInvalid => match (parsed, syntax) {
            (Ok(_), _) => Some("should be rejected but parsed".to_string()),
            (Err(_), Some(true)) => {
                Some("rejected by parse but is_valid_syntax says true".to_string())
            }
            (Err(_), _) => None,
        },
        Mode::ParseInvalid => match (parsed, syntax) {
            (_, None) => Some(format!("no syntax-only check for kind {kind:?}")),
            (Ok(_), _) => Some("should fail parse but parsed".to_string()),
            (Err(e), Some(false)) => Some(format!(
                "should pass the syntax-only check but did not (parse said: {e})"
            )),
            (Err(_), Some(true)) => None,
        },
    }
}

#[test]
fn syntax_vectors() {
    let dir = interop_dir();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "no files in {}", dir.display());

    let mut failures = Vec::new();
    let mut total = 0usize;
    for path in &entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some((kind, mode)) = split_name(&name) else {
            failures.push(format!("{name}: file not handled by this test"));
            continue;
        };
        if parse_as(kind, "").is_none() {
            failures.push(format!("{name}: no type for kind {kind:?}"));
            continue;
        }
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{}: cannot read as UTF-8: {e}", path.display()));
        let mut tested = 0usize;
        for (i, line) in text.lines().enumerate() {
            // Never trim: some invalid entries have deliberate spaces.
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            tested += 1;
            if let Some(why) = check_line(kind, mode, line) {
                let shown: String = line.chars().take(120).collect();
                failures.push(format!("{name}:{}: {shown:?}: {why}", i + 1));
            }
        }
        if tested == 0 {
            failures.push(format!("{name}: no lines tested"));
        }
        total += tested;
    }
    assert!(
        failures.is_empty(),
        "{} interop failures (of {total} lines):\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("checked {total} lines in {} files", entries.len());
}
