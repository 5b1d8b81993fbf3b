//! A `cmd`'s text at run time: `{out}`, `{in.NAME}` and `{in.NAME:list}`
//! become paths, quoted for where they stand.
//!
//! The placeholders are found by a small scanner that knows the shell's
//! quoting (`'…'`, `"…"`, `\`, `$(…)`, backquotes, `#` comments), so a path
//! is substituted in the form that keeps it one word wherever the user put
//! it: shell-quoted outside quotes, `'` escaped as `'\''` inside single
//! quotes, and `"` `\` `$` `` ` `` backslash-escaped inside double quotes.
//! `hcpipe run` checks the same text with [`placeholders`] when it loads the
//! pipeline (a gather inside quotes is refused there).

use std::collections::BTreeMap;
use std::path::Path;

use crate::ops::Input;

/// Linux refuses a single argument (`sh -c TEXT`) longer than this
/// (MAX_ARG_STRLEN, 32 pages, counting the final NUL).
pub const MAX_ARG_BYTES: usize = 128 * 1024;

/// How the shell reads the text around a placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    Unquoted,
    Single,
    Double,
}

/// What a placeholder stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref<'a> {
    Out,
    /// `{in.NAME}`, `{in.NAME:list}` or `{in.NAME:members}`.
    In {
        name: &'a str,
        form: InForm,
    },
}

/// How an `{in.NAME}` placeholder expands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InForm {
    /// `{in.NAME}`: the folder, or every gathered member's folder.
    Folders,
    /// `{in.NAME:list}`: a file with one member folder per line.
    List,
    /// `{in.NAME:members}`: a TSV naming each gathered member, its matrix
    /// values and its folder (who is who in a gather).
    Members,
}

impl InForm {
    /// The suffix after the name, as written.
    pub fn suffix(self) -> &'static str {
        match self {
            InForm::Folders => "",
            InForm::List => ":list",
            InForm::Members => ":members",
        }
    }
}

/// One placeholder in a cmd: `text[start..end]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder<'a> {
    pub start: usize,
    pub end: usize,
    pub what: Ref<'a>,
    pub quoting: Quoting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Top,
    Single,
    Double,
    /// `$( … )`, with the depth of plain parentheses inside it.
    Subst(u32),
    Backquote,
}

/// The placeholder starting at `rest`, and its length.
fn placeholder_at(rest: &str) -> Option<(Ref<'_>, usize)> {
    if rest.starts_with("{out}") {
        return Some((Ref::Out, "{out}".len()));
    }
    let after = rest.strip_prefix("{in.")?;
    let end = after.find('}')?;
    let inner = &after[..end];
    let (name, form) = if let Some(name) = inner.strip_suffix(":list") {
        (name, InForm::List)
    } else if let Some(name) = inner.strip_suffix(":members") {
        (name, InForm::Members)
    } else {
        (inner, InForm::Folders)
    };
    if name.is_empty() {
        return None;
    }
    Some((Ref::In { name, form }, "{in.".len() + end + 1))
}

/// Every `{out}`, `{in.NAME}` and `{in.NAME:list}` in `text`, in order, with
/// the shell quoting it stands in.
pub fn placeholders(text: &str) -> Vec<Placeholder<'_>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut stack = vec![Ctx::Top];
    let mut i = 0;
    // Whether the previous character ends a word (a `#` there starts a comment).
    let mut word_start = true;
    while i < bytes.len() {
        let ctx = *stack.last().unwrap_or(&Ctx::Top);
        let quoting = match ctx {
            Ctx::Single => Quoting::Single,
            Ctx::Double => Quoting::Double,
            _ => Quoting::Unquoted,
        };
        if bytes[i] == b'{' {
            if let Some((what, len)) = placeholder_at(&text[i..]) {
                out.push(Placeholder {
                    start: i,
                    end: i + len,
                    what,
                    quoting,
                });
                i += len;
                word_start = false;
                continue;
            }
        }
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        let mut step = 1;
        match ctx {
            Ctx::Single => {
                if c == b'\'' {
                    stack.pop();
                }
            }
            Ctx::Double => match c {
                b'\\' => step = 2,
                b'"' => {
                    stack.pop();
                }
                b'`' => stack.push(Ctx::Backquote),
                b'$' if next == Some(b'(') => {
                    stack.push(Ctx::Subst(0));
                    step = 2;
                }
                _ => {}
            },
            Ctx::Top | Ctx::Subst(_) | Ctx::Backquote => match c {
                b'\\' => step = 2,
                b'\'' => stack.push(Ctx::Single),
                b'"' => stack.push(Ctx::Double),
                b'`' if ctx == Ctx::Backquote => {
                    stack.pop();
                }
                b'`' => stack.push(Ctx::Backquote),
                b'$' if next == Some(b'(') => {
                    stack.push(Ctx::Subst(0));
                    step = 2;
                }
                b'$' if next == Some(b'\'') => {
                    stack.push(Ctx::Single);
                    step = 2;
                }
                b'(' => {
                    if let Some(Ctx::Subst(depth)) = stack.last_mut() {
                        *depth += 1;
                    }
                }
                b')' => match stack.last_mut() {
                    Some(Ctx::Subst(0)) => {
                        stack.pop();
                    }
                    Some(Ctx::Subst(depth)) => *depth -= 1,
                    _ => {}
                },
                b'#' if word_start => {
                    // A comment runs to the end of the line.
                    step = text[i..].find('\n').unwrap_or(text.len() - i);
                }
                _ => {}
            },
        }
        word_start = matches!(
            c,
            b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'(' | b')' | b'<' | b'>'
        ) && !matches!(ctx, Ctx::Single | Ctx::Double);
        i = (i + step).min(bytes.len());
    }
    out
}

