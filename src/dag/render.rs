//! `hcpipe dag`: the graph as Graphviz dot, Mermaid, or indented text.

use std::fmt::Write;

use super::Dag;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DagFormat {
    Text,
    Dot,
    Mermaid,
}

pub fn render(dag: &Dag, format: DagFormat) -> String {
    let mut out = String::new();
    match format {
        DagFormat::Dot => {
            let _ = writeln!(
                out,
                "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box];",
                escape(&dag.pipeline.name)
            );
            for id in dag.ids() {
                let s = dag.stage(id);
                let label = match s.op_name() {
                    Some(op) => format!("{}\\n({op})", escape(&s.name)),
                    None => format!("{}\\n(cmd)", escape(&s.name)),
                };
                let _ = writeln!(out, "  n{} [label=\"{label}\"];", id.0);
            }
            for id in dag.ids() {
                for up in dag.needs(id) {
                    let _ = writeln!(out, "  n{} -> n{};", up.0, id.0);
                }
            }
            out.push_str("}\n");
        }
        DagFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for id in dag.ids() {
                let s = dag.stage(id);
                let _ = writeln!(
                    out,
                    "  n{}[\"{} ({})\"]",
                    id.0,
                    s.name.replace('"', "'"),
                    s.op_name().unwrap_or("cmd")
                );
            }
            for id in dag.ids() {
                for up in dag.needs(id) {
                    let _ = writeln!(out, "  n{} --> n{}", up.0, id.0);
                }
            }
        }
        DagFormat::Text => {
            for &id in dag.topo_order() {
                let s = dag.stage(id);
                let needs = if s.needs.is_empty() {
                    String::new()
                } else {
                    format!(
                        "  ← {}",
                        dag.needs_iter(id)
                            .map(|u| dag.stage(u).name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                let _ = writeln!(out, "{} ({}){needs}", s.name, s.op_name().unwrap_or("cmd"));
            }
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
