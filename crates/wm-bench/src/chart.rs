//! Charts of a run, drawn with plotters as SVG and PNG (no network, no system
//! font lookup: the PNG text uses one TrueType file registered at start):
//! requests/s and p50/p95/p99 against users (one picture per endpoint and
//! one for the mix), and the time series of requests/s, p99, users,
//! consumer lag and freshness (record → commit p99) over the run.

use std::{
    ops::Range,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use plotters::{
    coord::Shift,
    prelude::*,
    style::{FontStyle, register_font},
};

use crate::{error::BenchError, report::TimePoint};

/// Size of every picture, pixels.
const SIZE: (u32, u32) = (1200, 800);
const FONT: &str = "sans-serif";

/// The usual DejaVu location on Debian and Ubuntu.
pub(crate) const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

static REGISTERED: OnceLock<()> = OnceLock::new();

/// Registers the TrueType file used for all text (once per process).
pub(crate) fn load_font(path: &Path) -> Result<(), BenchError> {
    if REGISTERED.get().is_some() {
        return Ok(());
    }
    let font_error = |detail: String| BenchError::Font {
        path: path.to_owned(),
        detail,
    };
    let bytes = std::fs::read(path).map_err(|e| font_error(e.to_string()))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font(FONT, FontStyle::Normal, bytes)
        .map_err(|_| font_error("not a TrueType font".into()))?;
    let _ = REGISTERED.set(());
    Ok(())
}

/// One sweep: a figure per step, against users or target rate.
#[derive(Debug, Clone)]
pub(crate) struct Sweep<'a> {
    pub(crate) title: String,
    pub(crate) x_label: &'a str,
    pub(crate) x: Vec<f64>,
    pub(crate) per_second: Vec<f64>,
    pub(crate) p50: Vec<f64>,
    pub(crate) p95: Vec<f64>,
    pub(crate) p99: Vec<f64>,
}

type Drawn = Result<(), String>;

/// A time-series panel: its name, colour and value of a point.
type Panel = (&'static str, RGBColor, fn(&TimePoint) -> f64);

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Writes `stem.svg` and `stem.png`; returns both paths.
fn both(
    stem: &Path,
    draw_svg: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Drawn,
    draw_png: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Drawn,
) -> Result<Vec<PathBuf>, BenchError> {
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    let fail = |path: &Path| {
        let path = path.to_owned();
        move |detail| BenchError::Chart { path, detail }
    };
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        draw_svg(&root)
            .and_then(|()| root.present().map_err(err))
            .map_err(fail(&svg))?;
    }
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        draw_png(&root)
            .and_then(|()| root.present().map_err(err))
            .map_err(fail(&png))?;
    }
    Ok(vec![svg, png])
}

/// `stem.{svg,png}`: requests/s (top) and latency percentiles (bottom).
pub(crate) fn sweep(stem: &Path, data: &Sweep<'_>) -> Result<Vec<PathBuf>, BenchError> {
    both(
        stem,
        |root| draw_sweep(root, data),
        |root| draw_sweep(root, data),
    )
}

/// `stem.{svg,png}`: the run over time.
pub(crate) fn timeline(
    stem: &Path,
    title: &str,
    points: &[TimePoint],
) -> Result<Vec<PathBuf>, BenchError> {
    both(
        stem,
        |root| draw_timeline(root, title, points),
        |root| draw_timeline(root, title, points),
    )
}

fn log_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 0.1..10.0;
    }
    (lo / 1.6)..(hi * 1.6)
}

/// Ticks 1, 2, 5, 10, 20, 50… inside `range`, for a logarithmic axis.
fn one_two_five(range: &Range<f64>) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(range.start.max(1e-3).log10().floor());
    while decade <= range.end {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if v >= range.start && v <= range.end {
                ticks.push(v);
            }
        }
        decade *= 10.0;
    }
    ticks
}

