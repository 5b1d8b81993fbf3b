//! No module cycles, in the runner (`src/`) or the torch worker (`src/torch_worker/src`).
//!
//! A test that reads the sources rather than the compiler's view: it needs nothing but std, so
//! `make lint` builds it with plain `rustc` and runs it in a second or two. For each crate it
//! builds the graph of its modules (one node per file; inline modules such as `mod tests { .. }`
//! belong to their file) from every path that names the crate's own items: `use crate::..`,
//! `super::..`, `self::..`, a child module's name, and a name that a `use` bound to one of
//! those. A path to a re-exported item is an edge to the file that defines it. A module's edges
//! to its own descendants are left out: a folder's `mod.rs` declares, re-exports and drives its
//! files, which may use what it defines. It then fails, naming the cycle and where each of its
//! edges is, when
//! - the files have a cycle (`exec::job -> exec::torch_server -> exec::job`), or
//! - the top-level modules do (`exec -> report -> exec`, with each module's files merged), or
//! - a top-level module imports one that README's "Layout" does not allow it to.
//!
//! It does not see macro-generated paths or `#[path]` attributes (neither is used here).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module's path inside its crate: `["exec", "job"]`; the crate root is `[]`.
type ModPath = Vec<String>;

/// Why `from` depends on `to`: the first place seen.
#[derive(Clone, Debug)]
struct Edge {
    file: String,
    line: usize,
    path: String,
}

struct Crate {
    name: &'static str,
    /// Every file module, with its source file.
    modules: BTreeMap<ModPath, PathBuf>,
}

impl Crate {
    fn load(name: &'static str, root: &Path) -> Crate {
        let mut modules = BTreeMap::new();
        collect(root, root, &mut modules);
        Crate { name, modules }
    }

    fn is_module(&self, path: &[String]) -> bool {
        self.modules.contains_key(path)
    }

    /// The file-level graph: from module, to module, with the first place that links them. A
    /// path to an item that a module re-exports (`pub use store::Cache` in `cache/mod.rs`) is an
    /// edge to the module that defines it. Edges from a module to its own descendants are left
    /// out: a folder's `mod.rs` declares, re-exports and drives its files, which may use what it
    /// defines (the usual shape of a module folder, not a cycle between concerns).
    fn graph(&self) -> BTreeMap<ModPath, BTreeMap<ModPath, Edge>> {
        let sources: BTreeMap<&ModPath, String> = self
            .modules
            .iter()
            .map(|(m, file)| (m, fs::read_to_string(file).unwrap()))
            .collect();
        let exports: BTreeMap<ModPath, BTreeMap<String, ModPath>> = sources
            .iter()
            .map(|(m, text)| ((*m).clone(), crate_paths(self, m, text).1))
            .collect();
        let mut graph: BTreeMap<ModPath, BTreeMap<ModPath, Edge>> = BTreeMap::new();
        for (module, text) in &sources {
            let file = &self.modules[*module];
            let shown = file
                .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                .unwrap_or(file)
                .display()
                .to_string();
            let out = graph.entry((*module).clone()).or_default();
            for (line, path) in crate_paths(self, module, text).0 {
                let Some(target) = self.defining_module(&exports, path.clone()) else {
                    continue;
                };
                if target.starts_with(module) {
                    continue; // itself, or a descendant
                }
                out.entry(target).or_insert_with(|| Edge {
                    file: shown.clone(),
                    line,
                    path: format!("crate::{}", path.join("::")),
                });
            }
        }
        graph
    }

    /// The module that defines what `path` names, following re-exports.
    fn defining_module(
        &self,
        exports: &BTreeMap<ModPath, BTreeMap<String, ModPath>>,
        mut path: ModPath,
    ) -> Option<ModPath> {
        for _ in 0..16 {
            let module = self.longest_module(&path)?;
            let next = path
                .get(module.len())
                .and_then(|name| exports.get(&module)?.get(name));
            match next {
                Some(target) if *target != path[..=module.len()] => {
                    let mut p = target.clone();
                    p.extend(path[module.len() + 1..].iter().cloned());
                    path = p;
                }
                _ => return Some(module),
            }
        }
        self.longest_module(&path)
    }

