//! `table.json` of an `aggregate` stage: the paper table (rows × set.metric columns) with,
//! in every cell, the summary over the row's members and each member's value, so that any
//! number in it can be checked against the members it came from, and `hcpipe diff` can pair
//! members of two runs by their axis values.
//!
//! Schema 1 (`"schema": 1`; a change a reader must know about bumps it):
//!
//! ```json
//! {
//!   "schema": 1,
//!   "columns": [{"set": "test", "metric": "balanced_accuracy", "header": "balanced accuracy"}],
//!   "interval": false,
//!   "rows": [
//!     {"variant": "mean", "label": "left CNN", "stage": "eval_left", "axes": ["fold", "seed"],
//!      "cells": [{"n": 6, "mean": 0.8, "sd": 0.05, "min": 0.7, "max": 0.9,
//!                 "ci95": {"lo": 0.75, "hi": 0.85},
//!                 "members": [{"member": "eval_left[fold=0,seed=0]",
//!                              "axes": {"fold": 0, "seed": 0}, "value": 0.8}]}]},
//!     {"variant": "pooled", "label": "left CNN", "stage": "eval_left",
//!      "members": ["eval_left[fold=0,seed=0]"],
//!      "cells": [{"value": 0.81, "n_members": 6, "n_predictions": 462}]}
//!   ],
//!   "notes": ["row `AE + GMM` has no `test.roc_auc` in any member: cell left empty"]
//! }
//! ```
//!
//! - `columns`: one per (set, metric), sets outermost, in the order the params list them.
//! - `rows`: for each row of the params, its `mean` row, then its `pooled` row when it has
//!   one. Every row has one entry in `cells` per column, `null` where the row's members do
//!   not report that metric.
//! - a `mean` cell: `n` members, their mean, sample SD (`ddof = 1`; `null` when `n < 2`),
//!   min, max, and the 95 % t-interval of the mean (`mean ± t(0.975, n-1) · sd / √n`; `null`
//!   when `n < 2`), and the members' own values, in member order.
//! - a `pooled` cell: the metric recomputed on every member's `predictions.tsv` together
//!   (`n_predictions` rows from `n_members` members), as nnU-Net pools out-of-fold
//!   predictions; it has no spread.
//! - `interval`: whether the Markdown/LaTeX tables show min–max and the interval (the JSON
//!   and TSV always hold them).
//! - `notes`: empty cells and rows without a pooled variant, and why.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Error, Result};

pub const FILE: &str = "table.json";
/// The version of the layout above.
pub const SCHEMA: u32 = 1;

/// A whole `table.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperTable {
    pub schema: u32,
    pub columns: Vec<Column>,
    pub interval: bool,
    pub rows: Vec<Row>,
    #[serde(default)]
    pub notes: Vec<String>,
}

/// One column: a metric of one evaluated set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// The set as the table names it (`test`, `validation`, `old`).
    pub set: String,
    /// The metric's name in the members' `metrics.json` under the set (`balanced_accuracy`).
    pub metric: String,
    /// For people: `balanced accuracy`, `ROC AUC`.
    pub header: String,
}

/// One row of the table: a stage's members summarised, or pooled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "variant", rename_all = "snake_case", deny_unknown_fields)]
pub enum Row {
    /// Mean ± SD over the members.
    Mean {
        label: String,
        /// The gathered stage whose members the row summarises.
        stage: String,
        /// The matrix axes the members vary over (`fold`, `seed`), sorted.
        axes: Vec<String>,
        cells: Vec<Option<Cell>>,
    },
    /// The metrics recomputed on all members' predictions together.
    Pooled {
        label: String,
        stage: String,
        /// The members whose predictions were pooled.
        members: Vec<String>,
        cells: Vec<Option<PooledCell>>,
    },
}

impl Row {
    pub fn label(&self) -> &str {
        match self {
            Row::Mean { label, .. } | Row::Pooled { label, .. } => label,
        }
    }

    pub fn stage(&self) -> &str {
        match self {
            Row::Mean { stage, .. } | Row::Pooled { stage, .. } => stage,
        }
    }

