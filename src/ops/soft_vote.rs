//! `soft_vote`: the lab's `softvoting` of several classifiers.
//!
//! Needs two or more stages whose artifact holds a `predictions.tsv`
//! (typically the left- and the right-hippocampus CNN's `evaluate` stages;
//! a user's own stage writing that format, docs/artifacts.md, counts the
//! same) and optionally one `age_filter` stage. Each member's
//! `predictions.tsv` (`participant_id true_label predicted_label proba0
//! proba1`) is matched to the others by `participant_id`; the vote's `proba0`
//! and `proba1` are the members' means, and its prediction is
//! `proba1 > 0.5`, exactly as the lab's `0.5 * p_left + 0.5 * p_right > 0.5`.
//!
//! Artifact: `predictions.tsv` (same columns, in the first member's subject
//! order). Metrics: `validation` (the lab's `compute_metrics` on every
//! subject, and `roc_auc` of the voted P(AD)), `old` (the same on the `age_filter` subjects, when one is
//! needed) and `members` (the evaluate stages' names, in `needs` order).
//! Members that evaluated a subject-list set (their metrics say `"set":
//! "test"`, say) key the vote's metrics by that set instead of `validation`,
//! and `"set"` names it; members must agree on it.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use super::metrics::scored_metrics;
use super::{Input, Metrics, OpCtx, OpError};
use crate::artifact::predictions::FILE as PREDICTIONS;
pub use crate::artifact::predictions::{Prediction, Predictions};
use crate::artifact::subjects::{self, Subjects};

/// `soft_vote` takes no params; an empty struct still rejects typos.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftVoteParams {}

/// The op's entry point (see the module docs).
pub fn run(ctx: &OpCtx) -> Result<Metrics, OpError> {
    let _params: SoftVoteParams = ctx.params()?;
    let members = ctx.inputs_with_file(PREDICTIONS);
    if members.len() < 2 {
        let without: Vec<String> = ctx
            .inputs
            .iter()
            .filter(|i| !members.iter().any(|m| m.stage == i.stage))
            .filter(|i| i.op.as_deref() != Some("age_filter"))
            .map(|i| format!("`{}`", i.stage))
            .collect();
        let hint = if without.is_empty() {
            String::new()
        } else {
            format!(
                " ({} wrote no predictions.tsv; the format is in docs/artifacts.md)",
                without.join(", ")
            )
        };
        return Err(OpError::Msg(format!(
            "stage `{}` (soft_vote) needs at least two upstream stages with a `predictions.tsv` to vote, it has {}{hint}; \
             list e.g. the left and the right evaluate stages in its `needs`",
            ctx.stage,
            members.len()
        )));
    }
    let mut tables = Vec::with_capacity(members.len());
    for member in &members {
        tables.push((
            member.stage.clone(),
            Predictions::read(&member.dir.join(PREDICTIONS))?.0,
        ));
    }
    // Before matching subjects: two sets' subjects differ, and this says why.
    let set = members_set(ctx.stage, &members)?;
    let voted = soft_vote(&tables)?;
    Predictions(voted.clone()).write(&ctx.out.join(PREDICTIONS))?;

    let mut metrics = Metrics::new();
    metrics.insert(
        set.as_deref().unwrap_or("validation").into(),
        metrics_json(&voted),
    );
    if let Some(filter) = optional_input(ctx, "age_filter")? {
        let old = subset(&voted, &filter.dir.join(subjects::FILE))?;
        metrics.insert("old".into(), metrics_json(&old));
    }
    metrics.insert(
        "members".into(),
        serde_json::Value::Array(members.iter().map(|m| m.stage.clone().into()).collect()),
    );
    if let Some(set) = set {
        metrics.insert("set".into(), set.into());
    }
    Ok(metrics)
}

