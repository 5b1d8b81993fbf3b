//! Stage order: the pipeline's stages as a petgraph DAG of [`StageId`]s.
//!
//! Built once from a checked [`Pipeline`]; a cycle is reported with every
//! stage on it, in order. From here on stages are referred to by id, never
//! by name.

pub mod render;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::OnceLock;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use crate::spec::{Pipeline, SpecError, StageSpec};

/// Index of a stage in [`Dag::stages`] (and its node in the graph).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StageId(pub usize);

pub struct Dag {
    pub pipeline: Pipeline,
    graph: DiGraph<StageId, ()>,
    /// Stage name → id, built on the first [`Dag::find`]: names given on the
    /// command line are looked up in O(1), and a run or `status` that looks
    /// none up does not hold a second copy of every name (needs are ids already).
    index: OnceLock<HashMap<String, StageId>>,
    /// Stages in an order where every stage comes after its needs.
    order: Vec<StageId>,
}

impl Dag {
    pub fn build(pipeline: Pipeline) -> Result<Dag, SpecError> {
        let n = pipeline.stages.len();
        let edges: usize = pipeline.stages.iter().map(|s| s.needs.len()).sum();
        let mut graph = DiGraph::with_capacity(n, edges);
        let nodes: Vec<NodeIndex> = (0..n).map(|i| graph.add_node(StageId(i))).collect();
        for (i, stage) in pipeline.stages.iter().enumerate() {
            for &need in &stage.needs {
                let up = nodes.get(need as usize).ok_or_else(|| {
                    SpecError::new(format!(
                        "internal: need {need} of `{}` is not a stage (bug, please report)",
                        stage.name
                    ))
                })?;
                graph.add_edge(*up, nodes[i], ());
            }
        }
        let order = match stable_topo_order(&graph) {
            Some(order) => order,
            None => return Err(cycle_error(&graph, &pipeline)),
        };
        Ok(Dag {
            pipeline,
            graph,
            index: OnceLock::new(),
            order,
        })
    }

    pub fn stage(&self, id: StageId) -> &StageSpec {
        &self.pipeline.stages[id.0]
    }

    pub fn len(&self) -> usize {
        self.pipeline.stages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pipeline.stages.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = StageId> {
        (0..self.len()).map(StageId)
    }

    pub fn topo_order(&self) -> &[StageId] {
        &self.order
    }

    pub fn find(&self, name: &str) -> Option<StageId> {
        let index = self.index.get_or_init(|| {
            self.pipeline
                .stages
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.clone(), StageId(i)))
                .collect()
        });
        index.get(name).copied()
    }

    /// The stages a name given on the command line stands for: a stage (or
    /// matrix member) by its full name, or every member of a matrix stage by
    /// its base name, in run order. An unknown name is an error naming the
    /// nearest stage when one is close (a typo), else listing the stages;
    /// `shown` is the pipeline file as the user wrote it.
    pub fn select(&self, name: &str, shown: &std::path::Path) -> Result<Vec<StageId>, String> {
        if let Some(id) = self.find(name) {
            return Ok(vec![id]);
        }
        let members: Vec<StageId> = self
            .order
            .iter()
            .copied()
            .filter(|&id| &*self.stage(id).base == name)
            .collect();
        if !members.is_empty() {
            return Ok(members);
        }
        let mut bases: Vec<&str> = self.pipeline.stages.iter().map(|s| &*s.base).collect();
        bases.dedup();
        let names = self
            .pipeline
            .stages
            .iter()
            .map(|s| s.name.as_str())
            .chain(bases.iter().copied());
        Err(match crate::suggest::closest(name, names) {
            Some(near) => format!(
                "no stage `{name}` in {}; did you mean `{near}`?",
                shown.display()
            ),
            None => {
                let listed: Vec<&str> = bases.iter().copied().take(20).collect();
                let more = if bases.len() > listed.len() {
                    ", ..."
                } else {
                    ""
                };
                format!(
                    "no stage `{name}` in {}; stages: {}{more}",
                    shown.display(),
                    listed.join(", ")
                )
            }
        })
    }

    /// The pipeline cut down to `targets` (names as [`Dag::select`] takes
    /// them) and every stage they need, transitively, in file order: what
    /// `hcpipe run PIPELINE STAGE...` runs. Keys are unchanged: a stage's key
    /// depends only on what it needs. No targets: the whole pipeline.
    pub fn restrict(self, targets: &[String], shown: &std::path::Path) -> Result<Dag, String> {
        if targets.is_empty() {
            return Ok(self);
        }
        let mut keep = vec![false; self.len()];
        let mut stack = Vec::new();
        for t in targets {
            stack.extend(self.select(t, shown)?);
        }
        while let Some(id) = stack.pop() {
            if !std::mem::replace(&mut keep[id.0], true) {
                stack.extend(self.needs(id));
            }
        }
        // Needs are indices: renumbered for the stages kept (a kept stage's
        // needs are all kept).
        let mut new_index = vec![u32::MAX; keep.len()];
        let mut next = 0u32;
        for (i, &k) in keep.iter().enumerate() {
            if k {
                new_index[i] = next;
                next += 1;
            }
        }
        let Dag { pipeline, .. } = self;
        let stages = pipeline
            .stages
            .into_iter()
            .zip(keep)
            .filter_map(|(mut s, k)| {
                for need in &mut s.needs {
                    *need = new_index[*need as usize];
                }
                k.then_some(s)
            })
            .collect();
        Dag::build(Pipeline { stages, ..pipeline }).map_err(|e| e.to_string())
    }

    /// Direct upstream stages, in `needs` order.
    pub fn needs(&self, id: StageId) -> Vec<StageId> {
        self.needs_iter(id).collect()
    }

    /// [`Dag::needs`] without a list.
    pub fn needs_iter(&self, id: StageId) -> impl ExactSizeIterator<Item = StageId> + '_ {
        self.stage(id).needs.iter().map(|&n| StageId(n as usize))
    }

    /// Direct downstream stages.
    pub fn dependents(&self, id: StageId) -> Vec<StageId> {
        let mut out: Vec<StageId> = self
            .graph
            .neighbors_directed(NodeIndex::new(id.0), Direction::Outgoing)
            .map(|n| self.graph[n])
            .collect();
        out.sort();
        out
    }

    /// Every stage downstream of `id`, transitively.
    pub fn descendants(&self, id: StageId) -> Vec<StageId> {
        let mut seen = vec![false; self.len()];
        let mut stack = vec![id];
        let mut out = Vec::new();
        while let Some(s) = stack.pop() {
            for d in self.dependents(s) {
                if !seen[d.0] {
                    seen[d.0] = true;
                    out.push(d);
                    stack.push(d);
                }
            }
        }
        out.sort();
        out
    }
}

