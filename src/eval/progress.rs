//! A one-line progress indicator with an ETA, redrawn on stderr at most
//! twice a second (no terminal control beyond `\r`, so logs stay readable).

use web_time::Instant;

pub struct Progress {
    label: String,
    total: usize,
    done: usize,
    start: Instant,
    last_draw: Option<Instant>,
    enabled: bool,
}

impl Progress {
    /// `enabled = false` keeps it silent (library callers, tests).
    pub fn new(label: impl Into<String>, total: usize, enabled: bool) -> Self {
        Progress { label: label.into(), total, done: 0, start: Instant::now(), last_draw: None, enabled }
    }

    /// One more unit done; `extra` is appended to the line (e.g. running ppl).
    pub fn step(&mut self, extra: &str) {
        self.done += 1;
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let finished = self.done >= self.total;
        if !finished && self.last_draw.is_some_and(|t| now.duration_since(t).as_secs_f64() < 0.5) {
            return;
        }
        self.last_draw = Some(now);
        let elapsed = now.duration_since(self.start).as_secs_f64();
        let eta = elapsed / self.done as f64 * self.total.saturating_sub(self.done) as f64;
        eprint!(
            "\r{} {}/{} ({:.0} %) {:.0} s elapsed, ETA {:.0} s {extra}   ",
            self.label,
            self.done,
            self.total,
            100.0 * self.done as f64 / self.total.max(1) as f64,
            elapsed,
            eta
        );
        if finished {
            eprintln!();
        }
    }
}
