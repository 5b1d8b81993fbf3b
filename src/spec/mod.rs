//! The declarative model: what a pipeline file says, checked and typed.
//!
//! - [`raw`]: serde structs mirroring the YAML, with spans.
//! - [`load`]: reads a file, parses it, and turns parse errors into
//!   file:line:col diagnostics.
//! - [`subst`]: `${params.x}` and `${matrix.k}` substitution.
//! - [`axes`]: which matrix axes each stage has, its own and inherited from `needs`.
//! - [`matrix`]: names the members of `matrix:` stages, one per combination.
//! - [`paths`]: lexical normalisation of `deps` and `outs`.
//! - [`validate`]: ops, params, needs and deps checked all at once; yields a [`Pipeline`].
//!
//! Nouns: a **pipeline** is one YAML file; a **stage** is a named node that
//! is either a built-in **op** or a shell **cmd**; `needs` names upstream
//! stages. Strings end here: from `dag` on, stages are referred to by id.

pub mod axes;
pub mod cmd_text;
pub mod load;
pub mod matrix;
pub mod paths;
pub mod raw;
pub mod subst;
pub mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::ops::{OpDef, Params};

pub use load::load_pipeline;

/// Where in the pipeline file something was written (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loc {
    pub line: u64,
    pub col: u64,
}

/// A checked pipeline, matrix stages expanded.
#[derive(Debug)]
pub struct Pipeline {
    pub name: String,
    /// Absolute path of the pipeline file.
    pub path: PathBuf,
    /// The folder `cmd` stages run in and `deps` are relative to.
    pub dir: PathBuf,
    /// blake3 of the file's bytes, for run records.
    pub file_hash: String,
    /// Pipeline params after `--set` overrides.
    pub params: Params,
    /// Stages in file order (matrix members in expansion order).
    pub stages: Vec<StageSpec>,
}

/// What a stage does.
#[derive(Debug, Clone)]
pub enum StageKind {
    Op(&'static OpDef),
    /// The command text with `${…}` resolved; `{in.X}`/`{out}` stay until run time.
    Cmd(String),
}

/// One stage of a checked pipeline.
#[derive(Debug, Clone)]
pub struct StageSpec {
    /// Unique name; matrix members read `train[lr=0.001]`.
    pub name: String,
    /// The name written in the file (`train` for every member of its matrix).
    pub base: String,
    pub kind: StageKind,
    /// Upstream stage names (matrix members already resolved).
    pub needs: Vec<String>,
    pub params: Params,
    /// Relative to the pipeline folder, normalised ([`paths::normalize`]):
    /// `./d.txt` and `d.txt` are one dep, and one key.
    pub deps: Vec<String>,
    pub outs: Vec<String>,
    /// `outs: []` was written: an empty `{out}` is this cmd's expected result.
    pub empty_out_ok: bool,
    pub resources: Resources,
    /// This member's matrix values (empty for plain stages).
    pub matrix: BTreeMap<String, serde_json::Value>,
    pub gather: bool,
    pub desc: Option<String>,
    pub loc: Loc,
}

impl StageSpec {
    pub fn op_name(&self) -> Option<&'static str> {
        match self.kind {
            StageKind::Op(def) => Some(def.name),
            StageKind::Cmd(_) => None,
        }
    }
}

/// What a stage asks of the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU slots (threads) the stage uses; at least 1.
    pub cpu: u32,
    /// Thousandths of a GPU the stage wants (`gpu: 0.5` → 500; 0 for none).
    /// Fractions let small models share one GPU; Slurm gets the whole GPUs rounded up.
    pub gpu_milli: u32,
    pub mem: Option<String>,
    pub time: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// With Slurm, at most this many members of a job array run at once
    /// (`%N`); `None`: as many as `--jobs` allows. Not in the key: it says
    /// how fast, not what.
    pub array_throttle: Option<u32>,
}

impl Resources {
    /// Whole GPUs to ask a scheduler like Slurm for (fractions round up).
    pub fn whole_gpus(&self) -> u32 {
        self.gpu_milli.div_ceil(1000)
    }
}

/// An error in a pipeline file, rendered for people.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    pub message: String,
}

impl SpecError {
    pub fn new(message: impl Into<String>) -> Self {
        SpecError {
            message: message.into(),
        }
    }
}
