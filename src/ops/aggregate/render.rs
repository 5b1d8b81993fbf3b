//! The table for people and programs: `table.tsv` (every number, one line per cell),
//! `table.md` (one table per set) and `table.tex` (booktabs, sets side by side), all from
//! the [`PaperTable`] that `table.json` holds, so the four files never disagree.

use std::fmt::Write;
use std::path::Path;

use crate::artifact::table::{Cell, Column, PaperTable, PooledCell, Row};
use crate::artifact::tsv;

/// The column header of a metric: the names papers use.
pub fn header(metric: &str) -> String {
    match metric {
        "roc_auc" => "ROC AUC".to_string(),
        "balanced_accuracy" => "balanced accuracy".to_string(),
        other => other.replace('_', " "),
    }
}

const TSV_COLUMNS: [&str; 13] = [
    "row",
    "stage",
    "variant",
    "set",
    "metric",
    "n",
    "value",
    "sd",
    "min",
    "max",
    "ci95_lo",
    "ci95_hi",
    "n_predictions",
];

/// `table.tsv`: per non-empty cell `row stage variant set metric n value sd min max ci95_lo
/// ci95_hi n_predictions`; `value` is the mean (variant `mean`, `n` members) or the pooled
/// metric (variant `pooled`, `n` members, `n_predictions` rows). Numbers in Rust's shortest
/// round-trip form, so they read back exactly; a field that does not apply is empty.
pub fn write_tsv(table: &PaperTable, path: &Path) -> crate::artifact::Result<()> {
    let text = |x: Option<f64>| x.map(|x| x.to_string()).unwrap_or_default();
    let mut lines: Vec<Vec<String>> = Vec::new();
    for row in &table.rows {
        let head = |c: &Column| {
            vec![
                row.label().to_string(),
                row.stage().to_string(),
                row.variant().to_string(),
                c.set.clone(),
                c.metric.clone(),
            ]
        };
        match row {
            Row::Mean { cells, .. } => {
                for (c, cell) in table.columns.iter().zip(cells) {
                    let Some(cell) = cell else { continue };
                    let mut line = head(c);
                    line.extend([
                        cell.n.to_string(),
                        cell.mean.to_string(),
                        text(cell.sd),
                        cell.min.to_string(),
                        cell.max.to_string(),
                        text(cell.ci95.map(|i| i.lo)),
                        text(cell.ci95.map(|i| i.hi)),
                        String::new(),
                    ]);
                    lines.push(line);
                }
            }
            Row::Pooled { cells, .. } => {
                for (c, cell) in table.columns.iter().zip(cells) {
                    let Some(cell) = cell else { continue };
                    let mut line = head(c);
                    line.extend([
                        cell.n_members.to_string(),
                        cell.value.to_string(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                        cell.n_predictions.to_string(),
                    ]);
                    lines.push(line);
                }
            }
        }
    }
    tsv::write(path, &TSV_COLUMNS, lines)
}

fn fixed(x: f64, digits: usize) -> String {
    format!("{x:.digits$}")
}

/// The row's name as shown: the pooled variant always says so.
pub fn shown_label(row: &Row) -> String {
    match row {
        Row::Mean { label, .. } => label.clone(),
        Row::Pooled { label, .. } => format!("{label} (pooled)"),
    }
}

/// Members in a row: the largest `n` of its cells (cells a row lacks are empty, not smaller).
pub fn row_n(row: &Row) -> Option<usize> {
    match row {
        Row::Mean { cells, .. } => cells.iter().flatten().map(|c| c.n).max(),
        Row::Pooled { cells, .. } => cells.iter().flatten().map(|c| c.n_members).max(),
    }
}

/// A cell's centre: `0.812 ± 0.034` (`pm` spells the ± for Markdown or LaTeX math), or
/// the mean alone for one member.
fn mean_text(cell: &Cell, digits: usize, pm: &str) -> String {
    match cell.sd {
        Some(sd) => format!("{}{pm}{}", fixed(cell.mean, digits), fixed(sd, digits)),
        None => fixed(cell.mean, digits),
    }
}

/// What follows the centre, as text: ` (n = 1)` without spread; with `interval`,
/// ` [lo, hi] (min–max)` (`dash` spells the range's dash).
fn extra_text(cell: &Cell, digits: usize, interval: bool, dash: &str) -> String {
    let mut s = String::new();
    if cell.sd.is_none() {
        s.push_str(" (n = 1)");
    }
    if interval {
        if let Some(ci) = cell.ci95 {
            let _ = write!(s, " [{}, {}]", fixed(ci.lo, digits), fixed(ci.hi, digits));
        }
        let _ = write!(
            s,
            " ({}{dash}{})",
            fixed(cell.min, digits),
            fixed(cell.max, digits)
        );
    }
    s
}

fn pooled_text(cell: &PooledCell, digits: usize) -> String {
    fixed(cell.value, digits)
}

/// The columns of each set, in table order: (set, [(column index, column)]).
fn by_set(table: &PaperTable) -> Vec<(&str, Vec<(usize, &Column)>)> {
    let mut sets: Vec<(&str, Vec<(usize, &Column)>)> = Vec::new();
    for (i, c) in table.columns.iter().enumerate() {
        match sets.iter_mut().find(|(s, _)| *s == c.set) {
            Some((_, cols)) => cols.push((i, c)),
            None => sets.push((c.set.as_str(), vec![(i, c)])),
        }
    }
    sets
}

/// A row's cells as `table.md` shows them (`–` for an empty one), for the report too.
pub fn cell_texts(table: &PaperTable, row: &Row, digits: usize) -> Vec<String> {
    (0..table.columns.len())
        .map(|i| match row {
            Row::Mean { cells, .. } => cells
                .get(i)
                .and_then(Option::as_ref)
                .map(|c| mean_text(c, digits, " ± ") + &extra_text(c, digits, table.interval, "–")),
            Row::Pooled { cells, .. } => cells
                .get(i)
                .and_then(Option::as_ref)
                .map(|c| pooled_text(c, digits)),
        })
        .map(|c| c.unwrap_or_else(|| "–".to_string()))
        .collect()
}

/// The legend every rendering prints under the table.
pub fn legend(table: &PaperTable) -> String {
    let mut s = "Mean ± SD over each row's n members (sample SD, ddof = 1)".to_string();
    if table.interval {
        s.push_str("; [lo, hi]: 95 % t-interval of the mean; (min–max) over the members");
    }
    if table.rows.iter().any(|r| matches!(r, Row::Pooled { .. })) {
        s.push_str(
            "; \"(pooled)\": the metric recomputed on all members' predictions together, \
             n members pooled",
        );
    }
    s.push('.');
    s
}

/// `table.md`: a heading and a table per set, then the legend and the notes.
pub fn markdown(table: &PaperTable, digits: usize) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
    let mut md = String::new();
    for (set, cols) in by_set(table) {
        let _ = writeln!(md, "### {}\n", esc(set));
        let heads: Vec<String> = cols.iter().map(|(_, c)| esc(&c.header)).collect();
        let _ = writeln!(md, "| | n | {} |", heads.join(" | "));
        let _ = writeln!(md, "|---|---:|{}", "---:|".repeat(cols.len()));
        for row in &table.rows {
            let all = cell_texts(table, row, digits);
            let cells: Vec<String> = cols
                .iter()
                .map(|(i, _)| all.get(*i).cloned().unwrap_or_default())
                .collect();
            let n = row_n(row).map(|n| n.to_string()).unwrap_or_default();
            let _ = writeln!(
                md,
                "| {} | {n} | {} |",
                esc(&shown_label(row)),
                cells.join(" | ")
            );
        }
        md.push('\n');
    }
    let _ = writeln!(md, "{}", legend(table));
    for note in &table.notes {
        let _ = writeln!(md, "\n- {}", esc(note));
    }
    md
}

