//! Checks a raw pipeline all at once and builds the typed [`Pipeline`].
//!
//! Every problem found is reported together, each with file:line:col, what
//! is wrong and the valid choices, so one edit-run cycle fixes them all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::axes::{self, AxisError, Decl, Site};
use super::cmd_text::{placeholders, InForm, Quoting, Ref};
use super::matrix::{member_name, name_key, name_value};
use super::paths::normalize;
use super::raw::{RawPipeline, RawResources, RawStage};
use super::subst::{display_value, subst_string, subst_value, Scope};
use super::{AxisTable, Loc, Matrix, Pipeline, Resources, SpecError, StageKind, StageSpec};
use crate::ops::{self, Params};
use crate::suggest::closest;

/// A pipeline expands to at most this many stages (matrix members counted
/// one by one), checked before any matrix is expanded: a 9-key matrix of 10
/// values each would otherwise be a billion stages and exhaust memory. Two
/// million is twice the largest grid measured (1,000,000 members plan in
/// seconds, BENCHMARKS.md "Scale"), and still well within a laptop's memory.
pub const MAX_STAGES: u64 = 2_000_000;

struct Problems<'a> {
    shown: &'a str,
    list: Vec<String>,
    /// What `list` holds, so that a repeated problem is found in O(1).
    seen: std::collections::HashSet<String>,
}

