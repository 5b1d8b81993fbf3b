//! Stage keys: what makes two executions of a stage "the same".
//!
//! A key is blake3 over the canonical JSON of [`KeyInputs`]:
//!
//! | # | input | why |
//! |---|---|---|
//! | 1 | `cache_version` | bump [`CACHE_VERSION`] when what goes into a key changes |
//! | 2 | `op` + `op_version` | an op's code change that alters output bumps its version |
//! | 3 | `cmd` (after `${…}` substitution; `{in.X}`/`{out}` kept symbolic) | the command is the code |
//! | 4 | `params` (canonical: object keys sorted) | one param change re-runs the stage |
//! | 5 | `upstream`: each need's name and the **content hash of its artifact** (`store::manifest_hash`), in `needs` order | the bytes a stage reads, not how they were made: a `--force`d non-deterministic stage re-runs exactly what its new output feeds, and an upstream re-run that produced the same bytes leaves everything below cached (early cut-off); the order is a gather's `{in.X}` order |
//! | 6 | `deps`: path → blake3 of content (+ `+x` when executable; a folder: every entry's name, kind and content, symlinks followed and named) | declared input files, and a `fetch` op's local `path` |
//! | 7 | `outs` | a cmd's promised outputs |
//! | 8 | `env`: the variables hcpipe sets for a cmd (`HCPIPE_THREADS`, `HCPIPE_MATRIX_*`); a torch op's thread count (`HCPIPE_THREADS`) | a stage that reads them may change its output; libtorch splits reductions by its thread count |
//!
//! Not in the key, on purpose: resources other than a cmd's or torch op's thread count,
//! the executor, the cache path (`{out}`, `{in.X}` are kept symbolic), the
//! user's environment and mtimes (a touched, unchanged dep re-runs nothing).
//!
//! Since an upstream's content is only known once it has finished, a
//! stage's key is computed when it is about to run (see `plan`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::stale::StaleReason;

/// Bump when the meaning or layout of [`KeyInputs`] changes.
pub const CACHE_VERSION: u32 = 2;

/// 64 lowercase hex digits (blake3). Shared, not copied: the plan, the
/// scheduler and the run record each hold every stage's key, and a million
/// stages' keys as one `String` each cost ~90 bytes three times over.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StageKey(pub Arc<str>);

