//! hsm-conformance: tells a plugin vendor exactly which contract points of the hsmkit ABI
//! their plugin breaks.
//!
//! Every check is one function registered with `inventory` (an id, a group, the interface it
//! needs and a one-line description). The runner re-executes the harness binary once per
//! check, in its own process group with a timeout and captured output, so a segfault, abort,
//! hang or panic inside the plugin becomes that check's result (crash or timeout) and the run
//! goes on, as the Linux Test Project does it.

#![deny(missing_docs)]

pub mod check;
mod checks;
pub mod child;
pub mod context;
mod ops;
pub mod raw;
pub mod report;
pub mod runner;
pub mod step;
pub mod verdict;

pub use check::{all_checks, Check, Group, Interface};
pub use report::{CheckReport, Counts, RunReport, Status, EXIT_BROKEN, EXIT_SETUP};
pub use runner::{run, select, RunError, RunOptions};
pub use verdict::{CheckResult, Verdict};
