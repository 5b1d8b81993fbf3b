//! A temp project folder and a builder for running `hcpipe` in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Project {
        Project {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cache(&self) -> PathBuf {
        self.path().join("cache")
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).unwrap_or_default()
    }

    /// `hcpipe ARGS --cache <project>/cache`, run in the project folder.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hcpipe"));
        c.args(args)
            .arg("--cache")
            .arg(self.cache())
            .current_dir(self.path());
        c.env_remove("HCPIPE_CACHE")
            .env_remove("HCPIPE_REMOTE")
            .env_remove("RUST_LOG");
        c
    }

    /// Run git in the project with a fixed identity, so commits work anywhere.
    pub fn git(&self, args: &[&str]) {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.cmd(args).output().expect("spawn hcpipe");
        Run::from(out)
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(
            !run.stderr.contains("panicked"),
            "hcpipe panicked:\n{}",
            run.stderr
        );
        run
    }
}

impl Run {
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "hcpipe failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// `run --json` lines as (stage, status) pairs.
    pub fn statuses(&self) -> Vec<(String, String)> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            // Stage lines only: the run's own `{"event": "run", ...}` line is not a stage.
            .filter(|v| v.get("event").is_none())
            .map(|v| {
                (
                    v["stage"].as_str().unwrap_or("").to_string(),
                    v["status"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    pub fn status_of(&self, stage: &str) -> String {
        self.statuses()
            .into_iter()
            .find(|(s, _)| s == stage)
            .map(|(_, st)| st)
            .unwrap_or_else(|| panic!("no line for `{stage}` in:\n{}", self.stdout))
    }

    pub fn ran(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .statuses()
            .into_iter()
            .filter(|(_, st)| st == "ran")
            .map(|(s, _)| s)
            .collect();
        v.sort();
        v
    }
}

/// The 4-stage diamond used by several tests: a → (b, c) → d, plus a param.
pub const DIAMOND: &str = r#"
name: diamond
params: {greeting: hello, n: 1}
stages:
  a:
    cmd: "cat input.txt > {out}/a.txt && echo ${params.greeting} >> {out}/a.txt"
    deps: [input.txt]
  b:
    cmd: "cat {in.a}/a.txt {in.a}/a.txt > {out}/b.txt"
    needs: [a]
  c:
    cmd: "wc -c < {in.a}/a.txt > {out}/c.txt; echo '{\"n\": ${params.n}}' > {out}/metrics.json"
    needs: [a]
  d:
    cmd: "cat {in.b}/b.txt {in.c}/c.txt > {out}/d.txt"
    needs: [b, c]
"#;

pub fn diamond() -> Project {
    let p = Project::new();
    p.write("input.txt", "data\n");
    p.write("p.yaml", DIAMOND);
    p
}

/// Wait (at most 30 s) for a marker file a stage writes.
pub fn wait_for(path: &Path) {
    let start = std::time::Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Start the one-node Slurm of `scripts/slurm-local` once per test process;
/// `false` means "skip" (the script exits 3 where Slurm cannot run here).
pub fn slurm_up() -> bool {
    static UP: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let up = UP.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-local");
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .output()
            .expect("run scripts/slurm-local");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match out.status.code() {
            Some(0) => Ok(()),
            Some(3) => Err(text),
            _ => panic!("scripts/slurm-local start failed:\n{text}"),
        }
    });
    match up {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIPPED (no Slurm here): {}", why.trim());
            false
        }
    }
}
