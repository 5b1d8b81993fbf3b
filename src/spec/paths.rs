//! Lexical normalisation of `deps` and `outs` paths, so that equivalent
//! spellings (`d.txt`, `./d.txt`, `data//d.txt`, `data/`) give one stage key.
//!
//! `.` components and repeated or trailing `/` go; `..` stays, except that
//! `a/..` is folded away when `a` is a real folder (not a symlink, whose `..`
//! is its target's parent). Absolute paths stay absolute.

use std::path::Path;

/// `path` normalised; `base` is the folder it is relative to, when `a/..`
/// may be folded by looking at the file system (None: never fold).
pub fn normalize(path: &str, base: Option<&Path>) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." && foldable(base, absolute, &parts) => {
                    parts.pop();
                }
                None if absolute => {} // `/..` is `/`
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Whether `parts` (the path so far) names a real folder, so that `..` after
/// it means its parent.
fn foldable(base: Option<&Path>, absolute: bool, parts: &[&str]) -> bool {
    let Some(base) = base else {
        return false;
    };
    // Every component up to here must be a real folder: a symlink anywhere
    // in between changes what `..` means.
    let mut at = if absolute {
        Path::new("/").to_path_buf()
    } else {
        base.to_path_buf()
    };
    for part in parts {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_forms() {
        for (given, want) in [
            ("d.txt", "d.txt"),
            ("./d.txt", "d.txt"),
            ("data//d.txt", "data/d.txt"),
            ("./data/./d.txt", "data/d.txt"),
            ("data/", "data"),
            ("data//", "data"),
            ("./", "."),
            (".", "."),
            ("../x", "../x"),
            ("../../x/", "../../x"),
            ("a/../b", "a/../b"),
            ("/abs//p/", "/abs/p"),
            ("/", "/"),
            ("/../x", "/x"),
        ] {
            assert_eq!(normalize(given, None), want, "{given}");
        }
    }

    #[test]
    fn folds_dot_dot_only_after_a_real_folder() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::create_dir_all(base.join("data/sub")).unwrap();
        std::os::unix::fs::symlink(base.join("data/sub"), base.join("link")).unwrap();
        let b = Some(base);
        assert_eq!(normalize("data/../data/d.txt", b), "data/d.txt");
        assert_eq!(normalize("data/sub/../../x", b), "x");
        assert_eq!(normalize("link/../d.txt", b), "link/../d.txt");
        assert_eq!(normalize("missing/../d.txt", b), "missing/../d.txt");
        assert_eq!(normalize("../up/../x", b), "../up/../x");
    }
}