/// Text as LaTeX reads it literally.
fn tex(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            c => out.push(c),
        }
    }
    out
}

/// `table.tex`: one booktabs `tabular` (no float, so it goes inside the paper's own `table`):
/// a column group per set, the mean rows, then after a rule the pooled rows.
pub fn latex(table: &PaperTable, digits: usize) -> String {
    let sets = by_set(table);
    let ncols = table.columns.len();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "% hcpipe aggregate table. {}\n% Needs \\usepackage{{booktabs}}.",
        legend(table).replace('±', "+/-")
    );
    let _ = writeln!(s, "\\begin{{tabular}}{{lr{}}}", "c".repeat(ncols));
    s.push_str("\\toprule\n");
    let mut group = String::from(" & ");
    let mut rules = String::new();
    let mut first = 3;
    for (set, cols) in &sets {
        let _ = write!(
            group,
            " & \\multicolumn{{{}}}{{c}}{{{}}}",
            cols.len(),
            tex(set)
        );
        let _ = write!(
            rules,
            "\\cmidrule(lr){{{first}-{}}}",
            first + cols.len() - 1
        );
        first += cols.len();
    }
    let _ = writeln!(s, "{group} \\\\\n{rules}");
    let heads: Vec<String> = table.columns.iter().map(|c| tex(&c.header)).collect();
    let _ = writeln!(s, " & $n$ & {} \\\\", heads.join(" & "));
    s.push_str("\\midrule\n");
    let line = |row: &Row| -> String {
        let cells: Vec<String> = match row {
            Row::Mean { cells, .. } => cells
                .iter()
                .map(|c| {
                    c.as_ref().map_or("--".to_string(), |c| {
                        format!(
                            "${}${}",
                            mean_text(c, digits, " \\pm "),
                            extra_text(c, digits, table.interval, "--")
                        )
                    })
                })
                .collect(),
            Row::Pooled { cells, .. } => cells
                .iter()
                .map(|c| {
                    c.as_ref().map_or("--".to_string(), |c| {
                        format!("${}$", pooled_text(c, digits))
                    })
                })
                .collect(),
        };
        let n = row_n(row).map(|n| n.to_string()).unwrap_or_default();
        format!(
            "{} & {n} & {} \\\\\n",
            tex(&shown_label(row)),
            cells.join(" & ")
        )
    };
    for row in table.rows.iter().filter(|r| matches!(r, Row::Mean { .. })) {
        s.push_str(&line(row));
    }
    let pooled: Vec<&Row> = table
        .rows
        .iter()
        .filter(|r| matches!(r, Row::Pooled { .. }))
        .collect();
    if !pooled.is_empty() {
        s.push_str("\\midrule\n");
        for row in pooled {
            s.push_str(&line(row));
        }
    }
    s.push_str("\\bottomrule\n\\end{tabular}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden() -> PaperTable {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("src/artifact/testdata/table.json");
        PaperTable::read(&path).unwrap()
    }

    #[test]
    fn markdown_shows_mean_sd_interval_and_the_pooled_row_labelled() {
        let md = markdown(&golden(), 3);
        assert!(md.starts_with("### test\n"), "{md}");
        assert!(md.contains("| | n | balanced accuracy | ROC AUC |"), "{md}");
        assert!(
            md.contains("| left CNN | 2 | 0.812 ± 0.088 [0.018, 1.607] (0.750–0.875) | – |"),
            "{md}"
        );
        assert!(md.contains("| left CNN (pooled) | 2 | 0.800 | – |"), "{md}");
        assert!(md.contains("sample SD, ddof = 1") && md.contains("\"(pooled)\""));
        assert!(
            md.contains("- row `left CNN` has no `test.roc_auc`"),
            "{md}"
        );
    }

    #[test]
    fn latex_is_booktabs_with_escaped_labels() {
        let mut t = golden();
        if let Row::Mean { label, .. } = &mut t.rows[0] {
            *label = "left_CNN & 50%".into();
        }
        t.interval = false;
        let tex = latex(&t, 2);
        assert!(tex.contains("\\begin{tabular}{lrcc}"), "{tex}");
        assert!(tex.contains("\\toprule") && tex.contains("\\bottomrule"));
        assert!(
            tex.contains(" &  & \\multicolumn{2}{c}{test} \\\\\n\\cmidrule(lr){3-4}"),
            "{tex}"
        );
        assert!(
            tex.contains("left\\_CNN \\& 50\\% & 2 & $0.81 \\pm 0.09$ & -- \\\\"),
            "{tex}"
        );
        // pooled rows after their own rule
        assert!(
            tex.contains("\\midrule\nleft CNN (pooled) & 2 & $0.80$ & -- \\\\\n\\bottomrule"),
            "{tex}"
        );
    }

    #[test]
    fn tsv_has_every_digit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("table.tsv");
        write_tsv(&golden(), &p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], TSV_COLUMNS.join("\t"));
        assert_eq!(
            lines[1],
            "left CNN\teval_left\tmean\ttest\tbalanced_accuracy\t2\t0.8125\t0.08838834764831845\t0.75\t0.875\t0.018362203989080807\t1.606637796010919\t"
        );
        assert_eq!(
            lines[2],
            "left CNN\teval_left\tpooled\ttest\tbalanced_accuracy\t2\t0.8\t\t\t\t\t\t40"
        );
        assert_eq!(lines.len(), 3, "empty cells have no line");
    }
}
