//! `synth`: a synthetic OASIS-1-like dataset in exactly the lab tarball's
//! layout (see [`crate::artifact::dataset`]), so every later stage runs without the
//! 1.4 GB download — the embedded default of the demo pipeline.
//!
//! What makes it a fair stand-in:
//! - demographics shaped like OASIS-1: CN ages spread 18–94 with many young
//!   subjects (education and CDR empty for the young, as in the real tables),
//!   AD ages 62–96, MMS ≈ 29.7 ± 0.6 for CN and 22.7 ± 3.6 for AD, CDR 0.5/1/2
//!   for AD, ~62 % women;
//! - volumes are smooth grey-matter probability maps in [0, 1] (cortical
//!   ribbon with folds, deep grey nuclei, two hippocampi) whose hippocampi,
//!   inside the lab's crop boxes, shrink with age and more with AD — so a
//!   classifier can learn the disease, and the age confound of OASIS-1 is
//!   there for `age_filter` to expose;
//! - voxel noise, plus a per-subject size jitter so classes overlap.
//!
//! Deterministic per `seed`: demographics come from one sequential stream,
//! each volume from its own stream keyed by blake3(seed, subject index), so
//! generating subjects in parallel (rayon) gives the same bytes.

use std::path::Path;

use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::Deserialize;

use super::pool::thread_pool;
use super::{Metrics, OpCtx, OpError};
use crate::artifact::dataset::{tsv_number, Diagnosis, Layout, Split, IMAGE_SHAPE};
use crate::artifact::pt;

/// Every synthetic subject has one session, the baseline visit.
const SESSION: &str = "ses-M00";

fn d_train_ad() -> usize {
    24
}
fn d_train_cn() -> usize {
    36
}
fn d_val_ad() -> usize {
    8
}
fn d_val_cn() -> usize {
    12
}
fn d_young() -> f64 {
    0.55
}
fn d_noise() -> f64 {
    0.05
}
fn d_age_atrophy() -> f64 {
    0.004
}
fn d_ad_atrophy() -> f64 {
    0.25
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthParams {
    #[serde(default = "d_train_ad")]
    pub n_train_ad: usize,
    #[serde(default = "d_train_cn")]
    pub n_train_cn: usize,
    #[serde(default = "d_val_ad")]
    pub n_val_ad: usize,
    #[serde(default = "d_val_cn")]
    pub n_val_cn: usize,
    #[serde(default)]
    pub seed: u64,
    /// Share of CN subjects younger than 60 (OASIS-1: 180 of 304).
    #[serde(default = "d_young")]
    pub young_fraction: f64,
    /// Standard deviation of the voxel noise (probability units).
    #[serde(default = "d_noise")]
    pub noise: f64,
    /// Hippocampal volume lost per year of age after 20 (0.004: 24 % at 80).
    #[serde(default = "d_age_atrophy")]
    pub age_atrophy: f64,
    /// Extra hippocampal volume lost with AD.
    #[serde(default = "d_ad_atrophy")]
    pub ad_atrophy: f64,
}

impl SynthParams {
    fn check(&self) -> Result<(), OpError> {
        let n = self.n_train_ad + self.n_train_cn + self.n_val_ad + self.n_val_cn;
        let bad = |m: &str| Err(OpError::Params(m.to_string()));
        if n == 0 {
            return bad("synth: all subject counts are 0; ask for at least one subject");
        }
        if n > 9999 {
            return bad("synth: at most 9999 subjects (ids are sub-OASIS1NNNN)");
        }
        if !(0.0..=1.0).contains(&self.young_fraction) {
            return bad("synth: `young_fraction` must lie in [0, 1]");
        }
        if !(0.0..=1.0).contains(&self.noise) || !(0.0..0.5).contains(&self.age_atrophy) {
            return bad("synth: `noise` must lie in [0, 1] and `age_atrophy` in [0, 0.5)");
        }
        if !(0.0..0.9).contains(&self.ad_atrophy) {
            return bad("synth: `ad_atrophy` must lie in [0, 0.9)");
        }
        Ok(())
    }
}

/// One synthetic subject's table row.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSubject {
    pub number: usize,
    pub train: bool,
    pub diagnosis: Diagnosis,
    pub sex: &'static str,
    pub age: f64,
    pub education: f64,
    pub mms: f64,
    pub cdr: f64,
    /// Per-subject hippocampal size jitter (multiplicative, around 1).
    pub jitter: f64,
}

