//! The provenance section: the pipeline, and each upstream stage with its
//! op, its artifact's content hash (the part of this stage's key that names
//! it) and the device its metrics report.

use super::html::Page;
use super::{device_of, ReportParams};
use crate::ops::{OpCtx, OpError};

/// The first 12 characters of an input's content hash, as `hcpipe show` cuts keys.
fn short_content(content: Option<&str>) -> String {
    content.unwrap_or_default().chars().take(12).collect()
}

pub(super) fn provenance(
    ctx: &OpCtx,
    params: &ReportParams,
    page: &mut Page,
) -> Result<(), OpError> {
    page.section("provenance", "Provenance");
    let mut line = String::new();
    if let Some(p) = &params.pipeline {
        line.push_str(&format!("Pipeline {p}; "));
    }
    line.push_str(&format!(
        "page written by the report stage {} (hcpipe {}). The artifact column is the first 12 characters of each upstream artifact's content hash, which this page's stage key chains.",
        ctx.stage,
        env!("CARGO_PKG_VERSION")
    ));
    page.para(&line);
    let mut devices: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for i in ctx.inputs {
        let device = device_of(i);
        let op = i.op.clone().unwrap_or_else(|| "cmd".into());
        if let Some(d) = &device {
            if matches!(op.as_str(), "train_cnn" | "train_ae") && !devices.contains(d) {
                devices.push(d.clone());
            }
        }
        rows.push(vec![
            i.stage.clone(),
            op,
            short_content(i.content.as_deref()),
            device.unwrap_or_default(),
        ]);
    }
    if !devices.is_empty() {
        page.para(&format!("Trained on: {}.", devices.join(", ")));
    }
    page.table(
        &[
            "stage".into(),
            "op".into(),
            "artifact".into(),
            "device".into(),
        ],
        &rows,
    );
    page.end_section();
    Ok(())
}