    /// `mean` or `pooled`, as the JSON tags it.
    pub fn variant(&self) -> &'static str {
        match self {
            Row::Mean { .. } => "mean",
            Row::Pooled { .. } => "pooled",
        }
    }
}

/// A summary over a row's members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cell {
    pub n: usize,
    pub mean: f64,
    /// Sample SD (ddof = 1); `None` for one member.
    pub sd: Option<f64>,
    pub min: f64,
    pub max: f64,
    /// 95 % t-interval of the mean; `None` for one member.
    pub ci95: Option<Interval>,
    pub members: Vec<MemberValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

/// One member's value in a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberValue {
    /// The member's stage name (`eval_left[fold=0,seed=1]`).
    pub member: String,
    /// Its matrix values (`{"fold": 0, "seed": 1}`); empty for a stage without a matrix.
    pub axes: Map<String, Value>,
    pub value: f64,
}

/// A metric recomputed on pooled predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PooledCell {
    pub value: f64,
    pub n_members: usize,
    pub n_predictions: usize,
}

impl PaperTable {
    pub fn read(path: &Path) -> Result<PaperTable> {
        let text = super::read_text(path)?;
        let table: PaperTable = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("not an aggregate table: {e}")))?;
        if table.schema != SCHEMA {
            return Err(Error::format(
                path,
                format!(
                    "table schema {} is not the {SCHEMA} this hcpipe reads; re-run the aggregate \
                     stage with this hcpipe",
                    table.schema
                ),
            ));
        }
        for row in &table.rows {
            let cells = match row {
                Row::Mean { cells, .. } => cells.len(),
                Row::Pooled { cells, .. } => cells.len(),
            };
            if cells != table.columns.len() {
                return Err(Error::format(
                    path,
                    format!(
                        "row `{}` ({}) has {cells} cells for {} columns",
                        row.label(),
                        row.variant(),
                        table.columns.len()
                    ),
                ));
            }
        }
        Ok(table)
    }

    /// Writes the table pretty-printed with a final newline. Values are finite (the op
    /// refuses NaN members), so JSON holds them exactly.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::format(path, format!("cannot encode the table: {e}")))?;
        super::write_file(path, text + "\n")
    }

    /// The index of the column of `metric` on `set`.
    pub fn column(&self, set: &str, metric: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.set == set && c.metric == metric)
    }

    /// The `mean` row labelled `label`.
    pub fn mean_row(&self, label: &str) -> Option<&[Option<Cell>]> {
        self.rows.iter().find_map(|r| match r {
            Row::Mean {
                label: l, cells, ..
            } if l == label => Some(cells.as_slice()),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let t = super::super::assert_round_trip("table.json", PaperTable::read, |p, t| t.write(p));
        assert_eq!(t.columns.len(), 2);
        assert_eq!(t.column("test", "roc_auc"), Some(1));
        let cells = t.mean_row("left CNN").unwrap();
        let ba = cells[0].as_ref().unwrap();
        assert_eq!(ba.n, 2);
        assert_eq!(ba.members[1].axes["fold"], 1);
        assert!(cells[1].is_none());
        assert_eq!(t.rows[1].variant(), "pooled");
        assert_eq!(t.rows[1].stage(), "eval_left");
    }

    #[test]
    fn wrong_schema_or_shape_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE);
        let golden = std::fs::read_to_string(super::super::testdata("table.json")).unwrap();
        std::fs::write(&p, golden.replace("\"schema\": 1", "\"schema\": 9")).unwrap();
        let e = PaperTable::read(&p).unwrap_err().to_string();
        assert!(e.contains("schema 9") && e.contains("re-run"), "{e}");
        let mut t = PaperTable::read(&super::super::testdata("table.json")).unwrap();
        t.columns.pop();
        t.write(&p).unwrap();
        let e = PaperTable::read(&p).unwrap_err().to_string();
        assert!(e.contains("has 2 cells for 1 columns"), "{e}");
        std::fs::write(&p, "{\"schema\": 1}").unwrap();
        let e = PaperTable::read(&p).unwrap_err().to_string();
        assert!(e.contains("not an aggregate table"), "{e}");
    }
}
