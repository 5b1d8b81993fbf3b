//! `hcpipe completions SHELL` (issue 19): scripts for bash, zsh and fish;
//! in bash, a stage argument completes to the pipeline's stage names.

use crate::common::Project;

#[test]
fn completion_scripts_for_each_shell_name_the_commands() {
    let p = Project::new();
    for shell in ["bash", "zsh", "fish"] {
        let r = p.run(&["completions", shell]).ok();
        for sub in ["run", "status", "show", "diff", "gc"] {
            assert!(r.stdout.contains(sub), "{shell} script lacks `{sub}`");
        }
    }
    let r = p.run(&["completions", "tcsh"]);
    assert_eq!(r.code, 2);
}

#[test]
fn bash_completes_stage_names_of_the_pipeline_on_the_line() {
    if std::process::Command::new("bash")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: no bash");
        return;
    }
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: p\nstages:\n  crop_left: {cmd: 'echo > {out}/x'}\n  cnn:\n    needs: [crop_left]\n    matrix: {lr: [1, 2]}\n    cmd: 'echo > {out}/x'\n",
    );
    let script = p.run(&["completions", "bash"]).ok().stdout;
    p.write("hcpipe.bash", &script);
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_hcpipe"));
    let complete = |line: &str| {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source hcpipe.bash; COMP_WORDS=({line}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); \
                 _hcpipe_stages; printf '%s\\n' \"${{COMPREPLY[@]}}\""
            ))
            .current_dir(p.path())
            .env("PATH", format!("{}:{}", bin.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default()))
            .output()
            .unwrap();
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        complete("hcpipe show p.yaml c"),
        ["cnn", "cnn[lr=1]", "cnn[lr=2]", "crop_left"]
    );
    assert_eq!(
        complete("hcpipe run p.yaml --force cnn"),
        ["cnn", "cnn[lr=1]", "cnn[lr=2]"]
    );
}
