//! Results and how they are written: a line per check and a summary for people, JSON and
//! JUnit XML for CI.

use crate::check::Check;
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

/// The result of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    /// The contract point holds.
    Pass,
    /// The contract point is broken.
    Fail,
    /// Not applicable (capability not declared, plugin does not load...).
    Skip,
    /// The check's process died (signal, abort, exit without a result).
    Crash,
    /// The check's process did not finish in time and was killed.
    Timeout,
    /// Performance smoke: worth a look, never fails the run.
    Warn,
    /// The plugin refused the settings given (missing or wrong configuration): the command
    /// line is incomplete, the plugin is not shown to be broken.
    Setup,
}

impl Status {
    /// Upper-case label for people.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
            Status::Crash => "CRASH",
            Status::Timeout => "TIMEOUT",
            Status::Warn => "WARN",
            Status::Setup => "SETUP",
        }
    }

    /// Whether this result makes the run fail.
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Fail | Status::Crash | Status::Timeout)
    }
}

/// One check's result.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// Check id.
    pub id: &'static str,
    /// Group name.
    pub group: &'static str,
    /// Interface name.
    pub interface: &'static str,
    /// What it checks.
    pub description: &'static str,
    /// The result.
    pub status: Status,
    /// For people: the reason, the measurement, or expected-and-actual.
    pub message: String,
    /// On failure: what the contract requires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// On failure: what came back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    /// Wall time of the child process.
    #[serde(rename = "millis", serialize_with = "millis")]
    pub duration: Duration,
    /// What the plugin printed on stdout (without the result line).
    pub stdout: String,
    /// What the plugin printed on stderr.
    pub stderr: String,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl CheckReport {
    /// An empty (skipped) report for `check`.
    pub fn new(check: &Check) -> Self {
        CheckReport {
            id: check.id,
            group: check.group.as_str(),
            interface: check.interface.as_str(),
            description: check.description,
            status: Status::Skip,
            message: String::new(),
            expected: None,
            actual: None,
            duration: Duration::ZERO,
            stdout: String::new(),
            stderr: String::new(),
        }
    }

    /// One line for people.
    pub fn line(&self) -> String {
        let mut l = format!(
            "{:<7} {:<44} {:>6} ms",
            self.status.label(),
            self.id,
            self.duration.as_millis()
        );
        if !self.message.is_empty() {
            let _ = write!(l, "  {}", self.message);
        }
        l
    }
}

/// Counts per status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Passed.
    pub pass: usize,
    /// Failed.
    pub fail: usize,
    /// Skipped.
    pub skip: usize,
    /// Crashed.
    pub crash: usize,
    /// Timed out.
    pub timeout: usize,
    /// Warned.
    pub warn: usize,
    /// Could not run for missing or wrong settings.
    pub setup: usize,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    /// The plugin file.
    pub plugin: String,
    /// The plugin's name, when it loaded.
    pub plugin_name: Option<String>,
    /// Why the plugin did not load, when it did not.
    pub load_error: Option<String>,
    /// One entry per selected check, in id order.
    pub results: Vec<CheckReport>,
    /// Wall time of the run.
    #[serde(rename = "totalMillis", serialize_with = "millis")]
    pub total: Duration,
}

