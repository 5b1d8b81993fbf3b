//! Which matrix axes each stage has: declared once, inherited downstream.
//!
//! An **axis** is one `matrix:` key with its list of values. A stage's axes
//! are, in order:
//!
//! 1. **inherited**: unless the stage gathers (`gather: true`), every axis of
//!    every stage in its `needs`, in `needs` order, each once. Two upstreams
//!    that share an axis name must list the same values (in any order);
//! 2. **own**: its `matrix:` keys not inherited, in sorted order.
//!
//! An own key that repeats an inherited axis is today's explicit form
//! (`eval: {needs: [cnn], matrix: {lr: [...]}}` beside `cnn`'s `lr`): its
//! values are the ones the stage runs, and each must be one of every
//! upstream's values for that axis (a sub-list runs only those members, as
//! before). A stage whose own `matrix:` names every axis it has keeps the
//! sorted order it always had, so such pipelines expand, name and key their
//! members exactly as before axes were inherited.
//!
//! Member names list values in sorted key order whatever the axis order
//! ([`super::matrix::member_name`]): reordering `needs` never renames a
//! member, so never changes a key. The axis order only sets the order members
//! are listed (and run) in: the first axis varies slowest.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::subst::display_value;

/// One axis of a stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub name: String,
    /// The values the stage runs, each once.
    pub values: Vec<Value>,
    /// The upstream stage it was inherited from (the first in `needs` that
    /// has it), or `None` for an own axis.
    pub from: Option<String>,
}

/// What the axes of one stage are computed from: the stage as written.
#[derive(Debug, Clone, Default)]
pub struct Decl {
    /// `needs` as written; names that are not stages (members, typos) are skipped.
    pub needs: Vec<String>,
    pub gather: bool,
    /// The stage's own `matrix:`.
    pub own: BTreeMap<String, Vec<Value>>,
}

/// Where an axis problem is best pointed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// The stage's own `matrix:`.
    Matrix,
    /// Its `needs` entry with this index.
    Need(usize),
}

/// A stage's axes could not be settled.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisError {
    pub site: Site,
    pub message: String,
}

/// Every stage's axes, by name, in the order of `decls`. A stage with a
/// problem gets its problems instead; its dependants inherit nothing from it
/// (they are reported, if at all, for their own reasons).
pub fn resolve(decls: &[(String, Decl)]) -> Vec<Result<Vec<Axis>, Vec<AxisError>>> {
    let index: HashMap<&str, usize> = decls
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.as_str(), i))
        .collect();
    let mut out: Vec<Option<Result<Vec<Axis>, Vec<AxisError>>>> = vec![None; decls.len()];
    let mut visiting = vec![false; decls.len()];
    for i in 0..decls.len() {
        visit(i, decls, &index, &mut out, &mut visiting);
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Ok(Vec::new())))
        .collect()
}

