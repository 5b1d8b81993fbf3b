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
use std::sync::Arc;

use serde_json::Value;

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
    /// The name written in the file (`train` for every member of its matrix),
    /// shared by the members.
    pub base: Arc<str>,
    pub kind: StageKind,
    /// Upstream stages (matrix members already resolved), as indices into
    /// [`Pipeline::stages`], in `needs` order: a gather of a million members
    /// holds a million numbers, not a million names.
    pub needs: Box<[u32]>,
    pub params: Params,
    /// Relative to the pipeline folder, normalised ([`paths::normalize`]):
    /// `./d.txt` and `d.txt` are one dep, and one key. Shared by a matrix
    /// stage's members, as are `outs`, `resources` and `desc`.
    pub deps: Arc<[String]>,
    pub outs: Arc<[String]>,
    /// `outs: []` was written: an empty `{out}` is this cmd's expected result.
    pub empty_out_ok: bool,
    /// Shared by a matrix stage's members.
    pub resources: Arc<Resources>,
    /// This member's matrix values (empty for plain stages).
    pub matrix: Matrix,
    pub gather: bool,
    pub desc: Option<Arc<str>>,
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

/// A matrix member's values, one per axis in sorted key order (as its name
/// lists them). Held as indices into its stage's [`AxisTable`], which every
/// member shares: a member costs 4 bytes per axis, not a map of its own
/// (issue 15: a million members in well under a KB each).
#[derive(Debug, Clone, Default)]
pub struct Matrix {
    table: Option<Arc<AxisTable>>,
    picks: Box<[u32]>,
}

/// A matrix stage's axes, sorted by name, each with the values it runs.
#[derive(Debug, Default, PartialEq)]
pub struct AxisTable {
    names: Vec<String>,
    values: Vec<Vec<Value>>,
}

impl AxisTable {
    /// `axes` in any order; they are sorted by name here.
    pub fn new(mut axes: Vec<(String, Vec<Value>)>) -> AxisTable {
        axes.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, values) = axes.into_iter().unzip();
        AxisTable { names, values }
    }

    /// Axis names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The values of the axis at `i` (in sorted order).
    pub fn values(&self, i: usize) -> &[Value] {
        &self.values[i]
    }
}

impl Matrix {
    /// The member of `table` that takes value `picks[i]` of axis `i`.
    pub fn new(table: Arc<AxisTable>, picks: Box<[u32]>) -> Matrix {
        debug_assert_eq!(table.names.len(), picks.len());
        Matrix {
            table: Some(table),
            picks,
        }
    }

    /// A member's values given as a map (tests, and callers outside a pipeline).
    pub fn from_map(map: &BTreeMap<String, Value>) -> Matrix {
        if map.is_empty() {
            return Matrix::default();
        }
        let table = AxisTable::new(
            map.iter()
                .map(|(k, v)| (k.clone(), vec![v.clone()]))
                .collect(),
        );
        let picks = vec![0; map.len()].into_boxed_slice();
        Matrix::new(Arc::new(table), picks)
    }

    pub fn is_empty(&self) -> bool {
        self.picks.is_empty()
    }

    /// The stage's axes (`None` for a plain stage).
    pub fn table(&self) -> Option<&AxisTable> {
        self.table.as_deref()
    }

    /// Per axis of [`Matrix::table`], the index of this member's value.
    pub fn picks(&self) -> &[u32] {
        &self.picks
    }

    pub fn len(&self) -> usize {
        self.picks.len()
    }

    /// (axis, value) in sorted axis order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> + Clone {
        let table = self.table.as_deref();
        self.picks.iter().enumerate().filter_map(move |(i, &p)| {
            let t = table?;
            Some((t.names[i].as_str(), &t.values[i][p as usize]))
        })
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> + Clone {
        self.iter().map(|(k, _)| k)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        let t = self.table.as_deref()?;
        let i = t.names.binary_search_by(|n| n.as_str().cmp(key)).ok()?;
        t.values[i].get(self.picks[i] as usize)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The values as a map (what a job file and an op see).
    pub fn to_map(&self) -> BTreeMap<String, Value> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
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