impl fmt::Display for StageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StageKey {
    /// The short form shown to people (`run --json` prints the full key).
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(12)]
    }

    /// The key of a stage skipped before its needs finished (so before its key
    /// could be known); never names a cache entry.
    pub fn unknown() -> StageKey {
        StageKey("".into())
    }

    /// A key read from a user or a file must be plain hex before it names a path.
    pub fn parse(s: &str) -> Option<StageKey> {
        (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| StageKey(s.to_ascii_lowercase().into()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInputs {
    pub cache_version: u32,
    pub op: Option<String>,
    pub op_version: Option<u32>,
    pub cmd: Option<String>,
    pub params: Value,
    /// In `needs` order.
    pub upstream: Vec<UpstreamInput>,
    pub deps: BTreeMap<String, String>,
    pub outs: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// One upstream artifact a stage reads: whose, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamInput {
    pub stage: String,
    /// `store::manifest_hash` of the upstream's artifact.
    pub content: String,
}

impl KeyInputs {
    /// blake3 of [`KeyInputs::canonical_json`].
    pub fn key(&self) -> StageKey {
        StageKey(
            blake3::hash(&self.canonical_json())
                .to_hex()
                .as_str()
                .into(),
        )
    }

    /// The bytes a key hashes: the canonical JSON of these inputs (see
    /// [`KeyParts::canonical_json`]).
    pub fn canonical_json(&self) -> Vec<u8> {
        match self.params.as_object() {
            Some(params) => self.parts(params, &self.upstream_parts()).canonical_json(),
            // hcpipe's params are always an object; anything else (an entry
            // written elsewhere) is hashed the general way.
            None => canonical(&serde_json::to_value(self).unwrap_or(Value::Null))
                .to_string()
                .into_bytes(),
        }
    }

    fn upstream_parts(&self) -> Vec<(&str, &str)> {
        self.upstream
            .iter()
            .map(|u| (u.stage.as_str(), u.content.as_str()))
            .collect()
    }

    fn parts<'a>(
        &'a self,
        params: &'a serde_json::Map<String, Value>,
        upstream: &'a [(&'a str, &'a str)],
    ) -> KeyParts<'a> {
        let KeyInputs {
            cache_version,
            op,
            op_version,
            cmd,
            params: _,
            upstream: _,
            deps,
            outs,
            env,
        } = self;
        KeyParts {
            cache_version: *cache_version,
            op: op.as_deref(),
            op_version: *op_version,
            cmd: cmd.as_deref(),
            params,
            upstream,
            deps,
            outs,
            env,
        }
    }

    /// Why `self` (new) differs from `old`, one reason per changed input.
    pub fn why_differs(&self, old: &KeyInputs) -> Vec<StaleReason> {
        let mut why = Vec::new();
        if self.cache_version != old.cache_version {
            why.push(StaleReason::CacheVersion {
                old: old.cache_version,
                new: self.cache_version,
            });
        }
        if self.op != old.op || self.op_version != old.op_version {
            why.push(StaleReason::OpChanged {
                old: op_label(old),
                new: op_label(self),
            });
        }
        if self.cmd != old.cmd {
            why.push(StaleReason::CmdChanged);
        }
        diff_params(&object(&old.params), &object(&self.params), &mut why);
        let old_up: BTreeMap<&str, &str> = old
            .upstream
            .iter()
            .map(|u| (u.stage.as_str(), u.content.as_str()))
            .collect();
        let new_up: BTreeMap<&str, &str> = self
            .upstream
            .iter()
            .map(|u| (u.stage.as_str(), u.content.as_str()))
            .collect();
        for (name, content) in &new_up {
            let stage = name.to_string();
            match old_up.get(name) {
                None => why.push(StaleReason::NewUpstream { stage }),
                Some(c) if c != content => why.push(StaleReason::UpstreamOutputChanged { stage }),
                _ => {}
            }
        }
        for name in old_up.keys().filter(|n| !new_up.contains_key(*n)) {
            why.push(StaleReason::UpstreamRemoved {
                stage: name.to_string(),
            });
        }
        let order =
            |k: &KeyInputs| -> Vec<String> { k.upstream.iter().map(|u| u.stage.clone()).collect() };
        if new_up.keys().eq(old_up.keys()) && order(self) != order(old) {
            why.push(StaleReason::UpstreamOrderChanged);
        }
        for (path, h) in &self.deps {
            let path = path.clone();
            match old.deps.get(&path) {
                None => why.push(StaleReason::NewDep { path }),
                Some(o) if o != h => why.push(StaleReason::DepChanged { path }),
                _ => {}
            }
        }
        for path in old.deps.keys().filter(|p| !self.deps.contains_key(*p)) {
            why.push(StaleReason::DepRemoved { path: path.clone() });
        }
        if self.outs != old.outs {
            why.push(StaleReason::Outs);
        }
        for (var, v) in &self.env {
            if old.env.get(var) != Some(v) {
                why.push(StaleReason::EnvChanged {
                    var: var.clone(),
                    value: v.clone(),
                });
            }
        }
        why
    }
}

/// [`KeyInputs`] borrowed from wherever its parts live (a stage's spec,
/// its upstreams' contents), so a key is hashed without copying them.
/// `upstream` is each need's (name, content) in `needs` order.
pub struct KeyParts<'a> {
    pub cache_version: u32,
    pub op: Option<&'a str>,
    pub op_version: Option<u32>,
    pub cmd: Option<&'a str>,
    pub params: &'a serde_json::Map<String, Value>,
    pub upstream: &'a [(&'a str, &'a str)],
    pub deps: &'a BTreeMap<String, String>,
    pub outs: &'a [String],
    pub env: &'a BTreeMap<String, String>,
}

