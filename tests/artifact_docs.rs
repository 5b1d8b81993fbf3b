//! docs/artifacts.md cannot rot (issue 20, item 1): the op versions it names are those of
//! `hcpipe ops`, its links resolve, its table of `metrics.json` keys is what each op writes, and
//! every Python reader on it runs on the artifact of the stage its block names — from real runs
//! of `pipelines/demo.yaml` and `pipelines/lr-sweep.yaml` at one epoch, and of
//! `tests/artifact_docs.yaml` (the paper table's shape: split, folds, `subjects: all` crops, a
//! vote, AE + GMM and `aggregate`, in seconds) — and prints what the block after it shows (`…`
//! standing for any text).
//!
//! The readers run with the repository's venv python (`make build` makes `.venv`, with torch);
//! like the torch stages, they are skipped with a message when it is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn page() -> String {
    std::fs::read_to_string(repo().join("docs/artifacts.md")).expect("docs/artifacts.md")
}

/// `<repo>/.venv/bin/python`, or `None` after saying why the caller skips.
pub fn venv_python() -> Option<PathBuf> {
    let python = repo().join(".venv/bin/python");
    if python.is_file() {
        Some(python)
    } else {
        eprintln!(
            "SKIPPED: no {} (`make build` makes the venv with torch)",
            python.display()
        );
        None
    }
}

/// A fenced block of the page: its info string (`python reads=crop_left`), body and first line.
#[derive(Debug)]
struct Block {
    info: String,
    body: String,
    line: usize,
}

fn fenced_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    body: String::new(),
                    line: i + 1,
                })
            }
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some(b), _) => {
                b.body.push_str(line);
                b.body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(
        open.is_none(),
        "docs/artifacts.md: a fenced block is not closed"
    );
    blocks
}

/// `line` matches `pattern`, where each `…` in the pattern stands for any text.
fn matches(pattern: &str, line: &str) -> bool {
    wildcard(pattern, '…', line)
}

/// Glob match with `any` as the only wildcard.
fn wildcard(pattern: &str, any: char, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split(any).collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return text == pattern;
    }
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// GitHub's anchor for a heading: lowercase, punctuation but `-` and `_` dropped, spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn headings(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("## ").or_else(|| l.strip_prefix("# ")))
        .collect()
}

/// (op, version) of each line of `hcpipe ops`.
fn ops() -> BTreeMap<String, String> {
    let p = Project::new();
    let out = p.run(&["ops"]).ok().stdout;
    out.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

#[test]
fn the_page_names_each_op_with_its_current_version() {
    let ops = ops();
    assert!(ops.len() >= 13, "`hcpipe ops` lists {ops:?}");
    let text = page();
    let mut named = BTreeSet::new();
    for heading in headings(&text) {
        // "`crop` v1", "`train_cnn` v2, `train_ae` v2"
        let words: Vec<&str> = heading.split_whitespace().collect();
        for pair in words.windows(2) {
            let (op, version) = (
                pair[0].trim_matches('`'),
                pair[1].trim_end_matches([',', ':']),
            );
            if pair[0].starts_with('`') && version.starts_with('v') {
                assert_eq!(
                    ops.get(op).map(String::as_str),
                    Some(version),
                    "docs/artifacts.md heading `{heading}` says {op} {version}; `hcpipe ops` says {:?}: \
                     update the page (and the format it describes) to the op's version",
                    ops.get(op)
                );
                named.insert(op.to_string());
            }
        }
    }
    let missing: Vec<&String> = ops.keys().filter(|op| !named.contains(*op)).collect();
    assert!(
        missing.is_empty(),
        "docs/artifacts.md has no section heading naming {missing:?} with its version"
    );
}

#[test]
fn the_pages_links_resolve() {
    let text = page();
    let anchors: BTreeSet<String> = headings(&text).into_iter().map(slug).collect();
    let mut seen = 0;
    for (i, line) in text.lines().enumerate() {
        for link in line.split("](").skip(1) {
            let target = link.split(')').next().unwrap_or("");
            if let Some(anchor) = target.strip_prefix('#') {
                seen += 1;
                assert!(
                    anchors.contains(anchor),
                    "docs/artifacts.md:{}: no heading has the anchor #{anchor}; anchors: {anchors:?}",
                    i + 1
                );
            } else if !target.starts_with("http") {
                assert!(
                    repo().join("docs").join(target).exists(),
                    "docs/artifacts.md:{}: {target} does not exist",
                    i + 1
                );
            }
        }
    }
    assert!(
        seen >= 10,
        "expected the page's table of sections, found {seen} links"
    );
}

#[test]
fn wildcards_and_slugs() {
    assert!(matches("a … b", "a 12 b"));
    assert!(matches("['epoch'] … epochs", "['epoch'] 1 epochs"));
    assert!(!matches("a … b", "a 12 c"));
    assert!(!matches("ab…ba", "aba"));
    assert!(matches("exact", "exact") && !matches("exact", "exact!"));
    assert!(wildcard("p_*_*", '*', "p_age_AD_vs_CN_all"));
    assert!(!wildcard("*_n", '*', "train_AD_age_mean"));
    assert_eq!(
        slug("`weights.safetensors`: `train_cnn` v2, `train_ae` v2"),
        "weightssafetensors-train_cnn-v2-train_ae-v2"
    );
}

/// The runs the readers read: the demo and the learning-rate sweep at one epoch, and the small
/// paper pipeline, on one cache.
struct Runs {
    project: Project,
    /// Stage (as a reader's `reads=` names it) → op, from `hcpipe dag` of every pipeline.
    ops: BTreeMap<String, String>,
}

/// A pipeline the readers read: the prefix `reads=` gives its stages (`lr-sweep:table`; none
/// for the demo's), its file in the repository, and the `--set`s it runs with.
struct Pipeline {
    prefix: &'static str,
    file: &'static str,
    sets: &'static [&'static str],
}

