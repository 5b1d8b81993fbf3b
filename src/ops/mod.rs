//! Built-in stage kinds ("ops") and the contract every op implements.
//!
//! An op is a named, versioned function from (params, upstream artifact
//! folders) to files written into a fresh output folder plus a metrics map.
//! The executor hands an op an [`OpCtx`]; whatever the op writes under
//! `ctx.out` becomes the stage's artifact once it returns `Ok`, and the
//! returned [`Metrics`] are stored beside it (and written to `metrics.json`).
//!
//! Two kinds of op exist:
//! - [`OpKind::Native`]: plain Rust, run inside the runner (or `hcpipe exec`).
//! - [`OpKind::Torch`]: tensor work, run by the separate `hcpipe-torch`
//!   worker executable, which links libtorch. The runner writes a [`JobSpec`]
//!   JSON file and starts the worker with `--job FILE`; the worker writes its
//!   files and `metrics.json` into `out` and exits 0, or prints one error
//!   paragraph on stderr and exits non-zero.
//!
//! Inputs are found by role, not by position: an op asks for "the upstream
//! stage made by op `crop`" with [`OpCtx::input_by_op`], so a pipeline names
//! its stages freely.
//!
//! Params are checked before anything runs: each op deserialises its params
//! into a typed struct with `#[serde(deny_unknown_fields)]`, so a typo fails
//! the whole pipeline at load time with the list of valid names.

pub mod age_filter;
pub mod aggregate;
pub mod cluster_metrics;
pub mod collect;
pub mod crop;
pub mod demographics;
mod draws;
pub mod fetch;
pub mod gmm;
pub mod kfold;
pub mod metrics;
pub mod nifti;
pub mod pool;
pub mod report;
pub mod soft_vote;
pub mod split;
pub mod synth;
pub mod torch_ops;
pub mod torch_params;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::artifact;

/// A stage's resolved parameters (after `${params.x}` substitution).
pub type Params = serde_json::Map<String, serde_json::Value>;
/// What a stage reports: flat or nested JSON, stored in the cache entry.
pub type Metrics = serde_json::Map<String, serde_json::Value>;

/// Metrics that measure how a run went rather than what it made (times).
/// A torch op reports them, but they are kept out of the artifact's
/// `metrics.json`: an artifact's bytes are what dependants' keys chain, and a
/// re-run that made the same weights must leave what it feeds cached. The
/// worker writes them to [`TIMINGS_FILE`] beside `out`; the runner adds them
/// to the stage's entry (`show` and `run --json` still print them).
/// `fetch`'s resume counts are kept out for the same reason: a download
/// resumed after a kill makes the same bytes as one that never stopped.
pub const VOLATILE_METRICS: &[&str] = &["wall_s", "seconds_per_epoch", "resumed", "attempts"];

/// Where the worker leaves [`VOLATILE_METRICS`]: in `out`'s parent folder.
pub const TIMINGS_FILE: &str = "timings.json";

/// One upstream artifact handed to a stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input {
    /// The upstream stage's name as written in the pipeline (`crop_left`).
    pub stage: String,
    /// The op that produced it; `None` for a `cmd` stage.
    pub op: Option<String>,
    /// The folder holding the artifact's files (read-only).
    pub dir: PathBuf,
    /// The artifact's content hash (blake3 over its manifest), which this
    /// stage's key chains; `None` where no cache made the folder (tests).
    #[serde(default)]
    pub content: Option<String>,
}

/// Everything an op may look at. Ops must not read the environment, the
/// working directory or clocks for anything that changes their output: only
/// what is here is part of the stage key.
pub struct OpCtx<'a> {
    pub stage: &'a str,
    pub params: &'a Params,
    pub inputs: &'a [Input],
    /// A fresh, empty folder; everything written here is the artifact.
    pub out: &'a Path,
    /// How many threads the op may use (the stage's `resources.cpu`).
    pub threads: usize,
    /// A folder of the cache that outlives this attempt, for state an op can
    /// resume from after a kill (`fetch`'s partial downloads); never part of
    /// the artifact, so nothing in it may change what the op writes. `None`
    /// where there is no cache (tests, the torch worker).
    pub scratch: Option<&'a Path>,
}

