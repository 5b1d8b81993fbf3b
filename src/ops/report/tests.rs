//! Unit tests of the report's private parts: box outlines and the figures'
//! pixels. The sections are tested end to end in `tests/report.rs`.

use std::path::Path;

use super::figures::{self, CurvePanel, Series, SlicePanel};
use super::images::outlines;
use super::slices::Slice;

fn rgb(path: &Path) -> image::RgbImage {
    image::open(path).unwrap().to_rgb8()
}

#[test]
fn boxes_are_cut_or_projected_as_the_slice_plane_says() {
    // x = 60 lies between the boxes: both project onto y50:90, z27:57 of the sagittal slice.
    let sagittal = outlines(0, 60);
    assert_eq!(sagittal.len(), 1);
    assert_eq!(sagittal[0].label, "left HC + right HC");
    assert_eq!((sagittal[0].h, sagittal[0].v), ((50, 90), (27, 57)));
    assert!(!sagittal[0].cut);
    // y = 72 cuts both boxes of the coronal slice, side by side in x.
    let coronal = outlines(1, 72);
    assert_eq!(coronal.len(), 2);
    assert!(coronal.iter().all(|o| o.cut));
    assert_eq!((coronal[0].h, coronal[0].v), ((25, 55), (27, 57)));
    assert_eq!((coronal[1].h, coronal[1].v), ((65, 95), (27, 57)));
    // z = 40 cuts them in the axial slice; z = 60 does not.
    assert!(outlines(2, 40).iter().all(|o| o.cut));
    assert!(outlines(2, 60).iter().all(|o| !o.cut));
    assert_eq!(outlines(2, 60)[1].h, (65, 95));
}

#[test]
fn a_slice_is_drawn_in_grey_with_origin_lower_and_its_box() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.png");
    // s[a, b] = b: rows get brighter upwards when shown as imshow(s.T, origin="lower").
    let (n0, n1) = (40usize, 64usize);
    let values = (0..n0 * n1).map(|i| (i % n1) as f32).collect();
    let panel = SlicePanel {
        slice: Slice::new((n0, n1), values).unwrap(),
        caption: "x = 1".into(),
        h_label: "y (voxel)".into(),
        v_label: "z (voxel)".into(),
        outlines: outlines(1, 72),
    };
    figures::slice_row(&path, "title", &[panel.clone(), panel], 128).unwrap();
    let img = rgb(&path);
    assert!(img.width() > 2 * 80 && img.height() > 128);
    // Find a column of pure greys and check it darkens downwards.
    let greys = |x: u32| -> Vec<u8> {
        (0..img.height())
            .map(|y| img.get_pixel(x, y).0)
            .filter(|p| p[0] == p[1] && p[1] == p[2])
            .map(|p| p[0])
            .collect()
    };
    let levels: std::collections::BTreeSet<u8> = (0..img.width()).flat_map(greys).collect();
    assert!(levels.len() > 50, "only {} grey levels", levels.len());
    let mid = (0..img.width())
        .find(|&x| {
            let g = greys(x);
            g.contains(&0) && g.iter().any(|&v| v > 240 && v < 255)
        })
        .expect("a column crossing the whole gradient");
    let column: Vec<(u32, u8)> = (0..img.height())
        .map(|y| (y, img.get_pixel(mid, y).0))
        .filter(|(_, p)| p[0] == p[1] && p[1] == p[2] && p[0] < 255)
        .map(|(y, p)| (y, p[0]))
        .collect();
    let top = column.iter().find(|(_, g)| *g > 200).map(|c| c.0).unwrap();
    let bottom = column
        .iter()
        .rev()
        .find(|(_, g)| *g < 30)
        .map(|c| c.0)
        .unwrap();
    assert!(
        top < bottom,
        "bright (b high) must be above dark (b low): {top} vs {bottom}"
    );
    // The crop boxes' colours (tab10 orange and cyan) are there.
    let has = |c: RGBColorLike| img.pixels().any(|p| p.0 == c);
    assert!(has([0xff, 0x7f, 0x0e]) && has([0x17, 0xbe, 0xcf]));
}

type RGBColorLike = [u8; 3];

#[test]
fn curves_and_scatter_draw_every_series_in_its_colour() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.png");
    let s = |label: &str, k: f64| Series {
        label: label.into(),
        points: (0..10).map(|e| (e as f64, k / (1.0 + e as f64))).collect(),
    };
    let panel = CurvePanel {
        caption: "loss".into(),
        x_label: "epoch".into(),
        y_label: "loss".into(),
        series: vec![
            s("a", 1.0),
            s("b", 2.0),
            Series {
                label: "nan".into(),
                points: vec![(0.0, f64::NAN)],
            },
        ],
    };
    figures::curves(&path, "t", &[panel.clone(), panel]).unwrap();
    let img = rgb(&path);
    assert_eq!((img.width(), img.height()), (880, 340));
    let count = |c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count();
    assert!(count([0x1f, 0x77, 0xb4]) > 100 && count([0xff, 0x7f, 0x0e]) > 100);

    let path = dir.path().join("s.png");
    figures::scatter(
        &path,
        "t",
        "age",
        "MMS",
        &[s("cluster 0", 30.0), s("cluster 1", 20.0)],
    )
    .unwrap();
    let img = rgb(&path);
    let count = |c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count();
    assert!(count([0x1f, 0x77, 0xb4]) > 100 && count([0xff, 0x7f, 0x0e]) > 100);
    // A constant or empty series still gets axes instead of a zero-width range.
    figures::scatter(
        &path,
        "t",
        "age",
        "MMS",
        &[Series {
            label: "x".into(),
            points: vec![(1.0, 1.0)],
        }],
    )
    .unwrap();
    figures::scatter(&path, "t", "age", "MMS", &[]).unwrap();
}

#[test]
fn a_figure_into_a_missing_folder_fails_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/c.png");
    let panel = CurvePanel {
        caption: "loss".into(),
        x_label: "epoch".into(),
        y_label: "loss".into(),
        series: vec![],
    };
    let msg = figures::curves(&path, "t", &[panel]).unwrap_err();
    assert!(msg.contains("no/such/dir/c.png"), "{msg}");
}
