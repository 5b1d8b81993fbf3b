//! A randomized differential check of the cache (issue 13): a cached stage
//! must be exactly what a clean re-run would produce.
//!
//! Each *sequence* generates a small random pipeline in a temp project (cmd
//! stages over files, folder deps holding symlinks to files and folders,
//! params, matrices, fan-out and gathers, stages writing sub-folders, a few
//! non-deterministic stages), runs it, then applies random *steps* (edit,
//! touch, rename, revert a dep; edit through or re-point a symlink in a dep
//! folder; change a param in the YAML or with `--set`; reorder or grow a
//! matrix; `--force` a stage; edit a dep while a stage of the run waits on a
//! gate). After every step:
//!
//! 1. **fresh**: every stage's artifact in the persistent cache (the key that
//!    `hcpipe status --json` gives, after a settle run if one is stale) must
//!    equal the artifact of a run of the same pipeline into a FRESH cache;
//!    stages downstream of a non-deterministic stage are left out here.
//! 2. **consistency**: every deterministic stage's artifact must equal its
//!    command re-executed by this harness on the upstream artifacts of the
//!    same cache (so a stage below a forced non-deterministic stage must
//!    match the upstream's current artifact, and a gather must cat its
//!    members in the pipeline's order).
//!
//! Any difference fails with the seed, the pipeline, the file tree and the
//! step sequence, shrunk greedily.
//!
//! Env: `HCPIPE_DIFF_SECONDS` (exploration budget, default 30),
//! `HCPIPE_DIFF_SEED` (top seed, default from the clock),
//! `HCPIPE_DIFF_SEQ_SEED` (replay exactly one sequence),
//! `HCPIPE_DIFF_EDITS` (`all`, a comma list of kinds, or `all,-force,-mid_run`),
//! `HCPIPE_DIFF_KEEP_GOING=1` (count every mismatch, print one repro per kind
//! of failure, fail at the end: `make fuzz-cache`), `HCPIPE_DIFF_SHRINK_SECONDS`
//! (default 30), `HCPIPE_DIFF_STEPS` (steps per sequence, default 10).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- PRNG

/// splitmix64: tiny, and a seed reproduces a sequence on any machine.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------- kinds

/// Edit kinds, and two generator features (`nondet`, `collide`): each can be
/// turned off with `HCPIPE_DIFF_EDITS=all,-NAME` to isolate a cause.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    /// Rewrite a file dep (sometimes with the same size).
    EditFile,
    /// New mtime, same bytes: nothing may change.
    Touch,
    /// Replace a dep by renaming a new file over it (same or new bytes).
    Rename,
    /// Put back a content the file had earlier in the sequence.
    Revert,
    /// Rewrite a regular file inside a dep folder (or through an inside symlink).
    DirFile,
    /// Add or remove a file in a dep folder.
    DirAddRemove,
    /// Edit the target of a symlink in a dep folder (directly or through the link).
    LinkTarget,
    /// Re-point a symlink in a dep folder (file or folder target).
    LinkRepoint,
    /// Change a param's value in the YAML.
    ParamYaml,
    /// Set, change or drop a `--set` override.
    ParamSet,
    /// Shuffle a matrix list.
    MatrixReorder,
    /// Add or remove a matrix value.
    MatrixAddRemove,
    /// `--force` a stage (non-deterministic ones preferred).
    Force,
    /// Edit a dep while the run waits on a gated stage (then maybe put it back).
    MidRun,
    /// Generator: non-deterministic stages (`date +%s%N`, /dev/urandom).
    Nondet,
    /// Generator: matrix values whose member names collide (`a=p,b=q` …).
    Collide,
}

const ALL_KINDS: [Kind; 16] = [
    Kind::EditFile,
    Kind::Touch,
    Kind::Rename,
    Kind::Revert,
    Kind::DirFile,
    Kind::DirAddRemove,
    Kind::LinkTarget,
    Kind::LinkRepoint,
    Kind::ParamYaml,
    Kind::ParamSet,
    Kind::MatrixReorder,
    Kind::MatrixAddRemove,
    Kind::Force,
    Kind::MidRun,
    Kind::Nondet,
    Kind::Collide,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::EditFile => "edit_file",
            Kind::Touch => "touch",
            Kind::Rename => "rename",
            Kind::Revert => "revert",
            Kind::DirFile => "dir_file",
            Kind::DirAddRemove => "dir_add_remove",
            Kind::LinkTarget => "link_target",
            Kind::LinkRepoint => "link_repoint",
            Kind::ParamYaml => "param_yaml",
            Kind::ParamSet => "param_set",
            Kind::MatrixReorder => "matrix_reorder",
            Kind::MatrixAddRemove => "matrix_add_remove",
            Kind::Force => "force",
            Kind::MidRun => "mid_run",
            Kind::Nondet => "nondet",
            Kind::Collide => "collide",
        }
    }
    fn is_feature(self) -> bool {
        matches!(self, Kind::Nondet | Kind::Collide)
    }
}

// ---------------------------------------------------------------- config

struct Config {
    seconds: f64,
    seed: u64,
    seq_seed: Option<u64>,
    kinds: BTreeSet<Kind>,
    steps: usize,
    keep_going: bool,
    shrink_seconds: f64,
    /// Where projects and caches live: `HCPIPE_DIFF_TMPDIR`, else /dev/shm
    /// when there is one (a clean run there costs a tenth: no real fsyncs),
    /// else the system's temp folder.
    tmp: PathBuf,
}

fn env_num(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn parse_seed(v: &str) -> Option<u64> {
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

impl Config {
    fn from_env() -> Config {
        let seed = std::env::var("HCPIPE_DIFF_SEED")
            .ok()
            .filter(|v| !v.trim().is_empty() && v.trim() != "random")
            .map(|v| parse_seed(&v).expect("HCPIPE_DIFF_SEED: a number or 0xHEX"))
            .unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Rng((t.as_nanos() as u64) ^ ((std::process::id() as u64) << 32)).next()
            });
        let seq_seed = std::env::var("HCPIPE_DIFF_SEQ_SEED")
            .ok()
            .map(|v| parse_seed(&v).expect("HCPIPE_DIFF_SEQ_SEED: a number or 0xHEX"));
        let spec = std::env::var("HCPIPE_DIFF_EDITS").unwrap_or_else(|_| "all".into());
        let mut kinds = BTreeSet::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "all" {
                kinds.extend(ALL_KINDS);
                continue;
            }
            let (remove, name) = match item.strip_prefix('-') {
                Some(n) => (true, n),
                None => (false, item),
            };
            let kind = ALL_KINDS
                .iter()
                .copied()
                .find(|k| k.name() == name)
                .unwrap_or_else(|| {
                    panic!(
                        "HCPIPE_DIFF_EDITS: unknown kind `{name}`; kinds: {}",
                        ALL_KINDS.map(|k| k.name()).join(", ")
                    )
                });
            if remove {
                kinds.remove(&kind);
            } else {
                kinds.insert(kind);
            }
        }
        assert!(
            kinds.iter().any(|k| !k.is_feature()),
            "HCPIPE_DIFF_EDITS leaves no edit kind"
        );
        Config {
            seconds: env_num("HCPIPE_DIFF_SECONDS").unwrap_or(30.0),
            seed,
            seq_seed,
            kinds,
            steps: env_num("HCPIPE_DIFF_STEPS")
                .map(|n| n as usize)
                .unwrap_or(10),
            keep_going: std::env::var("HCPIPE_DIFF_KEEP_GOING").is_ok_and(|v| v == "1"),
            shrink_seconds: env_num("HCPIPE_DIFF_SHRINK_SECONDS").unwrap_or(30.0),
            tmp: std::env::var_os("HCPIPE_DIFF_TMPDIR")
                .map(PathBuf::from)
                .or_else(|| {
                    let shm = PathBuf::from("/dev/shm");
                    tempfile::tempdir_in(&shm).ok().map(|_| shm)
                })
                .unwrap_or_else(std::env::temp_dir),
        }
    }
    fn on(&self, k: Kind) -> bool {
        self.kinds.contains(&k)
    }
}

// ---------------------------------------------------------------- model

#[derive(Clone, PartialEq, Debug)]
enum MVal {
    Int(i64),
    Str(String),
}