impl SynthSubject {
    pub fn participant_id(&self) -> String {
        format!("sub-OASIS1{:04}", self.number)
    }
}

/// Uniform [0, 1) and normal draws over xoshiro256++ (a stable algorithm, so
/// a seed gives the same dataset on every platform and crate version).
struct Rng(Xoshiro256PlusPlus);

impl Rng {
    fn keyed(seed: u64, stream: u64) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(b"hcpipe synth v1");
        h.update(&seed.to_le_bytes());
        h.update(&stream.to_le_bytes());
        Rng(Xoshiro256PlusPlus::from_seed(*h.finalize().as_bytes()))
    }
    fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        // Box–Muller; 1 - u keeps the log argument in (0, 1].
        let (u, v) = (1.0 - self.uniform(), self.uniform());
        mean + sd * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    /// A value from `(weight, value)` pairs, drawn by weight.
    fn pick(&mut self, weighted: &[(f64, f64)]) -> f64 {
        let mut u = self.uniform() * weighted.iter().map(|w| w.0).sum::<f64>();
        let mut chosen = f64::NAN;
        for &(w, v) in weighted {
            chosen = v;
            if u < w {
                break;
            }
            u -= w;
        }
        chosen
    }
}

/// Draw the subjects' demographics (train AD, train CN, validation AD, validation CN).
pub fn draw_subjects(p: &SynthParams) -> Vec<SynthSubject> {
    let mut rng = Rng::keyed(p.seed, u64::MAX);
    let groups = [
        (true, Diagnosis::AD, p.n_train_ad),
        (true, Diagnosis::CN, p.n_train_cn),
        (false, Diagnosis::AD, p.n_val_ad),
        (false, Diagnosis::CN, p.n_val_cn),
    ];
    let total: usize = groups.iter().map(|g| g.2).sum();
    // Shuffle ids 1..=total so classes and splits interleave as in OASIS-1.
    let mut numbers: Vec<usize> = (1..=total).collect();
    for i in (1..numbers.len()).rev() {
        let j = (rng.uniform() * (i + 1) as f64) as usize;
        numbers.swap(i, j.min(i));
    }
    let mut out = Vec::with_capacity(total);
    for (train, diagnosis, n) in groups {
        for _ in 0..n {
            let ad = diagnosis == Diagnosis::AD;
            let age = if ad {
                rng.normal(77.0, 7.0).round().clamp(62.0, 96.0)
            } else if rng.uniform() < p.young_fraction {
                // Many twenty-somethings, a tail up to the late fifties.
                (18.0 + 40.0 * rng.uniform().powi(2)).round()
            } else {
                (60.0 + 34.0 * rng.uniform()).round()
            };
            let young = age < 60.0;
            let sex = if rng.uniform() < 0.62 { "F" } else { "M" };
            let education = if young {
                f64::NAN
            } else {
                rng.pick(&[
                    (18.0, 1.0),
                    (52.0, 2.0),
                    (40.0, 3.0),
                    (41.0, 4.0),
                    (46.0, 5.0),
                ])
            };
            let mms = if ad {
                rng.normal(22.7, 3.6).round().clamp(14.0, 30.0)
            } else {
                (30.0 - rng.normal(0.0, 0.6).abs().floor()).clamp(26.0, 30.0)
            };
            let cdr = match (ad, young) {
                (true, _) => rng.pick(&[(45.0, 0.5), (26.0, 1.0), (2.0, 2.0)]),
                (false, true) => f64::NAN,
                (false, false) => 0.0,
            };
            let jitter = rng.normal(1.0, 0.05).clamp(0.8, 1.2);
            let number = numbers.get(out.len()).copied().unwrap_or(out.len() + 1);
            out.push(SynthSubject {
                number,
                train,
                diagnosis,
                sex,
                age,
                education,
                mms,
                cdr,
                jitter,
            });
        }
    }
    out
}

/// The lab's hippocampus centres (middle of its crop boxes), voxels.
const HC_CENTRES: [[f64; 3]; 2] = [[40.0, 70.0, 42.0], [80.0, 70.0, 42.0]];