impl<'a> OpCtx<'a> {
    /// Deserialise this stage's params into the op's typed struct.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, OpError> {
        parse_params(self.params).map_err(OpError::Params)
    }

    /// The only upstream stage made by `op`, or an error naming what `needs` holds.
    pub fn input_by_op(&self, op: &str) -> Result<&'a Input, OpError> {
        let mut found = self.inputs.iter().filter(|i| i.op.as_deref() == Some(op));
        match (found.next(), found.next()) {
            (Some(one), None) => Ok(one),
            (None, _) => Err(OpError::MissingInput {
                stage: self.stage.to_string(),
                wanted: op.to_string(),
                have: self.describe_inputs(),
            }),
            (Some(_), Some(_)) => Err(OpError::Msg(format!(
                "stage `{}` needs exactly one upstream `{op}` stage but has several ({}); keep one in `needs`",
                self.stage,
                self.describe_inputs()
            ))),
        }
    }

    /// Every upstream stage made by `op`, in `needs` order.
    pub fn inputs_by_op(&self, op: &str) -> Vec<&'a Input> {
        self.inputs
            .iter()
            .filter(|i| i.op.as_deref() == Some(op))
            .collect()
    }

    /// Every upstream artifact holding `file` (`predictions.tsv`,
    /// `codes.tsv`, ...), in `needs` order: how ops that combine results find
    /// them, so that a user's own stage writing the documented format
    /// (docs/artifacts.md) is as good an input as a built-in op's.
    pub fn inputs_with_file(&self, file: &str) -> Vec<&'a Input> {
        self.inputs
            .iter()
            .filter(|i| i.dir.join(file).is_file())
            .collect()
    }

    /// The only upstream artifact holding `file`, or an error naming what
    /// each need holds and where the format is documented.
    pub fn input_with_file(&self, file: &str) -> Result<&'a Input, OpError> {
        match self.inputs_with_file(file).as_slice() {
            [one] => Ok(one),
            [] => Err(OpError::Msg(format!(
                "stage `{}` needs an upstream stage whose artifact holds `{file}` (a built-in op's, \
                 or your own stage's writing that format: docs/artifacts.md); its needs are {}",
                self.stage,
                self.describe_inputs()
            ))),
            several => Err(OpError::Msg(format!(
                "stage `{}` needs exactly one upstream stage holding `{file}` but has {} ({}); keep one in `needs`",
                self.stage,
                several.len(),
                several
                    .iter()
                    .map(|i| format!("`{}`", i.stage))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The first upstream stage made by any of `ops` (e.g. the dataset,
    /// which `fetch` or `synth` may have made).
    pub fn input_by_any_op(&self, ops: &[&str]) -> Result<&'a Input, OpError> {
        self.inputs
            .iter()
            .find(|i| i.op.as_deref().is_some_and(|o| ops.contains(&o)))
            .ok_or_else(|| OpError::MissingInput {
                stage: self.stage.to_string(),
                wanted: ops.join("` or `"),
                have: self.describe_inputs(),
            })
    }

    fn describe_inputs(&self) -> String {
        if self.inputs.is_empty() {
            return "`needs` is empty".to_string();
        }
        self.inputs
            .iter()
            .map(|i| format!("`{}` ({})", i.stage, i.op.as_deref().unwrap_or("cmd")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Deserialise params into `T`, turning serde's message into one line.
pub fn parse_params<T: DeserializeOwned>(params: &Params) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::Object(params.clone())).map_err(|e| e.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("bad params: {0}")]
    Params(String),
    #[error("stage `{stage}` needs an upstream `{wanted}` stage; it has {have}. Add one to its `needs`.")]
    MissingInput {
        stage: String,
        wanted: String,
        have: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Msg(String),
}

impl From<crate::artifact::Error> for OpError {
    fn from(e: crate::artifact::Error) -> Self {
        match e {
            crate::artifact::Error::Io { path, source } => OpError::Io { path, source },
            other => OpError::Msg(other.to_string()),
        }
    }
}

impl OpError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        OpError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Where an op's code runs.
#[derive(Clone, Copy)]
pub enum OpKind {
    /// Rust inside the runner process.
    Native(fn(&OpCtx) -> Result<Metrics, OpError>),
    /// The `hcpipe-torch` worker executable.
    Torch,
}

/// A registered op.
#[derive(Clone)]
pub struct OpDef {
    pub name: &'static str,
    /// Part of the stage key: bump when the op's output for the same inputs changes.
    pub version: u32,
    pub kind: OpKind,
    /// Checks params at pipeline load time (typically `parse_params::<T>`).
    pub check_params: fn(&Params) -> Result<(), String>,
    /// One line for `hcpipe ops` and error messages.
    pub summary: &'static str,
}

impl std::fmt::Debug for OpDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpDef({} v{})", self.name, self.version)
    }
}

/// The job file the runner hands to the torch worker (`hcpipe-torch --job FILE`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    pub op: String,
    pub stage: String,
    pub params: Params,
    pub inputs: Vec<Input>,
    pub out: PathBuf,
    pub threads: usize,
}

/// Every op hcpipe knows, in the order `hcpipe ops` lists them (a pipeline's).
pub fn registry() -> &'static [OpDef] {
    &REGISTRY
}

/// The files of an op's artifact that other ops find their inputs by
/// ([`OpCtx::inputs_with_file`]); a `cmd` stage may write any of them.
pub fn writes(op: &str) -> &'static [&'static str] {
    match op {
        "evaluate" | "soft_vote" => &[artifact::predictions::FILE],
        "extract_codes" => &[artifact::codes::FILE],
        "train_cnn" | "train_ae" => &[artifact::history::FILE],
        _ => &[],
    }
}

/// Load-time check of what an op's `needs` can give it, where that is known
/// before running: a built-in upstream that cannot write the file an op
/// looks for is a mistake in the pipeline (exit 2), not a failure after its
/// upstreams ran. `needs` holds (stage name, its op, `None` for a cmd, which
/// may write anything and is checked when the op runs).
pub fn check_needs(op: &str, needs: &[(&str, Option<&str>)]) -> Result<(), String> {
    let can_write = |file: &str, o: Option<&str>| o.is_none_or(|o| writes(o).contains(&file));
    let (file, least, what) = match op {
        "soft_vote" => (artifact::predictions::FILE, 2, "at least two stages to vote over (evaluate stages, or your own writing predictions.tsv)"),
        "gmm" => (artifact::codes::FILE, 1, "a stage whose codes it clusters (extract_codes, or your own writing codes.tsv)"),
        _ => return Ok(()),
    };
    // Needs an op reads for other reasons (the ≥ 62 subgroup, the dataset's demographics).
    let other_roles = ["age_filter", "fetch", "synth"];
    let wrong: Vec<String> = needs
        .iter()
        .filter(|(_, o)| !can_write(file, *o) && !o.is_some_and(|o| other_roles.contains(&o)))
        .map(|(n, o)| format!("`{n}` ({})", o.unwrap_or("cmd")))
        .collect();
    if !wrong.is_empty() {
        return Err(format!(
            "{} cannot write `{file}`, which `{op}` reads; it needs {what} (formats: docs/artifacts.md)",
            wrong.join(", ")
        ));
    }
    let able = needs.iter().filter(|(_, o)| can_write(file, *o)).count();
    if able < least {
        return Err(format!("`{op}` needs {what}; its `needs` give {able}"));
    }
    Ok(())
}

/// Look an op up by name.
pub fn lookup(name: &str) -> Option<&'static OpDef> {
    REGISTRY.iter().find(|d| d.name == name)
}

