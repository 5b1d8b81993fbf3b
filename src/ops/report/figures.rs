//! The report's PNG figures, drawn with plotters' bitmap backend: rows of
//! grey-scale slices with crop-box outlines, per-epoch curves and a scatter
//! plot, every axis labelled.
//!
//! Text is rasterised by plotters' `ab_glyph` feature from DejaVu Sans,
//! shipped in `assets/fonts` and compiled in, so figures do not depend on the
//! fonts a machine happens to have (plotters' `ttf` feature would search the
//! system through font-kit and fontconfig) and are the same bytes everywhere.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::slices::Slice;

/// DejaVu Sans (Bitstream Vera licence: `assets/fonts/DejaVuSans.LICENSE`).
static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// matplotlib's `tab10` colours, so clusters and series look as in the lab.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

pub fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Registers the shipped font with plotters once per process.
fn font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .map_err(|_| "the shipped font assets/fonts/DejaVuSans.ttf is not a valid TrueType font; restore it from git".to_string())
    })
    .clone()
}

/// A crop box drawn over a slice, in the slice's (horizontal, vertical)
/// voxel coordinates, half-open like the lab's Python slices.
#[derive(Debug, Clone)]
pub struct Outline {
    pub label: String,
    pub h: (usize, usize),
    pub v: (usize, usize),
    pub colour: RGBColor,
    /// Whether the slice plane passes through the box (drawn solid and
    /// thick) or the box is only projected onto it (thin).
    pub cut: bool,
}

/// One panel of a slice row.
#[derive(Debug, Clone)]
pub struct SlicePanel {
    pub slice: Slice,
    pub caption: String,
    pub h_label: String,
    pub v_label: String,
    pub outlines: Vec<Outline>,
}

/// Margins around each panel's image, in pixels.
const Y_AREA: u32 = 48;
const X_AREA: u32 = 40;
const CAPTION: u32 = 26;
const PAD: u32 = 8;
const TITLE: u32 = 32;

fn fail(path: &Path, e: impl std::fmt::Display) -> String {
    format!("drawing {}: {e}", path.display())
}

/// Draws `panels` side by side under `title` into the PNG at `path`, each
/// slice as `imshow(s.T, cmap="gray", origin="lower")` with square voxels,
/// grey levels spanning that slice's own finite range.
pub fn slice_row(
    path: &Path,
    title: &str,
    panels: &[SlicePanel],
    height: u32,
) -> Result<(), String> {
    font()?;
    let tallest = panels
        .iter()
        .map(|p| p.slice.shape.1)
        .max()
        .unwrap_or(1)
        .max(1);
    let scale = f64::from(height) / tallest as f64;
    let widths: Vec<u32> = panels
        .iter()
        .map(|p| (p.slice.shape.0 as f64 * scale).ceil() as u32 + Y_AREA + 2 * PAD)
        .collect();
    let width = widths.iter().sum::<u32>().max(200);
    let total_height = TITLE + CAPTION + height + X_AREA + 2 * PAD;
    let root = BitMapBackend::new(path, (width, total_height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(path, e))?;
    let body = root
        .titled(title, (FAMILY, 20))
        .map_err(|e| fail(path, e))?;
    let mut rest = body;
    for (panel, w) in panels.iter().zip(&widths) {
        let (area, right) = rest.split_horizontally(*w);
        draw_slice(&area, panel, scale).map_err(|e| fail(path, e))?;
        rest = right;
    }
    root.present().map_err(|e| fail(path, e))
}

fn draw_slice<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &SlicePanel,
    scale: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (n0, n1) = panel.slice.shape;
    let plot_h = (n1 as f64 * scale).round() as u32;
    // The area is taller than this slice when a neighbour is taller: keep
    // the voxels square by leaving the extra height empty at the bottom.
    let (_, area_h) = area.dim_in_pixel();
    let used = (CAPTION + plot_h + X_AREA + 2 * PAD).min(area_h);
    let (area, _) = area.split_vertically(used);
    let mut chart = ChartBuilder::on(&area)
        .caption(&panel.caption, (FAMILY, 14))
        .margin(PAD)
        .x_label_area_size(X_AREA)
        .y_label_area_size(Y_AREA)
        .build_cartesian_2d(0f64..n0 as f64, 0f64..n1 as f64)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(panel.h_label.as_str())
        .y_desc(panel.v_label.as_str())
        .x_labels(5)
        .y_labels(5)
        .x_label_formatter(&ticks(0.0, n0 as f64))
        .y_label_formatter(&ticks(0.0, n1 as f64))
        .label_style((FAMILY, 11))
        .axis_desc_style((FAMILY, 13))
        .draw()?;
    let (lo, hi) = panel.slice.range().unwrap_or((0.0, 0.0));
    let span = hi - lo;
    let grey = |v: f32| {
        let g = if v.is_finite() && span > 0.0 {
            ((v - lo) / span * 255.0).round().clamp(0.0, 255.0) as u8
        } else {
            0
        };
        RGBColor(g, g, g)
    };
    let slice = &panel.slice;
    chart.draw_series((0..n0).flat_map(|a| {
        (0..n1).map(move |b| {
            let v = slice.get(a, b).unwrap_or(f32::NAN);
            Rectangle::new(
                [(a as f64, b as f64), ((a + 1) as f64, (b + 1) as f64)],
                grey(v).filled(),
            )
        })
    }))?;
    for o in &panel.outlines {
        let style = o.colour.stroke_width(if o.cut { 2 } else { 1 });
        chart.draw_series(std::iter::once(Rectangle::new(
            [(o.h.0 as f64, o.v.0 as f64), (o.h.1 as f64, o.v.1 as f64)],
            style,
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            o.label.clone(),
            (o.h.0 as f64 + 1.0, o.v.1 as f64 + 1.0),
            (FAMILY, 12).into_font().color(&o.colour),
        )))?;
    }
    Ok(())
}

