//! Reading the upstream artifacts the report shows: TSV tables, `metrics.json`,
//! per-epoch `history.tsv` and the autoencoder's `sample.safetensors`.
//! Every error names the file and, where there is one, the line and column.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::slices::Grid3;
use crate::ops::{Metrics, OpError};

fn bad(path: &Path, what: impl std::fmt::Display) -> OpError {
    OpError::Msg(format!("{}: {what}", path.display()))
}

/// A TSV file as text cells under its header row.
#[derive(Debug, Clone, PartialEq)]
pub struct Tsv {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Tsv {
    /// The index of column `name`, or an error listing the columns there are.
    pub fn column(&self, path: &Path, name: &str) -> Result<usize, OpError> {
        self.header.iter().position(|h| h == name).ok_or_else(|| {
            bad(
                path,
                format!(
                    "no column `{name}`; the header has {}",
                    self.header.join(", ")
                ),
            )
        })
    }
}

/// Reads a tab-separated table with a header row; every row must have as
/// many cells as the header.
pub fn tsv(path: &Path) -> Result<Tsv, OpError> {
    let file = std::fs::File::open(path).map_err(|e| OpError::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        // The lab's tables carry quotes in free text; they are not CSV quoting.
        .quoting(false)
        .from_reader(file);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| bad(path, format!("cannot read the header row: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            bad(
                path,
                format!("{e}; every row needs one cell per header column"),
            )
        })?;
        rows.push(record.iter().map(str::to_string).collect());
    }
    Ok(Tsv { header, rows })
}

/// Reads a JSON object (an artifact's `metrics.json`, `sample.json`).
pub fn json_object(path: &Path) -> Result<Metrics, OpError> {
    let bytes = std::fs::read(path).map_err(|e| OpError::io(path, e))?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(other) => Err(bad(
            path,
            format!("expected a JSON object, found {}", kind(&other)),
        )),
        Err(e) => Err(bad(path, format!("not valid JSON: {e}"))),
    }
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A `history.tsv`: one row per epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub epoch: Vec<f64>,
    /// (column name, one value per epoch) for every column after `epoch`;
    /// `NaN` where a loss diverged or a cell is empty.
    pub columns: Vec<(String, Vec<f64>)>,
}

impl History {
    pub fn get(&self, name: &str) -> Option<&[f64]> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// (epoch, value) pairs of column `name`.
    pub fn points(&self, name: &str) -> Vec<(f64, f64)> {
        self.get(name)
            .map(|v| self.epoch.iter().copied().zip(v.iter().copied()).collect())
            .unwrap_or_default()
    }
}

/// Reads a `history.tsv` (`epoch`, then e.g. `loss`, `balanced_accuracy`),
/// requiring the columns in `required`.
pub fn history(path: &Path, required: &[&str]) -> Result<History, OpError> {
    let table = tsv(path)?;
    let epoch_col = table.column(path, "epoch")?;
    for name in required {
        table.column(path, name)?;
    }
    let mut out = History {
        epoch: Vec::with_capacity(table.rows.len()),
        columns: table
            .header
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != epoch_col)
            .map(|(_, h)| (h.clone(), Vec::with_capacity(table.rows.len())))
            .collect(),
    };
    for (r, row) in table.rows.iter().enumerate() {
        let line = r + 2;
        let mut cells = row.iter().enumerate();
        let mut values = Vec::with_capacity(out.columns.len());
        let mut epoch = None;
        for (i, cell) in cells.by_ref() {
            let v = if cell.trim().is_empty() {
                f64::NAN
            } else {
                cell.trim().parse::<f64>().map_err(|_| {
                    bad(
                        path,
                        format!(
                            "line {line}, column `{}`: `{cell}` is not a number",
                            table.header.get(i).map(String::as_str).unwrap_or("?")
                        ),
                    )
                })?
            };
            if i == epoch_col {
                epoch = Some(v);
            } else {
                values.push(v);
            }
        }
        match epoch {
            Some(e) if e.is_finite() => out.epoch.push(e),
            _ => {
                return Err(bad(
                    path,
                    format!("line {line}: the epoch is empty or not a number"),
                ))
            }
        }
        for ((_, column), v) in out.columns.iter_mut().zip(values) {
            column.push(v);
        }
    }
    if out.epoch.is_empty() {
        return Err(bad(path, "no epochs (the table has only a header)"));
    }
    Ok(out)
}