/// Depth-first over `needs`, so a stage may need one written below it.
/// A cycle (which `dag` reports) contributes no axes along its back edge.
fn visit(
    i: usize,
    decls: &[(String, Decl)],
    index: &HashMap<&str, usize>,
    out: &mut Vec<Option<Result<Vec<Axis>, Vec<AxisError>>>>,
    visiting: &mut Vec<bool>,
) {
    if out[i].is_some() || visiting[i] {
        return;
    }
    let (name, decl) = &decls[i];
    if decl.own.values().any(|v| v.is_empty() || has_duplicate(v)) {
        // `validate` reports the list itself; dependants inherit nothing from it.
        out[i] = Some(Err(Vec::new()));
        return;
    }
    visiting[i] = true;
    // Upstreams in `needs` order: (index in needs, upstream's position).
    let ups: Vec<(usize, usize)> = if decl.gather {
        Vec::new()
    } else {
        decl.needs
            .iter()
            .enumerate()
            .filter_map(|(n, need)| Some((n, *index.get(need.as_str())?)))
            .filter(|&(_, u)| u != i)
            .collect()
    };
    for &(_, u) in &ups {
        visit(u, decls, index, out, visiting);
    }
    visiting[i] = false;
    let upstream_axes = |u: usize| -> &[Axis] {
        match &out[u] {
            Some(Ok(axes)) => axes,
            _ => &[],
        }
    };
    let mut errors = Vec::new();
    // Inherited axes, first upstream's values; later upstreams must agree.
    let mut inherited: Vec<Axis> = Vec::new();
    // Axis name → every upstream that has it, with its values (for the errors).
    let mut sources: BTreeMap<&str, Vec<Source>> = BTreeMap::new();
    for &(n, u) in &ups {
        let up_name = decls[u].0.as_str();
        for axis in upstream_axes(u) {
            sources.entry(axis.name.as_str()).or_default().push(Source {
                stage: up_name,
                values: &axis.values,
                need: n,
            });
            if !inherited.iter().any(|a| a.name == axis.name) {
                inherited.push(Axis {
                    name: axis.name.clone(),
                    values: axis.values.clone(),
                    from: Some(up_name.to_string()),
                });
            }
        }
    }
    let mut axes: Vec<Axis> = Vec::new();
    for axis in inherited {
        let from = &sources[axis.name.as_str()];
        match decl.own.get(&axis.name) {
            // The stage lists the values itself: each must be one every upstream has.
            Some(own) => {
                for Source {
                    stage: up, values, ..
                } in from
                {
                    let missing: Vec<&Value> = own.iter().filter(|v| !values.contains(v)).collect();
                    if !missing.is_empty() {
                        errors.push(AxisError {
                            site: Site::Matrix,
                            message: format!(
                                "matrix key `{}` lists {}, which `{up}` (in `needs`, and so fanned out with) does not have: its `{}` is {}; list only values of `{up}`, or drop `{}` from this stage's `matrix:` to run every member of `{up}`",
                                axis.name,
                                list(missing.iter().copied()),
                                axis.name,
                                list(values.iter()),
                                axis.name,
                            ),
                        });
                    }
                }
                axes.push(Axis {
                    name: axis.name.clone(),
                    values: own.clone(),
                    from: None,
                });
            }
            None => {
                let (first, first_values) = (from[0].stage, from[0].values);
                if let Some(&Source {
                    stage: other,
                    values,
                    need: n,
                }) = from[1..]
                    .iter()
                    .find(|s| !same_values(s.values, first_values))
                {
                    errors.push(AxisError {
                        site: Site::Need(n),
                        message: format!(
                            "inherits matrix axis `{}` from `{first}` ({}) and from `{other}` ({}), which differ; make the two lists agree, or give `{name}` its own `matrix: {{{}: [...]}}` listing the values to run (each one both stages have)",
                            axis.name,
                            list(first_values.iter()),
                            list(values.iter()),
                            axis.name,
                        ),
                    });
                }
                axes.push(axis);
            }
        }
    }
    let covers_all = axes.iter().all(|a| decl.own.contains_key(&a.name));
    for (k, values) in &decl.own {
        if !axes.iter().any(|a| &a.name == k) {
            axes.push(Axis {
                name: k.clone(),
                values: values.clone(),
                from: None,
            });
        }
    }
    if covers_all {
        // Every axis written here: the sorted order of an explicit `matrix:`.
        axes.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out[i] = Some(if errors.is_empty() {
        Ok(axes)
    } else {
        Err(errors)
    });
}

/// An upstream that has an axis: which, its values, and its index in `needs`.
struct Source<'a> {
    stage: &'a str,
    values: &'a [Value],
    need: usize,
}

/// The same values, in any order (each list holds each value once).
fn same_values(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().all(|v| b.contains(v))
}

/// A value listed twice (as `validate` reads it: `1` and `"1"` are one).
fn has_duplicate(values: &[Value]) -> bool {
    let mut seen = std::collections::HashSet::new();
    !values.iter().all(|v| seen.insert(display_value(v)))
}

/// `[0, 1, "a"]` as a user would read it.
fn list<'a>(values: impl IntoIterator<Item = &'a Value>) -> String {
    let items: Vec<String> = values.into_iter().map(display_value).collect();
    format!("[{}]", items.join(", "))
}

/// Members the axes expand to, without expanding them (saturating).
pub fn product(axes: &[Axis]) -> u64 {
    axes.iter()
        .fold(1u64, |n, a| n.saturating_mul(a.values.len() as u64))
}

