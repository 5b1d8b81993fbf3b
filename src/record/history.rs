//! What the earlier runs of a pipeline recorded for some of its stages, as
//! `status` and `run --dry-run` need it to say why a stage is stale.
//!
//! Records are read one at a time and only the named stages' keys are kept:
//! reading every record whole (a million-stage run's record is ~170 MB, one
//! per run kept) and indexing each by name held gigabytes for a `status`
//! after one param change.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::ControlFlow;
use std::path::Path;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::cache::{Cache, StageKey};

/// One stage's past, over every run of its pipeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageHistory {
    /// Some run recorded the stage.
    pub seen: bool,
    /// Some run recorded it with the key asked about (so that attempt did
    /// not leave a result: it failed, was cut short, or was collected).
    pub same_key: bool,
    /// The key the newest run that recorded it with another key used
    /// ([`StageKey::unknown`] for a stage that run skipped).
    pub newest_other: Option<StageKey>,
}

/// For each `(stage name, current key)` (names distinct), what the runs of
/// the pipeline at `pipeline_path` recorded. A stage a run records twice
/// counts once, by its first record. Records that cannot be read are passed
/// over, as `show` does.
pub fn history(
    cache: &Cache,
    pipeline_path: &Path,
    wanted: &[(&str, Option<&StageKey>)],
) -> Vec<StageHistory> {
    let mut out = vec![StageHistory::default(); wanted.len()];
    if wanted.is_empty() {
        return out;
    }
    let names: Vec<&str> = wanted.iter().map(|(name, _)| *name).collect();
    // Per wanted stage, the last run that recorded it: a second record of
    // it in the same run is passed over.
    let mut last_run = vec![usize::MAX; wanted.len()];
    // Oldest first, so the newest other key is the last one written.
    each_run(
        cache,
        pipeline_path,
        &names,
        Order::OldestFirst,
        |run, found| {
            for (i, key) in found {
                if last_run[i] == run {
                    continue;
                }
                last_run[i] = run;
                let h = &mut out[i];
                h.seen = true;
                if wanted[i].1 == Some(&key) {
                    h.same_key = true;
                } else {
                    h.newest_other = Some(key);
                }
            }
            ControlFlow::Continue(())
        },
    );
    out
}

/// The order [`each_run`] reads records in.
pub enum Order {
    OldestFirst,
    NewestFirst,
}

/// Read the records of the pipeline at `pipeline_path` one at a time (run
/// ids sort by time), calling `visit` with the run's number in that order
/// and the stages of `names` it records (index into `names`, key, in record
/// order), until it breaks. Records that cannot be read are passed over, as
/// `show` does.
pub fn each_run(
    cache: &Cache,
    pipeline_path: &Path,
    names: &[&str],
    order: Order,
    mut visit: impl FnMut(usize, Vec<(usize, StageKey)>) -> ControlFlow<()>,
) {
    let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    debug_assert_eq!(index.len(), names.len(), "stage names are distinct");
    let path = pipeline_path.display().to_string();
    let mut files = super::record_files(cache);
    if let Order::NewestFirst = order {
        files.reverse();
    }
    for (run, file) in files.iter().enumerate() {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        let seed = RunSeed {
            names: &index,
            pipeline_path: &path,
        };
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        // Whole records only, as `serde_json::from_slice` reads them elsewhere.
        let read = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
        if let Ok(Some(found)) = read {
            if visit(run, found).is_break() {
                return;
            }
        }
    }
}

/// One record: `Some(the wanted stages it records, with their keys)` when it
/// is a run of the pipeline, `None` when it is another pipeline's.
struct RunSeed<'s> {
    names: &'s HashMap<&'s str, usize>,
    pipeline_path: &'s str,
}