impl KeyParts<'_> {
    /// blake3 of [`KeyParts::canonical_json`].
    pub fn key(&self) -> StageKey {
        StageKey(
            blake3::hash(&self.canonical_json())
                .to_hex()
                .as_str()
                .into(),
        )
    }

    /// The bytes a key hashes: `canonical(&serde_json::to_value(inputs))` of
    /// the matching [`KeyInputs`] as compact JSON, written field by field in
    /// sorted order. Planning a cached pipeline computes every stage's key,
    /// and going through `serde_json::Value` trees twice took a quarter of a
    /// 100,000-stage no-op run; `tests::streamed_keys_are_the_reference_bytes`
    /// holds the two equal, so keys in existing caches keep their meaning.
    pub fn canonical_json(&self) -> Vec<u8> {
        let KeyParts {
            cache_version,
            op,
            op_version,
            cmd,
            params,
            upstream,
            deps,
            outs,
            env,
        } = self;
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"{\"cache_version\":");
        write_json(cache_version, &mut out);
        out.extend_from_slice(b",\"cmd\":");
        write_json(cmd, &mut out);
        out.extend_from_slice(b",\"deps\":");
        write_json(deps, &mut out);
        out.extend_from_slice(b",\"env\":");
        write_json(env, &mut out);
        out.extend_from_slice(b",\"op\":");
        write_json(op, &mut out);
        out.extend_from_slice(b",\"op_version\":");
        write_json(op_version, &mut out);
        out.extend_from_slice(b",\"outs\":");
        write_json(outs, &mut out);
        out.extend_from_slice(b",\"params\":");
        write_canonical_object(params, &mut out);
        out.extend_from_slice(b",\"upstream\":[");
        for (i, (stage, content)) in upstream.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"content\":");
            write_json(content, &mut out);
            out.extend_from_slice(b",\"stage\":");
            write_json(stage, &mut out);
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        out
    }
}

fn op_label(k: &KeyInputs) -> String {
    match (&k.op, k.op_version) {
        (Some(op), Some(v)) => format!("{op} v{v}"),
        (Some(op), None) => op.clone(),
        _ => "cmd".to_string(),
    }
}

fn object(v: &Value) -> BTreeMap<String, Value> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn diff_params(
    old: &BTreeMap<String, Value>,
    new: &BTreeMap<String, Value>,
    why: &mut Vec<StaleReason>,
) {
    for (k, v) in new {
        let name = k.clone();
        match old.get(k) {
            None => why.push(StaleReason::ParamAdded {
                name,
                value: v.clone(),
            }),
            Some(o) if o != v => why.push(StaleReason::ParamChanged {
                name,
                old: o.clone(),
                new: v.clone(),
            }),
            _ => {}
        }
    }
    for (k, o) in old {
        if !new.contains_key(k) {
            why.push(StaleReason::ParamRemoved {
                name: k.clone(),
                old: o.clone(),
            });
        }
    }
}

/// Compact JSON of a value whose maps (BTreeMap) are already sorted and
/// which holds no `serde_json::Value` object.
pub(crate) fn write_json<T: Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    serde_json::to_writer(out, v).expect("JSON of strings, numbers and sorted maps to memory");
}

/// `canonical(v).to_string()` appended to `out`, without building the copy.
fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => write_canonical_object(map, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_json(scalar, out),
    }
}

fn write_canonical_object(map: &serde_json::Map<String, Value>, out: &mut Vec<u8>) {
    let mut fields: Vec<(&String, &Value)> = map.iter().collect();
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (name, value)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json(name, out);
        out.push(b':');
        write_canonical(value, out);
    }
    out.push(b'}');
}

