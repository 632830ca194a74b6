//! What a check found. A leaf module: both the check registry (`check`) and the context a
//! check runs in (`context`) use it, and it uses neither.

use serde::{Deserialize, Serialize};

/// What a check found, as reported by the child process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Verdict {
    /// The contract point holds; `note` may carry measurements.
    Pass {
        /// Free-form detail (may be empty).
        note: String,
    },
    /// The contract point is broken.
    Fail {
        /// What the contract requires.
        expected: String,
        /// What the plugin did.
        actual: String,
    },
    /// Not applicable to this plugin.
    Skip {
        /// Why.
        reason: String,
    },
    /// Works, but worth a look (performance smoke; a software plugin's operational key in a
    /// file); never fails a run.
    Warn {
        /// What was measured.
        message: String,
    },
    /// The plugin could not be set up with the settings given: `create` refused them as a
    /// configuration problem (`HSM_ERR_INVALID_ARGUMENT` or `HSM_ERR_NOT_FOUND`). Kept apart
    /// from `Fail` because the fix is on the command line, not in the plugin.
    Setup {
        /// The plugin's own message, which usually names the missing or wrong setting.
        hint: String,
    },
}

impl Verdict {
    /// A pass with a note.
    pub fn pass(note: impl Into<String>) -> Self {
        Verdict::Pass { note: note.into() }
    }

    /// A failure naming what was expected and what came back.
    pub fn fail(expected: impl Into<String>, actual: impl Into<String>) -> Self {
        Verdict::Fail {
            expected: expected.into(),
            actual: actual.into(),
        }
    }

    /// A setup problem with the plugin's hint.
    pub fn setup(hint: impl Into<String>) -> Self {
        Verdict::Setup { hint: hint.into() }
    }

    /// A skip with its reason.
    pub fn skip(reason: impl Into<String>) -> Self {
        Verdict::Skip {
            reason: reason.into(),
        }
    }
}

/// What a check function returns: `Err` lets a check stop early with `?` on a failure or skip.
pub type CheckResult = Result<Verdict, Verdict>;
