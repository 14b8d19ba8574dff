//! PNG charts with `plotters` (bitmap backend, no system font library).
//!
//! Text goes through plotters' `ab_glyph` feature, which needs a TrueType
//! file registered at run time: `--font PATH`, else the first of
//! [`FONT_CANDIDATES`] that exists (Debian: `fonts-dejavu-core`). Without
//! one the chart is still drawn — lines, axes and markers, no text — and
//! the run says so.

use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::{Path, PathBuf};

/// Where a sans-serif TrueType font usually is (Debian/Ubuntu packages
/// `fonts-dejavu-core`, `fonts-liberation`, `fonts-freefont-ttf`; Fedora/Arch paths).
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

const FAMILY: &str = "sans-serif";

/// Registers a font for chart text; returns the file used, or `None`
/// (charts are then drawn without text).
pub fn init_font(explicit: Option<&Path>) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(path) => vec![path.to_path_buf()],
        None => FONT_CANDIDATES.iter().map(PathBuf::from).collect(),
    };
    for path in candidates {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        // plotters keeps registered fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        if plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok() {
            return Some(path);
        }
    }
    None
}

/// One line of a panel.
#[derive(Debug, Clone)]
pub struct Line {
    /// Legend text.
    pub label: String,
    /// Colour.
    pub color: RGBColor,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
}

/// A vertical marker across both panels.
#[derive(Debug, Clone)]
pub struct Marker {
    /// Short label drawn at the top.
    pub label: String,
    /// Where, on the x axis.
    pub x: f64,
    /// Colour.
    pub color: RGBColor,
}

/// A two-panel timeline: `top` lines on a linear axis, `bottom` lines on a
/// log axis, shared x axis, vertical markers on both.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Chart title.
    pub title: String,
    /// x axis label.
    pub x_label: String,
    /// x range.
    pub x_max: f64,
    /// Top panel y label and lines.
    pub top_label: String,
    /// Lines of the top panel.
    pub top: Vec<Line>,
    /// Bottom panel y label (log scale).
    pub bottom_label: String,
    /// Lines of the bottom panel.
    pub bottom: Vec<Line>,
    /// Vertical markers.
    pub markers: Vec<Marker>,
}

fn err(e: impl std::fmt::Display) -> String {
    format!("drawing the chart: {e}")
}

/// A text-free frame: the border, a vertical line every 5 x units and
/// horizontal lines at 5 even steps (linear) or every power of 10 (log).
fn frame<'a, DB, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    x_max: f64,
    y_min: f64,
    y_max: f64,
    log: bool,
) -> Result<(), String>
where
    DB: DrawingBackend + 'a,
    Y: Ranged<ValueType = f64>,
{
    let grid = RGBColor(220, 220, 220);
    let mut lines: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut x = 5.0;
    while x < x_max {
        lines.push(vec![(x, y_min), (x, y_max)]);
        x += 5.0;
    }
    if log {
        let mut y = 1.0;
        while y < y_max {
            lines.push(vec![(0.0, y), (x_max, y)]);
            y *= 10.0;
        }
    } else {
        for k in 1..5 {
            let y = y_min + (y_max - y_min) * f64::from(k) / 5.0;
            lines.push(vec![(0.0, y), (x_max, y)]);
        }
    }
    chart
        .draw_series(lines.into_iter().map(|l| PathElement::new(l, grid)))
        .map_err(err)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![
                (0.0, y_min),
                (x_max, y_min),
                (x_max, y_max),
                (0.0, y_max),
                (0.0, y_min),
            ],
            BLACK,
        )))
        .map_err(err)?;
    Ok(())
}