/// The subject-list set the members evaluated (their metrics' `"set"`), `None` for the lab's
/// validation split; members that disagree are refused (their votes would mix two sets).
fn members_set(stage: &str, members: &[&Input]) -> Result<Option<String>, OpError> {
    let mut sets = Vec::with_capacity(members.len());
    for member in members {
        let set = crate::artifact::metrics::read_in(&member.dir)?
            .and_then(|m| m.get("set").and_then(|s| s.as_str()).map(str::to_string));
        sets.push((member.stage.as_str(), set));
    }
    let first = sets.first().and_then(|(_, s)| s.clone());
    if let Some((other, set)) = sets.iter().find(|(_, s)| *s != first) {
        let first_stage = sets.first().map_or("", |(s, _)| *s);
        let name = |s: &Option<String>| s.clone().unwrap_or_else(|| "the lab's validation".into());
        return Err(OpError::Msg(format!(
            "stage `{stage}` (soft_vote): `{first_stage}` evaluated {} set but `{other}` {} set; \
             give the evaluate stages the same `set:` and subject list",
            name(&first),
            name(set)
        )));
    }
    Ok(first)
}

/// The single upstream stage made by `op`, if `needs` has one.
fn optional_input<'a>(ctx: &OpCtx<'a>, op: &str) -> Result<Option<&'a Input>, OpError> {
    match ctx.inputs_by_op(op).len() {
        0 => Ok(None),
        _ => ctx.input_by_op(op).map(Some),
    }
}

/// The lab's metrics and ROC AUC of predictions (the report computes a
/// user's stage's the same way).
pub(crate) fn metrics_json(rows: &[Prediction]) -> serde_json::Value {
    let truth: Vec<i64> = rows.iter().map(|r| r.true_label).collect();
    let predicted: Vec<i64> = rows.iter().map(|r| r.predicted_label).collect();
    let proba1: Vec<f64> = rows.iter().map(|r| r.proba1).collect();
    // ScoredMetrics is plain numbers; serialising it cannot fail.
    serde_json::to_value(scored_metrics(&truth, &predicted, &proba1))
        .unwrap_or(serde_json::Value::Null)
}

/// Averages the members' probabilities subject by subject.
///
/// `members` holds (stage name, predictions); the output follows the first
/// member's subject order. Every member must list the same subjects with the
/// same true labels.
pub fn soft_vote(members: &[(String, Vec<Prediction>)]) -> Result<Vec<Prediction>, OpError> {
    let Some((first_name, first)) = members.first() else {
        return Err(OpError::Msg("soft_vote: no members to average".into()));
    };
    let mut by_member = Vec::with_capacity(members.len());
    for (name, rows) in members {
        let index: HashMap<&str, &Prediction> = rows
            .iter()
            .map(|r| (r.participant_id.as_str(), r))
            .collect();
        by_member.push((name, index));
    }
    // Every member's subject set must equal the first one's: first no extras...
    let first_ids: HashSet<&str> = first.iter().map(|r| r.participant_id.as_str()).collect();
    for (name, rows) in members.iter().skip(1) {
        if let Some(extra) = rows
            .iter()
            .find(|r| !first_ids.contains(r.participant_id.as_str()))
        {
            return Err(OpError::Msg(format!(
                "soft_vote: subject `{}` is in the predictions of `{name}` but not in those of \
                 `{first_name}`; the members must have evaluated the same split",
                extra.participant_id
            )));
        }
    }

    let n = members.len() as f64;
    let mut voted = Vec::with_capacity(first.len());
    for row in first {
        let (mut p0, mut p1) = (0.0, 0.0);
        // ...then none missing.
        for (name, index) in &by_member {
            let Some(other) = index.get(row.participant_id.as_str()) else {
                return Err(OpError::Msg(format!(
                    "soft_vote: subject `{}` is in the predictions of `{first_name}` but not in those \
                     of `{name}`; the members must have evaluated the same split",
                    row.participant_id
                )));
            };
            if other.true_label != row.true_label {
                return Err(OpError::Msg(format!(
                    "soft_vote: subject `{}` has true_label {} in `{first_name}` but {} in `{name}`; \
                     the members must come from the same dataset",
                    row.participant_id, row.true_label, other.true_label
                )));
            }
            p0 += other.proba0;
            p1 += other.proba1;
        }
        let proba1 = p1 / n;
        voted.push(Prediction {
            participant_id: row.participant_id.clone(),
            true_label: row.true_label,
            predicted_label: i64::from(proba1 > 0.5),
            proba0: p0 / n,
            proba1,
        });
    }
    Ok(voted)
}

