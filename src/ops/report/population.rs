//! The population section: a `demographics` stage's tables (all / train /
//! validation, as the lab prints them) and its bias checks.

use super::html::Page;
use crate::artifact::checks::{self, Check, Checks};
use crate::artifact::population::{self, Population};
use crate::ops::{Input, OpError};

pub(super) fn population(input: &Input, several: bool, page: &mut Page) -> Result<(), OpError> {
    let id = format!("population-{}", page.sections.len());
    let heading = if several {
        format!("Population ({})", input.stage)
    } else {
        "Population".to_string()
    };
    page.section(&id, &heading);
    let table = Population::read(&input.dir.join(population::FILE))?;
    // The `split` column becomes the tables' headings.
    let header: Vec<String> = population::COLUMNS[1..]
        .iter()
        .map(|h| h.to_string())
        .collect();
    // Splits in file order (all, train, validation), each its own table as the lab prints them.
    for s in table.splits() {
        let rows: Vec<Vec<String>> = table
            .0
            .iter()
            .filter(|r| r.split == s)
            .map(|r| {
                let mut cells = vec![r.diagnosis.as_str().to_string()];
                cells.extend(r.cells());
                cells
            })
            .collect();
        page.heading(&format!("{s} subjects"));
        page.table(&header, &rows);
    }
    let checks_path = input.dir.join(checks::FILE);
    if checks_path.exists() {
        let checks = Checks::read(&checks_path)?;
        let header: Vec<String> = checks::COLUMNS.iter().map(|h| h.to_string()).collect();
        let rows: Vec<Vec<String>> = checks.0.iter().map(Check::cells).collect();
        page.heading("Bias checks");
        page.table(&header, &rows);
    } else {
        page.para("No bias checks (the demographics artifact has no checks.tsv).");
    }
    page.end_section();
    Ok(())
}
