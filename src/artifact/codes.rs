//! `codes.tsv` of an `extract_codes` stage: the autoencoder's code of each
//! subject of one split, `participant_id label f0 … f(d-1)` (labels 0 = CN,
//! 1 = AD; the features are the network's float32 values).

use std::collections::HashSet;
use std::path::Path;

use super::tsv::{self, Table};
use super::Result;

/// The codes of one split, in the crop's subject order.
#[derive(Debug, Clone, PartialEq)]
pub struct Codes {
    pub ids: Vec<String>,
    pub labels: Vec<i64>,
    /// Features per subject (`width` of them).
    pub width: usize,
    /// Row-major, `ids.len()` × `width`.
    pub features: Vec<f32>,
}

pub const FILE: &str = "codes.tsv";

impl Codes {
    /// Reads `codes.tsv`: header `participant_id label f0 … f(d-1)`, labels
    /// 0/1, finite features, unique subjects, at least one subject.
    pub fn read(path: &Path) -> Result<Codes> {
        let table = Table::read(path)?;
        let mut columns = table.header.iter().map(String::as_str);
        if columns.next() != Some("participant_id") || columns.next() != Some("label") {
            return Err(table.error(format!(
                "header starts with {:?}, expected `participant_id`, `label`, then f0, f1, … (as `extract_codes` writes it)",
                table.header.iter().take(2).collect::<Vec<_>>()
            )));
        }
        for (i, name) in columns.enumerate() {
            if name != format!("f{i}") {
                return Err(table.error(format!(
                    "feature column {} is named `{name}`, expected `f{i}`",
                    i + 1
                )));
            }
        }
        let width = table.header.len() - 2;
        let mut codes = Codes {
            ids: Vec::with_capacity(table.len()),
            labels: Vec::with_capacity(table.len()),
            width,
            features: Vec::with_capacity(table.len() * width),
        };
        let mut seen = HashSet::new();
        for row in table.rows() {
            let id = row.get("participant_id");
            let at = |what: String| row.error(format!("subject `{id}`: {what}"));
            codes.labels.push(row.label("label").map_err(|_| {
                at(format!(
                    "label is `{}`, expected 0 (CN) or 1 (AD)",
                    row.get("label")
                ))
            })?);
            for (j, cell) in row.cells().skip(2).enumerate() {
                match cell.trim().parse::<f32>() {
                    Ok(v) if v.is_finite() => codes.features.push(v),
                    _ => return Err(at(format!("f{j} is `{cell}`, expected a finite number"))),
                }
            }
            if !seen.insert(id) {
                return Err(at("listed twice; each subject must appear once".into()));
            }
            codes.ids.push(id.to_string());
        }
        if codes.ids.is_empty() {
            return Err(table.error("no subjects (the table has only a header)"));
        }
        Ok(codes)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let mut header = vec!["participant_id".to_string(), "label".into()];
        header.extend((0..self.width).map(|f| format!("f{f}")));
        let rows = self
            .ids
            .iter()
            .zip(&self.labels)
            .enumerate()
            .map(|(i, (id, label))| {
                let mut cells = vec![id.clone(), label.to_string()];
                cells.extend(self.row(i).iter().map(f32::to_string));
                cells
            });
        tsv::write(path, &header, rows)
    }

    /// Subject `i`'s features.
    pub fn row(&self, i: usize) -> &[f32] {
        self.features
            .get(i * self.width..(i + 1) * self.width)
            .unwrap_or_default()
    }

    /// The features at f64 precision as their decimal text reads (`0.1f32` →
    /// `0.1`, not `0.10000000149…`): the values `gmm` has always fitted, so
    /// its results stay the same bytes.
    pub fn features_f64(&self) -> Vec<f64> {
        self.features
            .iter()
            .map(|v| v.to_string().parse::<f64>().unwrap_or(f64::from(*v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let c = super::super::assert_round_trip(FILE, Codes::read, |p, c| c.write(p));
        assert_eq!(c.ids, ["sub-OASIS10014", "sub-OASIS10021"]);
        assert_eq!((c.labels.clone(), c.width), (vec![1, 0], 3));
        assert_eq!(c.row(1), [0.1, 0.0, -0.0000025]);
        assert_eq!(c.features_f64()[3], 0.1);
    }

    #[test]
    fn bad_tables_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let cases = [
            (
                "participant_id\tlabel\tf0\ns1\t0\tnan\n",
                "line 2: subject `s1`: f0 is `nan`",
            ),
            (
                "participant_id\tlabel\tf0\ns1\t0\tinf\n",
                "f0 is `inf`, expected a finite number",
            ),
            ("participant_id\tlabel\tf0\ns1\t2\t0.5\n", "label is `2`"),
            (
                "participant_id\tlabel\tf1\ns1\t0\t0.5\n",
                "named `f1`, expected `f0`",
            ),
            (
                "id\tlabel\tf0\ns1\t0\t0.5\n",
                "expected `participant_id`, `label`",
            ),
            (
                "participant_id\tlabel\tf0\ns1\t0\t0.5\ns2\t1\n",
                "codes.tsv",
            ),
            ("participant_id\tlabel\tf0\n", "no subjects"),
            (
                "participant_id\tlabel\tf0\ns1\t0\t1\ns1\t0\t1\n",
                "listed twice",
            ),
        ];
        for (text, expected) in cases {
            std::fs::write(&path, text).unwrap();
            let msg = Codes::read(&path).unwrap_err().to_string();
            assert!(
                msg.contains("codes.tsv") && msg.contains(expected),
                "{text:?} → {msg}"
            );
        }
    }
}
