//! `history.tsv` of a `train_cnn` or `train_ae` stage: one row per epoch,
//! `epoch loss [balanced_accuracy]` (the accuracy only for classifiers), the
//! lab's per-epoch evaluation on the training split. A diverged loss is
//! written `NaN`.

use std::path::Path;

use super::tsv::{self, Table};
use super::Result;

/// One epoch's evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Epoch {
    /// 0-based, as the lab prints.
    pub epoch: usize,
    /// The lab's mean loss.
    pub loss: f64,
    /// Only for classifiers.
    pub balanced_accuracy: Option<f64>,
}

/// A training history, epochs in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History(pub Vec<Epoch>);

pub const FILE: &str = "history.tsv";

impl History {
    /// Reads a history: `epoch` and `loss` columns, `balanced_accuracy`
    /// when the model is a classifier; at least one epoch. An empty cell is NaN.
    pub fn read(path: &Path) -> Result<History> {
        let table = Table::read_with(path, &["epoch", "loss"])?;
        let classifier = table.column("balanced_accuracy").is_some();
        let mut out = Vec::with_capacity(table.len());
        for row in table.rows() {
            out.push(Epoch {
                epoch: row.parse("epoch")?,
                loss: row.number_or_nan("loss")?,
                balanced_accuracy: if classifier {
                    Some(row.number_or_nan("balanced_accuracy")?)
                } else {
                    None
                },
            });
        }
        if out.is_empty() {
            return Err(table.error("no epochs (the table has only a header)"));
        }
        Ok(History(out))
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let classifier = self.is_classifier();
        let header: &[&str] = if classifier {
            &["epoch", "loss", "balanced_accuracy"]
        } else {
            &["epoch", "loss"]
        };
        let rows = self.0.iter().map(|e| {
            let mut cells = vec![e.epoch.to_string(), e.loss.to_string()];
            if classifier {
                cells.push(e.balanced_accuracy.map_or(String::new(), |b| b.to_string()));
            }
            cells
        });
        tsv::write(path, header, rows)
    }

    /// Whether the epochs carry a balanced accuracy (a `train_cnn` history).
    pub fn is_classifier(&self) -> bool {
        self.0.iter().any(|e| e.balanced_accuracy.is_some())
    }

    /// (epoch, loss) pairs.
    pub fn loss_points(&self) -> Vec<(f64, f64)> {
        self.0.iter().map(|e| (e.epoch as f64, e.loss)).collect()
    }

    /// (epoch, balanced accuracy) pairs of the epochs that have one.
    pub fn balanced_accuracy_points(&self) -> Vec<(f64, f64)> {
        self.0
            .iter()
            .filter_map(|e| Some((e.epoch as f64, e.balanced_accuracy?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_classifier_and_autoencoder() {
        let h =
            super::super::assert_round_trip("history/cnn.tsv", History::read, |p, h| h.write(p));
        assert!(h.is_classifier());
        assert_eq!(h.0.len(), 3);
        assert!(h.0[1].loss.is_nan());
        assert_eq!(h.balanced_accuracy_points()[2], (2.0, 0.925));
        let h = super::super::assert_round_trip("history/ae.tsv", History::read, |p, h| h.write(p));
        assert!(!h.is_classifier());
        assert_eq!(h.loss_points()[1], (1.0, 0.1177671847873264));
    }

    #[test]
    fn bad_tables_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE);
        std::fs::write(&p, "epoch\tloss\n0\tabc\n").unwrap();
        let msg = History::read(&p).unwrap_err().to_string();
        assert!(msg.contains("line 2: column `loss` holds `abc`"), "{msg}");
        std::fs::write(&p, "epoch\tloss\n0\t1\t2\n").unwrap();
        assert!(History::read(&p).is_err());
        std::fs::write(&p, "epoch\tloss\n").unwrap();
        assert!(History::read(&p)
            .unwrap_err()
            .to_string()
            .contains("no epochs"));
        std::fs::write(&p, "epoch\tacc\n0\t1\n").unwrap();
        assert!(History::read(&p)
            .unwrap_err()
            .to_string()
            .contains("`loss`"));
    }
}
