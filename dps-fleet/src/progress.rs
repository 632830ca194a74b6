//! Live progress: an indicatif bar with rate and ETA on a terminal, a plain line every few
//! seconds otherwise (CI logs, pipes).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, lines otherwise.
    Auto,
    /// Plain lines on stderr, every `every`.
    Lines,
    /// Nothing.
    Quiet,
}

/// The progress of one run.
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    total: usize,
    done: AtomicUsize,
    failed: AtomicUsize,
    started: Instant,
    last_line: Mutex<Instant>,
    every: Duration,
}

impl Progress {
    /// Progress over `total` devices.
    pub fn new(total: usize, mode: ProgressMode) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = (mode == ProgressMode::Auto && tty).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let lines = match mode {
            ProgressMode::Auto => !tty,
            ProgressMode::Lines => true,
            ProgressMode::Quiet => false,
        };
        let started = Instant::now();
        Progress {
            bar,
            lines,
            total,
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            started,
            last_line: Mutex::new(started),
            every: Duration::from_secs(2),
        }
    }

    /// One device finished.
    pub fn device_done(&self, ok: bool) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let failed = if ok {
            self.failed.load(Ordering::Relaxed)
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed) + 1
        };
        if let Some(bar) = &self.bar {
            bar.inc(1);
            if !ok {
                bar.set_message(format!("{failed} failed"));
            }
        }
        if self.lines {
            let mut last = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
            if done == self.total || last.elapsed() >= self.every {
                *last = Instant::now();
                let secs = self.started.elapsed().as_secs_f64();
                let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
                let eta = if rate > 0.0 {
                    (self.total - done) as f64 / rate
                } else {
                    0.0
                };
                eprintln!(
                    "provisioned {done}/{} ({failed} failed) in {secs:.1} s, {rate:.1}/s, ETA {eta:.0} s",
                    self.total
                );
            }
        }
    }

    /// The run is over.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
