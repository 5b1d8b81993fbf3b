//! The training section: the loss and balanced accuracy per epoch of each
//! stage whose `history.tsv` has both (`train_cnn`, or a user's classifier
//! writing that format; so per sweep member), all overlaid when there are
//! several. An autoencoder's history (no balanced accuracy) is the autoencoder section's.

use super::figures::{self, CurvePanel, Series};
use super::html::{num, Page};
use super::{device_of, draw};
use crate::artifact::history::{self, History};
use crate::ops::{OpCtx, OpError};

pub(super) fn training(ctx: &OpCtx, page: &mut Page) -> Result<(), OpError> {
    let mut trains = Vec::new();
    for input in ctx.inputs_with_file(history::FILE) {
        let path = input.dir.join(history::FILE);
        let h = History::read(&path)?;
        if h.is_classifier() {
            trains.push((input, h));
        } else if input.op.as_deref() == Some("train_cnn") {
            return Err(OpError::Msg(format!(
                "{}: no column `balanced_accuracy`; a train_cnn history has one per epoch",
                path.display()
            )));
        }
    }
    if trains.is_empty() {
        return Ok(());
    }
    page.section("training", "Training curves");
    let mut histories = Vec::new();
    let mut rows = Vec::new();
    for (i, (input, h)) in trains.into_iter().enumerate() {
        let device = device_of(input).unwrap_or_else(|| "unknown device".into());
        let file = format!("train_{i}.png");
        draw(figures::curves(
            &ctx.out.join(&file),
            &format!("Training of {}", input.stage),
            &[
                CurvePanel {
                    caption: "loss".into(),
                    x_label: "epoch".into(),
                    y_label: "mean training loss".into(),
                    series: vec![Series {
                        label: input.stage.clone(),
                        points: h.loss_points(),
                    }],
                },
                CurvePanel {
                    caption: "balanced accuracy".into(),
                    x_label: "epoch".into(),
                    y_label: "balanced accuracy (train)".into(),
                    series: vec![Series {
                        label: input.stage.clone(),
                        points: h.balanced_accuracy_points(),
                    }],
                },
            ],
        ))?;
        page.figure(
            &file,
            &format!(
                "{} ({device}): loss and balanced accuracy on the training split per epoch.",
                input.stage
            ),
        );
        let last = h.0.last();
        let best =
            h.0.iter()
                .filter_map(|e| e.balanced_accuracy)
                .filter(|x| x.is_finite())
                .reduce(f64::max);
        rows.push(vec![
            input.stage.clone(),
            h.0.len().to_string(),
            num(last.map(|e| e.loss)),
            num(last.and_then(|e| e.balanced_accuracy)),
            num(best),
            device,
        ]);
        histories.push((input.stage.clone(), h));
    }
    if histories.len() > 1 {
        let panel = |name: &str, y: &str, points: fn(&History) -> Vec<(f64, f64)>| CurvePanel {
            caption: name.replace('_', " "),
            x_label: "epoch".into(),
            y_label: y.into(),
            series: histories
                .iter()
                .map(|(s, h)| Series {
                    label: s.clone(),
                    points: points(h),
                })
                .collect(),
        };
        let file = "train_all.png";
        draw(figures::curves(
            &ctx.out.join(file),
            "All training stages",
            &[
                panel("loss", "mean training loss", History::loss_points),
                panel(
                    "balanced_accuracy",
                    "balanced accuracy (train)",
                    History::balanced_accuracy_points,
                ),
            ],
        ))?;
        page.figure(
            file,
            "Every train_cnn stage (sweep members included) on the same axes.",
        );
    }
    page.table(
        &[
            "stage".into(),
            "epochs".into(),
            "last loss".into(),
            "last balanced accuracy".into(),
            "best balanced accuracy".into(),
            "device".into(),
        ],
        &rows,
    );
    page.end_section();
    Ok(())
}
