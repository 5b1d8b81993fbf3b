//! Small helpers for the tab-separated files the ops exchange.

use std::collections::HashMap;
use std::path::Path;

use hcpipe::ops::OpError;

use crate::error::{msg, Result};

/// A TSV read whole: header → column index, and the rows.
pub struct Table {
    pub path: std::path::PathBuf,
    columns: HashMap<String, usize>,
    pub rows: Vec<csv::StringRecord>,
}

impl Table {
    pub fn read(path: &Path) -> Result<Table> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(b'\t')
            .from_path(path)
            .map_err(|e| msg(format!("{}: cannot read TSV: {e}", path.display())))?;
        let headers = reader
            .headers()
            .map_err(|e| msg(format!("{}: bad TSV header: {e}", path.display())))?;
        let columns = headers
            .iter()
            .enumerate()
            .map(|(i, h)| (h.to_string(), i))
            .collect();
        let rows = reader
            .records()
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| msg(format!("{}: bad TSV row: {e}", path.display())))?;
        Ok(Table {
            path: path.to_path_buf(),
            columns,
            rows,
        })
    }

    /// The index of `name`, or an error naming the file.
    pub fn column(&self, name: &str) -> Result<usize> {
        self.columns.get(name).copied().ok_or_else(|| {
            msg(format!(
                "{}: no `{name}` column; the upstream stage wrote an unexpected format (rebuild it)",
                self.path.display()
            ))
        })
    }

    /// Field `col` of row `row` (0-based data row), or an error naming the line.
    pub fn field<'a>(
        &'a self,
        row: &'a csv::StringRecord,
        col: usize,
        idx: usize,
    ) -> Result<&'a str> {
        row.get(col).ok_or_else(|| {
            msg(format!(
                "{}: line {} has too few fields",
                self.path.display(),
                idx + 2
            ))
        })
    }
}

/// Write `text` to `path`, naming the file on error.
pub fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| OpError::io(path, e))
}