/// The ops in pipeline order: the native ops that make and prepare the data, the torch ops
/// (from [`torch_ops`]' table), then the native ops that combine and report results.
static REGISTRY: std::sync::LazyLock<Vec<OpDef>> = std::sync::LazyLock::new(|| {
    let torch = torch_ops::TorchOp::ALL.iter().map(|op| op.def());
    DATA_OPS
        .iter()
        .cloned()
        .chain(torch)
        .chain(RESULT_OPS.iter().cloned())
        .collect()
});

static DATA_OPS: &[OpDef] = &[
    OpDef {
        name: "fetch",
        version: 1,
        kind: OpKind::Native(fetch::run),
        check_params: fetch::check_params,
        summary: "download (http/https/file, resume, retries, checksum pin) and safely extract a .tar.gz, or copy a local folder",
    },
    OpDef {
        name: "synth",
        version: 1,
        kind: OpKind::Native(synth::run),
        check_params: |p| parse_params::<synth::SynthParams>(p).map(|_| ()),
        summary: "a synthetic OASIS-1-like dataset in the lab tarball's layout (tables + grey-matter .pt volumes)",
    },
    OpDef {
        name: "demographics",
        version: 1,
        kind: OpKind::Native(demographics::run),
        check_params: |p| parse_params::<demographics::DemographicsParams>(p).map(|_| ()),
        summary: "the lab's population tables (all/train/validation) and bias checks with p-values",
    },
    OpDef {
        name: "age_filter",
        version: 1,
        kind: OpKind::Native(age_filter::run),
        check_params: |p| parse_params::<age_filter::AgeFilterParams>(p).map(|_| ()),
        summary: "the subjects of a split aged min_age (62) or more",
    },
    OpDef {
        name: "split",
        version: 1,
        kind: OpKind::Native(split::run),
        check_params: split::check_params,
        summary: "a train/test split per diagnosis, redrawn until age, sex and MMS are balanced (p >= p_threshold)",
    },
    OpDef {
        name: "kfold",
        version: 1,
        kind: OpKind::Native(kfold::run),
        check_params: kfold::check_params,
        summary: "one fold of a stratified k-fold of a train pool (matrix over `fold`), leak-free, with balance checks",
    },
    OpDef {
        name: "crop",
        version: 1,
        kind: OpKind::Native(crop::run),
        check_params: |p| parse_params::<crop::CropParams>(p).map(|_| ()),
        summary: "hippocampus patches (left_hc / right_hc) with a shift margin, as safetensors; of the lab's splits or (`subjects: all`) of every subject",
    },
];