/// One subject's grey-matter probability map, `IMAGE_SHAPE`, x-major.
pub fn volume(p: &SynthParams, s: &SynthSubject) -> Vec<f32> {
    let [_, nx, ny, nz] = IMAGE_SHAPE;
    let mut rng = Rng::keyed(p.seed, s.number as u64);
    let years = (s.age - 20.0).max(0.0);
    let ad = if s.diagnosis == Diagnosis::AD {
        1.0
    } else {
        0.0
    };
    // Hippocampal volume factor; radii scale with its cube root.
    let vol = ((1.0 - p.age_atrophy * years - p.ad_atrophy * ad) * s.jitter).max(0.2);
    let scale = vol.cbrt();
    let hc_radii = [5.5 * scale, 13.0 * scale, 5.0 * scale];
    let hc_level = 0.55 + 0.35 * vol.min(1.0);
    // Cortex thins with age too (global, outside the crop boxes' signal).
    let ribbon = 0.07 * (1.0 - 0.002 * years);
    // Per-axis folding tables: the product of three sines makes gyri.
    let phase: [f64; 3] =
        [rng.uniform(), rng.uniform(), rng.uniform()].map(|u| u * std::f64::consts::TAU);
    let fold = |n: usize, f: f64, ph: f64| -> Vec<f64> {
        (0..n).map(|i| (i as f64 * f + ph).sin()).collect()
    };
    let (fx, fy, fz) = (
        fold(nx, 0.41, phase[0]),
        fold(ny, 0.37, phase[1]),
        fold(nz, 0.43, phase[2]),
    );
    let centre = [60.0, 72.0, 58.0];
    let radii = [50.0, 64.0, 50.0];
    let noise_amp = (p.noise * 3f64.sqrt() * 2.0) as f32; // uniform noise with sd = noise
    let mut out = vec![0f32; nx * ny * nz];
    for (x, plane) in out.chunks_exact_mut(ny * nz).enumerate() {
        let dx = (x as f64 - centre[0]) / radii[0];
        for (y, row) in plane.chunks_exact_mut(nz).enumerate() {
            let dy = (y as f64 - centre[1]) / radii[1];
            let fxy = fx.get(x).copied().unwrap_or(0.0) * fy.get(y).copied().unwrap_or(0.0);
            for (z, v) in row.iter_mut().enumerate() {
                let dz = (z as f64 - centre[2]) / radii[2];
                let r = (dx * dx + dy * dy + dz * dz).sqrt();
                if r > 1.05 {
                    continue; // outside the brain: exactly 0, as in real maps
                }
                let mut gm = 0.0;
                let band = r - 0.9;
                if band.abs() < 0.25 {
                    let folds = 0.75 + 0.25 * fxy * fz.get(z).copied().unwrap_or(0.0);
                    gm += 0.95 * (-(band * band) / (ribbon * ribbon)).exp() * folds;
                }
                // Deep grey nuclei (thalamus/putamen-like), symmetric.
                let deep = ((x as f64 - 60.0).abs() - 12.0) / 9.0;
                let (ddy, ddz) = ((y as f64 - 78.0) / 12.0, (z as f64 - 60.0) / 9.0);
                let d2 = deep * deep + ddy * ddy + ddz * ddz;
                if d2 < 9.0 {
                    gm += 0.7 * (-d2).exp();
                }
                gm += 0.06 * (1.0 - r).max(0.0); // faint white-matter partial volume
                let n = (rng.uniform() as f32 - 0.5) * noise_amp;
                *v = (gm as f32 + n).clamp(0.0, 1.0);
            }
        }
    }
    // Hippocampi: smooth ellipsoids in the crop boxes, drawn over the map.
    for c in HC_CENTRES {
        let lo = |i: usize| (c[i] - 2.0 * hc_radii[i]).floor().max(0.0) as usize;
        let hi = |i: usize, n: usize| ((c[i] + 2.0 * hc_radii[i]).ceil() as usize).min(n);
        for x in lo(0)..hi(0, nx) {
            for y in lo(1)..hi(1, ny) {
                for z in lo(2)..hi(2, nz) {
                    let q = [x as f64, y as f64, z as f64];
                    let d = (0..3)
                        .map(|i| ((q[i] - c[i]) / hc_radii[i]).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    // Logistic edge ~1.5 voxel wide: partial volume like a real segmentation.
                    let hc = hc_level / (1.0 + ((d - 1.0) / 0.18).exp());
                    if let Some(v) = out.get_mut((x * ny + y) * nz + z) {
                        *v = v.max(hc as f32).clamp(0.0, 1.0);
                    }
                }
            }
        }
    }
    out
}

pub fn run(ctx: &OpCtx) -> Result<Metrics, OpError> {
    let p: SynthParams = ctx.params()?;
    p.check()?;
    let subjects = draw_subjects(&p);
    write_dataset(ctx.out, &p, &subjects, ctx.threads)?;
    let mut m = Metrics::new();
    m.insert("n_subjects".into(), subjects.len().into());
    for (train, split) in [(true, "train"), (false, "validation")] {
        for d in Diagnosis::ALL {
            let ages: Vec<f64> = subjects
                .iter()
                .filter(|s| s.train == train && s.diagnosis == d)
                .map(|s| s.age)
                .collect();
            m.insert(format!("{split}_{}_n", d.as_str()), ages.len().into());
            if !ages.is_empty() {
                let mean = ages.iter().sum::<f64>() / ages.len() as f64;
                m.insert(
                    format!("{split}_{}_age_mean", d.as_str()),
                    ((mean * 10.0).round() / 10.0).into(),
                );
            }
        }
    }
    Ok(m)
}

/// Write the tables and (in parallel) the volumes under `out/OASIS-1_dataset`.
pub fn write_dataset(
    out: &Path,
    p: &SynthParams,
    subjects: &[SynthSubject],
    threads: usize,
) -> Result<(), OpError> {
    let layout = Layout::create(out)?;
    let mut sorted: Vec<&SynthSubject> = subjects.iter().collect();
    sorted.sort_by_key(|s| s.number);
    let bids: Vec<Vec<String>> = sorted.iter().map(|s| bids_row(s)).collect();
    layout.write_bids(&bids)?;
    for (train, split) in [(true, Split::Train), (false, Split::Validation)] {
        let rows: Vec<(String, String, Diagnosis)> = subjects
            .iter()
            .filter(|s| s.train == train)
            .map(|s| (s.participant_id(), SESSION.to_string(), s.diagnosis))
            .collect();
        layout.write_split(split, &rows)?;
    }
    let pool = thread_pool(threads)?;
    pool.install(|| {
        subjects.par_iter().try_for_each(|s| {
            let pid = s.participant_id();
            let path = layout.image(&pid, SESSION);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| OpError::io(dir, e))?;
            }
            pt::write_f32(&path, &IMAGE_SHAPE, &volume(p, s))
                .map_err(|e| OpError::Msg(format!("subject {pid}: {e}")))
        })
    })
}