fn max_of(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

fn number(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn draw_sweep<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, data: &Sweep<'_>) -> Drawn {
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(&data.title, (FONT, 30)).map_err(err)?;
    let (upper, lower) = root.split_vertically(SIZE.1 * 45 / 100);
    // One slot per step, evenly spaced (the steps are roughly logarithmic),
    // labelled with the step's own value.
    let n = data.x.len().max(1);
    let x_range = -0.4..(n as f64 - 0.6);
    let x_label = |v: &f64| -> String {
        let i = v.round();
        if (v - i).abs() > 1e-6 || i < 0.0 {
            return String::new();
        }
        data.x
            .iter()
            .enumerate()
            .find(|(j, _)| *j as f64 == i)
            .map_or(String::new(), |(_, x)| number(*x))
    };
    let points = |ys: &[f64]| -> Vec<(f64, f64)> {
        ys.iter().enumerate().map(|(i, y)| (i as f64, *y)).collect()
    };
    let light = RGBColor(235, 235, 235);

    let y_max = (max_of(&data.per_second) * 1.15).max(1.0);
    let mut chart = ChartBuilder::on(&upper)
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(100)
        .build_cartesian_2d(x_range.clone(), 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(data.x_label)
        .y_desc("requests/s")
        .x_labels(n)
        .x_label_formatter(&x_label)
        .y_label_formatter(&|v| number(*v))
        .light_line_style(light)
        .label_style((FONT, 18))
        .axis_desc_style((FONT, 20))
        .draw()
        .map_err(err)?;
    let style = ShapeStyle::from(&BLUE).stroke_width(3);
    chart
        .draw_series(LineSeries::new(points(&data.per_second), style))
        .map_err(err)?
        .label("requests/s")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    chart
        .draw_series(
            points(&data.per_second)
                .into_iter()
                .map(|p| Circle::new(p, 5, BLUE.filled())),
        )
        .map_err(err)?;
    chart
        .configure_series_labels()
        .label_font((FONT, 18))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;

    let latencies = data.p50.iter().chain(&data.p95).chain(&data.p99).copied();
    let y_range = log_range(latencies);
    let ticks = one_two_five(&y_range);
    let mut chart = ChartBuilder::on(&lower)
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(100)
        .build_cartesian_2d(x_range, y_range.log_scale().with_key_points(ticks))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(data.x_label)
        .y_desc("latency, ms (log scale)")
        .x_labels(n)
        .x_label_formatter(&x_label)
        .y_label_formatter(&|v| number(*v))
        .light_line_style(light)
        .label_style((FONT, 18))
        .axis_desc_style((FONT, 20))
        .draw()
        .map_err(err)?;
    let series: [(&str, &[f64], RGBColor); 3] = [
        ("p50", &data.p50, RGBColor(0, 150, 0)),
        ("p95", &data.p95, RGBColor(230, 140, 0)),
        ("p99", &data.p99, RED),
    ];
    for (name, ys, color) in series {
        let style = ShapeStyle::from(&color).stroke_width(3);
        chart
            .draw_series(LineSeries::new(points(ys), style))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        chart
            .draw_series(
                points(ys)
                    .into_iter()
                    .map(|p| Circle::new(p, 5, color.filled())),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 18))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    Ok(())
}

fn draw_timeline<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    points: &[TimePoint],
) -> Drawn {
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, (FONT, 30)).map_err(err)?;
    let panels = root.split_evenly((5, 1));
    let x_max = points.iter().map(|p| p.second).fold(1.0, f64::max);
    let rows: [Panel; 5] = [
        ("requests/s", BLUE, |p| p.requests),
        ("p99, ms", RED, |p| p.p99_ms),
        ("users", BLACK, |p| p.users),
        ("consumer lag", RGBColor(0, 140, 0), |p| p.lag),
        ("freshness p99, ms", RGBColor(160, 0, 160), |p| {
            p.freshness_p99_ms
        }),
    ];
    for (i, (panel, (name, color, value))) in panels.iter().zip(rows).enumerate() {
        let ys: Vec<f64> = points.iter().map(value).collect();
        let y_max = (max_of(&ys) * 1.15).max(1.0);
        let last = i == 4;
        let mut chart = ChartBuilder::on(panel)
            .margin(8)
            .x_label_area_size(if last { 45 } else { 20 })
            .y_label_area_size(100)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(if last {
                "seconds since the load started"
            } else {
                ""
            })
            .y_desc(name)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| number(*v))
            .y_labels(5)
            .light_line_style(RGBColor(235, 235, 235))
            .label_style((FONT, 16))
            .axis_desc_style((FONT, 18))
            .draw()
            .map_err(err)?;
        let style = ShapeStyle::from(&color).stroke_width(2);
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| p.second).zip(ys.iter().copied()),
                style,
            ))
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_written_in_both_formats() {
        if load_font(Path::new(DEFAULT_FONT)).is_err() {
            return; // no font on this machine: covered by the run itself
        }
        let dir = std::env::temp_dir().join(format!("wm-bench-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = Sweep {
            title: "test".into(),
            x_label: "users",
            x: vec![10.0, 100.0, 1000.0],
            per_second: vec![100.0, 900.0, 950.0],
            p50: vec![1.0, 2.0, 20.0],
            p95: vec![2.0, 5.0, 50.0],
            p99: vec![3.0, 9.0, 90.0],
        };
        assert_eq!(
            one_two_five(&(0.7..60.0)),
            [1.0, 2.0, 5.0, 10.0, 20.0, 50.0]
        );
        let written = sweep(&dir.join("mix"), &data).unwrap();
        let points: Vec<TimePoint> = (0..10)
            .map(|s| TimePoint {
                second: f64::from(s),
                requests: 100.0,
                p99_ms: 2.0,
                errors: 0,
                users: 10.0,
                lag: 5.0,
                freshness_p99_ms: 20.0,
            })
            .collect();
        let more = timeline(&dir.join("timeline"), "t", &points).unwrap();
        for path in written.iter().chain(&more) {
            assert!(std::fs::metadata(path).unwrap().len() > 1000, "{path:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
