//! Run progress: one line per finished stage (stderr), a spinner naming the
//! running stages on a terminal, or JSON lines on stdout with `--json`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::outcome::Failure;
use crate::record::{RunRecord, StageRecord, StageStatus};

pub struct Reporter {
    json: bool,
    quiet: bool,
    bar: Option<ProgressBar>,
    running: Vec<String>,
    total: usize,
    done: usize,
    /// (stage, failure) in the order they happened.
    pub failures: Vec<(String, Failure)>,
}

impl Reporter {
    pub fn new(json: bool, total: usize) -> Reporter {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Reporter {
            json,
            quiet: false,
            bar,
            running: Vec::new(),
            total,
            done: 0,
            failures: Vec::new(),
        }
    }

    /// A reporter that prints nothing (used by `exec` and tests).
    pub fn quiet() -> Reporter {
        Reporter {
            json: false,
            quiet: true,
            bar: None,
            running: Vec::new(),
            total: 0,
            done: 0,
            failures: Vec::new(),
        }
    }

    pub fn started(&mut self, stage: &str) {
        self.running.push(stage.to_string());
        self.update_bar();
    }

    pub fn finished(&mut self, rec: &StageRecord, failure: Option<&Failure>) {
        self.running.retain(|s| s != &rec.stage);
        self.done += 1;
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
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
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
        self.update_bar();
    }

    fn println(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            // A closed stderr (`hcpipe run P 2>&1 | head`) must not stop the run.
            None => {
                let _ = writeln!(std::io::stderr(), "{text}");
            }
        }
    }

    fn update_bar(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "[{}/{}] running: {}",
                self.done,
                self.total,
                self.running.join(", ")
            ));
        }
    }

    /// The run's last line: its id (what `show`, `diff` and `runs` take) and
    /// how many stages ran, came from the cache or failed. With `--json`, a
    /// line `{"event": "run", "run": ID, "status": ..., "ran": N, ...}`.
    pub fn run_finished(&self, record: &RunRecord) {
        if self.quiet {
            return;
        }
        let count = |st: StageStatus| record.stages.iter().filter(|s| s.status == st).count();
        let (ran, cached, failed, skipped) = (
            count(StageStatus::Ran),
            count(StageStatus::Cached),
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
                "failed": failed,
                "skipped": skipped,
            });
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        } else if record.status == crate::record::RunStatus::Ok {
            // After `finish`: the bar is gone, so straight to stderr.
            let _ = writeln!(
                std::io::stderr(),
                "run {}: {ran} ran, {cached} cached",
                record.id
            );
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
