//! "Did it help?": the paper tables of an `aggregate` stage on two sides of a diff, cell by
//! cell. Rows are matched by label and variant, columns by set and metric, members by their
//! axis values (`fold=0,seed=1`), so a paired test compares each fold and seed with itself.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::artifact::table::{Cell, PaperTable, Row};
use crate::stats::paired::{self, PairedT, Wilcoxon};

/// One cell of one table, before and after.
#[derive(Debug, Serialize)]
pub struct TableCellDiff {
    /// The aggregate stage.
    pub stage: String,
    /// The row's label.
    pub row: String,
    /// `mean` (over members) or `pooled`.
    pub variant: &'static str,
    pub set: String,
    pub metric: String,
    /// `None` where that side's table has no such cell.
    pub a: Option<CellSide>,
    pub b: Option<CellSide>,
    /// `b - a` of the means (or pooled values).
    pub delta: Option<f64>,
    /// Over the members both sides have (mean cells only).
    pub paired: Option<PairedTests>,
    /// Members (axis values) only one side has: the means are over different members.
    pub only_a: Vec<String>,
    pub only_b: Vec<String>,
}

impl TableCellDiff {
    pub fn members_differ(&self) -> bool {
        !self.only_a.is_empty() || !self.only_b.is_empty()
    }
}

/// A cell as one side has it.
#[derive(Debug, Serialize)]
pub struct CellSide {
    /// The mean, or the pooled value.
    pub value: f64,
    pub sd: Option<f64>,
    /// Members.
    pub n: usize,
}

/// The paired tests of the matched members' values, `b - a`.
#[derive(Debug, Serialize)]
pub struct PairedTests {
    /// Members matched by axis values.
    pub n: usize,
    /// `None` where undefined (every difference zero).
    pub wilcoxon: Option<Wilcoxon>,
    /// `None` where undefined (fewer than two pairs, or every difference zero).
    pub t: Option<PairedT>,
}

/// A member's axis values as text: `fold=0,seed=1` (keys sorted), `` for a stage without a
/// matrix; what pairs members across the sides.
pub fn axes_text(axes: &Map<String, Value>) -> String {
    let sorted: std::collections::BTreeMap<&String, &Value> = axes.iter().collect();
    sorted
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Every cell of `stage`'s table on either side, in A's row and column order, then B's new
/// ones.
pub fn compare(stage: &str, a: &PaperTable, b: &PaperTable) -> Vec<TableCellDiff> {
    let mut rows: Vec<(&str, &'static str)> = Vec::new();
    for r in a.rows.iter().chain(&b.rows) {
        let key = (r.label(), r.variant());
        if !rows.contains(&key) {
            rows.push(key);
        }
    }
    let mut columns: Vec<(&str, &str)> = Vec::new();
    for c in a.columns.iter().chain(&b.columns) {
        let key = (c.set.as_str(), c.metric.as_str());
        if !columns.contains(&key) {
            columns.push(key);
        }
    }
    let mut out = Vec::new();
    for &(label, variant) in &rows {
        for &(set, metric) in &columns {
            let (ca, cb) = (
                lookup(a, label, variant, set, metric),
                lookup(b, label, variant, set, metric),
            );
            if ca.is_none() && cb.is_none() {
                continue;
            }
            out.push(cell_diff(stage, label, variant, set, metric, ca, cb));
        }
    }
    out
}

/// A cell of a table: a mean cell, or a pooled value.
enum Found<'a> {
    Mean(&'a Cell),
    Pooled(f64, usize),
}

fn lookup<'a>(
    t: &'a PaperTable,
    label: &str,
    variant: &str,
    set: &str,
    metric: &str,
) -> Option<Found<'a>> {
    let col = t.column(set, metric)?;
    let row = t
        .rows
        .iter()
        .find(|r| r.label() == label && r.variant() == variant)?;
    match row {
        Row::Mean { cells, .. } => cells.get(col)?.as_ref().map(Found::Mean),
        Row::Pooled { cells, .. } => cells
            .get(col)?
            .as_ref()
            .map(|c| Found::Pooled(c.value, c.n_members)),
    }
}

fn side(found: &Found) -> CellSide {
    match found {
        Found::Mean(c) => CellSide {
            value: c.mean,
            sd: c.sd,
            n: c.n,
        },
        Found::Pooled(value, n) => CellSide {
            value: *value,
            sd: None,
            n: *n,
        },
    }
}

fn cell_diff(
    stage: &str,
    label: &str,
    variant: &'static str,
    set: &str,
    metric: &str,
    a: Option<Found>,
    b: Option<Found>,
) -> TableCellDiff {
    let (sa, sb) = (a.as_ref().map(side), b.as_ref().map(side));
    let delta = match (&sa, &sb) {
        (Some(x), Some(y)) => Some(y.value - x.value),
        _ => None,
    };
    let (mut only_a, mut only_b, mut paired) = (Vec::new(), Vec::new(), None);
    if let (Some(Found::Mean(ca)), Some(Found::Mean(cb))) = (&a, &b) {
        let keyed = |c: &Cell| -> Vec<(String, f64)> {
            c.members
                .iter()
                .map(|m| (axes_text(&m.axes), m.value))
                .collect()
        };
        let (ma, mb) = (keyed(ca), keyed(cb));
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for (k, x) in &ma {
            match mb.iter().find(|(kb, _)| kb == k) {
                Some((_, y)) => {
                    xs.push(*x);
                    ys.push(*y);
                }
                None => only_a.push(k.clone()),
            }
        }
        only_b = mb
            .iter()
            .filter(|(k, _)| !ma.iter().any(|(ka, _)| ka == k))
            .map(|(k, _)| k.clone())
            .collect();
        let d = paired::differences(&xs, &ys);
        paired = Some(PairedTests {
            n: d.len(),
            wilcoxon: paired::wilcoxon(&d),
            t: paired::paired_t(&d),
        });
    }
    TableCellDiff {
        stage: stage.to_string(),
        row: label.to_string(),
        variant,
        set: set.to_string(),
        metric: metric.to_string(),
        a: sa,
        b: sb,
        delta,
        paired,
        only_a,
        only_b,
    }
}

