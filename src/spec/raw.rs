//! The pipeline file exactly as the user typed it: serde structs with spans.
//!
//! Only this module and [`super::load`] see YAML. Every struct denies unknown
//! fields, so a typo (`nedds:`) fails at its line and column; `load` adds a
//! "did you mean" to serde's message.

use std::collections::BTreeMap;

use indexmap::IndexMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

pub type Value = serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    pub name: String,
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    /// In file order: it is the order `dag`, `status` and runs list stages in.
    pub stages: IndexMap<String, Spanned<RawStage>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    pub op: Option<Spanned<String>>,
    pub cmd: Option<Spanned<String>>,
    #[serde(default)]
    pub needs: Vec<Spanned<String>>,
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    /// Files or folders, relative to the pipeline file, whose content is part of the key.
    #[serde(default)]
    pub deps: Vec<Spanned<String>>,
    /// Paths (relative to `{out}`) a `cmd` stage promises to write; `outs: []`
    /// says an empty `{out}` is its expected result (absent, an empty `{out}` fails).
    pub outs: Option<Vec<String>>,
    #[serde(default)]
    pub resources: RawResources,
    pub matrix: Option<Spanned<BTreeMap<String, Vec<Value>>>>,
    /// Receive every member of a matrix stage in `needs` instead of fanning out with it.
    #[serde(default)]
    pub gather: bool,
    /// Free text shown by `hcpipe dag` and `show`.
    pub desc: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    pub cpu: Option<u32>,
    /// GPUs: a whole number, or a fraction (0.5) to share one GPU with other stages.
    pub gpu: Option<f64>,
    /// Memory for a Slurm job, e.g. `8G`.
    pub mem: Option<String>,
    /// Time limit for a Slurm job, e.g. `01:00:00`.
    pub time: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// With Slurm: at most this many of a matrix stage's members run at once
    /// when they go out as one job array (`sbatch --array=…%N`).
    pub array_throttle: Option<u32>,
}
