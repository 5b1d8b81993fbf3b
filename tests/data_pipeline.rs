//! The data half of the lab through `hcpipe run`: a tarball served over a
//! local HTTP server → fetch → demographics, age_filter, crop.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

use crate::common::*;

/// Serve `body` at http://127.0.0.1:PORT/data.tar.gz to any number of GETs.
fn serve(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/OASIS-1-dataset_pt_new.tar.gz",
        listener.local_addr().unwrap()
    );
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/gzip\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    url
}

#[test]
fn fetch_over_http_then_demographics_age_filter_and_crop() {
    // A dataset in the tarball's layout, made by `synth`, packed as the lab ships it.
    let maker = Project::new();
    maker.write("s.yaml", "name: s\nstages:\n  dataset: {op: synth, params: {n_train_ad: 3, n_train_cn: 4, n_val_ad: 2, n_val_cn: 3, seed: 7}}\n");
    maker.run(&["run", "s.yaml"]).ok();
    let show = maker.run(&["show", "s.yaml", "dataset", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    let dataset = std::path::PathBuf::from(v["path"].as_str().unwrap());
    let tarball = maker.path().join("data.tar.gz");
    let tar = Command::new("tar")
        .arg("-czhf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dataset)
        .arg("OASIS-1_dataset")
        .status()
        .unwrap();
    assert!(tar.success());
    let bytes = std::fs::read(&tarball).unwrap();
    let sha256 = {
        let out = Command::new("sha256sum").arg(&tarball).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let url = serve(bytes);

    let p = Project::new();
    let pipeline = format!(
        r#"
name: data
stages:
  dataset: {{op: fetch, params: {{url: "{url}", sha256: "{sha256}"}}}}
  demographics: {{op: demographics, needs: [dataset]}}
  old: {{op: age_filter, needs: [dataset], params: {{split: validation}}}}
  crop_left: {{op: crop, needs: [dataset], params: {{region: left_hc, shift: 2}}}}
"#
    );
    p.write("p.yaml", &pipeline);
    let r = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(r.ran(), ["crop_left", "dataset", "demographics", "old"]);
    let show = p.run(&["show", "p.yaml", "demographics", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    let table = std::fs::read_to_string(
        std::path::Path::new(v["path"].as_str().unwrap()).join("population.tsv"),
    )
    .unwrap();
    assert!(
        table.starts_with(
            "split\tdiagnosis\tN\tage\t%sexF\teducation\tMMS\tCDR=0\tCDR=0.5\tCDR=1\tCDR=2"
        ),
        "{table}"
    );
    assert!(
        table.contains("train\tAD\t3\t") && table.contains("validation\tCN\t3\t"),
        "{table}"
    );
    let crop = p.run(&["show", "p.yaml", "crop_left", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(crop.stdout.trim()).unwrap();
    let dir = std::path::Path::new(v["path"].as_str().unwrap());
    for f in [
        "meta.json",
        "train.safetensors",
        "validation.safetensors",
        "train.tsv",
        "validation.tsv",
    ] {
        assert!(dir.join(f).is_file(), "crop artifact lacks {f}");
    }
    // A wrong pin: a clear error, nothing cached for the stage.
    p.write("p.yaml", &pipeline.replace(&sha256, &"0".repeat(64)));
    let bad = p.run(&["run", "p.yaml", "--json"]);
    assert_eq!(bad.code, 1);
    assert_eq!(bad.status_of("dataset"), "failed");
    assert!(bad.stderr.contains("sha256"), "{}", bad.stderr);
}