const PIPELINES: &[Pipeline] = &[
    Pipeline {
        prefix: "",
        file: "pipelines/demo.yaml",
        sets: &["--set", "epochs=1", "--set", "ae_epochs=1"],
    },
    Pipeline {
        prefix: "lr-sweep",
        file: "pipelines/lr-sweep.yaml",
        sets: &["--set", "epochs=1"],
    },
    // Already one epoch: a split, 2 folds, both crops of every subject, a vote, AE + GMM and
    // the aggregate table, in a few seconds.
    Pipeline {
        prefix: "paper",
        file: "tests/artifact_docs.yaml",
        sets: &[],
    },
];

impl Pipeline {
    fn path(&self) -> String {
        repo().join(self.file).display().to_string()
    }

    /// `stage` as a reader names it: `PREFIX:stage`, or the bare name for the demo's.
    fn named(&self, stage: &str) -> String {
        match self.prefix {
            "" => stage.to_string(),
            prefix => format!("{prefix}:{stage}"),
        }
    }
}

impl Runs {
    fn new() -> Runs {
        let project = Project::new();
        let mut ops = BTreeMap::new();
        for pipeline in PIPELINES {
            let file = pipeline.path();
            let mut args = vec!["run", file.as_str(), "--jobs", "2"];
            args.extend(pipeline.sets);
            project.run(&args).ok();
            for line in project.run(&["dag", &file]).ok().stdout.lines() {
                let head = line.split("  ←").next().unwrap_or(line);
                if let Some((stage, op)) = head.trim_end_matches(')').rsplit_once(" (") {
                    ops.insert(pipeline.named(stage), op.to_string());
                }
            }
        }
        Runs { project, ops }
    }

    /// The artifact folder of `stage` (`lr-sweep:table` for the sweep's, `paper:table` for the
    /// paper pipeline's, else the demo's).
    fn folder(&self, stage: &str) -> PathBuf {
        let (prefix, name) = stage.split_once(':').unwrap_or(("", stage));
        let pipeline = PIPELINES
            .iter()
            .find(|p| p.prefix == prefix)
            .unwrap_or_else(|| {
                panic!(
                    "docs/artifacts.md: unknown pipeline `{prefix}` in reads={stage}; the test runs {:?}",
                    PIPELINES.iter().map(|p| p.prefix).collect::<Vec<_>>()
                )
            });
        let file = pipeline.path();
        let mut args = vec!["show", file.as_str(), name, "--json"];
        args.extend(pipeline.sets);
        let show = self.project.run(&args).ok();
        let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
        assert_eq!(v["current"], true, "{stage}: {}", show.stdout);
        PathBuf::from(v["path"].as_str().expect("a path"))
    }
}