    /// The longest prefix of `path` that is a module of this crate.
    fn longest_module(&self, path: &[String]) -> Option<ModPath> {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| self.is_module(p))
    }
}

/// Walks `dir`, recording `a/b.rs` as `a::b`, `a/mod.rs` as `a`, `lib.rs` as the root. Files
/// that are not modules (`main.rs`, `build.rs`) are left out.
fn collect(root: &Path, dir: &Path, modules: &mut BTreeMap<ModPath, PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            // A folder with its own Cargo.toml is another crate (the worker under src/).
            if !path.join("Cargo.toml").exists() {
                collect(root, &path, modules);
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap().with_extension("");
        let mut segments: ModPath = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        match segments.last().map(String::as_str) {
            Some("mod") => {
                segments.pop();
            }
            Some("lib") if segments.len() == 1 => segments.clear(),
            Some("main") if segments.len() == 1 => continue,
            _ => {}
        }
        modules.insert(segments, path);
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Colons,
    Punct(char),
}

/// Rust source as tokens with their lines, without comments, strings or char literals.
fn tokens(text: &str) -> Vec<(usize, Tok)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if c == 'r'
            && (at(i + 1) == '"' || at(i + 1) == '#' && matches!(at(i + 2), '"' | '#'))
            || c == 'b' && at(i + 1) == 'r' && matches!(at(i + 2), '"' | '#')
        {
            // A raw string: r"..", r#".."#, br"..".
            i += if c == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while at(i) == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1; // the opening quote
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                    i += 1 + hashes;
                    break;
                }
                if chars[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
        } else if c == '"' || c == 'b' && at(i + 1) == '"' {
            i += if c == 'b' { 2 } else { 1 };
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if at(i) == '\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' {
            // A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a).
            if at(i + 1) == '\\' {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word == "r" && at(i) == '#' {
                i += 1; // a raw identifier: r#type
                continue;
            }
            out.push((line, Tok::Ident(word)));
        } else if c == ':' && at(i + 1) == ':' {
            out.push((line, Tok::Colons));
            i += 2;
        } else {
            out.push((line, Tok::Punct(c)));
            i += 1;
        }
    }
    out
}

/// Every path in `text` that names an item of this crate, resolved from the crate root, with its
/// line; and the names that the file's own `use` statements bind (what it may re-export).
type Bindings = BTreeMap<String, ModPath>;

fn crate_paths(krate: &Crate, module: &ModPath, text: &str) -> (Vec<(usize, ModPath)>, Bindings) {
    let toks = tokens(text);
    let ident = |i: usize| match toks.get(i) {
        Some((_, Tok::Ident(s))) => Some(s.as_str()),
        _ => None,
    };
    let punct = |i: usize, p: char| matches!(toks.get(i), Some((_, Tok::Punct(c))) if *c == p);
    let colons = |i: usize| matches!(toks.get(i), Some((_, Tok::Colons)));

    // Inline modules (`mod tests { .. }`): a stack of (name, brace depth it closes at).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    // Names bound by `use` to paths of this crate, per (inline) module.
    let mut bound: BTreeMap<ModPath, BTreeMap<String, ModPath>> = BTreeMap::new();
    let mut found = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let here: ModPath = module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(n, _)| n.clone()))
            .collect();
        if punct(i, '{') {
            depth += 1;
            i += 1;
            continue;
        }
        if punct(i, '}') {
            depth = depth.saturating_sub(1);
            if inline.last().is_some_and(|(_, d)| *d == depth) {
                inline.pop();
            }
            i += 1;
            continue;
        }
        if ident(i) == Some("mod") && punct(i + 2, '{') {
            if let Some(name) = ident(i + 1) {
                inline.push((name.to_string(), depth));
                depth += 1;
                i += 3;
                continue;
            }
        }
        if ident(i) == Some("use") {
            let line = toks[i].0;
            let end = (i..toks.len())
                .find(|&k| punct(k, ';'))
                .unwrap_or(toks.len());
            let mut leaves = Vec::new();
            use_tree(&toks[i + 1..end], Vec::new(), &mut leaves);
            for (path, binding) in leaves {
                if let Some(abs) = resolve(krate, &here, &bound, &path) {
                    if let Some(name) = binding {
                        bound
                            .entry(here.clone())
                            .or_default()
                            .insert(name, abs.clone());
                    }
                    found.push((line, abs));
                }
            }
            i = end + 1;
            continue;
        }
        // A path: ident (:: ident)+, not the tail of a longer path.
        if let Some(first) = ident(i) {
            if colons(i + 1) && !(i > 0 && colons(i - 1)) {
                let line = toks[i].0;
                let mut path = vec![first.to_string()];
                let mut k = i + 1;
                while colons(k) {
                    match ident(k + 1) {
                        Some(s) => path.push(s.to_string()),
                        None => break,
                    }
                    k += 2;
                }
                if let Some(abs) = resolve(krate, &here, &bound, &path) {
                    found.push((line, abs));
                }
                i = k;
                continue;
            }
        }
        i += 1;
    }
    let own = bound.remove(module).unwrap_or_default();
    (found, own)
}