fn bids_row(s: &SynthSubject) -> Vec<String> {
    let d = s.diagnosis.as_str().to_string();
    vec![
        s.participant_id(),
        SESSION.into(),
        format!("OAS1_{:04}_MR1", s.number),
        s.sex.into(),
        tsv_number(s.education, true),
        tsv_number(s.age, false),
        tsv_number(s.cdr, true),
        d.clone(),
        "R".into(),
        tsv_number(s.mms, true),
        tsv_number(s.cdr, true),
        d,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::dataset::{Dataset, BIDS_COLUMNS};

    pub(crate) fn small(seed: u64) -> SynthParams {
        let mut p: SynthParams = serde_json::from_str("{}").unwrap();
        (p.n_train_ad, p.n_train_cn, p.n_val_ad, p.n_val_cn, p.seed) = (2, 3, 1, 2, seed);
        p
    }

    #[test]
    fn demographics_look_like_oasis() {
        let mut p = small(1);
        (p.n_train_ad, p.n_train_cn) = (300, 600);
        let s = draw_subjects(&p);
        let ad: Vec<_> = s.iter().filter(|s| s.diagnosis == Diagnosis::AD).collect();
        let cn: Vec<_> = s.iter().filter(|s| s.diagnosis == Diagnosis::CN).collect();
        assert!(ad
            .iter()
            .all(|s| (62.0..=96.0).contains(&s.age) && s.cdr >= 0.5));
        assert!(cn.iter().all(|s| (18.0..=94.0).contains(&s.age)));
        let young = cn.iter().filter(|s| s.age < 60.0).count() as f64 / cn.len() as f64;
        assert!((0.45..0.65).contains(&young), "{young}");
        assert!(cn
            .iter()
            .filter(|s| s.age < 60.0)
            .all(|s| s.education.is_nan() && s.cdr.is_nan()));
        let mean = |v: &[&SynthSubject], f: fn(&SynthSubject) -> f64| {
            v.iter().map(|s| f(s)).sum::<f64>() / v.len() as f64
        };
        assert!((mean(&ad, |s| s.age) - 77.0).abs() < 1.5);
        assert!((mean(&ad, |s| s.mms) - 22.7).abs() < 1.0);
        assert!(mean(&cn, |s| s.mms) > 29.3);
        let mut ids: Vec<usize> = s.iter().map(|s| s.number).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), s.len());
    }

    #[test]
    fn volumes_carry_the_atrophy_signal_and_are_deterministic() {
        let p = small(3);
        let base = SynthSubject {
            number: 1,
            train: true,
            diagnosis: Diagnosis::CN,
            sex: "F",
            age: 25.0,
            education: f64::NAN,
            mms: 30.0,
            cdr: f64::NAN,
            jitter: 1.0,
        };
        let young = volume(&p, &base);
        assert_eq!(young, volume(&p, &base), "same seed, same volume");
        assert!(young.iter().all(|v| (0.0..=1.0).contains(v)));
        let old = volume(
            &p,
            &SynthSubject {
                age: 80.0,
                ..base.clone()
            },
        );
        let ad = volume(
            &p,
            &SynthSubject {
                age: 80.0,
                diagnosis: Diagnosis::AD,
                ..base.clone()
            },
        );
        // Mean grey matter in the left crop box: young CN > old CN > old AD.
        let boxed = |v: &[f32]| {
            let mut s = 0.0;
            for x in 25..55 {
                for y in 50..90 {
                    for z in 27..57 {
                        s += v[(x * 145 + y) * 121 + z] as f64;
                    }
                }
            }
            s / (30.0 * 40.0 * 30.0)
        };
        let (a, b, c) = (boxed(&young), boxed(&old), boxed(&ad));
        assert!(a > b * 1.1 && b > c * 1.1, "young {a} old {b} ad {c}");
    }

    #[test]
    fn writes_a_dataset_the_reader_accepts() {
        let tmp = tempfile::tempdir().unwrap();
        let p = small(7);
        let subjects = draw_subjects(&p);
        write_dataset(tmp.path(), &p, &subjects, 2).unwrap();
        let ds = Dataset::open(tmp.path()).unwrap();
        assert_eq!(
            (ds.train.len(), ds.validation.len(), ds.subjects.len()),
            (5, 3, 8)
        );
        let row = &ds.train[0];
        let img = ds.read_image(&row.participant_id, &row.session_id).unwrap();
        let s = subjects
            .iter()
            .find(|s| s.participant_id() == row.participant_id)
            .unwrap();
        assert_eq!(img, volume(&p, s));
        let bids = std::fs::read_to_string(ds.layout.bids_tsv()).unwrap();
        assert!(bids.starts_with(&BIDS_COLUMNS.join("\t")));
    }

    #[test]
    fn synth_pt_loads_in_python_torch() {
        let py = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
        let has_torch = std::process::Command::new(&py)
            .args(["-c", "import torch"])
            .output()
            .map(|o| o.status.success());
        if has_torch.ok() != Some(true) {
            eprintln!(
                "SKIPPED synth_pt_loads_in_python_torch: {} cannot `import torch`",
                py.display()
            );
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let p = small(11);
        let s = &draw_subjects(&p)[0];
        let path = tmp.path().join("v.pt");
        let v = volume(&p, s);
        pt::write_f32(&path, &IMAGE_SHAPE, &v).unwrap();
        let sum: f64 = v.iter().map(|&x| x as f64).sum();
        let script = "import sys, torch\nt = torch.load(sys.argv[1])\nprint(tuple(t.shape), t.dtype, float(t.double().sum()), float(t[0,40,70,42]))";
        let out = std::process::Command::new(&py)
            .args(["-c", script])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let parts: Vec<&str> = text.trim().rsplitn(3, ' ').collect();
        assert!(
            text.starts_with("(1, 121, 145, 121) torch.float32"),
            "{text}"
        );
        let py_sum: f64 = parts[1].parse().unwrap();
        assert!(
            (py_sum - sum).abs() < 1e-6 * sum.abs().max(1.0),
            "{py_sum} vs {sum}"
        );
        let centre: f32 = parts[0].parse().unwrap();
        assert_eq!(centre, v[(40 * 145 + 70) * 121 + 42]);
    }
}