/// The `metrics.json` keys table: op → (keys always written, keys written only sometimes),
/// each key a pattern in which `<…>` stands for any text. Parenthesised notes are not keys.
fn documented_keys(text: &str) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let section = text
        .split("\n## `metrics.json`")
        .nth(1)
        .expect("a `metrics.json` section");
    let tokens = |cell: &str| -> Vec<String> {
        let mut plain = String::new();
        let mut depth = 0;
        for c in cell.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth == 0 => plain.push(c),
                _ => {}
            }
        }
        plain
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|key| {
                let mut pattern = String::new();
                let mut inside = false;
                for c in key.chars() {
                    match c {
                        '<' => inside = true,
                        '>' => {
                            inside = false;
                            pattern.push('*');
                        }
                        _ if !inside => pattern.push(c),
                        _ => {}
                    }
                }
                pattern
            })
            .collect()
    };
    let mut table = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let op = cells[1].trim_matches('`').to_string();
        table.insert(op, (tokens(cells[2]), tokens(cells[3])));
    }
    table
}

fn metrics_keys(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("metrics.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object().unwrap().keys().cloned().collect()
}

/// Runs the page's Python readers; returns what did not go as the page says.
fn run_readers(runs: &Runs, python: &Path, blocks: &[Block]) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut ran = 0;
    for (i, block) in blocks.iter().enumerate() {
        let Some(stages) = block.info.strip_prefix("python reads=") else {
            assert!(
                !block.info.starts_with("python"),
                "docs/artifacts.md:{}: a python block without `reads=STAGE` is not run by the test",
                block.line
            );
            continue;
        };
        let expected = match blocks.get(i + 1) {
            Some(b) if b.info == "text" => &b.body,
            _ => panic!(
                "docs/artifacts.md:{}: the reader must be followed by a ```text block of what it prints",
                block.line
            ),
        };
        let folders: Vec<PathBuf> = stages.split(',').map(|s| runs.folder(s)).collect();
        let out = Command::new(python)
            .arg("-c")
            .arg(&block.body)
            .args(&folders)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .unwrap();
        ran += 1;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let at = format!("docs/artifacts.md:{} (reads={stages})", block.line);
        if !out.status.success() {
            problems.push(format!(
                "{at} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let (got, want): (Vec<&str>, Vec<&str>) =
            (stdout.lines().collect(), expected.lines().collect());
        if got.len() != want.len() || got.iter().zip(&want).any(|(g, w)| !matches(w, g)) {
            problems.push(format!(
                "{at} printed:\n{stdout}but the page shows:\n{expected}"
            ));
        }
    }
    (ran, problems)
}

#[test]
fn every_reader_prints_what_the_page_says_and_every_op_writes_its_documented_keys() {
    if !crate::lab::worker_built() {
        return;
    }
    let runs = Runs::new();
    let text = page();

    // The metrics table, against every op the two pipelines ran.
    let table = documented_keys(&text);
    for op in ops().keys() {
        assert!(
            table.contains_key(op),
            "docs/artifacts.md's metrics.json table has no row for `{op}`"
        );
    }
    let mut checked = BTreeSet::new();
    for (stage, op) in &runs.ops {
        let (always, sometimes) = &table[op];
        let actual = metrics_keys(&runs.folder(stage));
        for key in &actual {
            assert!(
                always.iter().chain(sometimes).any(|p| wildcard(p, '*', key)),
                "`{stage}` ({op}) writes metric `{key}`, which docs/artifacts.md's table does not list for `{op}` \
                 (it lists {always:?}, sometimes {sometimes:?})"
            );
        }
        for pattern in always {
            assert!(
                actual.iter().any(|k| wildcard(pattern, '*', k)),
                "docs/artifacts.md lists `{pattern}` for `{op}`, but `{stage}` wrote only {actual:?}"
            );
        }
        checked.insert(op.clone());
    }
    let unchecked: Vec<String> = ops()
        .into_keys()
        .filter(|op| op != "fetch" && !checked.contains(op))
        .collect();
    assert!(
        unchecked.is_empty(),
        "no pipeline of the test runs {unchecked:?}: every op but `fetch` must be checked"
    );

    let Some(python) = venv_python() else {
        return;
    };
    let blocks = fenced_blocks(&text);
    let (ran, problems) = run_readers(&runs, &python, &blocks);
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    assert!(ran >= 19, "only {ran} readers found on the page");
}