impl<'de> DeserializeSeed<'de> for RunSeed<'_> {
    type Value = Option<Vec<(usize, StageKey)>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RunSeed<'_> {
    type Value = Option<Vec<(usize, StageKey)>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a run record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut ours = None;
        let mut found = Vec::new();
        while let Some(field) = map.next_key::<Field>()? {
            match field.0.as_ref() {
                "pipeline_path" => {
                    let path = map.next_value::<Field>()?;
                    ours = Some(path.0 == self.pipeline_path);
                }
                // hcpipe writes `pipeline_path` first; another pipeline's
                // stages are skipped unread.
                "stages" if ours != Some(false) => {
                    found = map.next_value_seed(StagesSeed { names: self.names })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((ours == Some(true)).then_some(found))
    }
}

/// A string read without a copy where it has no escapes.
#[derive(Deserialize)]
#[serde(transparent)]
struct Field<'a>(#[serde(borrow)] Cow<'a, str>);

struct StagesSeed<'s> {
    names: &'s HashMap<&'s str, usize>,
}

/// The two fields of a stage record history looks at; serde skips the rest.
#[derive(Deserialize)]
struct StageNameKey<'a> {
    #[serde(borrow)]
    stage: Cow<'a, str>,
    #[serde(borrow)]
    key: Cow<'a, str>,
}

impl<'de> DeserializeSeed<'de> for StagesSeed<'_> {
    type Value = Vec<(usize, StageKey)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for StagesSeed<'_> {
    type Value = Vec<(usize, StageKey)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of stage records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = Vec::new();
        while let Some(stage) = seq.next_element::<StageNameKey>()? {
            if let Some(&i) = self.names.get(stage.stage.as_ref()) {
                // A key that is not one (a skipped stage's empty key, or a
                // hand-edited record) names no entry, and no path.
                let key = StageKey::parse(&stage.key).unwrap_or_else(StageKey::unknown);
                found.push((i, key));
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{record_for_test, StageRecord, StageStatus};

    fn key(n: u8) -> StageKey {
        StageKey(format!("{n:064x}").into())
    }

    fn save(cache: &Cache, id: &str, path: &str, stages: &[(&str, Option<StageKey>)]) {
        record_for_test(
            id,
            path,
            stages
                .iter()
                .map(|(name, k)| StageRecord {
                    stage: name.to_string(),
                    op: None,
                    params: Default::default(),
                    key: k.clone().unwrap_or_else(StageKey::unknown),
                    status: if k.is_some() {
                        StageStatus::Ran
                    } else {
                        StageStatus::Skipped
                    },
                    wall_s: 0.0,
                    metrics: Default::default(),
                    error: None,
                })
                .collect(),
        )
        .save(cache)
        .unwrap();
    }

    #[test]
    fn the_newest_other_key_and_an_earlier_attempt_at_this_one_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let p = "/x/p.yaml";
        save(
            &cache,
            "20261130-000001-000-aaaaaa",
            p,
            &[("a", Some(key(1))), ("b", Some(key(2)))],
        );
        // Another pipeline's run, newer, with stages of the same names.
        save(
            &cache,
            "20261130-000002-000-aaaaaa",
            "/x/q.yaml",
            &[("a", Some(key(9)))],
        );
        // A run that records `a` twice: its first record counts.
        save(
            &cache,
            "20261130-000003-000-aaaaaa",
            p,
            &[("a", Some(key(3))), ("a", Some(key(4))), ("b", None)],
        );
        // A record cut short is passed over.
        std::fs::write(
            cache.runs_dir().join("20261130-000004-000-aaaaaa.json"),
            "{\"id\":",
        )
        .unwrap();
        let (k1, k3) = (key(1), key(3));
        let got = history(
            &cache,
            Path::new(p),
            &[("a", Some(&k3)), ("a2", None), ("b", Some(&k1))],
        );
        assert_eq!(
            got,
            [
                StageHistory {
                    seen: true,
                    same_key: true,
                    newest_other: Some(key(1))
                },
                StageHistory::default(),
                // `b` was skipped last: its newest other key names no entry.
                StageHistory {
                    seen: true,
                    same_key: false,
                    newest_other: Some(StageKey::unknown())
                },
            ]
        );
        // Asked with the older key, the newer one is the other.
        assert_eq!(
            history(&cache, Path::new(p), &[("a", Some(&k1))]),
            [StageHistory {
                seen: true,
                same_key: true,
                newest_other: Some(key(3))
            }]
        );
        assert_eq!(
            history(&cache, Path::new("/x/none.yaml"), &[("a", None)]),
            [StageHistory::default()]
        );
    }
}