/// `s` as one shell word, for text outside quotes.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `s` written inside the user's own quotes of kind `quoting`.
fn quote_for(s: &str, quoting: Quoting) -> String {
    match quoting {
        Quoting::Unquoted => shell_quote(s),
        Quoting::Single => s.replace('\'', "'\\''"),
        Quoting::Double => {
            let mut out = String::with_capacity(s.len());
            for c in s.chars() {
                if matches!(c, '"' | '\\' | '$' | '`') {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        }
    }
}

/// The name of the file `{in.BASE:list}` expands to, in the job's staging
/// folder beside `{out}` (so it is not part of the artifact).
pub fn list_file(out: &Path, base: &str) -> std::path::PathBuf {
    out.parent()
        .unwrap_or(out)
        .join(format!("hcpipe-in-{base}.list"))
}

/// The name of the file `{in.BASE:members}` expands to, beside [`list_file`]'s.
pub fn members_file(out: &Path, base: &str) -> std::path::PathBuf {
    out.parent()
        .unwrap_or(out)
        .join(format!("hcpipe-in-{base}.members.tsv"))
}

/// The body of a `{in.BASE:members}` file: a header `member`, one column per
/// matrix axis (in the members' order of axes), `folder`; one row per member
/// in member order. A value is written as `HCPIPE_MATRIX_<AXIS>` holds it (a
/// string without quotes); one holding a tab, a newline or a backslash is
/// written as a JSON string, so a row is always one line of `columns` cells.
fn members_tsv(members: &[(&Input, &BTreeMap<String, serde_json::Value>)]) -> String {
    let mut axes: Vec<&str> = Vec::new();
    for (_, values) in members {
        for axis in values.keys() {
            if !axes.contains(&axis.as_str()) {
                axes.push(axis);
            }
        }
    }
    let cell = |text: &str| {
        if text.contains(['\t', '\n', '\r', '\\']) {
            serde_json::Value::String(text.to_string()).to_string()
        } else {
            text.to_string()
        }
    };
    let mut body = String::from("member");
    for axis in &axes {
        body.push('\t');
        body.push_str(&cell(axis));
    }
    body.push_str("\tfolder\n");
    for (input, values) in members {
        body.push_str(&cell(&input.stage));
        for axis in &axes {
            body.push('\t');
            let value = match values.get(*axis) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            };
            body.push_str(&cell(&value));
        }
        body.push('\t');
        body.push_str(&cell(&input.dir.to_string_lossy()));
        body.push('\n');
    }
    body
}

/// A command that prints `message` to stderr and fails: how a problem found
/// while expanding reaches the stage's log and its failure.
fn failing_cmd(message: &str) -> String {
    format!("printf '%s\\n' {} >&2; exit 126", shell_quote(message))
}

/// `{out}` and `{in.NAME}` → absolute paths, quoted for where they stand;
/// `{in.BASE:list}` → a file (written now) listing a gather's folders, one
/// per line; `{in.BASE:members}` → a TSV file (written now) of its members,
/// their matrix values and folders. A matrix stage's base name stands for
/// all its members in `needs`: one folder when fanning out, every folder,
/// space-separated, when gathering. `matrix[i]` is `inputs[i]`'s matrix
/// values (empty for a plain stage; missing entries count as empty).
pub fn expand_cmd(
    text: &str,
    out: &Path,
    inputs: &[Input],
    matrix: &[BTreeMap<String, serde_json::Value>],
) -> String {
    let by_name: BTreeMap<&str, &Input> = inputs.iter().map(|i| (i.stage.as_str(), i)).collect();
    let mut by_base: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    type Members<'i> = Vec<(&'i Input, &'i BTreeMap<String, serde_json::Value>)>;
    let mut members_of: BTreeMap<&str, Members> = BTreeMap::new();
    let no_values = BTreeMap::new();
    for (n, i) in inputs.iter().enumerate() {
        if let Some((base, _)) = i.stage.split_once('[') {
            by_base
                .entry(base)
                .or_default()
                .push(i.dir.to_string_lossy().into_owned());
            members_of
                .entry(base)
                .or_default()
                .push((i, matrix.get(n).unwrap_or(&no_values)));
        }
    }
    let out_text = out.to_string_lossy();
    let mut cmd = String::with_capacity(text.len());
    let mut last = 0;
    // The widest gather expanded inline: (base, folders), for the E2BIG hint.
    let mut widest: Option<(&str, usize)> = None;
    for p in placeholders(text) {
        let replacement = match &p.what {
            Ref::Out => Some(quote_for(&out_text, p.quoting)),
            Ref::In {
                name,
                form: InForm::Folders,
            } => {
                if let Some(input) = by_name.get(name) {
                    Some(quote_for(&input.dir.to_string_lossy(), p.quoting))
                } else if let Some(dirs) = by_base.get(name) {
                    if dirs.len() > 1 && widest.is_none_or(|(_, n)| n < dirs.len()) {
                        widest = Some((name, dirs.len()));
                    }
                    Some(
                        dirs.iter()
                            .map(|d| quote_for(d, p.quoting))
                            .collect::<Vec<_>>()
                            .join(" "),
                    )
                } else {
                    None
                }
            }
            Ref::In {
                name,
                form: InForm::Members,
            } => {
                let members: Members = match (members_of.get(name), by_name.get(name)) {
                    (Some(m), _) => m.clone(),
                    (None, Some(input)) => vec![(*input, &no_values)],
                    (None, None) => {
                        cmd.push_str(&text[last..p.end]);
                        last = p.end;
                        continue;
                    }
                };
                let file = members_file(out, name);
                if let Err(e) = std::fs::write(&file, members_tsv(&members)) {
                    return failing_cmd(&format!(
                        "hcpipe: cannot write the member table for {{in.{name}:members}} ({}): {e}",
                        file.display()
                    ));
                }
                Some(quote_for(&file.to_string_lossy(), p.quoting))
            }
            Ref::In {
                name,
                form: InForm::List,
            } => {
                let dirs: Vec<String> = match (by_base.get(name), by_name.get(name)) {
                    (Some(dirs), _) => dirs.clone(),
                    (None, Some(input)) => vec![input.dir.to_string_lossy().into_owned()],
                    (None, None) => {
                        cmd.push_str(&text[last..p.end]);
                        last = p.end;
                        continue;
                    }
                };
                let file = list_file(out, name);
                let mut body = dirs.join("\n");
                body.push('\n');
                if let Err(e) = std::fs::write(&file, body) {
                    return failing_cmd(&format!(
                        "hcpipe: cannot write the folder list for {{in.{name}:list}} ({}): {e}",
                        file.display()
                    ));
                }
                Some(quote_for(&file.to_string_lossy(), p.quoting))
            }
        };
        cmd.push_str(&text[last..p.start]);
        match replacement {
            Some(r) => cmd.push_str(&r),
            // Not an input of this stage: left as written (validation reports it).
            None => cmd.push_str(&text[p.start..p.end]),
        }
        last = p.end;
    }
    cmd.push_str(&text[last..]);
    if cmd.len() + 1 > MAX_ARG_BYTES {
        if let Some((base, n)) = widest {
            return failing_cmd(&format!(
                "hcpipe: this command is {} bytes once {{in.{base}}} lists its {n} folders, over \
                 Linux's limit of {MAX_ARG_BYTES} bytes for one command (\"Argument list too \
                 long\"); read the folders from a file instead: {{in.{base}:list}} is a file \
                 with one folder per line, e.g. `while read -r d; do cat \"$d/metrics.json\"; \
                 done < {{in.{base}:list}}`",
                cmd.len()
            ));
        }
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn input(stage: &str, dir: &str) -> Input {
        Input {
            stage: stage.to_string(),
            op: None,
            dir: PathBuf::from(dir),
            content: None,
        }
    }

    /// What `sh` makes of `cmd`: its words, printed one per line.
    fn words(cmd: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("for w in {cmd}; do printf '%s\\n' \"$w\"; done"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn finds_placeholders_and_their_quoting() {
        let text = r#"a {out} '{out}' "{in.x}" $(cat "{in.y:list}") # it's {out}"#;
        let found: Vec<(Ref, Quoting)> = placeholders(text)
            .into_iter()
            .map(|p| (p.what, p.quoting))
            .collect();
        assert_eq!(
            found,
            [
                (Ref::Out, Quoting::Unquoted),
                (Ref::Out, Quoting::Single),
                (
                    Ref::In {
                        name: "x",
                        form: InForm::Folders
                    },
                    Quoting::Double
                ),
                (
                    Ref::In {
                        name: "y",
                        form: InForm::List
                    },
                    Quoting::Double
                ),
            ],
            "a comment is not scanned"
        );
        // Escaped quotes and member names with quotes in them.
        let text = r#"echo \' {out} "a\"b {out}" {in.t[a="1,b"]}"#;
        let q: Vec<Quoting> = placeholders(text).iter().map(|p| p.quoting).collect();
        assert_eq!(q, [Quoting::Unquoted, Quoting::Double, Quoting::Unquoted]);
    }

    #[test]
    fn paths_stay_one_word_in_every_quoting() {
        let nasty = "/tmp/my cache's \"$HOME\" `x` \\ dir";
        let out = Path::new(nasty);
        for text in ["{out}", "'{out}'", "\"{out}\"", "'{out}'/r", "\"{out}/r\""] {
            let cmd = expand_cmd(text, out, &[], &[]);
            let expect = if text.ends_with("r\"") || text.ends_with("/r") {
                format!("{nasty}/r\n")
            } else {
                format!("{nasty}\n")
            };
            assert_eq!(words(&cmd), expect, "{text} → {cmd}");
        }
        let inputs = [input("a", nasty)];
        let cmd = expand_cmd("\"{in.a}\" '{in.a}' {in.a}", Path::new("/o"), &inputs, &[]);
        assert_eq!(words(&cmd), format!("{nasty}\n{nasty}\n{nasty}\n"));
    }

    #[test]
    fn gather_expands_to_every_member_and_list_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let inputs = [input("t[lr=1]", "/c/a b"), input("t[lr=2]", "/c/b")];
        let cmd = expand_cmd("{in.t} {in.t[lr=2]}", &out, &inputs, &[]);
        assert_eq!(cmd, "'/c/a b' /c/b /c/b");
        let cmd = expand_cmd("cat {in.t:list}", &out, &inputs, &[]);
        let file = list_file(&out, "t");
        assert_eq!(cmd, format!("cat {}", shell_quote(&file.to_string_lossy())));
        assert!(!file.starts_with(&out));
        assert_eq!(std::fs::read_to_string(file).unwrap(), "/c/a b\n/c/b\n");
    }

    #[test]
    fn members_is_a_table_of_each_gathered_member() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let inputs = [
            input("t[lr=1,tag=a b]", "/c/x"),
            input("t[lr=2,tag=\"t\\tab\"]", "/c/y"),
            input("plain", "/c/p"),
        ];
        let values = |lr: i64, tag: &str| {
            BTreeMap::from([
                ("lr".to_string(), serde_json::json!(lr)),
                ("tag".to_string(), serde_json::json!(tag)),
            ])
        };
        let matrix = [values(1, "a b"), values(2, "t\tab")];
        let cmd = expand_cmd("cat {in.t:members}", &out, &inputs, &matrix);
        let file = members_file(&out, "t");
        assert_eq!(cmd, format!("cat {}", shell_quote(&file.to_string_lossy())));
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "member\tlr\ttag\tfolder\nt[lr=1,tag=a b]\t1\ta b\t/c/x\n\"t[lr=2,tag=\\\"t\\\\tab\\\"]\"\t2\t\"t\\tab\"\t/c/y\n"
        );
        // A plain stage: one row, no axes.
        expand_cmd("cat {in.plain:members}", &out, &inputs, &matrix);
        assert_eq!(
            std::fs::read_to_string(members_file(&out, "plain")).unwrap(),
            "member\tfolder\nplain\t/c/p\n"
        );
    }

    #[test]
    fn a_gather_too_long_for_one_argument_points_to_the_list() {
        let long = "d".repeat(3000);
        let inputs: Vec<Input> = (0..60)
            .map(|i| input(&format!("t[i={i}]"), &format!("/{long}/{i}")))
            .collect();
        let cmd = expand_cmd("cat {in.t}", Path::new("/o"), &inputs, &[]);
        assert!(cmd.len() < 2000, "{}", cmd.len());
        assert!(
            cmd.contains("{in.t:list}") && cmd.contains("60 folders"),
            "{cmd}"
        );
    }
}
