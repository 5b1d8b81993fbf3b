//! The clustering section: a `gmm` stage's subjects by age and MMS,
//! coloured by cluster, and its clustering metrics.

use serde_json::Value;

use super::draw;
use super::figures::{self, Series};
use super::html::{num, Page};
use crate::artifact::assignments::{self, Assignments};
use crate::artifact::metrics;
use crate::ops::{Input, OpCtx, OpError};

pub(super) fn clustering(
    ctx: &OpCtx,
    input: &Input,
    i: usize,
    page: &mut Page,
) -> Result<(), OpError> {
    page.section(
        &format!("clustering-{i}"),
        &format!("Clustering {}", input.stage),
    );
    let table = Assignments::read(&input.dir.join(assignments::FILE))?;
    if table.demographics {
        let mut groups: Vec<(usize, Vec<(f64, f64)>)> = Vec::new();
        for a in &table.rows {
            // Missing age/MMS are NaN: the plot leaves the point out.
            let point = (a.age, a.mms);
            match groups.iter_mut().find(|(g, _)| *g == a.cluster) {
                Some((_, pts)) => pts.push(point),
                None => groups.push((a.cluster, vec![point])),
            }
        }
        groups.sort_by_key(|(k, _)| *k);
        let series: Vec<Series> = groups
            .into_iter()
            .map(|(k, points)| Series {
                label: format!("cluster {k}"),
                points,
            })
            .collect();
        let file = format!("clusters_{i}.png");
        draw(figures::scatter(
            &ctx.out.join(&file),
            "Clustering values according to age and MMS score",
            "age (years)",
            "MMS",
            &series,
        ))?;
        page.figure(
            &file,
            &format!(
                "{}: each training subject's age and MMS, coloured by its cluster.",
                input.stage
            ),
        );
    } else {
        page.para("assignments.tsv has no age and MMS columns (the gmm stage did not need the dataset), so no scatter plot.");
    }

    if let Some(m) = metrics::read_in(&input.dir)? {
        let get = |k: &str| m.get(k).and_then(Value::as_f64);
        page.table(
            &[
                "n".into(),
                "components".into(),
                "mean log-likelihood".into(),
                "adjusted Rand index".into(),
                "cluster → label".into(),
            ],
            &[vec![
                m.get("n").map(|v| v.to_string()).unwrap_or_default(),
                m.get("n_components")
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                num(get("mean_log_likelihood")),
                num(get("adjusted_rand_index")),
                m.get("cluster_to_label")
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            ]],
        );
        let rows: Vec<Vec<String>> = [
            ("lab", "cluster index as label (the lab)"),
            ("matched", "best cluster → label mapping"),
        ]
        .iter()
        .filter_map(|(k, name)| {
            let g = m.get(*k)?;
            let mut row = vec![name.to_string()];
            row.extend(
                [
                    "accuracy",
                    "sensitivity",
                    "specificity",
                    "balanced_accuracy",
                ]
                .iter()
                .map(|c| num(g.get(*c).and_then(Value::as_f64))),
            );
            Some(row)
        })
        .collect();
        if !rows.is_empty() {
            page.table(
                &[
                    "labels from".into(),
                    "accuracy".into(),
                    "sensitivity".into(),
                    "specificity".into(),
                    "balanced acc.".into(),
                ],
                &rows,
            );
        }
        if let Some(clusters) = m.get("clusters").and_then(Value::as_array) {
            let cols = [
                "cluster", "weight", "n", "n_ad", "n_cn", "mean_age", "mean_mms",
            ];
            let rows: Vec<Vec<String>> = clusters
                .iter()
                .map(|c| {
                    cols.iter()
                        .map(|k| match c.get(*k) {
                            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
                            Some(v) => num(v.as_f64()),
                            None => String::new(),
                        })
                        .collect()
                })
                .collect();
            page.table(&cols.map(str::to_string), &rows);
        }
    }
    page.end_section();
    Ok(())
}
