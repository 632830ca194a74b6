//! How a failed command ends, for people and for automation: the exit code of the error's kind
//! (`provisioning_core::error_kind`, the one mapping), and with `--json` one object
//! `{"error": {"kind", "message", "hint"}}` on stdout instead of text on stderr.

use provisioning_core::error_kind::{classify, ErrorKind};
use serde::Serialize;
use std::ffi::OsString;
use std::fmt;
use std::process::ExitCode;

/// An error the CLI itself finds (a missing setting, a bad flag value), with its kind and,
/// when it knows a better one than the kind's, a hint.
#[derive(Debug)]
pub(crate) struct CliError {
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// A command-line mistake (exit code 2, as clap's own).
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    CliError {
        kind: ErrorKind::Usage,
        message: message.into(),
        hint: None,
    }
    .into()
}

/// A setting that is missing or cannot work (exit code 3).
pub(crate) fn config(message: impl Into<String>) -> anyhow::Error {
    CliError {
        kind: ErrorKind::Config,
        message: message.into(),
        hint: None,
    }
    .into()
}

/// The kind of `e`: the outermost CLI or library error in its chain decides; anything else is
/// [`ErrorKind::Other`].
#[cfg(test)]
fn kind_of(e: &anyhow::Error) -> ErrorKind {
    hint_and_kind(e).0
}

fn hint_and_kind(e: &anyhow::Error) -> (ErrorKind, Option<String>) {
    for link in e.chain() {
        if let Some(cli) = link.downcast_ref::<CliError>() {
            return (cli.kind, cli.hint.clone());
        }
        if let Some(kind) = classify(link) {
            return (kind, None);
        }
    }
    (ErrorKind::Other, None)
}

/// `{"error": {...}}`.
#[derive(Serialize)]
struct ErrorReport<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    kind: ErrorKind,
    message: &'a str,
    hint: &'a str,
}

/// Prints the failure (JSON on stdout, or text on stderr) and returns its exit code.
pub(crate) fn report(e: &anyhow::Error, json: bool) -> ExitCode {
    let (kind, hint) = hint_and_kind(e);
    // The message, then each `source()`: the workspace's errors show an inner error in their
    // message or as their source, never both, so nothing repeats.
    let message = format!("{e:#}");
    if json {
        print_error_json(kind, &message, hint.as_deref().unwrap_or(kind.hint()));
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(kind.exit_code())
}

/// Prints `{"error": {"kind", "message", "hint"}}` on stdout, as one line.
pub(crate) fn print_error_json(kind: ErrorKind, message: &str, hint: &str) {
    let report = ErrorReport {
        error: ErrorBody {
            kind,
            message,
            hint,
        },
    };
    match serde_json::to_string(&report) {
        Ok(text) => println!("{text}"),
        // Strings and a unit enum always serialise; should that change, the text still goes out.
        Err(_) => eprintln!("error: {message}"),
    }
}

/// A command line clap refused. Help and `--version` print as usual (exit 0); a usage error
/// with `--json` among the arguments becomes the JSON error object (exit 2), otherwise clap
/// prints it.
pub(crate) fn clap_failed(e: clap::Error, args: &[OsString]) -> ExitCode {
    if !e.use_stderr() || !wants_json(args) {
        e.exit();
    }
    let rendered = e.render().to_string();
    let mut lines = rendered.lines().filter(|l| !l.trim().is_empty());
    let message = lines
        .next()
        .unwrap_or("invalid command line")
        .trim_start_matches("error: ")
        .to_string();
    let rest: Vec<&str> = lines.map(str::trim).collect();
    let hint = if rest.is_empty() {
        ErrorKind::Usage.hint().to_string()
    } else {
        rest.join("; ")
    };
    print_error_json(ErrorKind::Usage, &message, &hint);
    ExitCode::from(ErrorKind::Usage.exit_code())
}

/// Whether the command line asks for JSON: `--json` before any `--`. Read from the raw
/// arguments so that it holds for a command line clap refused too, and for every command.
pub(crate) fn wants_json(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_outermost_classified_error_decides() {
        let e = Err::<(), _>(config("no id scope"))
            .context("provision")
            .unwrap_err();
        assert_eq!(kind_of(&e), ErrorKind::Config);
        let e = anyhow::anyhow!("plain");
        assert_eq!(kind_of(&e), ErrorKind::Other);
    }

    #[test]
    fn json_is_asked_before_a_double_dash_only() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(wants_json(&a(&["hsmkit", "provision", "--json"])));
        assert!(!wants_json(&a(&["hsmkit", "hub", "send", "--", "--json"])));
        assert!(!wants_json(&a(&["--json"])), "argv[0] is the program");
    }
}
