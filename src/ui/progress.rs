//! Run progress: one line per finished stage (stderr); on a terminal, above
//! them, one bar per running stage (its epochs or steps as the stage reports
//! them, with an ETA and its latest metrics) and a line for the run; or, with
//! `--json`, JSON lines on stdout, progress events among them.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::outcome::{Failure, Progress};
use crate::record::{RunRecord, StageRecord, StageStatus};

/// At most this many running stages get a bar of their own; the others are
/// counted on the run's line (a Slurm run may have hundreds running).
const MAX_BARS: usize = 8;

pub struct Reporter {
    json: bool,
    quiet: bool,
    bars: Option<Bars>,
    running: Vec<String>,
    /// When each running stage was launched (`elapsed_s`, `eta_s`).
    started_at: HashMap<String, Instant>,
    total: usize,
    done: usize,
    /// (stage, failure) in the order they happened.
    pub failures: Vec<(String, Failure)>,
    /// Lines kept back while a batch of stages settles (see [`Reporter::hold`]).
    held: Option<Held>,
}

/// How much [`Reporter::hold`] keeps back at most before writing it.
const HELD_LIMIT: usize = 1 << 20;

/// What [`Reporter::hold`] keeps back: text for stderr, JSON lines for stdout.
#[derive(Default)]
struct Held {
    text: String,
    json: String,
}

/// What a terminal shows below the finished stages' lines.
struct Bars {
    multi: MultiProgress,
    /// The run's line, last: `[done/total] running: n`.
    run: ProgressBar,
    /// Running stages with a bar, in launch order.
    stages: Vec<(String, ProgressBar)>,
    /// Width of the stage names' column.
    width: usize,
}

/// Width of the stage names' column on a terminal; longer names are cut in the middle.
const NAME_WIDTH: usize = 22;

impl Bars {
    fn new() -> Bars {
        let multi = MultiProgress::new();
        let run = multi.add(ProgressBar::new_spinner());
        run.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        run.enable_steady_tick(Duration::from_millis(120));
        Bars {
            multi,
            run,
            stages: Vec::new(),
            width: NAME_WIDTH,
        }
    }

    /// A bar for `stage`, running for `elapsed` already: a spinner until it reports.
    fn add(&mut self, stage: &str, elapsed: Duration) {
        let bar = ProgressBar::new_spinner()
            .with_prefix(short(stage, self.width))
            .with_elapsed(elapsed);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "  {{spinner}} {{prefix:<{}}} [{{elapsed}}]",
                self.width
            ))
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let bar = self.multi.insert_before(&self.run, bar);
        bar.enable_steady_tick(Duration::from_millis(200));
        self.stages.push((stage.to_string(), bar));
    }

    fn bar(&self, stage: &str) -> Option<&ProgressBar> {
        self.stages.iter().find(|(s, _)| s == stage).map(|(_, b)| b)
    }

    fn remove(&mut self, stage: &str) {
        if let Some(i) = self.stages.iter().position(|(s, _)| s == stage) {
            let (_, bar) = self.stages.remove(i);
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }

    /// `p` on `bar`: from a spinner to a bar at its first report.
    fn report(&self, bar: &ProgressBar, p: &Progress) {
        if bar.length() != Some(p.total) {
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "  {{prefix:<{}}} [{{bar:24}}] {{pos:>3}}/{{len:<3}} [{{elapsed}}, ETA {{eta}}] {{msg}}",
                    self.width
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_length(p.total);
        }
        bar.set_position(p.done);
        let metrics: Vec<String> = p
            .metrics
            .iter()
            .map(|(name, value)| format!("{name}={}", compact(*value)))
            .collect();
        bar.set_message(metrics.join(" "));
    }
}

/// `name` in at most `width` characters: cut in the middle with `…` when
/// longer (matrix members differ at their ends: `train[lr=0.1,seed=2]`).
fn short(name: &str, width: usize) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= width || width < 3 {
        return name.to_string();
    }
    let tail = (width - 1) / 2;
    let head = width - 1 - tail;
    let mut cut: String = chars[..head].iter().collect();
    cut.push('…');
    cut.extend(&chars[chars.len() - tail..]);
    cut
}

