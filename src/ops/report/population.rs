//! The population section: a `demographics` stage's tables (all / train /
//! validation, as the lab prints them) and its bias checks.

use super::html::Page;
use crate::artifact::tsv::Table;
use crate::ops::{Input, OpError};

pub(super) fn population(input: &Input, several: bool, page: &mut Page) -> Result<(), OpError> {
    let id = format!("population-{}", page.sections.len());
    let heading = if several {
        format!("Population ({})", input.stage)
    } else {
        "Population".to_string()
    };
    page.section(&id, &heading);
    let table = Table::read_with(&input.dir.join("population.tsv"), &["split"])?;
    let split = table.column("split").unwrap_or_default();
    let header: Vec<String> = table
        .header
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != split)
        .map(|(_, h)| h.clone())
        .collect();
    // Splits in file order (all, train, validation), each its own table as the lab prints them.
    let mut splits: Vec<&str> = Vec::new();
    for row in table.rows() {
        let s = row.get("split");
        if !splits.contains(&s) {
            splits.push(s);
        }
    }
    for s in splits {
        let rows: Vec<Vec<String>> = table
            .rows()
            .filter(|r| r.get("split") == s)
            .map(|r| {
                r.cells()
                    .enumerate()
                    .filter(|(i, _)| *i != split)
                    .map(|(_, c)| c.to_string())
                    .collect()
            })
            .collect();
        page.heading(&format!("{s} subjects"));
        page.table(&header, &rows);
    }
    let checks_path = input.dir.join("checks.tsv");
    if checks_path.exists() {
        let checks = Table::read(&checks_path)?;
        let rows: Vec<Vec<String>> = checks
            .rows()
            .map(|r| r.cells().map(str::to_string).collect())
            .collect();
        page.heading("Bias checks");
        page.table(&checks.header, &rows);
    } else {
        page.para("No bias checks (the demographics artifact has no checks.tsv).");
    }
    page.end_section();
    Ok(())
}
