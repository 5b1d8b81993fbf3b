//! `age_filter`: the subjects of one split aged `min_age` or more — the lab's
//! check that a classifier still works on the old population only (every
//! OASIS-1 subject under 60 is CN, so the full validation set rewards age).
//!
//! Artifact: `subjects.tsv` with `participant_id session_id diagnosis age`,
//! in the split table's order. `evaluate` reads it for its `old` metrics.

use serde::Deserialize;

use super::{Metrics, OpCtx, OpError};
use crate::artifact::dataset::{Dataset, Diagnosis, Split};
use crate::artifact::subjects::{self, KeptSubject, Subjects};

fn d_split() -> Split {
    Split::Validation
}
fn d_min_age() -> f64 {
    62.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgeFilterParams {
    #[serde(default = "d_split")]
    pub split: Split,
    #[serde(default = "d_min_age")]
    pub min_age: f64,
}

pub fn run(ctx: &OpCtx) -> Result<Metrics, OpError> {
    let p: AgeFilterParams = ctx.params()?;
    if !p.min_age.is_finite() {
        return Err(OpError::Params(format!(
            "age_filter: `min_age` must be a number, got {}",
            p.min_age
        )));
    }
    let ds = Dataset::open(&ctx.input_by_any_op(&["fetch", "synth"])?.dir)?;
    let mut kept = Vec::new();
    let mut counts = [0usize; 2];
    for row in ds.split(p.split) {
        let s = ds.subject(row)?;
        if s.age >= p.min_age {
            kept.push(KeptSubject {
                participant_id: row.participant_id.clone(),
                session_id: row.session_id.clone(),
                diagnosis: row.diagnosis,
                age: s.age,
            });
            counts[usize::from(row.diagnosis == Diagnosis::CN)] += 1;
        }
    }
    Subjects(kept).write(&ctx.out.join(subjects::FILE))?;
    let mut m = Metrics::new();
    m.insert("split".into(), p.split.as_str().into());
    m.insert("n".into(), (counts[0] + counts[1]).into());
    m.insert("n_AD".into(), counts[0].into());
    m.insert("n_CN".into(), counts[1].into());
    m.insert("n_split".into(), ds.split(p.split).len().into());
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::super::{Input, Params};
    use super::*;
    use crate::artifact::dataset::real_tables_dataset;

    fn run_split(dir: &std::path::Path, out: &std::path::Path, split: &str) -> Metrics {
        let inputs = [Input {
            stage: "dataset".into(),
            op: Some("synth".into()),
            dir: dir.to_path_buf(),
            content: None,
        }];
        let params: Params = serde_json::from_str(&format!(r#"{{"split": "{split}"}}"#)).unwrap();
        run(&OpCtx {
            stage: "old",
            params: &params,
            inputs: &inputs,
            out,
            threads: 1,
            scratch: None,
        })
        .unwrap()
    }

    #[test]
    fn real_tables_give_the_lab_counts() {
        let tmp = tempfile::tempdir().unwrap();
        let ds = real_tables_dataset(&tmp.path().join("ds"));
        for (split, ad, cn) in [("train", 58, 65), ("validation", 15, 17)] {
            let out = tmp.path().join(split);
            std::fs::create_dir_all(&out).unwrap();
            let m = run_split(&ds, &out, split);
            assert_eq!(
                (m["n_AD"].as_u64(), m["n_CN"].as_u64()),
                (Some(ad), Some(cn)),
                "{split}"
            );
            let text = std::fs::read_to_string(out.join("subjects.tsv")).unwrap();
            assert_eq!(text.lines().count(), 1 + ad as usize + cn as usize);
            assert!(text.lines().skip(1).all(|l| l
                .rsplit('\t')
                .next()
                .unwrap()
                .parse::<f64>()
                .unwrap()
                >= 62.0));
        }
    }

    #[test]
    fn unknown_split_is_a_param_error() {
        let params: Params = serde_json::from_str(r#"{"split": "test"}"#).unwrap();
        let e = super::super::parse_params::<AgeFilterParams>(&params).unwrap_err();
        assert!(e.contains("train") && e.contains("validation"), "{e}");
    }
}
