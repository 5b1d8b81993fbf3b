//! Why a stage is not fresh: one [`StaleReason`] per key input that changed
//! (after cargo's `DirtyReason`). `status`, `run --dry-run` and `diff` print
//! them; the words are part of what users (and tests) read, so each reason's
//! text lives in exactly one place, [`StaleReason`]'s `Display`.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;

/// One reason a stage's key differs from the one it had before.
#[derive(Debug, Clone, PartialEq)]
pub enum StaleReason {
    /// `CACHE_VERSION` was bumped: every key changes meaning.
    CacheVersion {
        old: u32,
        new: u32,
    },
    /// The op or its version changed (labels such as `crop v1`, or `cmd`).
    OpChanged {
        old: String,
        new: String,
    },
    CmdChanged,
    ParamAdded {
        name: String,
        value: Value,
    },
    ParamChanged {
        name: String,
        old: Value,
        new: Value,
    },
    ParamRemoved {
        name: String,
        old: Value,
    },
    NewUpstream {
        stage: String,
    },
    /// The upstream's artifact holds different bytes.
    UpstreamOutputChanged {
        stage: String,
    },
    UpstreamRemoved {
        stage: String,
    },
    /// The same upstreams in another order (a gather's `{in.X}` order).
    UpstreamOrderChanged,
    NewDep {
        path: String,
    },
    DepChanged {
        path: String,
    },
    DepRemoved {
        path: String,
    },
    Outs,
    /// A variable hcpipe sets for a cmd (`HCPIPE_THREADS`) changed.
    EnvChanged {
        var: String,
        value: String,
    },
    /// The key waits on this upstream's output, which will be made first.
    UpstreamWillRun {
        stage: String,
    },
    /// The newest run tried this very key and did not finish it.
    LastAttemptUnfinished,
    /// The key changed, but no single input says why (the old inputs read
    /// the same as the new ones).
    InputsChanged,
    /// The previous result's entry, which holds its key inputs, is gone.
    PreviousResultGone,
    /// `diff`: one side's key inputs are not in the cache any more.
    KeyInputsGone,
    /// `diff`: the stages' own inputs are equal, but a key waits on an
    /// upstream output one side does not have.
    UpstreamNotCached,
}

impl fmt::Display for StaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use StaleReason::*;
        match self {
            CacheVersion { old, new } => write!(f, "cache format changed ({old} → {new})"),
            OpChanged { old, new } => write!(f, "op changed ({old} → {new})"),
            CmdChanged => f.write_str("cmd changed"),
            ParamAdded { name, value } => write!(f, "param `{name}` added ({value})"),
            ParamChanged { name, old, new } => write!(f, "param `{name}` changed ({old} → {new})"),
            ParamRemoved { name, old } => write!(f, "param `{name}` removed (was {old})"),
            NewUpstream { stage } => write!(f, "new upstream `{stage}`"),
            UpstreamOutputChanged { stage } => write!(f, "upstream `{stage}`'s output changed"),
            UpstreamRemoved { stage } => write!(f, "upstream `{stage}` removed"),
            UpstreamOrderChanged => f.write_str("order of the upstream inputs changed"),
            NewDep { path } => write!(f, "new dep `{path}`"),
            DepChanged { path } => write!(f, "dep `{path}` changed"),
            DepRemoved { path } => write!(f, "dep `{path}` removed"),
            Outs => f.write_str("outs changed"),
            EnvChanged { var, value } => write!(f, "${var} changed (now {value})"),
            UpstreamWillRun { stage } => write!(
                f,
                "upstream `{stage}` will run (cached again if its output is unchanged)"
            ),
            LastAttemptUnfinished => f.write_str("its last attempt did not finish"),
            InputsChanged => f.write_str("inputs changed"),
            PreviousResultGone => f.write_str("its last result is no longer in the cache"),
            KeyInputsGone => f.write_str("key inputs of one side are no longer in the cache"),
            UpstreamNotCached => f.write_str(
                "same own inputs; an upstream's output is not cached on one side, run it to compare",
            ),
        }
    }
}

/// JSON (`diff --json`'s `why`) holds the sentence people read.
impl Serialize for StaleReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Reasons as one line: `dep `a` changed; param `n` changed (1 → 2)`.
pub fn join(reasons: &[StaleReason]) -> String {
    reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reasons_read_as_they_always_have() {
        let cases = [
            (
                StaleReason::ParamChanged {
                    name: "region".into(),
                    old: json!("left_hc"),
                    new: json!("right_hc"),
                },
                "param `region` changed (\"left_hc\" → \"right_hc\")",
            ),
            (
                StaleReason::DepChanged {
                    path: "input.txt".into(),
                },
                "dep `input.txt` changed",
            ),
            (
                StaleReason::EnvChanged {
                    var: "HCPIPE_THREADS".into(),
                    value: "2".into(),
                },
                "$HCPIPE_THREADS changed (now 2)",
            ),
            (
                StaleReason::UpstreamOutputChanged { stage: "a".into() },
                "upstream `a`'s output changed",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
            assert_eq!(
                serde_json::to_value(&reason).unwrap(),
                Value::String(text.into())
            );
        }
        assert_eq!(
            join(&[StaleReason::CmdChanged, StaleReason::Outs]),
            "cmd changed; outs changed"
        );
    }
}