/// Every combination of `axes`, the first axis varying slowest (`validate`
/// walks them by index instead, without a map per member).
#[cfg(test)]
pub fn combinations(axes: &[Axis]) -> Vec<BTreeMap<String, Value>> {
    let mut out = vec![BTreeMap::new()];
    for axis in axes {
        let mut next = Vec::with_capacity(out.len() * axis.values.len());
        for partial in &out {
            for v in &axis.values {
                let mut m = partial.clone();
                m.insert(axis.name.clone(), v.clone());
                next.push(m);
            }
        }
        out = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decl(needs: &[&str], gather: bool, own: &[(&str, Vec<Value>)]) -> Decl {
        Decl {
            needs: needs.iter().map(|s| s.to_string()).collect(),
            gather,
            own: own
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    fn names(r: &Result<Vec<Axis>, Vec<AxisError>>) -> Vec<(String, Vec<Value>, Option<String>)> {
        r.as_ref()
            .unwrap()
            .iter()
            .map(|a| (a.name.clone(), a.values.clone(), a.from.clone()))
            .collect()
    }

    fn resolve_all(decls: Vec<(&str, Decl)>) -> Vec<Result<Vec<Axis>, Vec<AxisError>>> {
        let d: Vec<(String, Decl)> = decls.into_iter().map(|(n, d)| (n.to_string(), d)).collect();
        resolve(&d)
    }

    #[test]
    fn dependants_inherit_in_needs_order_then_own() {
        let r = resolve_all(vec![
            ("crop", decl(&[], false, &[])),
            (
                "folds",
                decl(&["crop"], false, &[("fold", vec![json!(0), json!(1)])]),
            ),
            (
                "cnn",
                decl(
                    &["crop", "folds"],
                    false,
                    &[("seed", vec![json!(0), json!(1), json!(2)])],
                ),
            ),
            ("eval", decl(&["cnn", "folds"], false, &[])),
            ("table", decl(&["eval"], true, &[])),
        ]);
        assert_eq!(names(&r[0]), []);
        assert_eq!(
            names(&r[2]),
            [
                (
                    "fold".into(),
                    vec![json!(0), json!(1)],
                    Some("folds".into())
                ),
                ("seed".into(), vec![json!(0), json!(1), json!(2)], None),
            ]
        );
        assert_eq!(
            names(&r[3]),
            [
                ("fold".into(), vec![json!(0), json!(1)], Some("cnn".into())),
                (
                    "seed".into(),
                    vec![json!(0), json!(1), json!(2)],
                    Some("cnn".into())
                ),
            ]
        );
        assert_eq!(names(&r[4]), [], "a gather inherits nothing");
        assert_eq!(product(r[3].as_ref().unwrap()), 6);
        let members = combinations(r[2].as_ref().unwrap());
        assert_eq!(members.len(), 6);
        // The first axis varies slowest.
        assert_eq!(
            members[1],
            BTreeMap::from([("fold".into(), json!(0)), ("seed".into(), json!(1))])
        );
    }

    #[test]
    fn an_upstream_written_below_is_resolved_first() {
        let r = resolve_all(vec![
            ("eval", decl(&["train"], false, &[])),
            ("train", decl(&[], false, &[("lr", vec![json!(0.1)])])),
        ]);
        assert_eq!(
            names(&r[0]),
            [("lr".into(), vec![json!(0.1)], Some("train".into()))]
        );
    }

    #[test]
    fn inherited_order_follows_needs_unless_every_axis_is_written() {
        let a = decl(&[], false, &[("seed", vec![json!(0)])]);
        let b = decl(&[], false, &[("lr", vec![json!(1)])]);
        let r = resolve_all(vec![
            ("a", a.clone()),
            ("b", b.clone()),
            ("c", decl(&["a", "b"], false, &[])),
            (
                "d",
                decl(
                    &["a", "b"],
                    false,
                    &[("seed", vec![json!(0)]), ("lr", vec![json!(1)])],
                ),
            ),
        ]);
        let order = |i: usize| -> Vec<String> { names(&r[i]).into_iter().map(|a| a.0).collect() };
        assert_eq!(order(2), ["seed", "lr"]);
        // Today's explicit form: sorted, as it always was.
        assert_eq!(order(3), ["lr", "seed"]);
    }

    #[test]
    fn upstreams_sharing_an_axis_must_agree() {
        let r = resolve_all(vec![
            ("a", decl(&[], false, &[("seed", vec![json!(0), json!(1)])])),
            ("b", decl(&[], false, &[("seed", vec![json!(1), json!(0)])])),
            (
                "c",
                decl(&[], false, &[("seed", vec![json!(0), json!(1), json!(2)])]),
            ),
            ("ok", decl(&["a", "b"], false, &[])),
            ("bad", decl(&["x", "a", "c"], false, &[])),
            (
                "picked",
                decl(&["a", "c"], false, &[("seed", vec![json!(1)])]),
            ),
        ]);
        assert_eq!(
            names(&r[3])[0].1,
            vec![json!(0), json!(1)],
            "any order agrees"
        );
        let err = r[4].as_ref().unwrap_err();
        assert_eq!(err[0].site, Site::Need(2));
        assert_eq!(
            err[0].message,
            "inherits matrix axis `seed` from `a` ([0, 1]) and from `c` ([0, 1, 2]), which differ; make the two lists agree, or give `bad` its own `matrix: {seed: [...]}` listing the values to run (each one both stages have)"
        );
        assert_eq!(names(&r[5]), [("seed".into(), vec![json!(1)], None)]);
    }

    #[test]
    fn an_own_axis_may_pick_inherited_values_but_not_invent_them() {
        let r = resolve_all(vec![
            ("a", decl(&[], false, &[("seed", vec![json!(0), json!(1)])])),
            (
                "same",
                decl(&["a"], false, &[("seed", vec![json!(0), json!(1)])]),
            ),
            ("sub", decl(&["a"], false, &[("seed", vec![json!(1)])])),
            (
                "new",
                decl(
                    &["a"],
                    false,
                    &[("seed", vec![json!(1), json!(5), json!("x")])],
                ),
            ),
        ]);
        assert_eq!(
            names(&r[1]),
            [("seed".into(), vec![json!(0), json!(1)], None)]
        );
        assert_eq!(names(&r[2]), [("seed".into(), vec![json!(1)], None)]);
        let err = r[3].as_ref().unwrap_err();
        assert_eq!(err[0].site, Site::Matrix);
        assert!(
            err[0].message.starts_with("matrix key `seed` lists [5, x], which `a` (in `needs`, and so fanned out with) does not have: its `seed` is [0, 1]"),
            "{}",
            err[0].message
        );
    }

    #[test]
    fn an_explicit_matrix_expands_in_sorted_key_order() {
        let r = resolve_all(vec![(
            "train",
            decl(
                &[],
                false,
                &[
                    ("seed", vec![json!(1), json!(2)]),
                    ("lr", vec![json!(0.0001), json!(0.001)]),
                ],
            ),
        )]);
        let names: Vec<String> = combinations(r[0].as_ref().unwrap())
            .iter()
            .map(|c| super::super::matrix::member_name("train", c))
            .collect();
        assert_eq!(
            names,
            [
                "train[lr=0.0001,seed=1]",
                "train[lr=0.0001,seed=2]",
                "train[lr=0.001,seed=1]",
                "train[lr=0.001,seed=2]"
            ]
        );
    }

    #[test]
    fn product_saturates() {
        let axes: Vec<Axis> = (0..40)
            .map(|i| Axis {
                name: format!("k{i}"),
                values: vec![json!(0); 10],
                from: None,
            })
            .collect();
        assert_eq!(product(&axes), u64::MAX);
        assert_eq!(product(&[]), 1);
    }

    #[test]
    fn a_cycle_or_a_bad_upstream_passes_nothing_on() {
        let r = resolve_all(vec![
            ("a", decl(&["b"], false, &[("k", vec![json!(1)])])),
            ("b", decl(&["a"], false, &[])),
            ("self", decl(&["self"], false, &[])),
        ]);
        assert!(r.iter().all(Result::is_ok));
        assert_eq!(names(&r[2]), []);
    }
}