impl Problems<'_> {
    fn add(&mut self, loc: Loc, stage: &str, msg: impl AsRef<str>) {
        let problem = format!(
            "{}:{}:{}: stage `{stage}`: {}",
            self.shown,
            loc.line,
            loc.col,
            msg.as_ref()
        );
        // Every member of a matrix stage repeats its base's mistake: say it once.
        if self.seen.insert(problem.clone()) {
            self.list.push(problem);
        }
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
        let revision = match crate::git::state_of(abs) {
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
        seen: Default::default(),
    };

    // Pass 1: expand matrices, substitute, check kinds and params.
    let mut members_of: HashMap<String, Vec<usize>> = HashMap::new();
    let mut stages: Vec<StageSpec> = Vec::new();
    // Per expanded stage: the index of the stage written in the file (its
    // `needs` as written, with their places, are read from there).
    let mut written_as: Vec<usize> = Vec::new();
    // Per matrix stage: its axes in expansion order (the first varies slowest).
    let mut expansion: HashMap<String, Vec<axes::Axis>> = HashMap::new();
    let mut planned: u64 = 0;
    // Each stage's axes, inherited and own (see `axes`), before any expansion.
    let decls: Vec<(String, Decl)> = raw
        .stages
        .iter()
        .map(|(base, s)| {
            let s = &s.value;
            let decl = Decl {
                needs: s.needs.iter().map(|n| n.value.clone()).collect(),
                gather: s.gather,
                own: s
                    .matrix
                    .as_ref()
                    .map(|m| m.value.clone())
                    .unwrap_or_default(),
            };
            (base.clone(), decl)
        })
        .collect();
    let stage_axes = axes::resolve(&decls);
    // Every stage's members, counted before expanding: the list of stages is
    // made once at its size (growing it would hold two copies at once).
    let total = stage_axes
        .iter()
        .map(|a| a.as_ref().map_or(1, |axes| axes::product(axes)))
        .fold(0u64, u64::saturating_add);
    stages.reserve_exact(total.min(MAX_STAGES) as usize);
    let mut stage_axes = stage_axes.into_iter();
    for (written, (base, spanned)) in raw.stages.iter().enumerate() {
        let axes_of = stage_axes.next().unwrap_or_else(|| Ok(Vec::new()));
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
        let matrix_loc = stage
            .matrix
            .as_ref()
            .map(|m| loc_of(&m.referenced))
            .unwrap_or(loc);
        if let Some(msg) = duplicate_value(&matrix_lists) {
            problems.add(matrix_loc, base, msg);
            continue;
        }
        let axes = match axes_of {
            Ok(axes) => axes,
            Err(errors) => {
                for AxisError { site, message } in errors {
                    let at = match site {
                        Site::Matrix => matrix_loc,
                        Site::Need(n) => stage
                            .needs
                            .get(n)
                            .map(|n| loc_of(&n.referenced))
                            .unwrap_or(loc),
                    };
                    problems.add(at, base, message);
                }
                continue;
            }
        };
        let members = axes::product(&axes);
        let after = planned.saturating_add(members);
        if members > MAX_STAGES || after > MAX_STAGES {
            let sizes = axes
                .iter()
                .map(|a| match &a.from {
                    Some(up) => format!("{} `{}` (from `{up}`)", a.values.len(), a.name),
                    None => format!("{} `{}`", a.values.len(), a.name),
                })
                .collect::<Vec<_>>()
                .join(" × ");
            let count = if members == u64::MAX {
                format!("more than {}", u64::MAX)
            } else {
                members.to_string()
            };
            let what = if members > MAX_STAGES {
                format!("matrix expands to {count} members ({sizes})")
            } else if axes.is_empty() {
                format!("brings the pipeline to {after} stages (matrix members counted one by one)")
            } else {
                format!("matrix's {count} members ({sizes}) bring the pipeline to {after} stages")
            };
            problems.add(
                matrix_loc,
                base,
                format!("{what}, over the limit of {MAX_STAGES} stages per pipeline; shorten its lists or split the sweep into several pipelines"),
            );
            continue;
        }
        planned = after;
        // What every member shares is worked out once per stage: its deps
        // (checked on disk once, not once per member), outs and resources.
        let shared_base: Arc<str> = Arc::from(base.as_str());
        let mut deps: Vec<String> = Vec::new();
        let mut dep_problems: Vec<(Loc, String)> = Vec::new();
        for dep in &stage.deps {
            let norm = normalize(&dep.value, Some(&dir));
            let path = dir.join(&norm);
            if !deps.contains(&norm) {
                deps.push(norm);
            }
            if !path.exists() {
                dep_problems.push((
                    loc_of(&dep.referenced),
                    format!("dep `{}` does not exist (looked for {}); deps are relative to the pipeline file", dep.value, path.display()),
                ));
            }
        }
        let deps: Arc<[String]> = deps.into();
        let outs: Arc<[String]> = normalized_outs(stage.outs.as_deref().unwrap_or_default()).into();
        let desc: Option<Arc<str>> = stage.desc.as_deref().map(Arc::from);
        let resources = stage_resources(&stage.resources).map(Arc::new);
        // Members are the combinations of the axes, the first axis varying
        // slowest; each member holds its value indices (see `Matrix`), its
        // name is put together from each value's text, worked out once.
        let table = Arc::new(AxisTable::new(
            axes.iter()
                .map(|a| (a.name.clone(), a.values.clone()))
                .collect(),
        ));
        let sorted_at: Vec<usize> = axes
            .iter()
            .map(|a| {
                table
                    .names()
                    .iter()
                    .position(|n| n == &a.name)
                    .expect("every axis is in the table")
            })
            .collect();
        let parts: Vec<Vec<String>> = table
            .names()
            .iter()
            .enumerate()
            .map(|(i, k)| {
                table
                    .values(i)
                    .iter()
                    .map(|v| format!("{}={}", name_key(k), name_value(v)))
                    .collect()
            })
            .collect();
        if !axes.is_empty() {
            expansion.insert(base.clone(), axes.clone());
        }
        for member in 0..members {
            let mut picks = vec![0u32; axes.len()].into_boxed_slice();
            let mut rest = member;
            for (e, axis) in axes.iter().enumerate().rev() {
                let n = axis.values.len() as u64;
                picks[sorted_at[e]] = (rest % n) as u32;
                rest /= n;
            }
            let name = if axes.is_empty() {
                base.clone()
            } else {
                let mut name = String::with_capacity(base.len() + 8 * axes.len());
                name.push_str(base);
                name.push('[');
                for (i, &p) in picks.iter().enumerate() {
                    if i > 0 {
                        name.push(',');
                    }
                    name.push_str(&parts[i][p as usize]);
                }
                name.push(']');
                name
            };
            let values = if axes.is_empty() {
                Matrix::default()
            } else {
                Matrix::new(Arc::clone(&table), picks)
            };
            let scope = Scope {
                params: &params,
                matrix: &values,
                pipeline: &pipeline_vars,
                stage: None,
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
            // A cmd also sees the stage's own params (`${stage.params.x}`).
            let cmd_scope = Scope {
                stage: Some(&stage_params),
                ..scope
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
                (None, Some(cmd)) => match subst_string(&cmd.value, &cmd_scope) {
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
            if let StageKind::Op(def) = kind {
                if let Err(e) = (def.check_params)(&stage_params) {
                    problems.add(loc, base, format!("params for op `{}`: {e}", def.name));
                    ok = false;
                }
            }
            for (at, msg) in &dep_problems {
                problems.add(*at, base, msg);
                ok = false;
            }
            if !ok {
                continue;
            }
            let resources = match &resources {
                Ok(r) => Arc::clone(r),
                Err(msg) => {
                    problems.add(loc, base, msg);
                    continue;
                }
            };
            members_of
                .entry(base.clone())
                .or_default()
                .push(stages.len());
            written_as.push(written);
            stages.push(StageSpec {
                name,
                base: Arc::clone(&shared_base),
                kind,
                needs: Box::default(),
                params: stage_params,
                deps: Arc::clone(&deps),
                outs: Arc::clone(&outs),
                empty_out_ok: stage.outs.as_ref().is_some_and(Vec::is_empty),
                resources,
                matrix: values,
                gather: stage.gather,
                desc: desc.clone(),
                loc,
            });
        }
    }

    // Member names are injective (see `matrix::member_name`); a clash here
    // would make one stage read another's data, so it is refused outright.
    let mut by_name: HashMap<&str, usize> = HashMap::with_capacity(stages.len());
    for (i, s) in stages.iter().enumerate() {
        if let Some(&j) = by_name.get(s.name.as_str()) {
            let first = &stages[j];
            problems.add(
                s.loc,
                &s.name,
                format!(
                    "has the same name as a member of stage `{}` (line {}); give their matrix values different spellings",
                    first.base, first.loc.line
                ),
            );
        } else {
            by_name.insert(s.name.as_str(), i);
        }
    }
    let matrix_bases: HashSet<&str> = members_of
        .iter()
        .filter(|(_, m)| m.len() > 1 || !stages[m[0]].matrix.is_empty())
        .map(|(b, _)| b.as_str())
        .collect();
    // For fan-out when an upstream lost members to an error: its members by
    // their values, built only then (the pipeline is refused anyway).
    let mut by_values: HashMap<&str, HashMap<String, usize>> = HashMap::new();
    // For fan-out: per (stage written, need), how a member's value indices
    // map onto the upstream's member (see `Pairing`), worked out once.
    let mut pairings: HashMap<(usize, &str), Option<Pairing>> = HashMap::new();

    // Pass 2: resolve `needs` against expanded members.
    let all_bases: Vec<&str> = raw.stages.keys().map(String::as_str).collect();
    let mut all_needs: Vec<Box<[u32]>> = Vec::with_capacity(stages.len());
    for (i, &written) in written_as.iter().enumerate() {
        let needs = &raw.stages[written].value.needs;
        let me = &stages[i];
        let mut resolved: Vec<u32> = Vec::new();
        for spanned in needs {
            let need = &spanned.value;
            let loc = loc_of(&spanned.referenced);
            if need.as_str() == &*me.base {
                problems.add(loc, &me.name, "needs itself; remove it from `needs`");
                continue;
            }
            if let Some(members) = members_of.get(need) {
                if !matrix_bases.contains(need.as_str()) {
                    resolved.push(members[0] as u32);
                } else if me.gather {
                    resolved.extend(members.iter().map(|&m| m as u32));
                } else {
                    // Fan-out: the one member whose values are this member's,
                    // projected onto the upstream's axes (which this stage
                    // inherited, see `axes`).
                    let Some(up_axes) = expansion.get(need.as_str()) else {
                        continue;
                    };
                    if !up_axes.iter().all(|a| me.matrix.contains_key(&a.name)) {
                        // Only a cycle in `needs` keeps axes from being inherited.
                        problems.add(
                            loc,
                            &me.name,
                            format!("needs matrix stage `{need}`, which needs this stage in turn (a cycle in `needs`); remove one of these needs"),
                        );
                        continue;
                    }
                    let complete = members.len() as u64 == axes::product(up_axes);
                    let pairing = pairings.entry((written, need.as_str())).or_insert_with(|| {
                        complete
                            .then(|| Pairing::new(&me.matrix, up_axes))
                            .flatten()
                    });
                    let found = match pairing {
                        Some(p) => p.member(&me.matrix).map(|k| members[k]),
                        None => {
                            let index = by_values.entry(need.as_str()).or_insert_with(|| {
                                members
                                    .iter()
                                    .map(|&m| (values_key(&stages[m].matrix, up_axes), m))
                                    .collect()
                            });
                            index.get(&values_key(&me.matrix, up_axes)).copied()
                        }
                    };
                    match found {
                        Some(one) => resolved.push(one as u32),
                        None => {
                            let picked: BTreeMap<String, Value> = up_axes
                                .iter()
                                .filter_map(|a| {
                                    Some((a.name.clone(), me.matrix.get(&a.name)?.clone()))
                                })
                                .collect();
                            problems.add(
                                loc,
                                &me.name,
                                format!(
                                    "needs `{}`, which was not built (see the problem reported for `{need}`)",
                                    member_name(need, &picked)
                                ),
                            );
                        }
                    }
                }
            } else if let Some(&u) = by_name.get(need.as_str()) {
                resolved.push(u as u32);
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
                    loc,
                    &me.name,
                    format!("needs unknown stage `{need}`; {hint}stages: {valid}"),
                );
            }
        }
        if let StageKind::Op(def) = me.kind {
            let needs: Vec<(&str, Option<&str>)> = resolved
                .iter()
                .map(|&u| {
                    let up = &stages[u as usize];
                    (up.name.as_str(), up.op_name())
                })
                .collect();
            if let Err(e) = ops::check_needs(def.name, &needs) {
                problems.add(me.loc, &me.name, e);
            }
        }
        if let StageKind::Cmd(text) = &me.kind {
            for p in placeholders(text) {
                let Ref::In { name, form } = p.what else {
                    continue;
                };
                let written = &text[p.start..p.end];
                let needed = resolved.iter().any(|&u| {
                    let up = &stages[u as usize];
                    up.name == name || &*up.base == name
                });
                if !needed && needs.iter().any(|n| n.value == name) {
                    // In `needs` but not resolved: reported above.
                    continue;
                }
                if !needed {
                    // A typo of a need, a stage not listed in `needs`, or no stage at all.
                    let declared: Vec<&str> = needs.iter().map(|n| n.value.as_str()).collect();
                    let msg = if let Some(near) = closest(name, declared.iter().copied()) {
                        format!(
                            "cmd uses `{written}`, but `{name}` is not in its `needs`; did you mean `{}`?",
                            written.replacen(name, &near, 1)
                        )
                    } else if all_bases.contains(&name) || by_name.contains_key(name) {
                        format!("cmd uses `{written}` but `{name}` is not in its `needs`; add it")
                    } else {
                        let hint = closest(name, all_bases.iter().copied())
                            .map(|c| format!(" (did you mean `{c}`?)"))
                            .unwrap_or_default();
                        format!(
                            "cmd uses `{written}`, but the pipeline has no stage `{name}`{hint}; \
                             `{{in.STAGE}}` names a stage in this stage's `needs`"
                        )
                    };
                    problems.add(me.loc, &me.name, msg);
                    continue;
                }
                let gathered = me.gather && matrix_bases.contains(name);
                if form == InForm::List && !gathered {
                    problems.add(
                        me.loc,
                        &me.name,
                        format!(
                            "cmd uses `{written}`, but a `:list` file is only for a matrix stage this stage gathers (`gather: true`); write `{{in.{name}}}`"
                        ),
                    );
                } else if form == InForm::Folders && gathered && p.quoting != Quoting::Unquoted {
                    problems.add(
                        me.loc,
                        &me.name,
                        format!(
                            "cmd puts `{written}` inside quotes, but a gather expands it to one folder per member, which quotes would join into one word; write it without quotes (hcpipe quotes each folder), or read the folders from `{{in.{name}:list}}`, a file with one folder per line"
                        ),
                    );
                }
            }
        }
        all_needs.push(resolved.into_boxed_slice());
    }
    drop(by_name);
    drop(matrix_bases);
    drop(by_values);
    drop(pairings);
    for (stage, needs) in stages.iter_mut().zip(all_needs) {
        stage.needs = needs;
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

/// A member's values on `axes`, as one comparable string.
fn values_key(values: &Matrix, axes: &[axes::Axis]) -> String {
    let picked: Vec<Option<&Value>> = axes.iter().map(|a| values.get(&a.name)).collect();
    serde_json::to_string(&picked).unwrap_or_default()
}

/// How the members of a matrix stage find the member of an upstream matrix
/// stage they fan out with, by arithmetic rather than a lookup by name or
/// values: the upstream's members are the combinations of its axes (the
/// first varying slowest), so a member's offset among them is the sum, over
/// the upstream's axes, of the upstream's value index times its stride.
struct Pairing {
    /// Per upstream axis: where it is among this stage's sorted axes, the
    /// upstream's value index for each of this stage's value indices (`None`:
    /// a value the upstream does not have), and its stride.
    axes: Vec<(usize, Vec<Option<u32>>, usize)>,
}

impl Pairing {
    /// `None` when a member of this stage lacks one of the upstream's axes.
    fn new(mine: &Matrix, up_axes: &[axes::Axis]) -> Option<Pairing> {
        let table = mine.table()?;
        let mut stride = 1usize;
        let mut out = Vec::with_capacity(up_axes.len());
        for axis in up_axes.iter().rev() {
            let at = table.names().iter().position(|n| n == &axis.name)?;
            let map = table
                .values(at)
                .iter()
                .map(|v| axis.values.iter().position(|u| u == v).map(|p| p as u32))
                .collect();
            out.push((at, map, stride));
            stride = stride.saturating_mul(axis.values.len());
        }
        Some(Pairing { axes: out })
    }

    /// The upstream member's offset among the upstream's members.
    fn member(&self, mine: &Matrix) -> Option<usize> {
        let picks = mine.picks();
        let mut offset = 0usize;
        for (at, map, stride) in &self.axes {
            let up = (*map.get(*picks.get(*at)? as usize)?)?;
            offset += up as usize * stride;
        }
        Some(offset)
    }
}

/// A stage's resources, or what is wrong with them.
fn stage_resources(r: &RawResources) -> Result<Resources, String> {
    let gpu = r.gpu.unwrap_or(0.0);
    if !gpu.is_finite() || gpu < 0.0 || (gpu > 1.0 && gpu.fract() != 0.0) || gpu > 64.0 {
        return Err(format!("resources.gpu = {gpu}: give a whole number of GPUs, or a fraction below 1 (e.g. 0.5) to share one"));
    }
    if r.array_throttle == Some(0) {
        return Err("resources.array_throttle = 0: give at least 1 (the most members of this stage's Slurm job array that run at once), or leave it out for no limit".into());
    }
    Ok(Resources {
        cpu: r.cpu.unwrap_or(1).max(1),
        gpu_milli: (gpu * 1000.0).round() as u32,
        mem: r.mem.clone(),
        time: r.time.clone(),
        partition: r.partition.clone(),
        account: r.account.clone(),
        array_throttle: r.array_throttle,
    })
}

/// A value listed twice under one matrix key: two members would run the
/// same command (a string `"1"` and a number `1` read the same in one).
fn duplicate_value(matrix: &BTreeMap<String, Vec<Value>>) -> Option<String> {
    for (k, values) in matrix {
        let mut seen: HashMap<String, &Value> = HashMap::new();
        for v in values {
            let text = display_value(v);
            if let Some(first) = seen.get(&text) {
                let how = if *first == v {
                    String::new()
                } else {
                    format!(" (as `{first}` and `{v}`, which read the same in a command)")
                };
                return Some(format!(
                    "matrix key `{k}` lists `{text}` twice{how}; each value must be different, remove one"
                ));
            }
            seen.insert(text, v);
        }
    }
    None
}

/// `outs` normalised (they are relative to `{out}`, which does not exist
/// yet, so `a/..` is kept), each once.
fn normalized_outs(outs: &[String]) -> Vec<String> {
    let mut list: Vec<String> = Vec::new();
    for o in outs {
        let norm = normalize(o, None);
        if !list.contains(&norm) {
            list.push(norm);
        }
    }
    list
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
        let Some(default) = params.get(k) else {
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
        };
        let value = typed_override(k, v, default).map_err(SpecError::new)?;
        params.insert(k.clone(), value);
    }
    Ok(params.into_iter().collect())
}

/// A `--set k=v` value, read as the type of the param's default in
/// `params:`: a string param takes the text exactly as typed (`007`, `1.10`),
/// a number or boolean param must parse as one (integers stay exact, never
/// floats), a list or mapping is given as JSON. `str:TEXT` always passes
/// TEXT as a string. A param whose default is `null` reads the value like a
/// YAML scalar ([`parse_scalar`]).
pub fn typed_override(k: &str, v: &str, default: &Value) -> Result<Value, String> {
    if let Some(text) = v.strip_prefix("str:") {
        return Ok(Value::String(text.to_string()));
    }
    let as_text = format!("or `--set {k}=str:{v}` to pass it as text");
    let wrong = |what: &str, how: &str| {
        format!("--set {k}={v}: `{k}` is {what} (its default is `{default}`); {how}, {as_text}")
    };
    match default {
        Value::String(_) => Ok(Value::String(v.to_string())),
        Value::Null => Ok(parse_scalar(v)),
        Value::Bool(_) => match v {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(wrong("a boolean", "give `true` or `false`")),
        },
        Value::Number(n) if n.is_f64() => match v.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Value::from(f)),
            _ => Err(wrong(
                "a number",
                &format!("give one, e.g. `--set {k}={default}`"),
            )),
        },
        Value::Number(_) => {
            if let Ok(i) = v.parse::<i64>() {
                Ok(Value::from(i))
            } else if let Ok(u) = v.parse::<u64>() {
                Ok(Value::from(u))
            } else if is_integer_text(v) {
                Err(wrong(
                    "an integer",
                    &format!(
                        "give a whole number from {} to {} (hcpipe keeps integers exact)",
                        i64::MIN,
                        u64::MAX
                    ),
                ))
            } else {
                Err(wrong(
                    "an integer",
                    &format!("give a whole number, e.g. `--set {k}={default}`"),
                ))
            }
        }
        Value::Array(_) | Value::Object(_) => {
            let kind = if default.is_array() {
                "a list"
            } else {
                "a mapping"
            };
            match serde_json::from_str::<Value>(v) {
                Ok(parsed)
                    if parsed.is_array() == default.is_array()
                        && parsed.is_object() == default.is_object() =>
                {
                    Ok(parsed)
                }
                _ => Err(wrong(
                    kind,
                    &format!("give it as JSON, e.g. `--set {k}={}`", default),
                )),
            }
        }
    }
}

/// An optional sign and digits only.
fn is_integer_text(v: &str) -> bool {
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A `--set` value for a param without a typed default (`null`), read like
/// a YAML scalar: integers (exact, never floats: one too big for 64 bits
/// stays text), other numbers, `true`/`false`, else text.
pub fn parse_scalar(v: &str) -> Value {
    if let Ok(i) = v.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(u) = v.parse::<u64>() {
        return Value::from(u);
    }
    if is_integer_text(v) {
        return Value::String(v.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_values_keep_the_declared_type() {
        let ok = |v: &str, d: Value| typed_override("p", v, &d).unwrap();
        assert_eq!(ok("007", json!("x")), json!("007"));
        assert_eq!(ok("1.10", json!("x")), json!("1.10"));
        assert_eq!(ok("str:007", json!(1)), json!("007"));
        assert_eq!(ok("str:", json!(1.5)), json!(""));
        assert_eq!(ok("12", json!(1)), json!(12));
        assert_eq!(ok("-12", json!(1)), json!(-12));
        assert_eq!(ok("18446744073709551615", json!(1)), json!(u64::MAX));
        assert_eq!(ok("0.50", json!(0.1)), json!(0.5));
        assert_eq!(ok("2", json!(0.1)), json!(2.0));
        assert_eq!(ok("true", json!(false)), json!(true));
        assert_eq!(ok("[64,128]", json!([1])), json!([64, 128]));
        assert_eq!(ok("007", Value::Null), json!(7));
        assert_eq!(
            ok("123456789012345678901234567890", Value::Null),
            json!("123456789012345678901234567890")
        );
        for (v, d, what) in [
            ("two", json!(1), "integer"),
            ("1.5", json!(1), "integer"),
            ("99999999999999999999", json!(1), "keeps integers exact"),
            ("fast", json!(0.1), "number"),
            ("inf", json!(0.1), "number"),
            ("yes", json!(true), "boolean"),
            ("64", json!([1]), "list"),
        ] {
            let err = typed_override("p", v, &d).unwrap_err();
            assert!(
                err.starts_with(&format!("--set p={v}: `p` is "))
                    && err.contains(what)
                    && err.contains(&format!("--set p=str:{v}")),
                "{err}"
            );
        }
    }

    #[test]
    fn duplicate_values_are_found() {
        let mut m = BTreeMap::new();
        m.insert("k".to_string(), vec![json!(1), json!("1")]);
        let msg = duplicate_value(&m).unwrap();
        assert!(
            msg.contains("`k` lists `1` twice (as `1` and `\"1\"`"),
            "{msg}"
        );
        m.insert("k".to_string(), vec![json!(1), json!(1.0), json!("a")]);
        assert_eq!(duplicate_value(&m), None);
    }
}
