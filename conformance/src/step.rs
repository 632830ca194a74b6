//! Steps: parts of one check that must run in a fresh process of their own, the way a device
//! runs `hsmkit enroll-info` today and `hsmkit provision` after a reboot. A check (itself in a
//! child process) runs each step as a grandchild in the same process group, so the runner's
//! timeout and kill still cover it, and what a step learns comes back as one marked JSON line.
//!
//! Steps register themselves with `inventory` beside the checks that use them.

use crate::child::{emit, split_result};
use crate::context::CheckContext;
use crate::verdict::Verdict;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// One step: a name and the function run in the fresh process.
#[derive(Debug)]
pub struct Step {
    /// Name given to `--step`.
    pub name: &'static str,
    /// Runs the step with its arguments; `Ok` carries what it learned, `Err` ends the check
    /// with that verdict.
    pub run: fn(&mut CheckContext, &[String]) -> Result<serde_json::Value, Verdict>,
}

inventory::collect!(Step);

/// Registers a step: `register_step!("name", function)`.
#[macro_export]
#[doc(hidden)]
macro_rules! register_step {
    ($name:literal, $run:path) => {
        inventory::submit! {
            $crate::step::Step { name: $name, run: $run }
        }
    };
}

/// What a step process prints.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "camelCase")]
enum StepOutcome {
    /// The step finished; its findings.
    Done { value: serde_json::Value },
    /// The step ended the check with this verdict.
    Verdict { verdict: Verdict },
}

/// Child side of `--step NAME`: runs the step and prints its outcome; the exit code.
pub fn run_step(
    name: &str,
    args: &[String],
    plugin: PathBuf,
    config: Vec<(String, String)>,
) -> i32 {
    let Some(step) = inventory::iter::<Step>.into_iter().find(|s| s.name == name) else {
        eprintln!("hsm-conformance: no step named `{name}`");
        return 2;
    };
    let mut ctx = CheckContext::new(plugin, config);
    let outcome = match (step.run)(&mut ctx, args) {
        Ok(value) => StepOutcome::Done { value },
        Err(verdict) => StepOutcome::Verdict { verdict },
    };
    emit(&outcome)
}

/// Runs step `name` with `args` in a fresh process on the same plugin and settings (so the
/// same `state_dir`) as `ctx`, and returns what it learned. A step that crashes or prints no
/// result fails the check with the step named; `what` says what the step was doing, for
/// that message.
pub fn in_fresh_process(
    ctx: &CheckContext,
    name: &str,
    args: &[&str],
    what: &str,
) -> Result<serde_json::Value, Verdict> {
    let exe = std::env::current_exe()
        .map_err(|e| Verdict::skip(format!("cannot find the harness program to re-run: {e}")))?;
    let mut cmd = Command::new(&exe);
    cmd.arg("--step").arg(name);
    for a in args {
        cmd.arg("--step-arg").arg(a);
    }
    for (k, v) in &ctx.config {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    cmd.arg(&ctx.plugin)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd
        .output()
        .map_err(|e| Verdict::skip(format!("cannot start {}: {e}", exe.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (line, _) = split_result(&stdout);
    match line.and_then(|l| serde_json::from_str::<StepOutcome>(l).ok()) {
        Some(StepOutcome::Done { value }) => Ok(value),
        Some(StepOutcome::Verdict { verdict }) => Err(verdict),
        None => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("(no output on stderr)");
            Err(Verdict::fail(
                format!("{what} in a fresh process to finish"),
                format!(
                    "that process ended with {} and no result: {last}",
                    out.status
                ),
            ))
        }
    }
}
