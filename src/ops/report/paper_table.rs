//! The paper-table section: an `aggregate` stage's table (the cells as its `table.md` shows
//! them, the pooled rows labelled) and, for each set with a balanced accuracy column, a strip
//! plot of every row's members (one point per member, coloured by fold; the bar at the mean,
//! whiskers at ± SD), which shows what a mean ± SD hides: one bad fold, or one seed.

use serde_json::Value;

use super::draw;
use super::figures::{self, Strip};
use super::html::Page;
use crate::artifact::table::{self, PaperTable, Row};
use crate::ops::aggregate::render;
use crate::ops::{Input, OpCtx, OpError};

/// Decimals of the page's cells, as `table.md`'s default.
const DIGITS: usize = 3;

pub(super) fn paper_table(
    ctx: &OpCtx,
    input: &Input,
    i: usize,
    page: &mut Page,
) -> Result<(), OpError> {
    let t = PaperTable::read(&input.dir.join(table::FILE))?;
    page.section(
        &format!("paper-table-{i}"),
        &format!("Paper table {}", input.stage),
    );
    let mut groups = vec![(String::new(), vec!["n".to_string()])];
    for c in &t.columns {
        match groups.iter_mut().find(|(set, _)| *set == c.set) {
            Some((_, heads)) => heads.push(c.header.clone()),
            None => groups.push((c.set.clone(), vec![c.header.clone()])),
        }
    }
    // Cells in column order are already grouped by set (sets outermost).
    let rows: Vec<Vec<String>> = t
        .rows
        .iter()
        .map(|row| {
            let mut cells = vec![
                render::shown_label(row),
                render::row_n(row)
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
            ];
            cells.extend(render::cell_texts(&t, row, DIGITS));
            cells
        })
        .collect();
    page.grouped_table("row", &groups, &rows);
    page.para(&render::legend(&t));
    for note in &t.notes {
        page.para(&format!("Note: {note}"));
    }

    for (k, set) in groups.iter().skip(1).map(|(s, _)| s).enumerate() {
        let Some(col) = t.column(set, "balanced_accuracy") else {
            continue;
        };
        let (strips, names) = strips(&t, col);
        if strips.is_empty() {
            continue;
        }
        let file = format!("paper_table_{i}_{k}.png");
        draw(figures::strips(
            &ctx.out.join(&file),
            &format!("Balanced accuracy on {set}, per member"),
            "balanced accuracy",
            &strips,
            &names,
        ))?;
        page.figure(
            &file,
            &format!(
                "{}: each member's balanced accuracy on {set} (a point per member, coloured by \
                 {}); the bar is the mean, the whiskers ± SD.",
                input.stage,
                if names.len() > 1 { "fold" } else { "row" }
            ),
        );
    }
    page.end_section();
    Ok(())
}

/// The strips of column `col`: one per mean row with that cell, points grouped by the
/// members' `fold` value (one group when members have no fold), and the groups' names.
fn strips(t: &PaperTable, col: usize) -> (Vec<Strip>, Vec<String>) {
    let fold_text = |axes: &serde_json::Map<String, Value>| {
        axes.get("fold").map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let mut folds: Vec<String> = Vec::new();
    for row in &t.rows {
        if let Row::Mean { cells, .. } = row {
            for m in cells
                .get(col)
                .and_then(Option::as_ref)
                .into_iter()
                .flat_map(|c| &c.members)
            {
                if let Some(f) = fold_text(&m.axes) {
                    if !folds.contains(&f) {
                        folds.push(f);
                    }
                }
            }
        }
    }
    let names: Vec<String> = if folds.is_empty() {
        vec!["member".to_string()]
    } else {
        folds.iter().map(|f| format!("fold {f}")).collect()
    };
    let strips = t
        .rows
        .iter()
        .filter_map(|row| match row {
            Row::Mean { label, cells, .. } => cells.get(col)?.as_ref().map(|c| Strip {
                label: label.clone(),
                points: c
                    .members
                    .iter()
                    .map(|m| {
                        let g = fold_text(&m.axes)
                            .and_then(|f| folds.iter().position(|x| *x == f))
                            .unwrap_or(0);
                        (g, m.value)
                    })
                    .collect(),
                mean: c.mean,
                sd: c.sd,
            }),
            Row::Pooled { .. } => None,
        })
        .collect();
    (strips, names)
}