impl RunReport {
    /// Counts per status.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for r in &self.results {
            match r.status {
                Status::Pass => c.pass += 1,
                Status::Fail => c.fail += 1,
                Status::Skip => c.skip += 1,
                Status::Crash => c.crash += 1,
                Status::Timeout => c.timeout += 1,
                Status::Warn => c.warn += 1,
                Status::Setup => c.setup += 1,
            }
        }
        c
    }

    /// Whether nothing failed, crashed or timed out.
    pub fn success(&self) -> bool {
        !self.results.iter().any(|r| r.status.is_failure())
    }

    /// Whether some check could not run because the plugin refused the settings given.
    pub fn needs_setup(&self) -> bool {
        self.results.iter().any(|r| r.status == Status::Setup)
    }

    /// The process exit code: [`EXIT_BROKEN`] when a check failed, crashed or timed out (the
    /// plugin is broken, whatever else happened), else [`EXIT_SETUP`] when the plugin refused
    /// the settings given (the command line is incomplete), else 0.
    pub fn exit_code(&self) -> i32 {
        if !self.success() {
            EXIT_BROKEN
        } else if self.needs_setup() {
            EXIT_SETUP
        } else {
            0
        }
    }

    /// The result of check `id`.
    pub fn get(&self, id: &str) -> Option<&CheckReport> {
        self.results.iter().find(|r| r.id == id)
    }

    /// Ids of the checks with a failing status (fail, crash, timeout).
    pub fn failures(&self) -> Vec<(&'static str, Status)> {
        self.results
            .iter()
            .filter(|r| r.status.is_failure())
            .map(|r| (r.id, r.status))
            .collect()
    }

    /// The summary line for people.
    pub fn summary(&self) -> String {
        let c = self.counts();
        format!(
            "{} checks: {} passed, {} failed, {} crashed, {} timed out, {} skipped, {} warned, {} need setup in {:.2} s",
            self.results.len(),
            c.pass,
            c.fail,
            c.crash,
            c.timeout,
            c.skip,
            c.warn,
            c.setup,
            self.total.as_secs_f64()
        )
    }

    /// The JSON report.
    pub fn to_json(&self) -> String {
        let value = serde_json::json!({
            "plugin": self.plugin,
            "pluginName": self.plugin_name,
            "loadError": self.load_error,
            "success": self.success(),
            "needsSetup": self.needs_setup(),
            "exitCode": self.exit_code(),
            "counts": self.counts(),
            "totalMillis": self.total.as_millis() as u64,
            "results": self.results,
        });
        serde_json::to_string_pretty(&value).unwrap_or_else(|_| "{}".into())
    }

    /// The JUnit XML report: one testsuite, one testcase per check; crash and timeout are
    /// `<error>`, fail is `<failure>`, skip is `<skipped>`. Setup is `<skipped>` with a
    /// message starting `SETUP:`: the check did not run, and a CI dashboard must not count a
    /// missing setting as a broken plugin (the exit code still tells the two apart).
    pub fn to_junit(&self) -> String {
        let c = self.counts();
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            x,
            "<testsuites><testsuite name=\"hsm-conformance {}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
            xml(self.plugin_name.as_deref().unwrap_or(&self.plugin)),
            self.results.len(),
            c.fail,
            c.crash + c.timeout,
            c.skip + c.setup,
            self.total.as_secs_f64()
        );
        for r in &self.results {
            let _ = write!(
                x,
                "  <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
                xml(r.group),
                xml(r.id),
                r.duration.as_secs_f64()
            );
            let msg = xml(&r.message);
            match r.status {
                Status::Pass => {}
                Status::Warn => {
                    let _ = write!(x, "<system-out>WARN: {msg}</system-out>");
                }
                Status::Skip => {
                    let _ = write!(x, "<skipped message=\"{msg}\"/>");
                }
                Status::Setup => {
                    let _ = write!(x, "<skipped message=\"SETUP: {msg}\"/>");
                }
                Status::Fail => {
                    let _ = write!(x, "<failure message=\"{msg}\" type=\"fail\"/>");
                }
                Status::Crash | Status::Timeout => {
                    let _ = write!(
                        x,
                        "<error message=\"{msg}\" type=\"{}\">{}</error>",
                        r.status.label().to_ascii_lowercase(),
                        xml(&r.stderr)
                    );
                }
            }
            x.push_str("</testcase>\n");
        }
        x.push_str("</testsuite></testsuites>\n");
        x
    }
}

/// Exit code when the plugin broke a contract point (a check failed, crashed or timed out).
pub const EXIT_BROKEN: i32 = 1;
/// Exit code when nothing is broken but the plugin refused the settings given: pass the
/// missing setting with `--set` and run again. (2 is left to command-line parse errors.)
pub const EXIT_SETUP: i32 = 3;

fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // XML 1.0 forbids most control characters even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => o.push('?'),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::xml;

    #[test]
    fn xml_escapes() {
        assert_eq!(xml("a<b>&\"'\u{1}"), "a&lt;b&gt;&amp;&quot;&apos;?");
    }
}