/// The rows of the subjects listed in an `age_filter` `subjects.tsv`.
fn subset(rows: &[Prediction], subjects_tsv: &std::path::Path) -> Result<Vec<Prediction>, OpError> {
    let wanted = Subjects::read(subjects_tsv)?;
    let have: HashSet<&str> = rows.iter().map(|r| r.participant_id.as_str()).collect();
    if let Some(missing) = wanted
        .0
        .iter()
        .find(|s| !have.contains(s.participant_id.as_str()))
    {
        return Err(OpError::Msg(format!(
            "{}: subject `{}` has no soft-vote prediction; the age_filter stage must use \
             the split the evaluate stages predicted (split: validation)",
            subjects_tsv.display(),
            missing.participant_id
        )));
    }
    let wanted = wanted.ids();
    Ok(rows
        .iter()
        .filter(|r| wanted.contains(r.participant_id.as_str()))
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn predictions(rows: &[(&str, i64, f64)]) -> String {
        let mut text = "participant_id\ttrue_label\tpredicted_label\tproba0\tproba1\n".to_string();
        for (id, label, p1) in rows {
            let predicted = i64::from(*p1 > 0.5);
            text += &format!("{id}\t{label}\t{predicted}\t{}\t{p1}\n", 1.0 - p1);
        }
        text
    }

    const LEFT: &[(&str, i64, f64)] = &[
        ("s1", 1, 0.8),
        ("s2", 1, 0.25),
        ("s3", 0, 0.4),
        ("s4", 0, 0.1),
    ];
    // Another order on purpose: members are matched by participant_id.
    const RIGHT: &[(&str, i64, f64)] = &[
        ("s4", 0, 0.2),
        ("s3", 0, 0.7),
        ("s2", 1, 0.75),
        ("s1", 1, 0.6),
    ];

    fn run_stage(
        root: &Path,
        left: &str,
        right: &str,
        age_filter: Option<&str>,
    ) -> Result<Metrics, OpError> {
        write(&root.join("left"), PREDICTIONS, left);
        write(&root.join("right"), PREDICTIONS, right);
        let input = |stage: &str, op: &str| Input {
            stage: stage.into(),
            op: Some(op.into()),
            dir: root.join(stage),
            content: None,
        };
        let mut inputs = vec![input("left", "evaluate"), input("right", "evaluate")];
        if let Some(subjects) = age_filter {
            write(&root.join("old"), "subjects.tsv", subjects);
            inputs.push(input("old", "age_filter"));
        }
        let out: PathBuf = root.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let params = crate::ops::Params::new();
        let ctx = OpCtx {
            stage: "vote",
            params: &params,
            inputs: &inputs,
            out: &out,
            threads: 1,
            scratch: None,
        };
        run(&ctx)
    }

    #[test]
    fn hand_computed_vote_of_two_members() {
        let dir = tempfile::tempdir().unwrap();
        let subjects = "participant_id\tsession_id\tdiagnosis\tage\ns1\tses-M00\tAD\t70\ns3\tses-M00\tCN\t80\n";
        let metrics = run_stage(
            dir.path(),
            &predictions(LEFT),
            &predictions(RIGHT),
            Some(subjects),
        )
        .unwrap();

        let voted = Predictions::read(&dir.path().join("out").join(PREDICTIONS))
            .unwrap()
            .0;
        let ids: Vec<&str> = voted.iter().map(|r| r.participant_id.as_str()).collect();
        assert_eq!(ids, ["s1", "s2", "s3", "s4"]);
        // means: s1 0.7, s2 exactly 0.5 (not > 0.5, so CN as in the lab), s3 0.55, s4 0.15
        let expected = [(0.7, 1), (0.5, 0), (0.55, 1), (0.15, 0)];
        for (row, (p1, predicted)) in voted.iter().zip(expected) {
            assert!((row.proba1 - p1).abs() < 1e-12, "{row:?}");
            assert!((row.proba0 - (1.0 - p1)).abs() < 1e-12, "{row:?}");
            assert_eq!(row.predicted_label, predicted, "{row:?}");
        }
        // tp = s1, fn = s2, fp = s3, tn = s4
        let validation = &metrics["validation"];
        assert_eq!(validation["accuracy"], 0.5);
        assert_eq!(validation["sensitivity"], 0.5);
        assert_eq!(validation["specificity"], 0.5);
        assert_eq!(validation["n"], 4);
        // AD {s1 0.7, s2 0.5} vs CN {s3 0.55, s4 0.15}: pairs won 1 + 1 + 0 + 1 of 4
        assert_eq!(validation["roc_auc"], 0.75);
        // old = {s1 (tp), s3 (fp)}
        let old = &metrics["old"];
        assert_eq!(old["n"], 2);
        assert_eq!(old["sensitivity"], 1.0);
        assert_eq!(old["specificity"], 0.0);
        assert_eq!(old["roc_auc"], 1.0);
        assert_eq!(metrics["members"], serde_json::json!(["left", "right"]));
    }

    #[test]
    fn a_subject_list_set_keys_the_metrics_and_members_must_agree() {
        let dir = tempfile::tempdir().unwrap();
        for m in ["left", "right"] {
            write(&dir.path().join(m), "metrics.json", r#"{"set": "test"}"#);
        }
        let metrics = run_stage(dir.path(), &predictions(LEFT), &predictions(RIGHT), None).unwrap();
        assert_eq!(metrics["test"]["n"], 4);
        assert_eq!(metrics["set"], "test");
        assert!(metrics.get("validation").is_none());
        write(
            &dir.path().join("right"),
            "metrics.json",
            r#"{"set": "validation"}"#,
        );
        let e = run_stage(dir.path(), &predictions(LEFT), &predictions(RIGHT), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`left` evaluated test set but `right` validation set"),
            "{e}"
        );
        write(&dir.path().join("right"), "metrics.json", "{}");
        let e = run_stage(dir.path(), &predictions(LEFT), &predictions(RIGHT), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("but `right` the lab's validation set"), "{e}");
    }

    #[test]
    fn no_old_metrics_without_age_filter() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = run_stage(dir.path(), &predictions(LEFT), &predictions(RIGHT), None).unwrap();
        assert!(metrics.get("old").is_none());
    }

    #[test]
    fn subject_missing_from_one_member_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = run_stage(
            dir.path(),
            &predictions(LEFT),
            &predictions(&RIGHT[1..]),
            None,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`s4`") && msg.contains("`right`"), "{msg}");

        let err = run_stage(
            dir.path(),
            &predictions(&LEFT[..3]),
            &predictions(RIGHT),
            None,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`s4`") && msg.contains("not in those of `left`"),
            "{msg}"
        );
    }

    #[test]
    fn disagreeing_true_labels_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let right = [
            ("s1", 0, 0.6),
            ("s2", 1, 0.75),
            ("s3", 0, 0.7),
            ("s4", 0, 0.2),
        ];
        let msg = run_stage(dir.path(), &predictions(LEFT), &predictions(&right), None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`s1`") && msg.contains("true_label"), "{msg}");
    }

    #[test]
    fn one_member_is_not_a_vote() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("left"), PREDICTIONS, &predictions(LEFT));
        let inputs = [Input {
            stage: "left".into(),
            op: Some("evaluate".into()),
            dir: dir.path().join("left"),
            content: None,
        }];
        let params = crate::ops::Params::new();
        let ctx = OpCtx {
            stage: "vote",
            params: &params,
            inputs: &inputs,
            out: dir.path(),
            threads: 1,
            scratch: None,
        };
        let msg = run(&ctx).unwrap_err().to_string();
        assert!(
            msg.contains("at least two upstream stages with a `predictions.tsv`"),
            "{msg}"
        );
    }

    #[test]
    fn bad_tables_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let msg = run_stage(
            dir.path(),
            "participant_id\tproba1\ns1\t0.5\n",
            &predictions(RIGHT),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("left/predictions.tsv") && msg.contains("true_label"),
            "{msg}"
        );

        let mut bad = predictions(LEFT);
        bad = bad.replace("s3\t0\t0\t0.6\t0.4", "s3\t0\t0\t0.6\t1.4");
        let msg = run_stage(dir.path(), &bad, &predictions(RIGHT), None)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("predictions.tsv: line 4: subject `s3`: proba1 is 1.4"),
            "{msg}"
        );

        let dup = predictions(&[("s1", 1, 0.8), ("s1", 1, 0.8)]);
        let msg = run_stage(dir.path(), &dup, &predictions(RIGHT), None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("listed twice"), "{msg}");
    }

    #[test]
    fn params_reject_unknown_names() {
        let mut params = crate::ops::Params::new();
        params.insert("treshold".into(), 0.5.into());
        assert!(crate::ops::parse_params::<SoftVoteParams>(&params).is_err());
    }
}