/// One line of a curve chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// One panel of a curve figure.
#[derive(Debug, Clone)]
pub struct CurvePanel {
    pub caption: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// Tick labels with as many decimals as the axis' span needs: plotters'
/// default prints voxel indices and epochs as `50.0`.
fn ticks(lo: f64, hi: f64) -> impl Fn(&f64) -> String {
    let step = (hi - lo).abs() / 5.0;
    let decimals = if step > 0.0 && step.is_finite() {
        (-step.log10().floor()).clamp(0.0, 6.0) as usize
    } else {
        0
    };
    move |v: &f64| format!("{v:.decimals$}")
}

/// A tick's label on an axis of whole numbers: the number at a whole tick,
/// nothing between two.
fn whole_ticks(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        String::new()
    }
}

/// The finite span of `values`, widened so a flat or single value still
/// gets a visible axis.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.5
    };
    (lo - pad, hi + pad)
}

/// Line charts side by side (e.g. loss and balanced accuracy per epoch);
/// non-finite points are left out; a legend appears when a panel has more
/// than one series.
pub fn curves(path: &Path, title: &str, panels: &[CurvePanel]) -> Result<(), String> {
    font()?;
    let panel_w = 440u32;
    let width = panel_w * panels.len().max(1) as u32;
    let root = BitMapBackend::new(path, (width, 340)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(path, e))?;
    let body = root
        .titled(title, (FAMILY, 20))
        .map_err(|e| fail(path, e))?;
    let areas = body.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(&areas) {
        draw_curves(area, panel).map_err(|e| fail(path, e))?;
    }
    root.present().map_err(|e| fail(path, e))
}

fn draw_curves<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &CurvePanel,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let all = || panel.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = span(all().map(|p| p.0));
    let (y0, y1) = span(all().map(|p| p.1));
    // Epochs are whole numbers: label only whole ticks (plotters may put
    // ticks at halves, which rounded would read 0 0 1 2 2 3).
    let whole_x = all().all(|p| p.0.fract() == 0.0);
    let x_ticks: Box<dyn Fn(&f64) -> String> = if whole_x {
        Box::new(whole_ticks)
    } else {
        Box::new(ticks(x0, x1))
    };
    let x_count = if whole_x {
        ((x1 - x0).floor().max(0.0) as usize + 1).clamp(2, 10)
    } else {
        10
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.caption, (FAMILY, 15))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .x_labels(x_count)
        .x_label_formatter(&x_ticks)
        .y_label_formatter(&ticks(y0, y1))
        .label_style((FAMILY, 11))
        .axis_desc_style((FAMILY, 13))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, s) in panel.series.iter().enumerate() {
        let c = colour(i);
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 2, c.filled())))?;
    }
    if panel.series.len() > 1 {
        chart
            .configure_series_labels()
            .label_font((FAMILY, 11))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    Ok(())
}