/// A metric for a bar: four significant digits, at most.
fn compact(value: f64) -> String {
    if !value.is_finite() || value == 0.0 {
        return value.to_string();
    }
    let magnitude = value.abs().log10().floor() as i32;
    if !(-3..6).contains(&magnitude) {
        return format!("{value:.3e}");
    }
    let decimals = (3 - magnitude).max(0) as usize;
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

impl Reporter {
    pub fn new(json: bool, total: usize) -> Reporter {
        let bars = (!json && std::io::stderr().is_terminal()).then(Bars::new);
        Reporter {
            json,
            quiet: false,
            bars,
            running: Vec::new(),
            started_at: HashMap::new(),
            total,
            done: 0,
            failures: Vec::new(),
            held: None,
        }
    }

    /// A reporter that prints nothing (used by `exec` and tests).
    pub fn quiet() -> Reporter {
        Reporter {
            json: false,
            quiet: true,
            bars: None,
            running: Vec::new(),
            started_at: HashMap::new(),
            total: 0,
            done: 0,
            failures: Vec::new(),
            held: None,
        }
    }

    pub fn started(&mut self, stage: &str) {
        self.running.push(stage.to_string());
        self.started_at.insert(stage.to_string(), Instant::now());
        if let Some(bars) = &mut self.bars {
            if bars.stages.len() < MAX_BARS {
                bars.add(stage, Duration::ZERO);
            }
        }
        self.update_bar();
    }

    /// A running stage reported progress: its bar moves, or with `--json` a line
    /// `{"event": "progress", "stage": ..., "done": N, "total": N, "metrics": {...},
    /// "elapsed_s": S, "eta_s": S or null}`. Nothing on a stderr that is not a terminal.
    pub fn progress(&mut self, stage: &str, p: &Progress) {
        if self.quiet {
            return;
        }
        if self.json {
            let elapsed = self
                .started_at
                .get(stage)
                .map_or(0.0, |t| t.elapsed().as_secs_f64());
            // From the mean time per step so far: the stage's own start-up
            // (loading data) counts in, so it errs long early on.
            let eta = (p.done > 0).then(|| elapsed / p.done as f64 * (p.total - p.done) as f64);
            let line = serde_json::json!({
                "event": "progress",
                "stage": stage,
                "done": p.done,
                "total": p.total,
                "metrics": p.metrics_json(),
                "elapsed_s": round_ms(elapsed),
                "eta_s": eta.map(round_ms),
            });
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        } else if let Some(bars) = &self.bars {
            if let Some(bar) = bars.bar(stage) {
                bars.report(bar, p);
            }
        }
    }

    pub fn finished(&mut self, rec: &StageRecord, failure: Option<&Failure>) {
        self.running.retain(|s| s != &rec.stage);
        self.started_at.remove(&rec.stage);
        self.done += 1;
        if let Some(bars) = &mut self.bars {
            bars.remove(&rec.stage);
            // A stage waiting for a bar takes the freed one.
            let waiting = self.running.iter().find(|s| bars.bar(s).is_none()).cloned();
            if let (Some(stage), true) = (waiting, bars.stages.len() < MAX_BARS) {
                let elapsed = self
                    .started_at
                    .get(&stage)
                    .map_or(Duration::ZERO, Instant::elapsed);
                bars.add(&stage, elapsed);
            }
        }
        if let Some(f) = failure {
            self.failures.push((rec.stage.clone(), f.clone()));
        }
        if self.quiet {
            return;
        }
        if self.json {
            let mut line = serde_json::json!({
                "stage": rec.stage,
                "key": rec.key,
                "status": rec.status.as_str(),
                "wall_s": rec.wall_s,
            });
            if !rec.metrics.is_empty() {
                line["metrics"] = serde_json::Value::Object(rec.metrics.clone());
            }
            if let Some(e) = &rec.error {
                line["error"] = serde_json::Value::String(e.clone());
            }
            if let Some(held) = &mut self.held {
                held.json.push_str(&line.to_string());
                held.json.push('\n');
            } else {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        } else {
            let time = if rec.status == StageStatus::Ran {
                format!("{:.2}s", rec.wall_s)
            } else {
                String::new()
            };
            let mut text = format!(
                "{:<8}{}  {}  {time}",
                rec.status.as_str(),
                rec.stage,
                rec.key.short()
            );
            // The log tail is printed once, with the run's failure summary.
            if let Some(f) = failure {
                text.push_str(&format!("\n        {}", f.message));
            }
            self.println(&text);
        }
        self.release_if_full();
        self.update_bar();
    }

    /// Write what is held once it passes [`HELD_LIMIT`], and hold on: a
    /// batch stays one write per megabyte, and the lines of a million
    /// stages settled in one pass are not all kept at once.
    fn release_if_full(&mut self) {
        let full = self
            .held
            .as_ref()
            .is_some_and(|h| h.text.len() + h.json.len() >= HELD_LIMIT);
        if full {
            self.release();
            self.hold();
        }
    }

    /// Keep the lines of the stages settled from now on until
    /// [`Reporter::release`]: the scheduler settles every cached stage of a
    /// run in one pass, and one write (or one redraw of the bars) per stage
    /// was a tenth of a 100,000-stage no-op run.
    pub fn hold(&mut self) {
        self.held.get_or_insert_with(Held::default);
    }

    /// Print what [`Reporter::hold`] kept back.
    pub fn release(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        if !held.json.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(held.json.as_bytes());
            let _ = out.flush();
        }
        if !held.text.is_empty() {
            self.println(held.text.trim_end_matches('\n'));
        }
    }

    /// A line above the bars (when there are any).
    fn println(&mut self, text: &str) {
        if let Some(held) = &mut self.held {
            held.text.push_str(text);
            held.text.push('\n');
            return;
        }
        match &self.bars {
            Some(bars) => {
                let _ = bars.multi.println(text);
            }
            // A closed stderr (`hcpipe run P 2>&1 | head`) must not stop the run.
            None => {
                let _ = writeln!(std::io::stderr(), "{text}");
            }
        }
    }

    /// The run's line: how many stages are done, and the running ones without a bar.
    fn update_bar(&self) {
        if let Some(bars) = &self.bars {
            let hidden: Vec<&str> = self
                .running
                .iter()
                .filter(|s| bars.bar(s).is_none())
                .map(String::as_str)
                .collect();
            let mut text = format!(
                "[{}/{}] stages done, {} running",
                self.done,
                self.total,
                self.running.len()
            );
            if !hidden.is_empty() {
                let shown = hidden.len().min(3);
                text.push_str(&format!(" (without a bar: {}", hidden[..shown].join(", ")));
                if hidden.len() > shown {
                    text.push_str(&format!(" and {} more", hidden.len() - shown));
                }
                text.push(')');
            }
            bars.run.set_message(text);
        }
    }

    /// The run's last line: its id (what `show`, `diff` and `runs` take) and
    /// how many stages ran, came from the cache (local, or pulled from a
    /// remote) or failed. With `--json`, a
    /// line `{"event": "run", "run": ID, "status": ..., "ran": N, ...}`.
    pub fn run_finished(&self, record: &RunRecord) {
        if self.quiet {
            return;
        }
        let count = |st: StageStatus| record.stages.iter().filter(|s| s.status == st).count();
        let (ran, cached, pulled, failed, skipped) = (
            count(StageStatus::Ran),
            count(StageStatus::Cached),
            count(StageStatus::Pulled),
            count(StageStatus::Failed),
            count(StageStatus::Skipped),
        );
        if self.json {
            let line = serde_json::json!({
                "event": "run",
                "run": record.id,
                "status": record.status.as_str(),
                "ran": ran,
                "cached": cached,
                "pulled": pulled,
                "failed": failed,
                "skipped": skipped,
            });
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        } else if record.status == crate::record::RunStatus::Ok {
            // After `finish`: the bar is gone, so straight to stderr.
            // A remote hit is worth saying apart from a local one: it is the
            // proof that a pushed cache reproduced this run.
            let pulled = match pulled {
                0 => String::new(),
                n => format!(", {n} pulled"),
            };
            let _ = writeln!(
                std::io::stderr(),
                "run {}: {ran} ran, {cached} cached{pulled}",
                record.id
            );
        }
    }

    pub fn finish(&self) {
        if let Some(bars) = &self.bars {
            for (_, bar) in &bars.stages {
                bar.finish_and_clear();
            }
            bars.run.finish_and_clear();
            let _ = bars.multi.clear();
        }
    }
}

/// Seconds to the millisecond, for JSON.
fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_on_a_bar_are_compact() {
        for (v, text) in [
            (0.41234567, "0.4123"),
            (0.5, "0.5"),
            (12.0, "12"),
            (1234.5678, "1235"),
            (0.00123456, "0.001235"),
            (0.0, "0"),
            (-2.5, "-2.5"),
            (1.0e-7, "1.000e-7"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(compact(v), text, "{v}");
        }
        assert_eq!(short("cnn_left", 8), "cnn_left");
        assert_eq!(short("train[lr=0.1,seed=2]", 9), "trai…d=2]");
        assert_eq!(short("train[lr=0.1,seed=2]", 9).chars().count(), 9);
    }
}
