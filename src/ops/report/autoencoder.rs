//! The autoencoder section: a `train_ae` stage's loss curve and one
//! subject's input vs reconstruction.

use serde_json::Value;

use super::figures::{self, CurvePanel, Series};
use super::html::Page;
use super::{device_of, draw, read, three_slices, SLICE_HEIGHT};
use crate::artifact::{
    history::{self, History},
    metrics,
};
use crate::ops::{Input, OpCtx, OpError};

pub(super) fn autoencoder(
    ctx: &OpCtx,
    input: &Input,
    i: usize,
    page: &mut Page,
) -> Result<(), OpError> {
    page.section(
        &format!("autoencoder-{i}"),
        &format!("Autoencoder {}", input.stage),
    );
    let h = History::read(&input.dir.join(history::FILE))?;
    let device = device_of(input).unwrap_or_else(|| "unknown device".into());
    let file = format!("ae_loss_{i}.png");
    draw(figures::curves(
        &ctx.out.join(&file),
        &format!("Training of {}", input.stage),
        &[CurvePanel {
            caption: "reconstruction loss".into(),
            x_label: "epoch".into(),
            y_label: "mean training loss".into(),
            series: vec![Series {
                label: input.stage.clone(),
                points: h.loss_points(),
            }],
        }],
    ))?;
    page.figure(
        &file,
        &format!("{} ({device}): reconstruction loss per epoch.", input.stage),
    );

    let sample = input.dir.join("sample.safetensors");
    if sample.exists() {
        let (x, y) = read::ae_sample(&sample)?;
        let meta = input.dir.join("sample.json");
        let pid = if meta.exists() {
            metrics::read(&meta)?
                .get("participant_id")
                .and_then(Value::as_str)
                .unwrap_or("an unnamed subject")
                .to_string()
        } else {
            "an unnamed subject".to_string()
        };
        for (grid, what) in [(&x, "input"), (&y, "output")] {
            let centre = grid.dims.map(|d| d / 2);
            let panels =
                three_slices(grid, centre, false, &format!("{} {what}", sample.display()))?;
            let file = format!("ae_{what}_{i}.png");
            draw(figures::slice_row(
                &ctx.out.join(&file),
                &format!("Centre slices of the {what} image of {pid}"),
                &panels,
                SLICE_HEIGHT,
            ))?;
            page.figure(
                &file,
                &format!("{}: autoencoder {what} for {pid}.", input.stage),
            );
        }
    } else {
        page.para(
            "This train_ae artifact has no sample.safetensors, so no reconstruction is shown.",
        );
    }
    page.end_section();
    Ok(())
}