/// A scatter plot of labelled groups (the lab's age vs MMS by cluster).
pub fn scatter(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    groups: &[Series],
) -> Result<(), String> {
    font()?;
    let root = BitMapBackend::new(path, (560, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(path, e))?;
    let draw = || -> Result<(), DrawingAreaErrorKind<_>> {
        let all = || groups.iter().flat_map(|g| g.points.iter());
        let (x0, x1) = span(all().map(|p| p.0));
        let (y0, y1) = span(all().map(|p| p.1));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&ticks(x0, x1))
            .y_label_formatter(&ticks(y0, y1))
            .label_style((FAMILY, 11))
            .axis_desc_style((FAMILY, 13))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (i, g) in groups.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(
                    g.points
                        .iter()
                        .filter(|(x, y)| x.is_finite() && y.is_finite())
                        .map(|&p| Circle::new(p, 4, c.filled())),
                )?
                .label(g.label.clone())
                .legend(move |(x, y)| Circle::new((x + 6, y), 4, c.filled()));
        }
        chart
            .configure_series_labels()
            .label_font((FAMILY, 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .position(SeriesLabelPosition::LowerLeft)
            .draw()?;
        Ok(())
    };
    draw().map_err(|e| fail(path, e))?;
    root.present().map_err(|e| fail(path, e))
}

/// One category of a strip plot: its name, its points (each with the group that colours it)
/// and the mean ± SD drawn over them.
#[derive(Debug, Clone)]
pub struct Strip {
    pub label: String,
    /// (group index, value); a group is a legend entry (`fold 0`).
    pub points: Vec<(usize, f64)>,
    pub mean: f64,
    pub sd: Option<f64>,
}

/// A strip plot: each category's points spread side by side in its column (in the order
/// given, so the picture is the same bytes every time), coloured by group, with a black bar at
/// the mean and whiskers at ± SD.
pub fn strips(
    path: &Path,
    title: &str,
    y_label: &str,
    strips: &[Strip],
    groups: &[String],
) -> Result<(), String> {
    font()?;
    let width = (160 * strips.len() as u32).clamp(480, 1400);
    let root = BitMapBackend::new(path, (width, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(path, e))?;
    let draw = || -> Result<(), DrawingAreaErrorKind<_>> {
        let all = strips.iter().flat_map(|s| {
            let whiskers = s.sd.map(|sd| [s.mean - sd, s.mean + sd]);
            s.points
                .iter()
                .map(|p| p.1)
                .chain(whiskers.into_iter().flatten())
        });
        let (y0, y1) = span(all);
        let n = strips.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.5f64..n as f64 - 0.5, y0..y1)?;
        // Ticks at every half step at most, so each column's centre (an integer) has one.
        let names = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-9 && i >= 0.0 {
                strips
                    .get(i as usize)
                    .map(|s| s.label.clone())
                    .unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(2 * n + 1)
            .x_label_formatter(&names)
            .y_desc(y_label)
            .y_label_formatter(&ticks(y0, y1))
            .label_style((FAMILY, 12))
            .axis_desc_style((FAMILY, 13))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (g, name) in groups.iter().enumerate() {
            let c = colour(g);
            let points: Vec<(f64, f64)> = strips
                .iter()
                .enumerate()
                .flat_map(|(i, s)| {
                    let k = s.points.len().max(1) as f64;
                    s.points
                        .iter()
                        .enumerate()
                        .filter(move |(_, p)| p.0 == g && p.1.is_finite())
                        .map(move |(j, p)| (i as f64 - 0.3 + 0.6 * (j as f64 + 0.5) / k, p.1))
                })
                .collect();
            chart
                .draw_series(points.into_iter().map(|p| Circle::new(p, 4, c.filled())))?
                .label(name.clone())
                .legend(move |(x, y)| Circle::new((x + 6, y), 4, c.filled()));
        }
        for (i, s) in strips.iter().enumerate() {
            let x = i as f64;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x - 0.35, s.mean), (x + 0.35, s.mean)],
                BLACK.stroke_width(2),
            )))?;
            if let Some(sd) = s.sd {
                for (a, b) in [
                    ((x, s.mean - sd), (x, s.mean + sd)),
                    ((x - 0.08, s.mean - sd), (x + 0.08, s.mean - sd)),
                    ((x - 0.08, s.mean + sd), (x + 0.08, s.mean + sd)),
                ] {
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![a, b],
                        BLACK.stroke_width(1),
                    )))?;
                }
            }
        }
        if groups.len() > 1 {
            chart
                .configure_series_labels()
                .label_font((FAMILY, 11))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .position(SeriesLabelPosition::UpperRight)
                .draw()?;
        }
        Ok(())
    };
    draw().map_err(|e| fail(path, e))?;
    root.present().map_err(|e| fail(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_number_axes_label_whole_ticks_once() {
        let labels: Vec<String> = [0.0, 0.5, 1.0, 1.5, 2.0, 4.0]
            .iter()
            .map(whole_ticks)
            .collect();
        assert_eq!(labels, ["0", "", "1", "", "2", "4"]);
    }
}
