//! The scheduler's work grows linearly with the pipeline (issue 15): counted,
//! not timed. `hcpipe -v run` logs what the scheduler did ("scheduler: N
//! stages, X examined, Y need visits, Z key computations, W record writes");
//! on a 2,000-stage matrix pipeline each must stay within a small multiple of
//! the stages (a name scan or a rescan per event would make them ~n²).

use std::time::Instant;

use crate::common::Project;

const MEMBERS: usize = 1998; // + prep + table = 2,000 stages

fn pipeline(prep_cmd: &str) -> String {
    let values: Vec<String> = (0..MEMBERS).map(|i| i.to_string()).collect();
    format!(
        "name: scale\nstages:\n  prep:\n    cmd: \"{prep_cmd}\"\n  m:\n    cmd: \"echo ${{matrix.i}} > {{out}}/x\"\n    needs: [prep]\n    matrix: {{i: [{}]}}\n  table:\n    cmd: \"wc -l < {{in.m:list}} > {{out}}/n\"\n    needs: [m]\n    gather: true\n",
        values.join(", ")
    )
}

/// (stages, examined, need visits, key computations, record writes) from a `-v` log.
fn counts(stderr: &str) -> [u64; 5] {
    let line = stderr
        .lines()
        .find_map(|l| l.split("scheduler: ").nth(1))
        .unwrap_or_else(|| panic!("no scheduler line in:\n{stderr}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    nums.try_into()
        .unwrap_or_else(|v| panic!("unexpected scheduler line {line:?}: {v:?}"))
}

fn check(what: &str, c: [u64; 5], wall_s: f64) {
    let [stages, examined, needs, keys, writes] = c;
    let n = stages;
    assert_eq!(n, 2000, "{what}: {c:?}");
    // Each stage is examined once when ready (and once more at most when an
    // upstream fails); each need is visited as often as its stage is examined.
    assert!(
        examined <= 2 * n,
        "{what}: {examined} examinations for {n} stages"
    );
    assert!(
        needs <= 2 * 2 * n,
        "{what}: {needs} need visits for {n} stages (~2n needs)"
    );
    assert!(keys <= n, "{what}: {keys} key computations for {n} stages");
    // At most one record rewrite per half second (plus the first), never one per stage.
    let bound = 2 + (wall_s / 0.5).ceil() as u64;
    assert!(
        writes <= bound,
        "{what}: {writes} record writes in {wall_s:.1} s"
    );
}

#[test]
fn scheduler_work_is_linear_in_the_stages() {
    let p = Project::new();
    // prep fails: every member and the gather are skipped, none examined twice.
    p.write("p.yaml", &pipeline("echo v1 > {out}/p; exit 1"));
    let t = Instant::now();
    let run = p.run(&["-v", "run", "p.yaml", "--json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    check(
        "failed prep",
        counts(&run.stderr),
        t.elapsed().as_secs_f64(),
    );

    // Every stage runs: 2,000 shell processes.
    p.write("p.yaml", &pipeline("echo v1 > {out}/p"));
    let t = Instant::now();
    let run = p.run(&["-v", "run", "p.yaml", "--json"]).ok();
    let c = counts(&run.stderr);
    check("first run", c, t.elapsed().as_secs_f64());
    assert!(c[4] < 100, "record rewritten {} times", c[4]);
    let ran = run.statuses().iter().filter(|(_, s)| s == "ran").count();
    assert_eq!(ran, 2000);

    // prep forced, writes the same bytes: every member's key is computed by
    // the scheduler (not the plan) and found cached, with nothing launched.
    let t = Instant::now();
    let run = p
        .run(&["-v", "run", "p.yaml", "--json", "--force", "prep"])
        .ok();
    let c = counts(&run.stderr);
    check("forced prep", c, t.elapsed().as_secs_f64());
    assert_eq!(c[3], 2000, "every key computed once, prep's too: {c:?}");

    // Nothing forced: planning finds every stage cached, the members (one
    // level of 1,998 stages) planned on every core from borrowed parts
    // (`plan::stage_key`); the scheduler above made the same keys one by one
    // from `KeyInputs`. Equal keys, stage by stage.
    let noop = p.run(&["-v", "run", "p.yaml", "--json"]).ok();
    let c = counts(&noop.stderr);
    assert_eq!(c[3], 0, "no key left to the scheduler: {c:?}");
    assert_eq!(keys(&noop), keys(&run));
    assert!(noop.statuses().iter().all(|(_, s)| s == "cached"));
}

/// `run --json` lines as (stage, key) pairs, by stage name.
fn keys(run: &crate::common::Run) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("event").is_none())
        .map(|v| (v["stage"].to_string(), v["key"].to_string()))
        .collect();
    keys.sort();
    assert_eq!(keys.len(), 2000);
    keys
}

/// Stages are started without copying the runner (`posix_spawn` of
/// `hcpipe __stage-child`, which then becomes the command): a fork per
/// stage cost the runner's page tables, which grow with the pipeline. The
/// launcher keeps the guarantee fork gave: the stage's shell dies with a
/// runner killed by SIGKILL (PR_SET_PDEATHSIG), and the command sees the
/// environment, folder and arguments it did before.
#[test]
fn stages_start_through_the_launcher_and_die_with_a_killed_runner() {
    let p = Project::new();
    p.write(
        "w/p.yaml",
        "name: l\nstages:\n  s: {cmd: \"echo $$ > ../shell.pid; pwd > ../pwd; echo \\\"$HCPIPE_THREADS $1\\\" > ../env; sleep 30\"}\n",
    );
    let mut child = p
        .cmd(&["run", "w/p.yaml"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while p.read("shell.pid").trim().is_empty() {
        assert!(Instant::now() < deadline, "stage never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let shell: i32 = p.read("shell.pid").trim().parse().unwrap();
    // The shell is the runner's own child: the launcher became it.
    let stat = std::fs::read_to_string(format!("/proc/{shell}/stat")).unwrap();
    let ppid: u32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ppid, child.id(), "{stat}");
    assert!(p.read("pwd").trim().ends_with("/w"), "{}", p.read("pwd"));
    assert_eq!(p.read("env").trim(), "1");
    child.kill().unwrap(); // SIGKILL: the runner cannot clean up
    child.wait().unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let alive = std::fs::read_to_string(format!("/proc/{shell}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        if !alive {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stage's shell outlived the killed runner"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