/// The leaves of a use tree, each with the name it binds (`None` for a glob or `_`).
fn use_tree(
    toks: &[(usize, Tok)],
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    // Split on top-level commas.
    let mut parts: Vec<&[(usize, Tok)]> = Vec::new();
    let mut start = 0;
    let mut level = 0;
    for (k, (_, t)) in toks.iter().enumerate() {
        match t {
            Tok::Punct('{') => level += 1,
            Tok::Punct('}') => level -= 1,
            Tok::Punct(',') if level == 0 => {
                parts.push(&toks[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    parts.push(&toks[start..]);
    for part in parts {
        let mut path = prefix.clone();
        let mut k = 0;
        // `pub use`, `pub(crate) use` were consumed before `use`; a leading `::` is an
        // external crate.
        if matches!(part.first(), Some((_, Tok::Colons))) {
            continue;
        }
        loop {
            match part.get(k).map(|(_, t)| t) {
                Some(Tok::Ident(s)) => {
                    path.push(s.clone());
                    k += 1;
                }
                Some(Tok::Punct('*')) => {
                    out.push((path.clone(), None));
                    break;
                }
                Some(Tok::Punct('{')) => {
                    let inner = &part[k + 1..part.len() - 1];
                    use_tree(inner, path.clone(), out);
                    break;
                }
                _ => break,
            }
            match part.get(k).map(|(_, t)| t) {
                Some(Tok::Colons) => k += 1,
                Some(Tok::Ident(a)) if a == "as" => {
                    let alias = match part.get(k + 1).map(|(_, t)| t) {
                        Some(Tok::Ident(n)) if n != "_" => Some(n.clone()),
                        _ => None,
                    };
                    out.push((path.clone(), alias));
                    break;
                }
                _ => {
                    if path.last().is_some_and(|s| s == "self") {
                        path.pop();
                    }
                    let name = path.last().cloned();
                    if !path.is_empty() {
                        out.push((path.clone(), name));
                    }
                    break;
                }
            }
        }
    }
}

/// `path` as seen from module `here`, from the crate root; `None` when it is not this crate's.
fn resolve(
    krate: &Crate,
    here: &ModPath,
    bound: &BTreeMap<ModPath, BTreeMap<String, ModPath>>,
    path: &[String],
) -> Option<ModPath> {
    let first = path.first()?;
    let mut abs: ModPath = match first.as_str() {
        "crate" => Vec::new(),
        "self" => here.clone(),
        "super" => {
            let mut base = here.clone();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            return Some(base);
        }
        name => {
            // A name bound by `use` here or in an enclosing inline module, or a child module.
            let mut scope = here.clone();
            loop {
                if let Some(target) = bound.get(&scope).and_then(|b| b.get(name)) {
                    let mut abs = target.clone();
                    abs.extend(path[1..].iter().cloned());
                    return Some(abs);
                }
                if scope.len() <= 1 || krate.is_module(&scope) {
                    break;
                }
                scope.pop();
            }
            let mut child = here.clone();
            child.push(name.to_string());
            if krate.is_module(&child) {
                child.extend(path[1..].iter().cloned());
                return Some(child);
            }
            return None;
        }
    };
    abs.extend(path[1..].iter().cloned());
    Some(abs)
}

/// A cycle in `graph`, as its nodes in order (the first repeated at the end), if there is one.
fn find_cycle<N: Ord + Clone>(graph: &BTreeMap<N, BTreeSet<N>>) -> Option<Vec<N>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<N: Ord + Clone>(
        n: &N,
        graph: &BTreeMap<N, BTreeSet<N>>,
        marks: &mut BTreeMap<N, Mark>,
        stack: &mut Vec<N>,
    ) -> Option<Vec<N>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = stack.iter().position(|m| m == n).unwrap();
                let mut cycle = stack[from..].to_vec();
                cycle.push(n.clone());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n.clone(), Mark::Open);
        stack.push(n.clone());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, marks, stack) {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(n.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

/// The strongly connected components of `graph` with more than one node (Tarjan).
fn tangles<N: Ord + Clone>(graph: &BTreeMap<N, BTreeSet<N>>) -> Vec<BTreeSet<N>> {
    struct State<N> {
        index: BTreeMap<N, usize>,
        low: BTreeMap<N, usize>,
        stack: Vec<N>,
        out: Vec<BTreeSet<N>>,
    }
    fn connect<N: Ord + Clone>(n: &N, graph: &BTreeMap<N, BTreeSet<N>>, st: &mut State<N>) {
        let i = st.index.len();
        st.index.insert(n.clone(), i);
        st.low.insert(n.clone(), i);
        st.stack.push(n.clone());
        for m in graph.get(n).into_iter().flatten() {
            if !st.index.contains_key(m) {
                connect(m, graph, st);
                let low = st.low[n].min(st.low[m]);
                st.low.insert(n.clone(), low);
            } else if st.stack.contains(m) {
                let low = st.low[n].min(st.index[m]);
                st.low.insert(n.clone(), low);
            }
        }
        if st.low[n] == st.index[n] {
            let mut component = BTreeSet::new();
            while let Some(m) = st.stack.pop() {
                let last = m == *n;
                component.insert(m);
                if last {
                    break;
                }
            }
            if component.len() > 1 {
                st.out.push(component);
            }
        }
    }
    let mut st = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for n in graph.keys() {
        if !st.index.contains_key(n) {
            connect(n, graph, &mut st);
        }
    }
    st.out
}

/// One cycle through each tangle of `graph`, each named with where its edges are.
fn describe<N: Ord + Clone>(
    graph: &BTreeMap<N, BTreeMap<N, Edge>>,
    what: &str,
    name: impl Fn(&N) -> String,
) -> Vec<String> {
    let sets: BTreeMap<N, BTreeSet<N>> = graph
        .iter()
        .map(|(f, to)| (f.clone(), to.keys().cloned().collect()))
        .collect();
    let mut out = Vec::new();
    for tangle in tangles(&sets) {
        let inside: BTreeMap<N, BTreeSet<N>> = sets
            .iter()
            .filter(|(f, _)| tangle.contains(*f))
            .map(|(f, to)| (f.clone(), to.intersection(&tangle).cloned().collect()))
            .collect();
        let Some(cycle) = find_cycle(&inside) else {
            continue;
        };
        let mut text = format!(
            "{what} {} (all of {{{}}} depend on each other)",
            cycle.iter().map(&name).collect::<Vec<_>>().join(" -> "),
            tangle.iter().map(&name).collect::<Vec<_>>().join(", ")
        );
        for pair in cycle.windows(2) {
            let e = &graph[&pair[0]][&pair[1]];
            text += &format!("\n    {}:{} uses {}", e.file, e.line, e.path);
        }
        out.push(text);
    }
    out
}

fn show(m: &[String]) -> String {
    if m.is_empty() {
        "crate".to_string()
    } else {
        m.join("::")
    }
}

/// Each file counts as its top-level module (its first segment); the root (lib.rs) is left out.
fn top_level(
    graph: &BTreeMap<ModPath, BTreeMap<ModPath, Edge>>,
) -> BTreeMap<String, BTreeMap<String, Edge>> {
    let mut tops: BTreeMap<String, BTreeMap<String, Edge>> = BTreeMap::new();
    for (from, to) in graph {
        let Some(f) = from.first() else { continue };
        let out = tops.entry(f.clone()).or_default();
        for (t, edge) in to {
            if let Some(t) = t.first().filter(|t| *t != f) {
                out.entry(t.clone()).or_insert_with(|| edge.clone());
            }
        }
    }
    tops
}

/// The problems with one crate's graph: its cycles, between files and between top-level
/// modules (one that the files' cycles already name is said once).
fn cycles(krate: &Crate) -> Vec<String> {
    let graph = krate.graph();
    let mut problems = describe(&graph, &format!("{}: module cycle", krate.name), |m| {
        show(m)
    });
    let what = format!("{}: top-level module cycle", krate.name);
    for p in describe(&top_level(&graph), &what, |m| m.clone()) {
        let same = p.replacen("top-level module", "module", 1);
        if !problems.contains(&same) {
            problems.push(p);
        }
    }
    problems
}

/// What README's "Layout" says each top-level module may import: its lines
/// ``- `exec`: `ops`, `cache`, ...`` (`any`: everything; text in parentheses is a comment).
fn allowed_imports() -> BTreeMap<String, Option<BTreeSet<String>>> {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let layout = readme
        .split("\n## ")
        .find(|s| s.starts_with("Layout"))
        .expect("README has a \"Layout\" section");
    let names = |text: &str| -> BTreeSet<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    layout
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("- `")?;
            let (module, rest) = rest.split_once("`: ")?;
            let rest = rest.split('(').next().unwrap_or_default();
            let allowed = (rest.trim() != "any").then(|| names(rest));
            Some((module.to_string(), allowed))
        })
        .collect()
}

/// The runner's top-level imports that README's "Layout" does not allow.
fn layering(krate: &Crate) -> Vec<String> {
    let allowed = allowed_imports();
    let mut problems = Vec::new();
    for (from, to) in top_level(&krate.graph()) {
        let Some(may) = allowed.get(&from) else {
            problems.push(format!(
                "{}: the top-level module `{from}` has no line in README's \"Layout\" saying \
                 what it may import",
                krate.name
            ));
            continue;
        };
        for (t, e) in to {
            if may.as_ref().is_some_and(|may| !may.contains(&t)) {
                problems.push(format!(
                    "{}: `{from}` imports `{t}`, which README's \"Layout\" does not allow it \
                     to\n    {}:{} uses {}",
                    krate.name, e.file, e.line, e.path
                ));
            }
        }
    }
    problems
}

fn runner() -> Crate {
    Crate::load("hcpipe", &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

fn worker() -> Crate {
    Crate::load(
        "hcpipe-torch",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/torch_worker/src"),
    )
}

/// The whole graph, one edge a line, with where each is:
/// `cargo test --test module_graph -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_the_graph() {
    for k in [runner(), worker()] {
        for (f, to) in k.graph() {
            for (t, e) in to {
                println!(
                    "{} -> {}   ({}:{} {})",
                    show(&f),
                    show(&t),
                    e.file,
                    e.line,
                    e.path
                );
            }
        }
    }
}

#[test]
fn runner_has_no_module_cycle() {
    let problems = cycles(&runner());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn runner_imports_follow_the_readme() {
    let problems = layering(&runner());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn worker_has_no_module_cycle() {
    let problems = cycles(&worker());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