impl MVal {
    fn yaml(&self) -> String {
        match self {
            MVal::Int(i) => i.to_string(),
            MVal::Str(s) => yq(s),
        }
    }
    fn json(&self) -> serde_json::Value {
        match self {
            MVal::Int(i) => serde_json::json!(i),
            MVal::Str(s) => serde_json::json!(s),
        }
    }

    /// How hcpipe shows a value in text.
    fn display(&self) -> String {
        match self {
            MVal::Int(i) => i.to_string(),
            MVal::Str(s) => s.clone(),
        }
    }
}

/// A YAML double-quoted string.
fn yq(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[derive(Clone, Debug)]
struct Matrix {
    keys: BTreeMap<String, Vec<MVal>>,
}

#[derive(Clone, Debug)]
struct StageDef {
    name: String,
    /// The command without the gate; `{in.X}` names base stages.
    body: String,
    deps: Vec<String>,
    needs: Vec<String>,
    matrix: Option<usize>,
    gather: bool,
    nondet: bool,
    gated: bool,
}

impl StageDef {
    fn cmd(&self) -> String {
        if self.gated {
            format!("sh gate.sh {} && {{ {}; }}", self.name, self.body)
        } else {
            self.body.clone()
        }
    }
}

#[derive(Clone, Debug)]
struct Model {
    params: BTreeMap<String, String>,
    /// `--set` overrides given to every run from now on.
    sets: BTreeMap<String, String>,
    matrices: Vec<Matrix>,
    stages: Vec<StageDef>,
}

/// One expanded stage (a matrix member, or a plain stage).
struct Member {
    stage: usize,
    name: String,
    values: BTreeMap<String, MVal>,
    /// base name of each need → the members it stands for, in order.
    inputs: BTreeMap<String, Vec<usize>>,
    tainted: bool,
}

fn combinations(m: &BTreeMap<String, Vec<MVal>>) -> Vec<BTreeMap<String, MVal>> {
    let mut out = vec![BTreeMap::new()];
    for (k, values) in m {
        let mut next = Vec::new();
        for partial in &out {
            for v in values {
                let mut c = partial.clone();
                c.insert(k.clone(), v.clone());
                next.push(c);
            }
        }
        out = next;
    }
    out
}

impl Model {
    fn stage_index(&self, name: &str) -> usize {
        self.stages
            .iter()
            .position(|s| s.name == name)
            .expect("model stage")
    }

    fn effective_params(&self) -> BTreeMap<String, String> {
        let mut p = self.params.clone();
        for (k, v) in &self.sets {
            p.insert(k.clone(), v.clone());
        }
        p
    }

    /// Members in hcpipe's order: file order, matrix combinations in order.
    fn expand(&self) -> Vec<Member> {
        let mut members: Vec<Member> = Vec::new();
        let mut of_stage: Vec<Vec<usize>> = Vec::new();
        for (si, s) in self.stages.iter().enumerate() {
            let combos = match s.matrix {
                None => vec![BTreeMap::new()],
                Some(m) => combinations(&self.matrices[m].keys),
            };
            let mut mine = Vec::new();
            for values in combos {
                let mut inputs = BTreeMap::new();
                for need in &s.needs {
                    let ni = self.stage_index(need);
                    let ups = &of_stage[ni];
                    let chosen: Vec<usize> = if self.stages[ni].matrix.is_none() {
                        vec![ups[0]]
                    } else if s.gather {
                        ups.clone()
                    } else {
                        ups.iter()
                            .copied()
                            .filter(|&u| {
                                members[u]
                                    .values
                                    .iter()
                                    .all(|(k, v)| values.get(k) == Some(v))
                            })
                            .collect()
                    };
                    inputs.insert(need.clone(), chosen);
                }
                let tainted = s.nondet
                    || inputs
                        .values()
                        .flatten()
                        .any(|&u: &usize| members[u].tainted);
                // hcpipe's own naming (values that could collide are quoted).
                let as_json: BTreeMap<String, serde_json::Value> =
                    values.iter().map(|(k, v)| (k.clone(), v.json())).collect();
                let name = hcpipe::spec::matrix::member_name(&s.name, &as_json);
                mine.push(members.len());
                members.push(Member {
                    stage: si,
                    name,
                    values,
                    inputs,
                    tainted,
                });
            }
            of_stage.push(mine);
        }
        members
    }

    fn yaml(&self) -> String {
        let mut y = String::from("name: difftest\nparams:\n");
        for (k, v) in &self.params {
            let _ = writeln!(y, "  {k}: {}", yq(v));
        }
        y.push_str("stages:\n");
        for s in &self.stages {
            let _ = writeln!(y, "  {}:", s.name);
            let _ = writeln!(y, "    cmd: {}", yq(&s.cmd()));
            if !s.deps.is_empty() {
                let d: Vec<String> = s.deps.iter().map(|d| yq(d)).collect();
                let _ = writeln!(y, "    deps: [{}]", d.join(", "));
            }
            if !s.needs.is_empty() {
                let _ = writeln!(y, "    needs: [{}]", s.needs.join(", "));
            }
            if let Some(m) = s.matrix {
                let lists: Vec<String> = self.matrices[m]
                    .keys
                    .iter()
                    .map(|(k, vs)| {
                        let v: Vec<String> = vs.iter().map(MVal::yaml).collect();
                        format!("{k}: [{}]", v.join(", "))
                    })
                    .collect();
                let _ = writeln!(y, "    matrix: {{{}}}", lists.join(", "));
            }
            if s.gather {
                y.push_str("    gather: true\n");
            }
        }
        y
    }

    /// Base stages downstream of `name` (transitively), and itself.
    fn closure_below(&self, name: &str) -> BTreeSet<String> {
        let mut set = BTreeSet::from([name.to_string()]);
        loop {
            let before = set.len();
            for s in &self.stages {
                if s.needs.iter().any(|n| set.contains(n)) {
                    set.insert(s.name.clone());
                }
            }
            if set.len() == before {
                return set;
            }
        }
    }

    /// `names` and every base stage they need, transitively.
    fn closure_above(&self, names: &BTreeSet<String>) -> BTreeSet<String> {
        let mut set = names.clone();
        loop {
            let before = set.len();
            for s in &self.stages {
                if set.contains(&s.name) {
                    set.extend(s.needs.iter().cloned());
                }
            }
            if set.len() == before {
                return set;
            }
        }
    }

    /// Base stages that read `path` (a dep, or a file inside a folder dep).
    fn readers(&self, path: &str) -> BTreeSet<String> {
        self.stages
            .iter()
            .filter(|s| {
                s.deps
                    .iter()
                    .any(|d| d == path || path.starts_with(&format!("{d}/")))
            })
            .map(|s| s.name.clone())
            .collect()
    }
}

// ---------------------------------------------------------------- generation

const WORDS: [&str; 12] = [
    "apple", "birch", "cedar", "delta", "ember", "fjord", "gamma", "harbor", "iris", "jade",
    "kelp", "lumen",
];
const PARAM_VALUES: [&str; 5] = ["alpha", "beta", "gamma", "delta", "omega"];

fn text(rng: &mut Rng) -> String {
    let lines = rng.range(1, 5);
    let mut s = String::new();
    for _ in 0..lines {
        let n = rng.range(1, 4);
        let words: Vec<&str> = (0..n).map(|_| *rng.pick(&WORDS)).collect();
        s.push_str(&words.join(" "));
        s.push('\n');
    }
    s
}

/// A different text of exactly `len` bytes (when it can), else any new text.
fn same_size_text(rng: &mut Rng, old: &str) -> String {
    if old.is_empty() {
        return text(rng);
    }
    for _ in 0..20 {
        let mut b: Vec<u8> = old.bytes().collect();
        let i = rng.below(b.len());
        if b[i] == b'\n' {
            continue;
        }
        b[i] = b"abcdefghijklmnopqrstuvwxyz"[rng.below(26)];
        let s = String::from_utf8(b).unwrap_or_default();
        if s != old {
            return s;
        }
    }
    text(rng)
}

const GATE_SH: &str = r#"# gate.sh NAME: when the harness armed this gate, say so and wait for its go (at most 30 s).
[ -e ".gate/$1.armed" ] || exit 0
: > ".gate/$1.waiting"
i=0
while [ ! -e ".gate/$1.go" ]; do
  i=$((i+1))
  if [ $i -gt 3000 ]; then echo "gate $1: no go after 30 s" >&2; exit 3; fi
  sleep 0.01
done
"#;

/// The harness's picture of the file tree, to generate edits.
#[derive(Clone, Default)]
struct World {
    /// Regular files → current content.
    files: BTreeMap<String, String>,
    /// Every content each file has had.
    history: BTreeMap<String, Vec<String>>,
    /// Symlinks in dep folders → (current target, the targets it may take).
    links: BTreeMap<String, (String, Vec<String>)>,
    added: Vec<String>,
    counter: usize,
}

impl World {
    fn set(&mut self, path: &str, content: &str) {
        self.files.insert(path.into(), content.into());
        let h = self.history.entry(path.into()).or_default();
        if !h.iter().any(|c| c == content) {
            h.push(content.into());
        }
    }
    /// The regular file a path names, following the links we made.
    fn resolve(&self, path: &str) -> String {
        for (link, (target, _)) in &self.links {
            if path == link || path.starts_with(&format!("{link}/")) {
                let dir = Path::new(link).parent().unwrap_or(Path::new(""));
                let joined = normalize(&dir.join(target));
                return format!("{joined}{}", &path[link.len()..]);
            }
        }
        path.to_string()
    }
}

fn normalize(p: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    parts.join("/")
}

/// The initial file tree: data files, two dep folders with symlinks (to a
/// file inside, to a file outside, to a folder outside), their targets.
fn initial_world(rng: &mut Rng) -> World {
    let mut w = World::default();
    for i in 0..4 {
        let t = text(rng);
        w.set(&format!("data/f{i}.txt"), &t);
    }
    for p in [
        "dirs/d0/a.txt",
        "dirs/d0/b.txt",
        "dirs/d0/sub/c.txt",
        "dirs/d1/x.txt",
        "dirs/d1/y/z.txt",
        "ext/e0.txt",
        "ext/e1.txt",
        "ext/edir/z.txt",
        "ext/edir2/z.txt",
    ] {
        let t = text(rng);
        w.set(p, &t);
    }
    let links: [(&str, &[&str]); 4] = [
        ("dirs/d0/la", &["a.txt", "b.txt"]),
        ("dirs/d0/le", &["../../ext/e0.txt", "../../ext/e1.txt"]),
        ("dirs/d0/ls", &["../../ext/edir", "../../ext/edir2"]),
        ("dirs/d1/le", &["../../ext/e1.txt", "../../ext/e0.txt"]),
    ];
    for (l, targets) in links {
        w.links.insert(
            l.into(),
            (
                targets[0].to_string(),
                targets.iter().map(|s| s.to_string()).collect(),
            ),
        );
    }
    w
}

fn gen_model(rng: &mut Rng, cfg: &Config) -> Model {
    let mut params = BTreeMap::new();
    params.insert("p0".to_string(), rng.pick(&PARAM_VALUES).to_string());
    params.insert("p1".to_string(), rng.pick(&PARAM_VALUES).to_string());
    let mut matrices = Vec::new();
    let pool = matrix_pool();
    for _ in 0..rng.range(1, 2) {
        let mut vals = pool.clone();
        rng.shuffle(&mut vals);
        vals.truncate(rng.range(2, 3));
        let mut keys = BTreeMap::new();
        keys.insert("k".to_string(), vals);
        matrices.push(Matrix { keys });
    }
    if cfg.on(Kind::Collide) && rng.chance(0.35) {
        // `m[a=p,b=q,b=r]` twice: (a=p, b="q,b=r") and (a="p,b=q", b=r).
        let s = |v: &str| MVal::Str(v.into());
        let mut keys = BTreeMap::new();
        keys.insert("a".to_string(), vec![s("p"), s("p,b=q")]);
        keys.insert("b".to_string(), vec![s("r"), s("q,b=r")]);
        matrices.push(Matrix { keys });
    }
    let mut stages: Vec<StageDef> = Vec::new();
    let add = |stages: &mut Vec<StageDef>, prefix: &str, body: String, deps: Vec<String>| {
        let name = format!("{prefix}{}", stages.len());
        stages.push(StageDef {
            name,
            body,
            deps,
            needs: vec![],
            matrix: None,
            gather: false,
            nondet: false,
            gated: false,
        });
        stages.len() - 1
    };
    let f = |i: usize| format!("data/f{i}.txt");
    // Sources: each dep folder once, each matrix once, then a few more.
    for d in 0..2 {
        let body = format!(
            "mkdir -p {{out}}/parts && (cd dirs/d{d} && find -L . -type f | LC_ALL=C sort | while read -r f; do echo \"== $f\"; cat \"$f\"; done) > {{out}}/out.txt && find -L dirs/d{d} -type f | wc -l > {{out}}/parts/count"
        );
        add(&mut stages, "dir", body, vec![format!("dirs/d{d}")]);
    }
    for (m, matrix) in matrices.iter().enumerate() {
        let k = rng.below(4);
        let keys: Vec<String> = matrix
            .keys
            .keys()
            .map(|key| format!("'${{matrix.{key}}}'"))
            .collect();
        let mut body = format!(
            "printf '%s\\n' {} '${{params.p0}}' > {{out}}/out.txt && sed -n 1p data/f{k}.txt >> {{out}}/out.txt",
            keys.join(" ")
        );
        let nondet = cfg.on(Kind::Nondet) && rng.chance(0.2);
        if nondet {
            body.push_str(" && date +%s%N >> {out}/out.txt");
        }
        let i = add(&mut stages, "mat", body, vec![f(k)]);
        stages[i].matrix = Some(m);
        stages[i].nondet = nondet;
    }
    for _ in 0..rng.range(1, 3) {
        let choice = rng.below(if cfg.on(Kind::Nondet) { 4 } else { 3 });
        let (a, b) = (rng.below(4), rng.below(4));
        match choice {
            0 => {
                add(
                    &mut stages,
                    "file",
                    format!("sort data/f{a}.txt > {{out}}/out.txt"),
                    vec![f(a)],
                );
            }
            1 => {
                let deps = if a == b { vec![f(a)] } else { vec![f(a), f(b)] };
                add(
                    &mut stages,
                    "files",
                    format!("cat data/f{a}.txt data/f{b}.txt | tr a-z A-Z > {{out}}/out.txt"),
                    deps,
                );
            }
            2 => {
                let p = rng.below(2);
                add(
                    &mut stages,
                    "param",
                    format!("printf '%s\\n' '${{params.p{p}}}' > {{out}}/out.txt && head -n 2 data/f{a}.txt >> {{out}}/out.txt"),
                    vec![f(a)],
                );
            }
            _ => {
                let i = add(
                    &mut stages,
                    "rand",
                    format!("date +%s%N > {{out}}/out.txt && od -An -N4 -tu4 /dev/urandom >> {{out}}/out.txt && cat data/f{a}.txt >> {{out}}/out.txt"),
                    vec![f(a)],
                );
                stages[i].nondet = true;
            }
        }
    }
    // Derived stages.
    let xforms = [
        "sort -r {in.U}/out.txt > {out}/out.txt",
        "tr a-z A-Z < {in.U}/out.txt > {out}/out.txt",
        "sed 's/a/@/g' {in.U}/out.txt > {out}/out.txt",
        "wc -l < {in.U}/out.txt > {out}/out.txt && cat {in.U}/out.txt >> {out}/out.txt",
        "sha256sum < {in.U}/out.txt > {out}/out.txt",
        "head -n 3 {in.U}/out.txt > {out}/out.txt",
        "cat {in.U}/out.txt {in.U}/out.txt > {out}/out.txt",
        "mkdir -p {out}/sub/deep && cp {in.U}/out.txt {out}/out.txt && wc -c < {in.U}/out.txt > {out}/sub/size && sort -r {in.U}/out.txt > {out}/sub/deep/rev",
        "sed 's/^/${params.p1}:/' {in.U}/out.txt > {out}/out.txt",
    ];
    // Every non-deterministic stage gets a copying dependant.
    let nondet_plain: Vec<String> = stages
        .iter()
        .filter(|s| s.nondet && s.matrix.is_none())
        .map(|s| s.name.clone())
        .collect();
    for u in nondet_plain {
        let i = add(
            &mut stages,
            "copy",
            "cp {in.U}/out.txt {out}/out.txt && wc -l < {in.U}/out.txt >> {out}/out.txt"
                .replace("{in.U}", &format!("{{in.{u}}}")),
            vec![],
        );
        stages[i].needs = vec![u];
    }
    for _ in 0..rng.range(3, 6) {
        let plain: Vec<usize> = (0..stages.len())
            .filter(|&i| stages[i].matrix.is_none())
            .collect();
        let matrix_st: Vec<usize> = (0..stages.len())
            .filter(|&i| stages[i].matrix.is_some())
            .collect();
        match rng.below(5) {
            0 | 1 => {
                let u = stages[*rng.pick(&plain)].name.clone();
                let mut body = rng.pick(&xforms).replace("{in.U}", &format!("{{in.{u}}}"));
                let mut deps = vec![];
                if rng.chance(0.3) {
                    let k = rng.below(4);
                    body = format!("{body} && cat data/f{k}.txt >> {{out}}/out.txt");
                    deps.push(f(k));
                }
                let i = add(&mut stages, "x", body, deps);
                stages[i].needs = vec![u];
            }
            2 => {
                let u = stages[*rng.pick(&plain)].name.clone();
                let v = stages[*rng.pick(&plain)].name.clone();
                let needs = if u == v {
                    vec![u.clone()]
                } else {
                    vec![u.clone(), v.clone()]
                };
                let i = add(
                    &mut stages,
                    "cat",
                    format!("cat {{in.{u}}}/out.txt {{in.{v}}}/out.txt | sort > {{out}}/out.txt"),
                    vec![],
                );
                stages[i].needs = needs;
            }
            3 => {
                // Gather: cat every member, in the matrix's order.
                let m = stages[*rng.pick(&matrix_st)].name.clone();
                let i = add(
                    &mut stages,
                    "gather",
                    format!("for d in {{in.{m}}}; do cat \"$d/out.txt\"; echo --; done > {{out}}/out.txt"),
                    vec![],
                );
                stages[i].needs = vec![m];
                stages[i].gather = true;
            }
            _ => {
                // Fan out with a matrix stage (same matrix).
                let mi = *rng.pick(&matrix_st);
                let m = stages[mi].name.clone();
                let mx = stages[mi].matrix;
                let tag: Vec<String> = matrices[mx.unwrap_or(0)]
                    .keys
                    .keys()
                    .map(|k| format!("${{matrix.{k}}}"))
                    .collect();
                let mut needs = vec![m.clone()];
                let mut src = format!("{{in.{m}}}/out.txt");
                if rng.chance(0.4) {
                    let u = stages[*rng.pick(&plain)].name.clone();
                    src = format!("{src} {{in.{u}}}/out.txt");
                    needs.push(u);
                }
                let i = add(
                    &mut stages,
                    "fan",
                    format!(
                        "cat {src} | sed 's/^/{}|/' > {{out}}/out.txt",
                        tag.join("-")
                    ),
                    vec![],
                );
                stages[i].needs = needs;
                stages[i].matrix = mx;
            }
        }
    }
    // Every matrix stage without a gather below gets one (order matters there).
    let gathered: BTreeSet<String> = stages
        .iter()
        .filter(|s| s.gather)
        .flat_map(|s| s.needs.clone())
        .collect();
    let ungathered: Vec<String> = stages
        .iter()
        .filter(|s| s.matrix.is_some() && !gathered.contains(&s.name))
        .map(|s| s.name.clone())
        .collect();
    for m in ungathered.into_iter().take(2) {
        let i = add(
            &mut stages,
            "gather",
            format!("for d in {{in.{m}}}; do cat \"$d/out.txt\"; echo --; done > {{out}}/out.txt"),
            vec![],
        );
        stages[i].needs = vec![m];
        stages[i].gather = true;
    }
    // Gates: plain deterministic stages with something to edit below them.
    if cfg.on(Kind::MidRun) {
        let mut cands: Vec<usize> = (0..stages.len())
            .filter(|&i| stages[i].matrix.is_none() && !stages[i].nondet)
            .collect();
        rng.shuffle(&mut cands);
        for i in cands.into_iter().take(2) {
            stages[i].gated = true;
        }
    }
    Model {
        params,
        sets: BTreeMap::new(),
        matrices,
        stages,
    }
}

fn matrix_pool() -> Vec<MVal> {
    vec![
        MVal::Int(1),
        MVal::Int(2),
        MVal::Int(3),
        MVal::Str("a".into()),
        MVal::Str("b".into()),
        MVal::Str("c".into()),
    ]
}

// ---------------------------------------------------------------- steps

#[derive(Clone, Debug)]
enum Action {
    Write {
        path: String,
        content: String,
    },
    Touch {
        path: String,
    },
    RenameOver {
        path: String,
        content: String,
    },
    Remove {
        path: String,
    },
    Symlink {
        path: String,
        target: String,
    },
    SetParam {
        name: String,
        value: String,
    },
    SetOverride {
        name: String,
        value: Option<String>,
    },
    SetMatrix {
        matrix: usize,
        key: String,
        values: Vec<MVal>,
    },
}

impl Action {
    fn describe(&self) -> String {
        let q = |s: &str| format!("{s:?}");
        match self {
            Action::Write { path, content } => format!("printf %s {} > {path}", q(content)),
            Action::Touch { path } => format!("touch {path}"),
            Action::RenameOver { path, content } => {
                format!(
                    "printf %s {} > {path}.new && mv {path}.new {path}",
                    q(content)
                )
            }
            Action::Remove { path } => format!("rm {path}"),
            Action::Symlink { path, target } => format!("ln -sfn {target} {path}"),
            Action::SetParam { name, value } => format!("p.yaml: params.{name} = {value:?}"),
            Action::SetOverride {
                name,
                value: Some(v),
            } => {
                format!("from now on: --set {name}={v}")
            }
            Action::SetOverride { name, value: None } => format!("from now on: no --set {name}"),
            Action::SetMatrix {
                matrix,
                key,
                values,
            } => {
                let v: Vec<String> = values.iter().map(MVal::yaml).collect();
                format!("p.yaml: matrix #{matrix} {key}: [{}]", v.join(", "))
            }
        }
    }

    /// Apply to the model and the disk. A file that an earlier (shrunk
    /// away) step would have made may be missing: that is not an error.
    fn apply(&self, root: &Path, model: &mut Model, world: &mut World) {
        match self {
            Action::Write { path, content } => {
                let p = root.join(path);
                if let Some(d) = p.parent() {
                    let _ = std::fs::create_dir_all(d);
                }
                std::fs::write(&p, content).unwrap_or_else(|e| panic!("write {path}: {e}"));
                let real = world.resolve(path);
                world.set(&real, content);
                let name = Path::new(path).file_name().unwrap_or_default();
                if name.to_string_lossy().starts_with("new") && !world.added.contains(path) {
                    world.added.push(path.clone());
                }
            }
            Action::Touch { path } => {
                if let Ok(f) = std::fs::File::options().append(true).open(root.join(path)) {
                    let _ = f.set_modified(std::time::SystemTime::now());
                }
            }
            Action::RenameOver { path, content } => {
                let p = root.join(path);
                let tmp = root.join(format!("{path}.new"));
                std::fs::write(&tmp, content).unwrap();
                std::fs::rename(&tmp, &p).unwrap();
                world.set(path, content);
            }
            Action::Remove { path } => {
                let _ = std::fs::remove_file(root.join(path));
                world.files.remove(path);
                world.added.retain(|a| a != path);
            }
            Action::Symlink { path, target } => {
                let p = root.join(path);
                let _ = std::fs::remove_file(&p);
                std::os::unix::fs::symlink(target, &p).unwrap();
                if let Some(l) = world.links.get_mut(path) {
                    l.0 = target.clone();
                }
            }
            Action::SetParam { name, value } => {
                model.params.insert(name.clone(), value.clone());
            }
            Action::SetOverride { name, value } => match value {
                Some(v) => {
                    model.sets.insert(name.clone(), v.clone());
                }
                None => {
                    model.sets.remove(name);
                }
            },
            Action::SetMatrix {
                matrix,
                key,
                values,
            } => {
                if let Some(m) = model.matrices.get_mut(*matrix) {
                    m.keys.insert(key.clone(), values.clone());
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
struct MidRun {
    gate: String,
    during: Vec<Action>,
    after: Vec<Action>,
}

#[derive(Clone, Debug)]
struct Step {
    kind: Kind,
    pre: Vec<Action>,
    force: Vec<String>,
    mid: Option<MidRun>,
}

impl Step {
    fn describe(&self) -> String {
        let mut parts: Vec<String> = self.pre.iter().map(Action::describe).collect();
        let mut run = "hcpipe run p.yaml".to_string();
        for f in &self.force {
            let _ = write!(run, " --force '{f}'");
        }
        if let Some(m) = &self.mid {
            let _ = write!(
                run,
                " — while stage `{}` waits on its gate: {}",
                m.gate,
                m.during
                    .iter()
                    .map(Action::describe)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        parts.push(run);
        if let Some(m) = &self.mid {
            for a in &m.after {
                parts.push(format!("after the run: {}", a.describe()));
            }
        }
        format!("[{}] {}", self.kind.name(), parts.join("; "))
    }
}

fn gen_step(rng: &mut Rng, cfg: &Config, model: &Model, world: &World) -> Step {
    let kinds: Vec<Kind> = cfg
        .kinds
        .iter()
        .copied()
        .filter(|k| !k.is_feature())
        .collect();
    for _ in 0..50 {
        let kind = *rng.pick(&kinds);
        if let Some(step) = try_gen(rng, kind, model, world) {
            return step;
        }
    }
    Step {
        kind: Kind::Touch,
        pre: vec![Action::Touch {
            path: "data/f0.txt".into(),
        }],
        force: vec![],
        mid: None,
    }
}

fn data_files(world: &World) -> Vec<String> {
    world
        .files
        .keys()
        .filter(|p| p.starts_with("data/"))
        .cloned()
        .collect()
}

fn dir_files(world: &World) -> Vec<String> {
    world
        .files
        .keys()
        .filter(|p| p.starts_with("dirs/"))
        .cloned()
        .collect()
}

fn try_gen(rng: &mut Rng, kind: Kind, model: &Model, world: &World) -> Option<Step> {
    let plain = |pre: Vec<Action>| {
        Some(Step {
            kind,
            pre,
            force: vec![],
            mid: None,
        })
    };
    let new_content = |rng: &mut Rng, path: &str| -> String {
        let old = world.files.get(path).cloned().unwrap_or_default();
        loop {
            let t = if rng.chance(0.3) {
                same_size_text(rng, &old)
            } else {
                text(rng)
            };
            if t != old {
                return t;
            }
        }
    };
    match kind {
        Kind::EditFile => {
            let path = rng.pick(&data_files(world)).clone();
            let content = new_content(rng, &path);
            plain(vec![Action::Write { path, content }])
        }
        Kind::Touch => {
            let files: Vec<String> = world.files.keys().cloned().collect();
            let path = rng.pick(&files).clone();
            plain(vec![Action::Touch { path }])
        }
        Kind::Rename => {
            let mut files = data_files(world);
            files.extend(dir_files(world));
            let path = rng.pick(&files).clone();
            let content = if rng.chance(0.5) {
                world.files[&path].clone()
            } else {
                new_content(rng, &path)
            };
            plain(vec![Action::RenameOver { path, content }])
        }
        Kind::Revert => {
            let cands: Vec<(String, String)> = world
                .history
                .iter()
                .filter(|(p, _)| world.files.contains_key(*p))
                .flat_map(|(p, h)| {
                    h.iter()
                        .filter(|c| Some(*c) != world.files.get(p))
                        .map(|c| (p.clone(), c.clone()))
                        .collect::<Vec<_>>()
                })
                .collect();
            if cands.is_empty() {
                return None;
            }
            let (path, content) = rng.pick(&cands).clone();
            plain(vec![Action::Write { path, content }])
        }
        Kind::DirFile => {
            let path = if rng.chance(0.3) {
                "dirs/d0/la".to_string()
            } else {
                rng.pick(&dir_files(world)).clone()
            };
            let content = new_content(rng, &world.resolve(&path));
            plain(vec![Action::Write { path, content }])
        }
        Kind::DirAddRemove => {
            if !world.added.is_empty() && rng.chance(0.5) {
                let path = rng.pick(&world.added).clone();
                plain(vec![Action::Remove { path }])
            } else {
                let d = rng.below(2);
                let path = format!("dirs/d{d}/new{}.txt", world.counter);
                plain(vec![Action::Write {
                    path,
                    content: text(rng),
                }])
            }
        }
        Kind::LinkTarget => {
            let through = [
                "dirs/d0/le",
                "dirs/d1/le",
                "dirs/d0/ls/z.txt",
                "ext/e0.txt",
                "ext/e1.txt",
                "ext/edir/z.txt",
                "ext/edir2/z.txt",
            ];
            let path = rng.pick(&through).to_string();
            let content = new_content(rng, &world.resolve(&path));
            plain(vec![Action::Write { path, content }])
        }
        Kind::LinkRepoint => {
            let links: Vec<&String> = world.links.keys().collect();
            let link = rng.pick(&links).to_string();
            let (cur, targets) = &world.links[&link];
            let others: Vec<&String> = targets.iter().filter(|t| *t != cur).collect();
            let target = rng.pick(&others).to_string();
            plain(vec![Action::Symlink { path: link, target }])
        }
        Kind::ParamYaml => {
            let name = format!("p{}", rng.below(2));
            let cur = model.params[&name].clone();
            let others: Vec<&&str> = PARAM_VALUES.iter().filter(|v| **v != cur).collect();
            let value = rng.pick(&others).to_string();
            plain(vec![Action::SetParam { name, value }])
        }
        Kind::ParamSet => {
            let name = format!("p{}", rng.below(2));
            let value = if model.sets.contains_key(&name) && rng.chance(0.4) {
                None
            } else {
                Some(rng.pick(&PARAM_VALUES).to_string())
            };
            plain(vec![Action::SetOverride { name, value }])
        }
        Kind::MatrixReorder => {
            let m = rng.below(model.matrices.len());
            let keys: Vec<&String> = model.matrices[m]
                .keys
                .iter()
                .filter(|(_, v)| v.len() >= 2)
                .map(|(k, _)| k)
                .collect();
            if keys.is_empty() {
                return None;
            }
            let key = rng.pick(&keys).to_string();
            let old = model.matrices[m].keys[&key].clone();
            let mut values = old.clone();
            while values == old {
                rng.shuffle(&mut values);
            }
            plain(vec![Action::SetMatrix {
                matrix: m,
                key,
                values,
            }])
        }
        Kind::MatrixAddRemove => {
            let m = rng.below(model.matrices.len());
            let keys: Vec<&String> = model.matrices[m].keys.keys().collect();
            let key = rng.pick(&keys).to_string();
            let mut values = model.matrices[m].keys[&key].clone();
            let missing: Vec<MVal> = matrix_pool()
                .into_iter()
                .filter(|v| !values.contains(v))
                .collect();
            if values.len() >= 2 && (missing.is_empty() || rng.chance(0.5)) {
                values.remove(rng.below(values.len()));
            } else if !missing.is_empty() {
                let at = rng.below(values.len() + 1);
                values.insert(at, rng.pick(&missing).clone());
            } else {
                return None;
            }
            plain(vec![Action::SetMatrix {
                matrix: m,
                key,
                values,
            }])
        }
        Kind::Force => {
            let nondet: Vec<&StageDef> = model.stages.iter().filter(|s| s.nondet).collect();
            let s = if !nondet.is_empty() && rng.chance(0.7) {
                rng.pick(&nondet).name.clone()
            } else {
                rng.pick(&model.stages).name.clone()
            };
            Some(Step {
                kind,
                pre: vec![],
                force: vec![s],
                mid: None,
            })
        }
        Kind::MidRun => {
            let gates: Vec<&StageDef> = model.stages.iter().filter(|s| s.gated).collect();
            if gates.is_empty() {
                return None;
            }
            let g = rng.pick(&gates).name.clone();
            let below = model.closure_below(&g);
            // Only files that nothing outside the gate's closure reads: then
            // every reader runs after the edit, whatever the schedule.
            let mut files = data_files(world);
            files.extend(dir_files(world));
            let targets: Vec<String> = files
                .into_iter()
                .filter(|f| {
                    let r = model.readers(f);
                    !r.is_empty() && r.is_subset(&below)
                })
                .collect();
            if targets.is_empty() {
                return None;
            }
            let path = rng.pick(&targets).clone();
            let before = world.files[&path].clone();
            let own = model.readers(&path).iter().all(|r| *r == g);
            let mut pre = vec![];
            let mut plan_time = before.clone();
            if !own || rng.chance(0.5) {
                plan_time = new_content(rng, &path);
                pre.push(Action::Write {
                    path: path.clone(),
                    content: plan_time.clone(),
                });
            }
            let mut during = plan_time.clone();
            while during == plan_time || during == before {
                during = text(rng);
            }
            let after = if rng.chance(0.6) {
                vec![Action::Write {
                    path: path.clone(),
                    content: plan_time,
                }]
            } else {
                vec![]
            };
            Some(Step {
                kind,
                pre,
                force: vec![g.clone()],
                mid: Some(MidRun {
                    gate: g,
                    during: vec![Action::Write {
                        path,
                        content: during,
                    }],
                    after,
                }),
            })
        }
        Kind::Nondet | Kind::Collide => None,
    }
}

// ---------------------------------------------------------------- running hcpipe

fn hcpipe(dir: &Path, cache: &Path, args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hcpipe"));
    c.args(args)
        .arg("--cache")
        .arg(cache)
        .current_dir(dir)
        .env_remove("HCPIPE_CACHE")
        .env_remove("RUST_LOG");
    c
}

fn text_of(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn set_args(model: &Model) -> Vec<String> {
    model
        .sets
        .iter()
        .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")])
        .collect()
}

/// `hcpipe status --json`: (stage, key, status), in hcpipe's order.
fn status(
    dir: &Path,
    cache: &Path,
    model: &Model,
) -> Result<Vec<(String, String, String)>, String> {
    let mut args = vec!["status".to_string(), "p.yaml".into(), "--json".into()];
    args.extend(set_args(model));
    let out = hcpipe(dir, cache, &args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("hcpipe status failed: {}", text_of(&out)));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (s("stage"), s("key"), s("status"))
        })
        .collect())
}

/// One file tree, as text: path → `file:CONTENT` / `link:TARGET` / `dir`.
fn read_tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir)
        .min_depth(1)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
    {
        let rel = e
            .path()
            .strip_prefix(dir)
            .unwrap_or(e.path())
            .to_string_lossy()
            .into_owned();
        let ft = e.file_type();
        let v = if ft.is_symlink() {
            format!(
                "link:{}",
                std::fs::read_link(e.path())
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            )
        } else if ft.is_dir() {
            "dir".to_string()
        } else {
            format!(
                "file:{}",
                String::from_utf8_lossy(&std::fs::read(e.path()).unwrap_or_default())
            )
        };
        out.insert(rel, v);
    }
    out
}

fn short(s: &str) -> String {
    let s: String = s.chars().take(160).collect();
    format!("{s:?}")
}

/// The first difference between two trees, for people.
fn tree_diff(
    a: &BTreeMap<String, String>,
    a_name: &str,
    b: &BTreeMap<String, String>,
    b_name: &str,
) -> Option<String> {
    let paths: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for p in paths {
        match (a.get(p), b.get(p)) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => {
                return Some(format!(
                    "{p}: {a_name} {} vs {b_name} {}",
                    x.map(|s| short(s)).unwrap_or_else(|| "(missing)".into()),
                    y.map(|s| short(s)).unwrap_or_else(|| "(missing)".into())
                ))
            }
        }
    }
    None
}

// ---------------------------------------------------------------- checking

#[derive(Clone, Debug)]
struct Mismatch {
    /// `run` (a run failed), `members`, `fresh`, `consistency`.
    check: &'static str,
    stage: String,
    detail: String,
}

struct Ctx {
    root: PathBuf,
    cache: PathBuf,
    scratch: PathBuf,
}

/// Each member's (key, artifact folder) in `cache`, or why not.
fn artifacts_of(
    ctx: &Ctx,
    cache: &Path,
    model: &Model,
    members: &[Member],
    what: &str,
) -> Result<Vec<PathBuf>, Mismatch> {
    let st = status(&ctx.root, cache, model).map_err(|e| Mismatch {
        check: "run",
        stage: String::new(),
        detail: format!("{what}: {e}"),
    })?;
    // Map by name; the k-th stage of a repeated name to the k-th member.
    let mut by_name: BTreeMap<&str, Vec<&(String, String, String)>> = BTreeMap::new();
    for s in &st {
        by_name.entry(s.0.as_str()).or_default().push(s);
    }
    let mut taken: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for m in members {
        let k = taken.entry(m.name.as_str()).or_default();
        let Some(s) = by_name.get(m.name.as_str()).and_then(|v| v.get(*k)) else {
            let names: Vec<&str> = st.iter().map(|s| s.0.as_str()).collect();
            return Err(Mismatch {
                check: "members",
                stage: m.name.clone(),
                detail: format!("{what}: hcpipe has no stage `{}`; it has {names:?}", m.name),
            });
        };
        *k += 1;
        if s.2 != "fresh" {
            return Err(Mismatch {
                check: "run",
                stage: m.name.clone(),
                detail: format!(
                    "{what}: `{}` is {} right after a successful run",
                    m.name, s.2
                ),
            });
        }
        out.push(cache.join("artifacts").join(&s.1));
    }
    if st.len() != members.len() {
        return Err(Mismatch {
            check: "members",
            stage: String::new(),
            detail: format!(
                "{what}: hcpipe has {} stages, the pipeline {}",
                st.len(),
                members.len()
            ),
        });
    }
    Ok(out)
}

/// A member's command with everything substituted, as this harness reads the pipeline.
fn render_cmd(model: &Model, members: &[Member], i: usize, arts: &[PathBuf], out: &Path) -> String {
    let m = &members[i];
    let s = &model.stages[m.stage];
    let mut cmd = s.cmd();
    for (k, v) in model.effective_params() {
        cmd = cmd.replace(&format!("${{params.{k}}}"), &v);
    }
    for (k, v) in &m.values {
        cmd = cmd.replace(&format!("${{matrix.{k}}}"), &v.display());
    }
    cmd = cmd.replace("{out}", &out.to_string_lossy());
    for (base, ups) in &m.inputs {
        let dirs: Vec<String> = ups
            .iter()
            .map(|&u| arts[u].to_string_lossy().into_owned())
            .collect();
        cmd = cmd.replace(&format!("{{in.{base}}}"), &dirs.join(" "));
    }
    cmd
}

fn check(ctx: &Ctx, model: &Model) -> Vec<Mismatch> {
    let members = model.expand();
    let mut found = Vec::new();
    // The persistent cache's answer for the current state: settle first
    // when something is stale (an edit after the run's planning).
    let persistent = match artifacts_of(ctx, &ctx.cache, model, &members, "cache") {
        Ok(a) => Ok(a),
        Err(m) if m.check == "run" && m.detail.contains("right after") => {
            let mut args = vec!["run".to_string(), "p.yaml".into()];
            args.extend(set_args(model));
            let out = hcpipe(&ctx.root, &ctx.cache, &args).output().unwrap();
            if !out.status.success() {
                return vec![Mismatch {
                    check: "run",
                    stage: String::new(),
                    detail: format!("settle run failed: {}", text_of(&out)),
                }];
            }
            artifacts_of(ctx, &ctx.cache, model, &members, "cache")
        }
        Err(m) => Err(m),
    };
    let persistent = match persistent {
        Ok(p) => p,
        Err(m) => return vec![m],
    };
    // A clean run of the same state.
    let fresh_cache = ctx.scratch.join("fresh-cache");
    let _ = std::fs::remove_dir_all(&fresh_cache);
    let mut args = vec!["run".to_string(), "p.yaml".into()];
    args.extend(set_args(model));
    let out = hcpipe(&ctx.root, &fresh_cache, &args).output().unwrap();
    if !out.status.success() {
        return vec![Mismatch {
            check: "run",
            stage: String::new(),
            detail: format!("clean run failed: {}", text_of(&out)),
        }];
    }
    let fresh = match artifacts_of(ctx, &fresh_cache, model, &members, "clean cache") {
        Ok(f) => f,
        Err(m) => return vec![m],
    };
    for (i, m) in members.iter().enumerate() {
        let p = read_tree(&persistent[i]);
        if !m.tainted {
            if let Some(d) = tree_diff(&p, "cached", &read_tree(&fresh[i]), "clean") {
                found.push(Mismatch {
                    check: "fresh",
                    stage: m.name.clone(),
                    detail: d,
                });
            }
        }
        if !model.stages[m.stage].nondet {
            let out_dir = ctx.scratch.join("reexec");
            let _ = std::fs::remove_dir_all(&out_dir);
            std::fs::create_dir_all(&out_dir).unwrap();
            let cmd = render_cmd(model, &members, i, &persistent, &out_dir);
            let o = Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .current_dir(&ctx.root)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if !o.status.success() {
                found.push(Mismatch {
                    check: "consistency",
                    stage: m.name.clone(),
                    detail: format!("re-running its command failed: {}", text_of(&o)),
                });
            } else if let Some(d) = tree_diff(&p, "cached", &read_tree(&out_dir), "re-executed") {
                let ups: Vec<&str> = m
                    .inputs
                    .values()
                    .flatten()
                    .map(|&u| members[u].name.as_str())
                    .collect();
                found.push(Mismatch {
                    check: "consistency",
                    stage: m.name.clone(),
                    detail: format!("{d} (its command on the cache's artifacts of {ups:?})"),
                });
            }
        }
    }
    let _ = std::fs::remove_dir_all(&fresh_cache);
    found
}

/// Apply a step, run, check.
fn exec_step(
    ctx: &Ctx,
    model: &mut Model,
    world: &mut World,
    step: &Step,
) -> Result<Vec<Mismatch>, String> {
    for a in &step.pre {
        a.apply(&ctx.root, model, world);
    }
    std::fs::write(ctx.root.join("p.yaml"), model.yaml()).unwrap();
    let mut args = vec!["run".to_string(), "p.yaml".into(), "--json".into()];
    args.extend(set_args(model));
    let exists = |name: &String| model.stages.iter().any(|s| &s.name == name);
    for f in step.force.iter().filter(|f| exists(f)) {
        args.push("--force".into());
        args.push(f.clone());
    }
    // (A shrunk pipeline may have lost the gated stage: then a plain run.)
    let out = if let Some(mid) = step.mid.as_ref().filter(|m| exists(&m.gate)) {
        let gate = ctx.root.join(".gate");
        let flag = |ext: &str| gate.join(format!("{}.{ext}", mid.gate));
        std::fs::write(flag("armed"), "").unwrap();
        let mut child = hcpipe(&ctx.root, &ctx.cache, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let mut reached = false;
        while start.elapsed() < Duration::from_secs(30) {
            if flag("waiting").exists() {
                reached = true;
                break;
            }
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if reached {
            for a in &mid.during {
                a.apply(&ctx.root, model, world);
            }
        }
        std::fs::write(flag("go"), "").unwrap();
        let out = child.wait_with_output().unwrap();
        for ext in ["armed", "waiting", "go"] {
            let _ = std::fs::remove_file(flag(ext));
        }
        if !reached && out.status.success() {
            return Err(format!(
                "gated stage `{}` never reached its gate although forced:\n{}",
                mid.gate,
                text_of(&out)
            ));
        }
        for a in &mid.after {
            a.apply(&ctx.root, model, world);
        }
        out
    } else {
        hcpipe(&ctx.root, &ctx.cache, &args).output().unwrap()
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("panicked") {
        return Ok(vec![Mismatch {
            check: "run",
            stage: String::new(),
            detail: format!("hcpipe panicked: {}", text_of(&out)),
        }]);
    }
    // A dep edited while its stage ran fails that stage, by design (its
    // result is not stored under either version's key): the next run builds
    // it from the dep as it is now, and only that run's cache is checked.
    let out = if !out.status.success() && stderr.contains("changed while the stage ran") {
        let mut again = vec!["run".to_string(), "p.yaml".into(), "--json".into()];
        again.extend(set_args(model));
        hcpipe(&ctx.root, &ctx.cache, &again).output().unwrap()
    } else {
        out
    };
    if !out.status.success() {
        return Ok(vec![Mismatch {
            check: "run",
            stage: String::new(),
            detail: format!("the step's run failed: {}", text_of(&out)),
        }]);
    }
    Ok(check(ctx, model))
}

// ---------------------------------------------------------------- sequences

struct SeqResult {
    steps: Vec<Step>,
    /// (index of the failing step, 0 = the first run; its mismatches)
    failure: Option<(usize, Vec<Mismatch>)>,
    initial_yaml: String,
    initial_tree: String,
    final_yaml: String,
    run_steps: usize,
}

/// The files the pipeline's stages can read (deps, and the link targets
/// outside the dep folders), with their contents.
fn tree_listing(root: &Path, model: &Model) -> String {
    let deps: Vec<&String> = model.stages.iter().flat_map(|s| &s.deps).collect();
    let read = |rel: &Path| {
        deps.iter().any(|d| rel.starts_with(d.as_str()))
            || (rel.starts_with("ext") && deps.iter().any(|d| d.starts_with("dirs/")))
    };
    let mut s = String::new();
    let mut items: Vec<_> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            let r = e.path().strip_prefix(root).unwrap_or(e.path());
            !(r.starts_with("cache")
                || r.starts_with(".gate")
                || r == Path::new("p.yaml")
                || r == Path::new("gate.sh"))
                && read(r)
        })
        .collect();
    items.sort_by(|a, b| a.path().cmp(b.path()));
    for e in items {
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        if e.file_type().is_symlink() {
            let t = std::fs::read_link(e.path()).unwrap_or_default();
            let _ = writeln!(s, "  {rel} -> {}", t.display());
        } else if e.file_type().is_file() {
            let c = std::fs::read_to_string(e.path()).unwrap_or_default();
            let _ = writeln!(s, "  {rel} = {c:?}");
        }
    }
    s
}

/// Run one sequence: generated (`replay` None, until `deadline`) or replayed.
fn run_sequence(
    cfg: &Config,
    seq_seed: u64,
    replay: Option<&[Step]>,
    keep: Option<&BTreeSet<String>>,
    deadline: Instant,
) -> Result<SeqResult, String> {
    let mut rng = Rng(seq_seed);
    let mut model = gen_model(&mut rng, cfg);
    if let Some(keep) = keep {
        model.stages.retain(|s| keep.contains(&s.name));
    }
    let mut world = initial_world(&mut rng);
    let project = tempfile::tempdir_in(&cfg.tmp).map_err(|e| e.to_string())?;
    let scratch = tempfile::tempdir_in(&cfg.tmp).map_err(|e| e.to_string())?;
    let ctx = Ctx {
        root: project.path().to_path_buf(),
        cache: project.path().join("cache"),
        scratch: scratch.path().to_path_buf(),
    };
    for (p, c) in &world.files {
        let path = ctx.root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, c).unwrap();
    }
    for (l, (t, _)) in &world.links {
        std::os::unix::fs::symlink(t, ctx.root.join(l)).unwrap();
    }
    std::fs::write(ctx.root.join("gate.sh"), GATE_SH).unwrap();
    std::fs::create_dir_all(ctx.root.join(".gate")).unwrap();
    let initial_yaml = model.yaml();
    let initial_tree = tree_listing(&ctx.root, &model);
    let mut result = SeqResult {
        steps: vec![],
        failure: None,
        initial_yaml,
        initial_tree,
        final_yaml: String::new(),
        run_steps: 0,
    };
    let first = Step {
        kind: Kind::Touch,
        pre: vec![],
        force: vec![],
        mid: None,
    };
    let found = exec_step(&ctx, &mut model, &mut world, &first)?;
    result.run_steps += 1;
    if !found.is_empty() {
        result.failure = Some((0, found));
        result.final_yaml = model.yaml();
        return Ok(result);
    }
    let n = replay.map_or(cfg.steps, <[Step]>::len);
    for i in 0..n {
        let step = match replay {
            Some(steps) => steps[i].clone(),
            None => {
                if Instant::now() >= deadline {
                    break;
                }
                world.counter += 1;
                gen_step(&mut rng, cfg, &model, &world)
            }
        };
        let found = exec_step(&ctx, &mut model, &mut world, &step)?;
        result.run_steps += 1;
        result.steps.push(step);
        if !found.is_empty() {
            result.failure = Some((i + 1, found));
            break;
        }
    }
    result.final_yaml = model.yaml();
    Ok(result)
}

/// Greedily drop steps while the sequence still fails.
fn shrink(
    cfg: &Config,
    seq_seed: u64,
    failing: &SeqResult,
    budget_end: Instant,
) -> (SeqResult, usize) {
    let mut deadline = Instant::now() + Duration::from_secs_f64(cfg.shrink_seconds);
    if cfg.keep_going {
        // In a long run, shrinking counts against the run's own budget.
        deadline = deadline.min(budget_end);
    }
    let far = Instant::now() + Duration::from_secs(3600);
    let mut steps = failing.steps.clone();
    let mut best: Option<SeqResult> = None;
    let mut replays = 0;
    let mut i = 0;
    while i < steps.len() && Instant::now() < deadline {
        let mut cand = steps.clone();
        cand.remove(i);
        replays += 1;
        match run_sequence(cfg, seq_seed, Some(&cand), None, far) {
            Ok(r) if r.failure.is_some() => {
                steps = r.steps.clone();
                best = Some(r);
            }
            _ => i += 1,
        }
    }
    // Then the pipeline: keep what the mismatching stages, the gates and the
    // forced stages need, then drop one stage (and what is below it) at a time.
    let model = gen_model(&mut Rng(seq_seed), cfg);
    let failure = best.as_ref().unwrap_or(failing).failure.clone();
    let mut keep: Option<BTreeSet<String>> = None;
    let roots: BTreeSet<String> = failure
        .iter()
        .flat_map(|(_, ms)| {
            ms.iter()
                .map(|m| m.stage.split('[').next().unwrap_or("").to_string())
        })
        .chain(steps.iter().flat_map(|s| s.force.clone()))
        .chain(
            steps
                .iter()
                .filter_map(|s| s.mid.as_ref().map(|m| m.gate.clone())),
        )
        .collect();
    if !roots.contains("") && Instant::now() < deadline {
        let needed = model.closure_above(&roots);
        replays += 1;
        if let Ok(r) = run_sequence(cfg, seq_seed, Some(&steps), Some(&needed), far) {
            if r.failure.is_some() {
                best = Some(r);
                keep = Some(needed);
            }
        }
        let names: Vec<String> = model.stages.iter().rev().map(|s| s.name.clone()).collect();
        for name in names {
            let Some(k) = keep.clone() else { break };
            if !k.contains(&name) || Instant::now() >= deadline {
                continue;
            }
            let below = model.closure_below(&name);
            let cand: BTreeSet<String> = k.difference(&below).cloned().collect();
            if cand.is_empty() {
                continue;
            }
            replays += 1;
            if let Ok(r) = run_sequence(cfg, seq_seed, Some(&steps), Some(&cand), far) {
                if r.failure.is_some() {
                    best = Some(r);
                    keep = Some(cand);
                }
            }
        }
    }
    let best = best.unwrap_or_else(|| {
        run_sequence(cfg, seq_seed, Some(&steps), keep.as_ref(), far).unwrap_or(SeqResult {
            steps: failing.steps.clone(),
            failure: failing.failure.clone(),
            initial_yaml: failing.initial_yaml.clone(),
            initial_tree: failing.initial_tree.clone(),
            final_yaml: failing.final_yaml.clone(),
            run_steps: 0,
        })
    });
    (best, replays)
}

fn signature(r: &SeqResult) -> String {
    let Some((at, ms)) = &r.failure else {
        return String::new();
    };
    let mut kinds: BTreeSet<&str> = r.steps.iter().map(|s| s.kind.name()).collect();
    if *at == 0 {
        kinds = BTreeSet::from(["first run"]);
    }
    let checks: BTreeSet<&str> = ms.iter().map(|m| m.check).collect();
    format!(
        "steps {{{}}} → {{{}}}",
        kinds.into_iter().collect::<Vec<_>>().join(", "),
        checks.into_iter().collect::<Vec<_>>().join(", ")
    )
}

/// The failing step's kind and which checks failed on which kinds of stage.
fn quick_signature(r: &SeqResult) -> String {
    let Some((at, ms)) = &r.failure else {
        return String::new();
    };
    let step = if *at == 0 {
        "first run"
    } else {
        r.steps[at - 1].kind.name()
    };
    let what: BTreeSet<String> = ms
        .iter()
        .map(|m| {
            let base = m.stage.split('[').next().unwrap_or("");
            format!(
                "{}@{}",
                m.check,
                base.trim_end_matches(|c: char| c.is_ascii_digit())
            )
        })
        .collect();
    format!(
        "{step} → {}",
        what.into_iter().collect::<Vec<_>>().join(" ")
    )
}

fn report(seq_seed: u64, original: &SeqResult, shrunk: &SeqResult) -> String {
    let mut s = String::new();
    let (at, ms) = shrunk.failure.as_ref().expect("a failure");
    let _ = writeln!(s, "=== differential cache check: MISMATCH ===");
    let _ = writeln!(
        s,
        "sequence seed {seq_seed:#x} (replay: HCPIPE_DIFF_SEQ_SEED={seq_seed:#x} cargo test --release --test lib differential -- --nocapture)"
    );
    let _ = writeln!(s, "kind: {}", signature(shrunk));
    let _ = writeln!(s, "--- p.yaml at first:\n{}", shrunk.initial_yaml);
    let _ = writeln!(
        s,
        "--- files the stages read, at first (gate.sh: the harness's gate for mid-run edits):\n{}",
        shrunk.initial_tree
    );
    let _ = writeln!(
        s,
        "--- steps (shrunk from {} to {}; each is followed by the check):",
        original.failure.as_ref().map_or(0, |f| f.0),
        at
    );
    let _ = writeln!(s, "  0. hcpipe run p.yaml");
    for (i, st) in shrunk.steps.iter().enumerate() {
        let _ = writeln!(s, "  {}. {}", i + 1, st.describe());
    }
    let _ = writeln!(s, "--- mismatches after step {at}:");
    for m in ms {
        let _ = writeln!(s, "  [{}] {}: {}", m.check, m.stage, m.detail);
    }
    if shrunk.final_yaml != shrunk.initial_yaml {
        let _ = writeln!(s, "--- p.yaml at that step:\n{}", shrunk.final_yaml);
    }
    s
}

#[test]
fn differential_cache_check() {
    let cfg = Config::from_env();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(cfg.seconds);
    let kinds: Vec<&str> = cfg.kinds.iter().map(|k| k.name()).collect();
    println!(
        "differential: seed {:#x}, {} s, in {}, kinds: {}",
        cfg.seed,
        cfg.seconds,
        cfg.tmp.display(),
        kinds.join(",")
    );
    let mut top = Rng(cfg.seed);
    let (mut sequences, mut steps, mut failing) = (0usize, 0usize, 0usize);
    let mut reports: Vec<String> = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let seq_seed = match cfg.seq_seed {
            Some(s) if sequences == 0 => s,
            Some(_) => break,
            None if Instant::now() >= deadline && sequences > 0 => break,
            None => top.next(),
        };
        let r = run_sequence(&cfg, seq_seed, None, None, deadline)
            .unwrap_or_else(|e| panic!("harness error in sequence {seq_seed:#x}: {e}"));
        sequences += 1;
        steps += r.run_steps;
        if r.failure.is_some() {
            failing += 1;
            let quick = quick_signature(&r);
            let n = seen.entry(quick.clone()).or_default();
            *n += 1;
            if (*n == 1 && reports.len() < 20) || !cfg.keep_going {
                let (shrunk, replays) = shrink(&cfg, seq_seed, &r, deadline);
                let text = report(seq_seed, &r, &shrunk);
                println!("{text}(shrunk in {replays} replays)\n");
                reports.push(text);
            } else {
                println!("mismatch again ({quick}), sequence seed {seq_seed:#x}");
            }
            if !cfg.keep_going {
                break;
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "differential: {sequences} sequences, {steps} steps (runs checked), {failing} with a mismatch, {:.1} s wall (seed {:#x})",
        wall, cfg.seed
    );
    for (sig, n) in &seen {
        println!("  {n} × {sig}");
    }
    assert!(
        reports.is_empty(),
        "the cache differs from a clean run ({failing} of {sequences} sequences):\n{}",
        reports.join("\n")
    );
}
