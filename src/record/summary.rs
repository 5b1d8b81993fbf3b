//! What listing runs needs of a record: its header, how many stages ended
//! each way, and the keys of its `report` stages. Reading every stage of
//! every record into a [`super::StageRecord`] made `hcpipe show` take
//! seconds per 100,000-stage run kept (each record ~22 MB); a summary reads
//! the same bytes but keeps nothing per stage.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::{RunStatus, Runner, StageStatus};
use crate::cache::StageKey;

/// One run record, summarised.
#[derive(Debug, Clone, Deserialize)]
pub struct RunSummary {
    pub id: String,
    pub pipeline: String,
    pub pipeline_path: String,
    pub status: RunStatus,
    pub started: String,
    #[serde(default)]
    pub runner: Option<Runner>,
    #[serde(rename = "stages")]
    tally: StageTally,
}

impl RunSummary {
    /// How many of its stages ended with `status`.
    pub fn count(&self, status: StageStatus) -> usize {
        self.tally.counts[status as usize]
    }

    /// The keys of its stages made by the `report` op, in record order.
    pub fn report_keys(&self) -> &[StageKey] {
        &self.tally.reports
    }
}

/// The `stages` array, counted as it is read.
#[derive(Debug, Clone, Default)]
struct StageTally {
    /// Indexed by `StageStatus as usize`.
    counts: [usize; 5],
    reports: Vec<StageKey>,
}

/// The fields of a stage record a summary looks at; serde skips the rest
/// without keeping them.
#[derive(Deserialize)]
struct StageBrief<'a> {
    status: StageStatus,
    #[serde(default, borrow)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow)]
    key: Cow<'a, str>,
}

impl<'de> Deserialize<'de> for StageTally {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StageTally, D::Error> {
        struct Tally;
        impl<'de> Visitor<'de> for Tally {
            type Value = StageTally;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of stage records")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StageTally, A::Error> {
                let mut tally = StageTally::default();
                while let Some(stage) = seq.next_element::<StageBrief>()? {
                    tally.counts[stage.status as usize] += 1;
                    if stage.op.as_deref() == Some("report") {
                        if let Some(key) = StageKey::parse(&stage.key) {
                            tally.reports.push(key);
                        }
                    }
                }
                Ok(tally)
            }
        }
        d.deserialize_seq(Tally)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{record_for_test, StageRecord};

    fn stage(name: &str, op: Option<&str>, status: StageStatus) -> StageRecord {
        StageRecord {
            stage: name.into(),
            op: op.map(str::to_string),
            params: [("p".to_string(), serde_json::json!({"nested": [1, "x\"y"]}))]
                .into_iter()
                .collect(),
            key: StageKey(format!("{:064x}", name.len()).into()),
            status,
            wall_s: 1.5,
            metrics: [("acc".to_string(), serde_json::json!(0.5))]
                .into_iter()
                .collect(),
            error: (status == StageStatus::Failed).then(|| "it \"broke\"\n".to_string()),
        }
    }

    #[test]
    fn a_summary_counts_what_the_full_record_holds() {
        let mut record = record_for_test(
            "20261130-000000-000-abcdef",
            "/x/p.yaml",
            vec![
                stage("a", None, StageStatus::Ran),
                stage("bb", Some("report"), StageStatus::Cached),
                stage("ccc", Some("crop"), StageStatus::Cached),
                stage("dddd", None, StageStatus::Failed),
                stage("eeeee", Some("report"), StageStatus::Skipped),
                stage("ffffff", None, StageStatus::Pulled),
            ],
        );
        record.status = RunStatus::Failed;
        for text in [
            serde_json::to_string_pretty(&record).unwrap(),
            serde_json::to_string(&record).unwrap(),
        ] {
            let summary: RunSummary = serde_json::from_str(&text).unwrap();
            for status in [
                StageStatus::Ran,
                StageStatus::Cached,
                StageStatus::Pulled,
                StageStatus::Failed,
                StageStatus::Skipped,
            ] {
                assert_eq!(summary.count(status), record.count(status), "{status:?}");
            }
            let reports: Vec<_> = summary
                .report_keys()
                .iter()
                .map(|k| k.to_string())
                .collect();
            assert_eq!(reports, [format!("{:064x}", 2), format!("{:064x}", 5)]);
            assert_eq!(summary.id, record.id);
            assert_eq!(summary.status, RunStatus::Failed);
        }
    }
}
