//! The one TSV reader and writer every artifact table goes through.
//!
//! Reading uses the `csv` crate: tab separated, a header row, every row as
//! many cells as the header, and no quoting (the lab's tables carry quotes in
//! free text, and hcpipe's ids never hold tabs). Cells are looked up by
//! column name, so a table may carry columns a reader does not use.
//! Writing refuses a cell holding a tab or a line break instead of quoting
//! it, so what [`write`] writes, [`Table::read`] reads back cell for cell.

use std::collections::HashMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::{Error, Result};

/// A TSV read whole: its header and its rows, each with its line number.
#[derive(Debug, Clone)]
pub struct Table {
    pub path: PathBuf,
    pub header: Vec<String>,
    columns: HashMap<String, usize>,
    rows: Vec<(u64, csv::StringRecord)>,
}

/// One data row of a [`Table`], with what error messages need.
#[derive(Clone, Copy)]
pub struct Row<'a> {
    table: &'a Table,
    /// 1-based line in the file (the header is line 1).
    pub line: u64,
    record: &'a csv::StringRecord,
}

impl Table {
    pub fn read(path: &Path) -> Result<Table> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(b'\t')
            .quoting(false)
            .from_reader(std::io::BufReader::new(file));
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| Error::format(path, format!("cannot read the header row: {e}")))?
            .iter()
            .map(str::to_string)
            .collect();
        let columns = header
            .iter()
            .enumerate()
            .map(|(i, h)| (h.clone(), i))
            .collect();
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| {
                Error::format(
                    path,
                    format!("{e}; every row needs one cell per header column"),
                )
            })?;
            let line = record.position().map_or(0, |p| p.line());
            rows.push((line, record));
        }
        Ok(Table {
            path: path.to_path_buf(),
            header,
            columns,
            rows,
        })
    }

    /// Reads `path` and checks that it has every column in `required`.
    pub fn read_with(path: &Path, required: &[&str]) -> Result<Table> {
        let table = Table::read(path)?;
        table.require(required)?;
        Ok(table)
    }

    /// An error naming every column of `required` the header lacks.
    pub fn require(&self, required: &[&str]) -> Result<()> {
        let missing: Vec<String> = required
            .iter()
            .filter(|c| !self.columns.contains_key(**c))
            .map(|c| format!("`{c}`"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(self.error(format!(
            "missing column(s) {}; the header has {}",
            missing.join(", "),
            self.header.join(" ")
        )))
    }

    /// The index of column `name`, if the header has it.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.get(name).copied()
    }

    pub fn rows(&self) -> impl ExactSizeIterator<Item = Row<'_>> {
        self.rows.iter().map(move |(line, record)| Row {
            table: self,
            line: *line,
            record,
        })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// An error about the whole file.
    pub fn error(&self, what: impl Into<String>) -> Error {
        Error::format(&self.path, what)
    }
}

impl<'a> Row<'a> {
    /// The cell of column `name` ("" when the header lacks it: check with
    /// [`Table::require`] first).
    pub fn get(&self, name: &str) -> &'a str {
        self.table
            .column(name)
            .and_then(|i| self.record.get(i))
            .unwrap_or("")
    }

    /// Every cell, in header order.
    pub fn cells(&self) -> impl Iterator<Item = &'a str> {
        self.record.iter()
    }

    /// An error about this row: `path:line: what`.
    pub fn error(&self, what: impl Display) -> Error {
        Error::format(&self.table.path, format!("line {}: {what}", self.line))
    }

    /// Column `name` parsed as `T`, or an error naming the line, column and cell.
    pub fn parse<T: FromStr>(&self, name: &str) -> Result<T> {
        let cell = self.get(name);
        cell.trim().parse().map_err(|_| {
            self.error(format!(
                "column `{name}` holds `{cell}`, not a {}",
                short_type_name::<T>()
            ))
        })
    }

    /// Column `name` as a number, NaN for an empty, `nan` or `n/a` cell (as pandas reads them).
    pub fn number_or_nan(&self, name: &str) -> Result<f64> {
        let cell = self.get(name).trim();
        if cell.is_empty() || cell.eq_ignore_ascii_case("nan") || cell.eq_ignore_ascii_case("n/a") {
            return Ok(f64::NAN);
        }
        self.parse(name)
    }

    /// Column `name` as a 0/1 label (0 = CN, 1 = AD).
    pub fn label(&self, name: &str) -> Result<i64> {
        match self.get(name).trim().parse::<i64>() {
            Ok(l @ (0 | 1)) => Ok(l),
            _ => Err(self.error(format!(
                "{name} is `{}`, expected 0 (CN) or 1 (AD)",
                self.get(name)
            ))),
        }
    }
}

fn short_type_name<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    match name {
        "f64" | "f32" => "number",
        "i64" | "u64" | "usize" | "i32" | "u32" => "whole number",
        _ => name.rsplit("::").next().unwrap_or(name),
    }
}

/// Writes a header and rows of cells as TSV (`\n` line ends, no quoting).
pub fn write<R, C>(path: &Path, header: &[C], rows: impl IntoIterator<Item = R>) -> Result<()>
where
    R: AsRef<[String]>,
    C: AsRef<str>,
{
    let mut text = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| -> Result<()> {
        for (i, cell) in cells.enumerate() {
            if cell.contains(['\t', '\n', '\r']) {
                return Err(Error::format(
                    path,
                    format!(
                        "cannot write the cell {cell:?}: a TSV cell holds no tab or line break"
                    ),
                ));
            }
            if i > 0 {
                text.push('\t');
            }
            text.push_str(cell);
        }
        text.push('\n');
        Ok(())
    };
    line(&mut header.iter().map(AsRef::as_ref))?;
    for row in rows {
        line(&mut row.as_ref().iter().map(String::as_str))?;
    }
    super::write_file(path, text)
}

/// A number as the tables write it: NaN as an empty cell, else shortest `Display`.
pub fn number(v: f64) -> String {
    if v.is_nan() {
        String::new()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_by_name_and_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tsv");
        std::fs::write(&p, "a\tb\n1\t\"x y\"\n2\tz\n").unwrap();
        let t = Table::read_with(&p, &["a", "b"]).unwrap();
        let rows: Vec<Row> = t.rows().collect();
        assert_eq!(rows[0].get("b"), "\"x y\"");
        assert_eq!(rows[1].line, 3);
        assert_eq!(rows[1].parse::<i64>("a").unwrap(), 2);
        let e = rows[1].parse::<f64>("b").unwrap_err().to_string();
        assert!(
            e.contains("t.tsv: line 3: column `b` holds `z`, not a number"),
            "{e}"
        );
        let e = Table::read_with(&p, &["a", "c"]).unwrap_err().to_string();
        assert!(e.contains("missing column(s) `c`"), "{e}");
        std::fs::write(&p, "a\tb\n1\n").unwrap();
        assert!(Table::read(&p)
            .unwrap_err()
            .to_string()
            .contains("one cell per header column"));
    }

    #[test]
    fn write_refuses_tabs_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tsv");
        write(&p, &["a", "b"], [vec!["1".to_string(), "x\"y".into()]]).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a\tb\n1\tx\"y\n");
        assert_eq!(
            Table::read(&p).unwrap().rows().next().unwrap().get("b"),
            "x\"y"
        );
        let e = write(&p, &["a"], [vec!["x\ty".to_string()]]).unwrap_err();
        assert!(e.to_string().contains("no tab"), "{e}");
    }
}
