//! Reading a pipeline file: bytes → [`RawPipeline`] → checked [`Pipeline`].
//!
//! Parse errors come from serde-saphyr, which is panic-free, bounds alias
//! expansion and nesting (YAML bombs), and knows the line and column of every
//! node. We chose it over serde_yaml (deprecated upstream, and without spans
//! for errors found after parsing, dtolnay/serde-yaml#201).

use std::path::Path;

use super::raw::RawPipeline;
use super::{validate, Pipeline, SpecError};
use crate::suggest::closest;

/// Pipeline files larger than this are refused before parsing.
const MAX_PIPELINE_BYTES: u64 = 4 * 1024 * 1024;

/// Load, parse and check a pipeline file; `overrides` are `--set k=v` pairs.
pub fn load_pipeline(path: &Path, overrides: &[(String, String)]) -> Result<Pipeline, SpecError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| {
        SpecError::new(format!(
            "cannot read pipeline file `{shown}`: {e}\n  hint: give the path to a YAML file, e.g. `hcpipe run pipelines/demo.yaml`"
        ))
    })?;
    if meta.is_dir() {
        return Err(SpecError::new(format!(
            "`{shown}` is a folder, not a pipeline file\n  hint: name the YAML file inside it, e.g. `{shown}/pipeline.yaml`"
        )));
    }
    if meta.len() > MAX_PIPELINE_BYTES {
        return Err(SpecError::new(format!(
            "pipeline file `{shown}` is {} bytes; hcpipe refuses pipeline files over {MAX_PIPELINE_BYTES} bytes",
            meta.len()
        )));
    }
    let bytes =
        std::fs::read(path).map_err(|e| SpecError::new(format!("cannot read `{shown}`: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        SpecError::new(format!(
            "`{shown}` is not UTF-8 text (byte {}); save it as UTF-8",
            e.utf8_error().valid_up_to()
        ))
    })?;
    load_pipeline_text(&text, path, &shown, overrides)
}

/// Check pipeline `text` as if it were the file at `path` (deps resolve
/// beside `path`); `diff` uses this for a file read at a git revision.
pub fn load_pipeline_text(
    text: &str,
    path: &Path,
    shown: &str,
    overrides: &[(String, String)],
) -> Result<Pipeline, SpecError> {
    let raw = parse_str(text, shown)?;
    let abs = std::path::absolute(path).map_err(|e| SpecError::new(format!("`{shown}`: {e}")))?;
    let file_hash = blake3::hash(text.as_bytes()).to_hex().to_string();
    validate::validate(raw, text, &abs, shown, file_hash, overrides)
}

/// Parse YAML text into the raw model; `shown` names the file in messages.
pub fn parse_str(text: &str, shown: &str) -> Result<RawPipeline, SpecError> {
    serde_saphyr::from_str::<RawPipeline>(text).map_err(|e| {
        let loc = e
            .location()
            .map(|l| format!("{shown}:{}:{}: ", l.line(), l.column()))
            .unwrap_or_else(|| format!("{shown}: "));
        let rendered = e.to_string().replace("<input>", shown);
        let hint = did_you_mean_field(&rendered)
            .map(|s| format!("\n  hint: did you mean `{s}`?"))
            .unwrap_or_default();
        SpecError::new(format!("{loc}invalid pipeline\n{rendered}{hint}"))
    })
}

/// serde's "unknown field `nedds`, expected one of op, needs" → `needs`.
fn did_you_mean_field(message: &str) -> Option<String> {
    let start = message.find("unknown field `")? + "unknown field `".len();
    let rest = &message[start..];
    let unknown = &rest[..rest.find('`')?];
    let expected = rest
        .split("expected one of ")
        .nth(1)
        .or_else(|| rest.split("expected ").nth(1))?;
    let line = expected.lines().next()?;
    let candidates = line.split(',').map(|c| c.trim().trim_matches('`'));
    closest(unknown, candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_gets_a_suggestion() {
        let err =
            parse_str("name: x\nstages:\n  a: {op: fetch, nedds: [b]}\n", "p.yaml").unwrap_err();
        assert!(err.message.starts_with("p.yaml:3:18: "), "{}", err.message);
        assert!(
            err.message.contains("did you mean `needs`?"),
            "{}",
            err.message
        );
    }

    /// What a million members would otherwise hold a million times is
    /// held once per stage (issue 15): counted by sharing, not timed.
    #[test]
    fn members_share_what_their_stage_has_once() {
        let text = "name: s\nstages:\n  prep: {cmd: 'true'}\n  m:\n    cmd: 'echo ${matrix.a} ${matrix.b}'\n    needs: [prep]\n    outs: [x]\n    desc: grid\n    resources: {mem: 1G}\n    matrix: {b: [0, 1, 2], a: [x, y]}\n  t: {cmd: 'true', needs: [m], gather: true}\n  e: {cmd: 'true', needs: [m]}\n";
        let p = load_pipeline_text(text, Path::new("/tmp/p.yaml"), "p.yaml", &[]).unwrap();
        let m: Vec<&crate::spec::StageSpec> = p.stages.iter().filter(|s| &*s.base == "m").collect();
        assert_eq!(m.len(), 6);
        assert_eq!(
            m[1].name, "m[a=x,b=1]",
            "the first axis in sorted order varies slowest"
        );
        for s in &m[1..] {
            assert!(std::sync::Arc::ptr_eq(&s.base, &m[0].base));
            assert!(std::sync::Arc::ptr_eq(&s.resources, &m[0].resources));
            assert!(std::sync::Arc::ptr_eq(&s.outs, &m[0].outs));
            assert!(std::sync::Arc::ptr_eq(
                s.desc.as_ref().unwrap(),
                m[0].desc.as_ref().unwrap()
            ));
            assert!(std::ptr::eq(
                s.matrix.table().unwrap(),
                m[0].matrix.table().unwrap()
            ));
            assert_eq!(s.matrix.picks().len(), 2, "one index per axis");
            assert_eq!(&*s.needs, &[0], "needs are stage indices");
        }
        let t = p.stages.iter().find(|s| s.name == "t").unwrap();
        assert_eq!(&*t.needs, &[1, 2, 3, 4, 5, 6]);
        // Fan-out pairs each `e` member with the `m` member of its values.
        for s in p.stages.iter().filter(|s| &*s.base == "e") {
            let up = &p.stages[s.needs[0] as usize];
            assert_eq!(up.matrix.to_map(), s.matrix.to_map());
            assert_eq!(s.name.replacen('e', "m", 1), up.name);
        }
    }

    #[test]
    fn syntax_error_names_file_line_col() {
        let err = parse_str("name: x\nstages:\n  a: {op: [fetch\n", "p.yaml").unwrap_err();
        assert!(err.message.starts_with("p.yaml:3:"), "{}", err.message);
    }
}
