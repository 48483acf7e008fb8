//! The live progress line of a load on a terminal: transfers per second, snapshots
//! done, aborted and in flight, and their latency so far.

use crate::live::report::Latencies;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::{Duration, Instant};

/// How often the line is redrawn.
pub(crate) const EVERY: Duration = Duration::from_millis(200);

/// What the line shows.
pub(crate) struct Figures<'a> {
    /// Transfers sent so far.
    pub transfers: u64,
    /// Snapshots assembled (and checked).
    pub completed: u64,
    /// Of those, the ones that failed their check.
    pub failed: u64,
    /// Snapshots aborted.
    pub aborted: u64,
    /// Snapshots in flight.
    pub in_flight: usize,
    /// The latencies so far.
    pub latencies: &'a Latencies,
}

/// The progress line on standard error, or nothing.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    /// When the line was last drawn, and the transfers then.
    last: (Instant, u64),
}

impl Progress {
    /// A progress line if `shown`, nothing otherwise.
    pub fn new(shown: bool) -> Progress {
        let bar = shown.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{spinner} {wide_msg}") {
                bar.set_style(style);
            }
            bar
        });
        Progress {
            bar,
            last: (Instant::now(), 0),
        }
    }

    /// Redraws the line with `figures`, the rate being that since the last draw.
    pub fn show(&mut self, figures: &Figures<'_>) {
        let Some(bar) = &self.bar else {
            return;
        };
        let now = Instant::now();
        let (then, before) = self.last;
        let seconds = now.duration_since(then).as_secs_f64();
        let rate = if seconds > 0.0 {
            figures.transfers.saturating_sub(before) as f64 / seconds
        } else {
            0.0
        };
        self.last = (now, figures.transfers);
        let latency = figures.latencies.latency().map_or_else(
            || "-".to_string(),
            |l| {
                format!(
                    "p50 {:.2}ms, p99 {:.2}ms",
                    l.p50.as_secs_f64() * 1e3,
                    l.p99.as_secs_f64() * 1e3
                )
            },
        );
        let failed = if figures.failed > 0 {
            format!(" ({} FAILED)", figures.failed)
        } else {
            String::new()
        };
        bar.set_message(format!(
            "{:.2}M transfers/s | snapshots: {} done{failed}, {} aborted, {} in flight | {latency}",
            rate / 1e6,
            figures.completed,
            figures.aborted,
            figures.in_flight,
        ));
        bar.tick();
    }

    /// Takes the line off the terminal.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
