//! Clinica CAPS input (issue 19, item 7): a dataset stage that is a local
//! folder of participant TSVs plus a CAPS folder of NIfTI grey-matter maps
//! (`fetch` with `path`), cropped by `crop` exactly as the lab's `.pt`
//! tensors are; and each bad NIfTI (shape, orientation, datatype, truncated)
//! failing the crop with an error naming the subject and the file. Volumes
//! are tiny-ish synthetic NIfTIs written here, plus the one real OASIS-1 T1.

use std::io::Write;
use std::path::{Path, PathBuf};

use hcpipe::artifact::dataset::{GM_MAP_SUFFIX, IMAGE_SHAPE, NIFTI_GRID};
use hcpipe::artifact::pt;
use hcpipe::ops::nifti;

use crate::common::Project;

/// Clinica t1-volume's Ixi549Space affine: 1.5 mm, x from right to left (LAS).
const LAS: [[f32; 4]; 3] = [
    [-1.5, 0.0, 0.0, 90.0],
    [0.0, 1.5, 0.0, -126.0],
    [0.0, 0.0, 1.5, -72.0],
];

/// A NIfTI-1 single file by hand (little endian): `dims`, `datatype`/`bitpix`,
/// 1.5 mm voxels, an aligned sform, data at byte 352.
fn nifti_bytes(
    dims: &[usize],
    datatype: i16,
    bitpix: i16,
    sform: [[f32; 4]; 3],
    data: &[u8],
) -> Vec<u8> {
    let mut h = vec![0u8; 352];
    let mut put = |at: usize, b: &[u8]| h[at..at + b.len()].copy_from_slice(b);
    put(0, &348i32.to_le_bytes());
    put(40, &(dims.len() as i16).to_le_bytes());
    for (i, &d) in dims.iter().enumerate() {
        put(42 + 2 * i, &(d as i16).to_le_bytes());
    }
    put(70, &datatype.to_le_bytes());
    put(72, &bitpix.to_le_bytes());
    put(76, &1.0f32.to_le_bytes());
    for i in 0..dims.len() {
        put(80 + 4 * i, &1.5f32.to_le_bytes());
    }
    put(108, &352.0f32.to_le_bytes());
    put(254, &2i16.to_le_bytes()); // sform_code: aligned
    for (r, row) in sform.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            put(280 + 16 * r + 4 * c, &v.to_le_bytes());
        }
    }
    put(344, b"n+1\0");
    h.extend_from_slice(data);
    h
}

/// `values` in a `.pt`'s order (x-major, z fastest) as float32 NIfTI voxels (x fastest).
fn nifti_f32(values: &[f32], dims: [usize; 3], sform: [[f32; 4]; 3]) -> Vec<u8> {
    let [nx, ny, nz] = dims;
    let mut data = Vec::with_capacity(values.len() * 4);
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                data.extend(values[(x * ny + y) * nz + z].to_le_bytes());
            }
        }
    }
    nifti_bytes(&dims, 16, 32, sform, &data)
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(path).unwrap(),
            flate2::Compression::fast(),
        );
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap();
    } else {
        std::fs::write(path, bytes).unwrap();
    }
}

/// A grey-matter-like volume of the lab's grid, different per subject.
fn volume(seed: usize) -> Vec<f32> {
    let [_, nx, ny, nz] = IMAGE_SHAPE;
    let mut v = Vec::with_capacity(nx * ny * nz);
    for x in 0..nx {
        for y in 0..ny {
            for z in 0..nz {
                v.push(((x * 7 + y * 13 + z * 3 + seed * 31) % 101) as f32 / 100.0);
            }
        }
    }
    v
}

/// (participant_id, diagnosis, split) of the datasets below.
const SUBJECTS: [(&str, &str, &str); 3] = [
    ("sub-OASIS10001", "AD", "train"),
    ("sub-OASIS10002", "CN", "train"),
    ("sub-OASIS10003", "CN", "validation"),
];

/// `dir/tsv_files/lab_1/*.tsv` for `subjects` (all `ses-M00`).
fn tables(dir: &Path, subjects: &[(&str, &str, &str)]) {
    let t = dir.join("tsv_files/lab_1");
    std::fs::create_dir_all(&t).unwrap();
    let mut bids = String::from(
        "participant_id\tsession_id\tsex\teducation_level\tage_bl\tMMS\tcdr_global\tdiagnosis\n",
    );
    for (i, (pid, dx, _)) in subjects.iter().enumerate() {
        bids += &format!("{pid}\tses-M00\tF\t3.0\t{}\t28.0\t0.5\t{dx}\n", 70 + i);
    }
    std::fs::write(t.join("OASIS_BIDS.tsv"), bids).unwrap();
    for split in ["train", "validation"] {
        let mut rows = String::from("participant_id\tsession_id\tdiagnosis\n");
        for (pid, dx, s) in subjects {
            if *s == split {
                rows += &format!("{pid}\tses-M00\t{dx}\n");
            }
        }
        std::fs::write(t.join(format!("{split}.tsv")), rows).unwrap();
    }
}

