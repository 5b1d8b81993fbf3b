//! Checks a raw pipeline all at once and builds the typed [`Pipeline`].
//!
//! Every problem found is reported together, each with file:line:col, what
//! is wrong and the valid choices, so one edit-run cycle fixes them all.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::Value;

use super::load::closest;
use super::matrix::{combinations, member_name};
use super::raw::{RawPipeline, RawStage};
use super::subst::{subst_string, subst_value, Scope};
use super::{Loc, Pipeline, Resources, SpecError, StageKind, StageSpec};
use crate::ops::{self, Params};

struct Problems<'a> {
    shown: &'a str,
    list: Vec<String>,
}

impl Problems<'_> {
    fn add(&mut self, loc: Loc, stage: &str, msg: impl AsRef<str>) {
        self.list.push(format!(
            "{}:{}:{}: stage `{stage}`: {}",
            self.shown,
            loc.line,
            loc.col,
            msg.as_ref()
        ));
    }
}

fn loc_of(l: &serde_saphyr::Location) -> Loc {
    Loc {
        line: l.line(),
        col: l.column(),
    }
}

pub fn validate(
    raw: RawPipeline,
    text: &str,
    abs: &Path,
    shown: &str,
    file_hash: String,
    overrides: &[(String, String)],
) -> Result<Pipeline, SpecError> {
    let dir = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new("/").to_path_buf());
    let params = apply_overrides(raw.params, overrides, shown)?;
    if raw.stages.is_empty() {
        return Err(SpecError::new(format!(
            "{shown}: pipeline `{}` has no stages; add one under `stages:`",
            raw.name
        )));
    }
    let mut pipeline_vars = Params::new();
    pipeline_vars.insert("name".into(), Value::String(raw.name.clone()));
    // Asking git costs a process: only when the file uses it.
    if text.contains("${pipeline.revision}") {
        let revision = match crate::record::git::state_of(abs) {
            Some(g) => format!(
                "{}{}",
                &g.commit[..g.commit.len().min(12)],
                if g.dirty { "-dirty" } else { "" }
            ),
            None => "none".to_string(),
        };
        pipeline_vars.insert("revision".into(), Value::String(revision));
    }
    let mut problems = Problems {
        shown,
        list: Vec::new(),
    };

    // Pass 1: expand matrices, substitute, check kinds and params.
    let mut members_of: HashMap<String, Vec<usize>> = HashMap::new();
    let mut stages: Vec<StageSpec> = Vec::new();
    let mut raw_needs: Vec<Vec<(String, Loc)>> = Vec::new();
    for (base, spanned) in &raw.stages {
        let loc = loc_of(&spanned.referenced);
        let stage: &RawStage = &spanned.value;
        if !valid_stage_name(base) {
            problems.add(
                loc,
                base,
                "stage names may hold letters, digits, `_`, `-` and `.` only",
            );
            continue;
        }
        let matrix_lists = stage
            .matrix
            .as_ref()
            .map(|m| m.value.clone())
            .unwrap_or_default();
        if let Some((k, _)) = matrix_lists.iter().find(|(_, v)| v.is_empty()) {
            problems.add(
                loc,
                base,
                format!("matrix key `{k}` has an empty list; give it at least one value"),
            );
            continue;
        }
        for values in combinations(&matrix_lists) {
            let name = member_name(base, &values);
            let scope = Scope {
                params: &params,
                matrix: &values,
                pipeline: &pipeline_vars,
            };
            let kind = match (&stage.op, &stage.cmd) {
                (Some(op), None) => match ops::lookup(&op.value) {
                    Some(def) => StageKind::Op(def),
                    None => {
                        let names = ops::registry().iter().map(|d| d.name);
                        let hint = closest(&op.value, names.clone())
                            .map(|c| format!("did you mean `{c}`? "))
                            .unwrap_or_default();
                        let valid = names
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ");
                        problems.add(
                            loc_of(&op.referenced),
                            base,
                            format!("unknown op `{}`; {hint}valid ops: {valid}", op.value),
                        );
                        continue;
                    }
                },
                (None, Some(cmd)) => match subst_string(&cmd.value, &scope) {
                    Ok(text) => StageKind::Cmd(text),
                    Err(e) => {
                        problems.add(loc_of(&cmd.referenced), base, e);
                        continue;
                    }
                },
                (Some(_), Some(_)) => {
                    problems.add(
                        loc,
                        base,
                        "has both `op` and `cmd`; a stage is one or the other",
                    );
                    continue;
                }
                (None, None) => {
                    problems.add(
                        loc,
                        base,
                        "has neither `op` nor `cmd`; add `op: NAME` or `cmd: \"shell command\"`",
                    );
                    continue;
                }
            };
            let mut stage_params = Params::new();
            let mut ok = true;
            for (k, v) in &stage.params {
                match subst_value(v, &scope) {
                    Ok(v) => {
                        stage_params.insert(k.clone(), v);
                    }
                    Err(e) => {
                        problems.add(loc, base, format!("param `{k}`: {e}"));
                        ok = false;
                    }
                }
            }
            if let StageKind::Op(def) = kind {
                if let Err(e) = (def.check_params)(&stage_params) {
                    problems.add(loc, base, format!("params for op `{}`: {e}", def.name));
                    ok = false;
                }
            }
            for dep in &stage.deps {
                let path = dir.join(&dep.value);
                if !path.exists() {
                    problems.add(
                        loc_of(&dep.referenced),
                        base,
                        format!("dep `{}` does not exist (looked for {}); deps are relative to the pipeline file", dep.value, path.display()),
                    );
                    ok = false;
                }
            }
            if !ok {
                continue;
            }
            let r = &stage.resources;
            let gpu = r.gpu.unwrap_or(0.0);
            let gpu_milli = if !gpu.is_finite()
                || gpu < 0.0
                || (gpu > 1.0 && gpu.fract() != 0.0)
                || gpu > 64.0
            {
                problems.add(loc, base, format!("resources.gpu = {gpu}: give a whole number of GPUs, or a fraction below 1 (e.g. 0.5) to share one"));
                continue;
            } else {
                (gpu * 1000.0).round() as u32
            };
            let resources = Resources {
                cpu: r.cpu.unwrap_or(1).max(1),
                gpu_milli,
                mem: r.mem.clone(),
                time: r.time.clone(),
                partition: r.partition.clone(),
                account: r.account.clone(),
            };
            members_of
                .entry(base.clone())
                .or_default()
                .push(stages.len());
            raw_needs.push(
                stage
                    .needs
                    .iter()
                    .map(|n| (n.value.clone(), loc_of(&n.referenced)))
                    .collect(),
            );
            stages.push(StageSpec {
                name,
                base: base.clone(),
                kind,
                needs: Vec::new(),
                params: stage_params,
                deps: stage.deps.iter().map(|d| d.value.clone()).collect(),
                outs: stage.outs.clone(),
                resources,
                matrix: values,
                gather: stage.gather,
                desc: stage.desc.clone(),
                loc,
            });
        }
    }

    // Pass 2: resolve `needs` against expanded members.
    let by_name: HashMap<String, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), i))
        .collect();
    let all_bases: Vec<&str> = raw.stages.keys().map(String::as_str).collect();
    for (i, needs) in raw_needs.iter().enumerate() {
        let mut resolved = Vec::new();
        for (need, loc) in needs {
            let me = &stages[i];
            if need == &me.base {
                problems.add(*loc, &me.name, "needs itself; remove it from `needs`");
                continue;
            }
            if let Some(members) = members_of.get(need) {
                let is_matrix = members.len() > 1 || !stages[members[0]].matrix.is_empty();
                if !is_matrix {
                    resolved.push(stages[members[0]].name.clone());
                } else if me.gather {
                    resolved.extend(members.iter().map(|&m| stages[m].name.clone()));
                } else {
                    let matching: Vec<&StageSpec> = members
                        .iter()
                        .map(|&m| &stages[m])
                        .filter(|up| up.matrix.iter().all(|(k, v)| me.matrix.get(k) == Some(v)))
                        .collect();
                    match matching.as_slice() {
                        [one] => resolved.push(one.name.clone()),
                        _ => problems.add(
                            *loc,
                            &me.name,
                            format!(
                                "needs matrix stage `{need}` ({} members); add `gather: true` to receive every member, or give this stage the same `matrix:` keys to fan out with it",
                                members.len()
                            ),
                        ),
                    }
                }
            } else if by_name.contains_key(need) {
                resolved.push(need.clone());
            } else if raw.stages.contains_key(need) {
                // Declared but dropped by an earlier error: already reported.
            } else {
                let hint = closest(need, all_bases.iter().copied())
                    .map(|c| format!("did you mean `{c}`? "))
                    .unwrap_or_default();
                let valid = all_bases
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                problems.add(
                    *loc,
                    &me.name,
                    format!("needs unknown stage `{need}`; {hint}stages: {valid}"),
                );
            }
        }
        stages[i].needs = resolved;
        if let StageKind::Cmd(text) = &stages[i].kind {
            for name in in_refs(text) {
                if !stages[i].needs.contains(&name)
                    && !stages[i]
                        .needs
                        .iter()
                        .any(|n| stages[by_name[n]].base == name)
                {
                    let (l, s) = (stages[i].loc, stages[i].name.clone());
                    problems.add(
                        l,
                        &s,
                        format!(
                            "cmd uses `{{in.{name}}}` but `{name}` is not in its `needs`; add it"
                        ),
                    );
                }
            }
        }
    }

    if !problems.list.is_empty() {
        let n = problems.list.len();
        let head = if n == 1 {
            String::new()
        } else {
            format!("{n} problems in {shown}:\n")
        };
        return Err(SpecError::new(format!(
            "{head}{}",
            problems.list.join("\n")
        )));
    }
    Ok(Pipeline {
        name: raw.name,
        path: abs.to_path_buf(),
        dir,
        file_hash,
        params,
        stages,
    })
}