/// Kahn's algorithm taking the earliest stage in file order first, so every
/// listing follows the file where the graph allows. `None` on a cycle.
fn stable_topo_order(graph: &DiGraph<StageId, ()>) -> Option<Vec<StageId>> {
    let mut indegree: Vec<usize> = graph
        .node_indices()
        .map(|n| graph.neighbors_directed(n, Direction::Incoming).count())
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> = indegree
        .iter()
        .enumerate()
        .filter(|(_, d)| **d == 0)
        .map(|(i, _)| Reverse(i))
        .collect();
    let mut order = Vec::with_capacity(indegree.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(graph[NodeIndex::new(i)]);
        for next in graph.neighbors_directed(NodeIndex::new(i), Direction::Outgoing) {
            indegree[next.index()] -= 1;
            if indegree[next.index()] == 0 {
                ready.push(Reverse(next.index()));
            }
        }
    }
    (order.len() == indegree.len()).then_some(order)
}

fn cycle_error(graph: &DiGraph<StageId, ()>, pipeline: &Pipeline) -> SpecError {
    let mut cycles = Vec::new();
    for scc in tarjan_scc(graph) {
        let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
        if scc.len() > 1 || self_loop {
            // Walk the cycle in edge order starting from its first stage in file order.
            let start = *scc.iter().min_by_key(|n| graph[**n].0).unwrap_or(&scc[0]);
            let mut path = vec![start];
            let mut cur = start;
            loop {
                let next = graph
                    .neighbors_directed(cur, Direction::Outgoing)
                    .filter(|n| scc.contains(n))
                    .min_by_key(|n| graph[*n].0);
                match next {
                    Some(n) if n == start || path.contains(&n) => {
                        path.push(n);
                        break;
                    }
                    Some(n) => {
                        path.push(n);
                        cur = n;
                    }
                    None => break,
                }
            }
            let names: Vec<String> = path
                .iter()
                .map(|n| format!("`{}`", pipeline.stages[graph[*n].0].name))
                .collect();
            let first = &pipeline.stages[graph[start].0];
            cycles.push(format!(
                "{}:{}:{}: cycle in `needs`: {} (each needs the one before it); remove one of these needs",
                pipeline.path.display(),
                first.loc.line,
                first.loc.col,
                names.join(" → ")
            ));
        }
    }
    SpecError::new(cycles.join("\n"))
}