/// Where Clinica t1-volume's DARTEL-to-MNI map of `pid` lives in `dataset/CAPS`.
fn dartel_map(dataset: &Path, pid: &str) -> PathBuf {
    dataset.join(format!(
        "CAPS/subjects/{pid}/ses-M00/t1/spm/dartel/group-lab/{pid}_ses-M00_T1w{GM_MAP_SUFFIX}.nii.gz"
    ))
}

fn stage_dir(p: &Project, pipeline: &str, stage: &str) -> PathBuf {
    let show = p.run(&["show", pipeline, stage, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    PathBuf::from(v["path"].as_str().unwrap())
}

#[test]
fn a_caps_folder_crops_to_the_same_patches_as_the_lab_tensors() {
    let p = Project::new();
    let (caps, lab) = (p.path().join("caps_ds"), p.path().join("lab_ds"));
    tables(&caps, &SUBJECTS);
    tables(&lab, &SUBJECTS);
    // The CAPS folder stays where Clinica wrote it; the dataset links to it.
    let clinica = p.path().join("clinica_output/caps");
    std::fs::create_dir_all(&clinica).unwrap();
    std::os::unix::fs::symlink(&clinica, caps.join("CAPS")).unwrap();
    for (i, (pid, _, _)) in SUBJECTS.iter().enumerate() {
        let v = volume(i);
        // One subject as t1-volume's segmentation output (uncompressed), the
        // others as its DARTEL-to-MNI maps (gzipped): both are Clinica's.
        let nii = if i == 1 {
            caps.join(format!(
                "CAPS/subjects/{pid}/ses-M00/t1/spm/segmentation/normalized_space/\
                 {pid}_ses-M00_T1w{GM_MAP_SUFFIX}.nii"
            ))
        } else {
            dartel_map(&caps, pid)
        };
        write(&nii, &nifti_f32(&v, NIFTI_GRID.dims, LAS));
        let pt_path = lab.join(format!(
            "CAPS/subjects/{pid}/ses-M00/deeplearning_prepare_data/image_based/custom/\
             {pid}_ses-M00_T1w{GM_MAP_SUFFIX}.pt"
        ));
        std::fs::create_dir_all(pt_path.parent().unwrap()).unwrap();
        pt::write_f32(&pt_path, &IMAGE_SHAPE, &v).unwrap();
    }
    p.write(
        "p.yaml",
        "name: caps\nstages:\n\
         \x20 caps: {op: fetch, params: {path: caps_ds}}\n\
         \x20 lab: {op: fetch, params: {path: lab_ds}}\n\
         \x20 crop_caps: {op: crop, needs: [caps], params: {region: right_hc, shift: 2}}\n\
         \x20 crop_lab: {op: crop, needs: [lab], params: {region: right_hc, shift: 2}}\n\
         \x20 report_caps: {op: report, needs: [caps], params: {subject: sub-OASIS10002}}\n\
         \x20 report_lab: {op: report, needs: [lab], params: {subject: sub-OASIS10002}}\n",
    );
    let r = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(r.status_of("crop_caps"), "ran");
    let (a, b) = (
        stage_dir(&p, "p.yaml", "crop_caps"),
        stage_dir(&p, "p.yaml", "crop_lab"),
    );
    for f in [
        "train.safetensors",
        "validation.safetensors",
        "train.tsv",
        "validation.tsv",
        "meta.json",
    ] {
        let (x, y) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        assert!(x == y, "{f}: the CAPS crop differs from the .pt crop");
    }
    // The report draws the same slices from the NIfTI as from the tensor.
    let (a, b) = (
        stage_dir(&p, "p.yaml", "report_caps"),
        stage_dir(&p, "p.yaml", "report_lab"),
    );
    for f in ["preprocessed.png", "crop_left.png", "crop_right.png"] {
        let (x, y) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        assert!(
            x == y,
            "{f}: the CAPS report figure differs from the .pt one"
        );
    }
    let a = stage_dir(&p, "p.yaml", "crop_caps");
    // And the patch is the lab's box of the volume: voxel (65, 50, 27) of subject 0
    // is the stored patch's (2, 2, 2) (the margin of 2).
    let bytes = std::fs::read(a.join("train.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("patches").unwrap();
    assert_eq!(t.shape(), &[2, 1, 34, 44, 34]);
    let at = ((2 * 44) + 2) * 34 + 2;
    let got = f32::from_le_bytes(t.data()[at * 4..at * 4 + 4].try_into().unwrap());
    assert_eq!(got, volume(0)[(65 * 145 + 50) * 121 + 27]);
}

/// A one-subject CAPS dataset whose NIfTI is `bytes` (at `name`, relative to
/// the session folder), run through fetch → crop: the failed run's stderr.
fn failing_crop(bytes: &[u8], name: Option<&str>, cut: bool) -> String {
    let p = Project::new();
    let ds = p.path().join("ds");
    let one = [SUBJECTS[0]];
    tables(&ds, &one);
    let path = match name {
        Some(rel) => ds.join("CAPS/subjects/sub-OASIS10001/ses-M00").join(rel),
        None => dartel_map(&ds, "sub-OASIS10001"),
    };
    write(&path, bytes);
    if cut {
        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    }
    p.write(
        "p.yaml",
        "name: bad\nstages:\n  dataset: {op: fetch, params: {path: ds}}\n  \
         crop_left: {op: crop, needs: [dataset], params: {region: left_hc}}\n",
    );
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(
        r.code, 1,
        "a bad image fails the run (stage failed):\n{}",
        r.stderr
    );
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        r.stderr.contains("crop_left")
            && r.stderr.contains("subject sub-OASIS10001 ses-M00")
            && r.stderr.contains(&file),
        "the error names the stage, the subject and the file:\n{}",
        r.stderr
    );
    r.stderr
}

#[test]
fn bad_caps_images_fail_the_crop_naming_subject_file_and_fault() {
    let flat = vec![0.25f32; NIFTI_GRID.dims.iter().product()];
    // Flipped left-right (RAS, as FSL's or a re-oriented export would be).
    let mut ras = LAS;
    ras[0] = [1.5, 0.0, 0.0, -90.0];
    let e = failing_crop(&nifti_f32(&flat, NIFTI_GRID.dims, ras), None, false);
    assert!(
        e.contains("has orientation RAS") && e.contains("orientation LAS"),
        "{e}"
    );
    // Wrong shape.
    let small = vec![0.25f32; 40 * 50 * 40];
    let e = failing_crop(&nifti_f32(&small, [40, 50, 40], LAS), None, false);
    assert!(
        e.contains("has shape 40×50×40") && e.contains("121×145×121"),
        "{e}"
    );
    // A t1-linear image (169×208×179, 1 mm): found, and refused for its grid.
    let linear = vec![0u8; 169 * 208 * 179];
    let mut one_mm = LAS;
    (one_mm[0][0], one_mm[1][1], one_mm[2][2]) = (-1.0, 1.0, 1.0);
    let mut t1 = nifti_bytes(&[169, 208, 179], 2, 8, one_mm, &linear);
    for i in 0..3 {
        t1[80 + 4 * i..84 + 4 * i].copy_from_slice(&1.0f32.to_le_bytes());
    }
    let e = failing_crop(
        &t1,
        Some("t1_linear/sub-OASIS10001_ses-M00_T1w_space-MNI152NLin2009cSym_desc-Crop_res-1x1x1_T1w.nii.gz"),
        false,
    );
    assert!(
        e.contains("t1-linear") && e.contains("has shape 169×208×179") && e.contains("t1-volume"),
        "{e}"
    );
    // RGB voxels.
    let rgb = nifti_bytes(&[121, 145, 121], 128, 24, LAS, &vec![0u8; flat.len() * 3]);
    let e = failing_crop(&rgb, None, false);
    assert!(
        e.contains("datatype 128 (Rgb24)") && e.contains("real voxel values"),
        "{e}"
    );
    // Truncated download / copy.
    let e = failing_crop(&nifti_f32(&flat, NIFTI_GRID.dims, LAS), None, true);
    assert!(e.contains("truncated or corrupt"), "{e}");
}

/// The one real OASIS-1 image: a raw T1 (FreeSurfer-conformed sagittal grid),
/// not a t1-volume map. Its header says so, and crop refuses it for its shape,
/// voxel size and orientation rather than cropping the wrong voxels.
#[test]
fn the_real_oasis_t1_is_read_and_refused_as_not_on_the_crop_grid() {
    let real = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/oasis1/raw/sub-OASIS10019_ses-M00_T1w.nii.gz");
    if !real.exists() {
        eprintln!(
            "SKIPPED: {} is not there (shared/ data absent)",
            real.display()
        );
        return;
    }
    let h = nifti::read_header(&real).unwrap();
    assert_eq!(h.dims, [256, 256, 160]);
    assert_eq!(h.voxel_size, [1.0, 1.0, 1.0]);
    assert_eq!(h.datatype, (4, Some(::nifti::NiftiType::Int16)));
    assert_eq!(nifti::axis_codes(&h.affine.unwrap()), "ASL");
    // Copied as is (already gzipped) to where a t1-volume map would be.
    let p = Project::new();
    let ds = p.path().join("ds");
    tables(&ds, &[("sub-OASIS10019", "CN", "train")]);
    let dest = dartel_map(&ds, "sub-OASIS10019");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(&real, &dest).unwrap();
    p.write(
        "p.yaml",
        "name: real\nstages:\n  dataset: {op: fetch, params: {path: ds}}\n  \
         crop_left: {op: crop, needs: [dataset], params: {region: left_hc}}\n",
    );
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("subject sub-OASIS10019 ses-M00")
            && r.stderr.contains("`CAPS/subjects/sub-OASIS10019/ses-M00/t1/spm/dartel/group-lab/")
            && r.stderr.contains(
                "has shape 256×256×160, voxels of 1×1×1 mm, orientation ASL (axes flipped or permuted"
            ),
        "{}",
        r.stderr
    );
}