/// Names referenced as `{in.NAME}` in a cmd.
pub fn in_refs(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = cmd;
    while let Some(start) = rest.find("{in.") {
        let after = &rest[start + 4..];
        match after.find('}') {
            Some(end) => {
                out.push(after[..end].to_string());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out
}

fn valid_stage_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && name != "."
        && name != ".."
}

fn apply_overrides(
    mut params: BTreeMap<String, Value>,
    overrides: &[(String, String)],
    shown: &str,
) -> Result<Params, SpecError> {
    for (k, v) in overrides {
        if !params.contains_key(k) {
            let valid = params
                .keys()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let hint = closest(k, params.keys().map(String::as_str))
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            return Err(SpecError::new(format!(
                "--set {k}={v}: {shown} has no param `{k}`{hint}; its params: {}",
                if valid.is_empty() {
                    "none".to_string()
                } else {
                    valid
                }
            )));
        }
        params.insert(k.clone(), parse_scalar(v));
    }
    Ok(params.into_iter().collect())
}

/// `--set` values read like YAML scalars: numbers and booleans keep their type.
pub fn parse_scalar(v: &str) -> Value {
    if let Ok(i) = v.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = v.parse::<f64>() {
        if f.is_finite() {
            return Value::from(f);
        }
    }
    match v {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(v.to_string()),
    }
}