/// Renders `timeline` to a PNG file. `text`: whether a font is registered.
pub fn render(path: &Path, timeline: &Timeline, text: bool) -> Result<(), String> {
    let root = BitMapBackend::new(path, (1400, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = if text {
        root.titled(&timeline.title, (FAMILY, 24)).map_err(err)?
    } else {
        root
    };
    let (upper, lower) = root.split_vertically((58).percent());

    let top_max = timeline
        .top
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.5;
    let mut chart = ChartBuilder::on(&upper)
        .margin(12)
        .x_label_area_size(if text { 30 } else { 4 })
        .y_label_area_size(if text { 70 } else { 4 })
        .build_cartesian_2d(0f64..timeline.x_max, 0f64..top_max)
        .map_err(err)?;
    if text {
        chart
            .configure_mesh()
            .y_desc(timeline.top_label.as_str())
            .label_style((FAMILY, 14))
            .draw()
            .map_err(err)?;
    } else {
        // plotters' mesh always writes tick labels: draw a plain frame and
        // grid instead, so nothing needs a font.
        frame(&mut chart, timeline.x_max, 0.0, top_max, false)?;
    }
    for line in &timeline.top {
        let color = line.color;
        let series = chart
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(err)?;
        if text {
            series.label(line.label.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        }
    }
    for marker in &timeline.markers {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(marker.x, 0.0), (marker.x, top_max)],
                marker.color.stroke_width(2),
            )))
            .map_err(err)?;
        if text {
            chart
                .draw_series(std::iter::once(Text::new(
                    marker.label.clone(),
                    (marker.x + timeline.x_max * 0.004, top_max * 0.97),
                    (FAMILY, 15).into_font().color(&marker.color),
                )))
                .map_err(err)?;
        }
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 14))
            .draw()
            .map_err(err)?;
    }

    let bottom_max = timeline
        .bottom
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(10.0f64, f64::max)
        * 2.0;
    let mut chart = ChartBuilder::on(&lower)
        .margin(12)
        .x_label_area_size(if text { 40 } else { 4 })
        .y_label_area_size(if text { 70 } else { 4 })
        .build_cartesian_2d(0f64..timeline.x_max, (0.1f64..bottom_max).log_scale())
        .map_err(err)?;
    if text {
        chart
            .configure_mesh()
            .y_desc(timeline.bottom_label.as_str())
            .x_desc(timeline.x_label.as_str())
            .label_style((FAMILY, 14))
            .draw()
            .map_err(err)?;
    } else {
        frame(&mut chart, timeline.x_max, 0.1, bottom_max, true)?;
    }
    for line in &timeline.bottom {
        let color = line.color;
        let series = chart
            .draw_series(LineSeries::new(
                line.points.iter().copied().filter(|p| p.1 > 0.0),
                color.stroke_width(2),
            ))
            .map_err(err)?;
        if text {
            series.label(line.label.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        }
    }
    for marker in &timeline.markers {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(marker.x, 0.1), (marker.x, bottom_max)],
                marker.color.stroke_width(2),
            )))
            .map_err(err)?;
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 14))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline() -> Timeline {
        let wave = |f: fn(f64) -> f64| {
            (0..600)
                .map(|i| (i as f64 / 10.0, f(i as f64 / 10.0)))
                .collect()
        };
        Timeline {
            title: "test".into(),
            x_label: "seconds".into(),
            x_max: 60.0,
            top_label: "calls/s".into(),
            top: vec![
                Line {
                    label: "a".into(),
                    color: RGBColor(31, 119, 180),
                    points: wave(|t| {
                        if (15.0..45.0).contains(&t) {
                            0.0
                        } else {
                            160.0
                        }
                    }),
                },
                Line {
                    label: "b".into(),
                    color: RGBColor(255, 127, 14),
                    points: wave(|t| {
                        if (15.0..45.0).contains(&t) {
                            160.0
                        } else {
                            0.0
                        }
                    }),
                },
            ],
            bottom_label: "p99 ms".into(),
            bottom: vec![Line {
                label: "p99".into(),
                color: RGBColor(148, 103, 189),
                points: wave(|t| {
                    if (15.0..16.5).contains(&t) {
                        1200.0
                    } else {
                        4.0
                    }
                }),
            }],
            markers: vec![Marker {
                label: "kill".into(),
                x: 15.0,
                color: RGBColor(214, 39, 40),
            }],
        }
    }

    #[test]
    fn renders_without_a_font() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.png");
        render(&path, &timeline(), false).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 1000);
    }

    #[test]
    fn renders_with_a_font_when_one_is_installed() {
        if init_font(None).is_none() {
            eprintln!("no font installed: skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("text.png");
        render(&path, &timeline(), true).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 1000);
    }
}