/// The same value with every object's keys sorted, so equal params hash equally
/// whatever order they were written in.
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for k in keys {
                out.insert(k.clone(), canonical(&map[k]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> KeyInputs {
        KeyInputs {
            cache_version: CACHE_VERSION,
            op: Some("crop".into()),
            op_version: Some(1),
            cmd: None,
            params: json!({"region": "left_hc", "shift": 2}),
            upstream: vec![UpstreamInput {
                stage: "dataset".into(),
                content: "a".repeat(64),
            }],
            deps: BTreeMap::new(),
            outs: vec![],
            env: BTreeMap::new(),
        }
    }

    /// What keys hashed before they were streamed: every cache entry's key
    /// was made this way.
    fn reference_bytes(k: &KeyInputs) -> Vec<u8> {
        canonical(&serde_json::to_value(k).unwrap())
            .to_string()
            .into_bytes()
    }

    #[test]
    fn streamed_keys_are_the_reference_bytes() {
        // Every field set (a field added to KeyInputs but not to
        // `canonical_json` breaks this literal, then this comparison), with
        // what escaping and number formatting can trip on.
        let full = KeyInputs {
            cache_version: CACHE_VERSION,
            op: Some("train_cnn".into()),
            op_version: Some(3),
            cmd: Some("echo \"a\\b\"\n\t\u{1} é 🧠 > {out}/x".into()),
            params: json!({
                "zeta": [1, 2.5, -3e-7, 1e300, null, true, {"b": 1, "a": [{"y": 0, "x": 0}]}],
                "alpha": {"nested": {"z": "\u{0}", "a": "ünïcode"}},
                "Upper": 18446744073709551615u64,
                "lr": 0.1,
                "": "",
            }),
            upstream: vec![
                UpstreamInput {
                    stage: "m[k=\"q\"]".into(),
                    content: "ab".repeat(32),
                },
                UpstreamInput {
                    stage: "dataset".into(),
                    content: "cd".repeat(32),
                },
            ],
            deps: BTreeMap::from([
                ("data/ä b.csv".into(), "00".into()),
                ("a".into(), "11+x".into()),
            ]),
            outs: vec!["o\"ut".into(), "b".into()],
            env: BTreeMap::from([
                ("HCPIPE_THREADS".into(), "2".into()),
                ("HCPIPE_MATRIX_K".into(), "q\"".into()),
            ]),
        };
        let empty = KeyInputs {
            cache_version: 1,
            op: None,
            op_version: None,
            cmd: None,
            params: json!({}),
            upstream: vec![],
            deps: BTreeMap::new(),
            outs: vec![],
            env: BTreeMap::new(),
        };
        for k in [full, empty, base()] {
            assert_eq!(
                String::from_utf8(k.canonical_json()).unwrap(),
                String::from_utf8(reference_bytes(&k)).unwrap()
            );
            assert_eq!(
                k.key().0,
                blake3::hash(&reference_bytes(&k)).to_hex().as_str().into()
            );
        }
    }

    #[test]
    fn same_inputs_same_key_whatever_the_param_order() {
        let mut b = base();
        b.params = json!({"shift": 2, "region": "left_hc"});
        assert_eq!(base().key(), b.key());
    }

    #[test]
    fn each_input_changes_the_key() {
        let k = base().key();
        type Change = Box<dyn Fn(&mut KeyInputs)>;
        let changes: Vec<Change> = vec![
            Box::new(|k| k.cache_version += 1),
            Box::new(|k| k.op_version = Some(2)),
            Box::new(|k| k.cmd = Some("x".into())),
            Box::new(|k| k.params = json!({"region": "left_hc", "shift": 3})),
            Box::new(|k| k.upstream[0].content = "b".repeat(64)),
            Box::new(|k| {
                k.upstream.insert(
                    0,
                    UpstreamInput {
                        stage: "other".into(),
                        content: "c".repeat(64),
                    },
                )
            }),
            Box::new(|k| {
                k.env.insert("HCPIPE_THREADS".into(), "2".into());
            }),
            Box::new(|k| {
                k.deps.insert("a.csv".into(), "00".into());
            }),
            Box::new(|k| k.outs.push("x".into())),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut b = base();
            change(&mut b);
            assert_ne!(b.key(), k, "change {i} kept the key");
            assert!(
                !b.why_differs(&base()).is_empty(),
                "change {i} has no reason"
            );
        }
    }

    #[test]
    fn a_gather_order_change_changes_the_key_and_says_so() {
        let member = |m: &str| UpstreamInput {
            stage: format!("train[k={m}]"),
            content: m.repeat(64),
        };
        let mut a = base();
        a.upstream = vec![member("1"), member("2"), member("3")];
        let mut b = base();
        b.upstream = vec![member("3"), member("1"), member("2")];
        assert_ne!(a.key(), b.key());
        assert_eq!(b.why_differs(&a), vec![StaleReason::UpstreamOrderChanged]);
        assert_eq!(
            b.why_differs(&a)[0].to_string(),
            "order of the upstream inputs changed"
        );
    }

    #[test]
    fn why_names_the_param() {
        let mut b = base();
        b.params = json!({"region": "right_hc", "shift": 2});
        let why = b.why_differs(&base());
        assert_eq!(
            why,
            vec![StaleReason::ParamChanged {
                name: "region".into(),
                old: json!("left_hc"),
                new: json!("right_hc"),
            }]
        );
        assert_eq!(
            why[0].to_string(),
            "param `region` changed (\"left_hc\" → \"right_hc\")"
        );
    }
}