static RESULT_OPS: &[OpDef] = &[
    OpDef {
        name: "soft_vote",
        // 2: predictions.tsv through artifact::predictions (numbers in Display form, as evaluate's).
        // 3: metrics gain `roc_auc`.
        version: 3,
        kind: OpKind::Native(soft_vote::run),
        check_params: |p| parse_params::<soft_vote::SoftVoteParams>(p).map(|_| ()),
        summary: "averages the probabilities of several `evaluate` stages (the lab's soft voting)",
    },
    OpDef {
        name: "gmm",
        version: 1,
        kind: OpKind::Native(gmm::run),
        check_params: gmm::check_params,
        summary: "Gaussian mixture on `extract_codes` codes (scikit-learn's defaults) + metrics vs labels",
    },
    OpDef {
        name: "collect",
        version: 2,
        kind: OpKind::Native(collect::run),
        check_params: collect::check,
        summary: "one table (TSV + Markdown) of gathered stages' metrics, a row per matrix member",
    },
    OpDef {
        name: "aggregate",
        version: 1,
        kind: OpKind::Native(aggregate::run),
        check_params: aggregate::check_params,
        summary: "the paper table: mean ± SD (and pooled) of gathered stages' metrics over folds and seeds; TSV, Markdown, LaTeX, JSON",
    },
    OpDef {
        name: "report",
        // 2: provenance shows each input's content hash, not its folder's name.
        // 3: training curves label whole epochs only; a user's stages shown.
        version: 3,
        kind: OpKind::Native(report::run),
        check_params: report::check_params,
        summary: "report.html with figures (slices, curves, clusters) and tables of the stages it needs",
    },
];