/// A p-value as people read it: 4 decimals, or 2 significant digits below 0.0001.
pub fn p_text(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

fn side_text(s: &Option<CellSide>) -> String {
    match s {
        None => "—".to_string(),
        Some(CellSide {
            value,
            sd: Some(sd),
            ..
        }) => format!("{value:.3} ± {sd:.3}"),
        Some(CellSide { value, .. }) => format!("{value:.3}"),
    }
}

/// The cells of one table as a text table, then the cells whose members differ.
pub fn render(cells: &[&TableCellDiff], a: &str, b: &str) -> String {
    use crate::ui::table::render as table;
    let rows: Vec<Vec<String>> = cells
        .iter()
        .map(|c| {
            let row = if c.variant == "pooled" {
                format!("{} (pooled)", c.row)
            } else {
                c.row.clone()
            };
            let (n, w, t) = match &c.paired {
                Some(p) => (
                    p.n.to_string(),
                    p.wilcoxon.map_or("–".into(), |w| p_text(w.p)),
                    p.t.map_or("–".into(), |t| p_text(t.p)),
                ),
                None => (String::new(), String::new(), String::new()),
            };
            vec![
                row,
                format!("{}.{}", c.set, c.metric),
                side_text(&c.a),
                side_text(&c.b),
                c.delta.map(|d| format!("{d:+.4}")).unwrap_or_default(),
                n,
                w,
                t,
                if c.members_differ() {
                    "differ".to_string()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    let mut out = table(
        &[
            "row",
            "metric",
            a,
            b,
            "delta",
            "n",
            "Wilcoxon p",
            "paired t p",
            "members",
        ],
        &rows,
    );
    for c in cells.iter().filter(|c| c.members_differ()) {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join("; ")
            }
        };
        out.push_str(&format!(
            "members differ in {} {}.{}: only in {a}: {}; only in {b}: {}\n",
            c.row,
            c.set,
            c.metric,
            list(&c.only_a),
            list(&c.only_b)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::table::{Column, MemberValue};
    use serde_json::json;

    fn table(values: &[(i64, f64)]) -> PaperTable {
        let members: Vec<MemberValue> = values
            .iter()
            .map(|&(fold, value)| MemberValue {
                member: format!("e[fold={fold}]"),
                axes: json!({"fold": fold}).as_object().unwrap().clone(),
                value,
            })
            .collect();
        let n = members.len();
        let mean = values.iter().map(|v| v.1).sum::<f64>() / n as f64;
        PaperTable {
            schema: 1,
            columns: vec![Column {
                set: "test".into(),
                metric: "balanced_accuracy".into(),
                header: "balanced accuracy".into(),
            }],
            interval: false,
            rows: vec![Row::Mean {
                label: "left".into(),
                stage: "e".into(),
                axes: vec!["fold".into()],
                cells: vec![Some(Cell {
                    n,
                    mean,
                    sd: Some(0.1),
                    min: 0.0,
                    max: 1.0,
                    ci95: None,
                    members,
                })],
            }],
            notes: vec![],
        }
    }

    #[test]
    fn members_are_paired_by_axis_values_not_position() {
        let a = table(&[(0, 0.5), (1, 0.6), (2, 0.7), (3, 0.8)]);
        // B lists its folds in another order, lacks fold 3 and has a fold 4
        let b = table(&[(2, 0.75), (0, 0.625), (1, 0.5), (4, 0.9)]);
        let cells = compare("t", &a, &b);
        assert_eq!(cells.len(), 1);
        let c = &cells[0];
        assert_eq!(
            (c.only_a.as_slice(), c.only_b.as_slice()),
            (&["fold=3".to_string()][..], &["fold=4".to_string()][..])
        );
        let p = c.paired.as_ref().unwrap();
        assert_eq!(p.n, 3);
        // differences b - a over folds 0, 1, 2
        let d = [0.625 - 0.5, 0.5 - 0.6, 0.75 - 0.7];
        assert_eq!(p.t.unwrap(), paired::paired_t(&d).unwrap());
        assert_eq!(p.wilcoxon.unwrap(), paired::wilcoxon(&d).unwrap());
        let text = render(&cells.iter().collect::<Vec<_>>(), "A", "B");
        assert!(text.contains("differ"), "{text}");
        assert!(
            text.contains("members differ in left test.balanced_accuracy: only in A: fold=3; only in B: fold=4"),
            "{text}"
        );
    }

    #[test]
    fn p_values_read_as_people_read_them() {
        assert_eq!(p_text(0.03125), "0.0312");
        assert_eq!(p_text(0.000012), "1.2e-5");
        let mut m = Map::new();
        m.insert("seed".into(), json!(1));
        m.insert("fold".into(), json!(0));
        m.insert("hemi".into(), json!("left"));
        assert_eq!(axes_text(&m), "fold=0,hemi=left,seed=1");
    }
}