/// The autoencoder's sample: its `input` and `output` F32 tensors, each
/// squeezed of size-1 axes to 3-D (`[30, 40, 30]` for the lab's crops).
pub fn ae_sample(path: &Path) -> Result<(Grid3, Grid3), OpError> {
    let bytes = std::fs::read(path).map_err(|e| OpError::io(path, e))?;
    let tensors = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(path, format!("not a safetensors file: {e}")))?;
    let grid = |name: &str| -> Result<Grid3, OpError> {
        let view = tensors.tensor(name).map_err(|_| {
            bad(
                path,
                format!(
                    "no tensor `{name}`; it holds {}; `train_ae` writes `input` and `output`",
                    tensors.names().join(", ")
                ),
            )
        })?;
        if view.dtype() != Dtype::F32 {
            return Err(bad(
                path,
                format!("tensor `{name}` is {:?}, expected F32", view.dtype()),
            ));
        }
        let shape: Vec<usize> = view.shape().iter().copied().filter(|&d| d != 1).collect();
        let dims: [usize; 3] = shape.as_slice().try_into().map_err(|_| {
            bad(
                path,
                format!(
                    "tensor `{name}` has shape {:?}, expected a 3-D volume like [30, 40, 30]",
                    view.shape()
                ),
            )
        })?;
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Grid3::c_order(dims, data).map_err(|e| bad(path, format!("tensor `{name}`: {e}")))
    };
    Ok((grid("input")?, grid("output")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_reads_classifier_and_ae_tables() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("history.tsv");
        std::fs::write(
            &p,
            "epoch\tloss\tbalanced_accuracy\n0\t0.7\t0.5\n1\tNaN\t0.75\n",
        )
        .unwrap();
        let h = history(&p, &["loss", "balanced_accuracy"]).unwrap();
        assert_eq!(h.epoch, [0.0, 1.0]);
        assert_eq!(h.points("balanced_accuracy"), [(0.0, 0.5), (1.0, 0.75)]);
        assert!(h.get("loss").unwrap()[1].is_nan());

        std::fs::write(&p, "epoch\tloss\n0\t0.7\n").unwrap();
        let msg = history(&p, &["loss", "balanced_accuracy"])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("history.tsv") && msg.contains("no column `balanced_accuracy`"),
            "{msg}"
        );

        std::fs::write(&p, "epoch\tloss\n0\tabc\n").unwrap();
        let msg = history(&p, &["loss"]).unwrap_err().to_string();
        assert!(msg.contains("line 2, column `loss`: `abc`"), "{msg}");

        std::fs::write(&p, "epoch\tloss\n0\t1\t2\n").unwrap();
        assert!(history(&p, &["loss"]).is_err());
        std::fs::write(&p, "epoch\tloss\n").unwrap();
        assert!(history(&p, &["loss"])
            .unwrap_err()
            .to_string()
            .contains("no epochs"));
    }

    #[test]
    fn json_object_rejects_non_objects() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.json");
        std::fs::write(&p, "[1]").unwrap();
        assert!(json_object(&p)
            .unwrap_err()
            .to_string()
            .contains("found an array"));
        std::fs::write(&p, "{").unwrap();
        assert!(json_object(&p)
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
        std::fs::write(&p, "{\"device\": \"cpu\"}").unwrap();
        assert_eq!(json_object(&p).unwrap()["device"], "cpu");
    }

    #[test]
    fn ae_sample_reads_and_checks_tensors() {
        use safetensors::tensor::TensorView;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sample.safetensors");
        let data: Vec<u8> = (0..24).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let write = |names: &[(&str, Vec<usize>)]| {
            let views: Vec<(String, TensorView)> = names
                .iter()
                .map(|(n, s)| {
                    (
                        n.to_string(),
                        TensorView::new(Dtype::F32, s.clone(), &data).unwrap(),
                    )
                })
                .collect();
            safetensors::serialize_to_file(views, None, &p).unwrap();
        };
        write(&[("input", vec![1, 2, 3, 4]), ("output", vec![2, 3, 4])]);
        let (a, b) = ae_sample(&p).unwrap();
        assert_eq!(a.dims, [2, 3, 4]);
        assert_eq!(b.get(1, 2, 3), Some(23.0));
        write(&[("input", vec![2, 3, 4])]);
        let msg = ae_sample(&p).unwrap_err().to_string();
        assert!(msg.contains("no tensor `output`"), "{msg}");
        write(&[("input", vec![6, 4]), ("output", vec![6, 4])]);
        assert!(ae_sample(&p)
            .unwrap_err()
            .to_string()
            .contains("expected a 3-D"));
        std::fs::write(&p, b"junk").unwrap();
        assert!(ae_sample(&p)
            .unwrap_err()
            .to_string()
            .contains("not a safetensors"));
    }
}
