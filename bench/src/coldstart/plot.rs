//! PNG and SVG charts of a run: latency CDFs per function, and the burst
//! timeline (latency of every request, and the pool catching up).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;

use super::daemon::Burst;
use super::report::Report;
use super::series::{Series, Start};

/// The fonts tried, in order (Debian's fonts-dejavu-core first).
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Chart size in pixels.
const SIZE: (u32, u32) = (1400, 800);

/// Loads a TrueType font for the charts' text; plotters draws text with
/// ab_glyph, which needs the font's bytes for the whole program's life.
fn register_font() -> Result<()> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let path = FONT_CANDIDATES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .ok_or("no TrueType font found (install Debian's fonts-dejavu-core)")?;
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            plotters::style::register_font(
                "sans-serif",
                FontStyle::Normal,
                Box::leak(bytes.into_boxed_slice()),
            )
            .map_err(|_| format!("{} is not a usable font", path.display()))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Writes `latency-cdf.{png,svg}` and, with a burst, `burst.{png,svg}`
/// into `dir`; returns the files written.
pub fn write(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    register_font()?;
    let mut files = Vec::new();
    let functions = functions(&report.series);
    if !functions.is_empty() {
        let png = dir.join("latency-cdf.png");
        let svg = dir.join("latency-cdf.svg");
        cdf(
            BitMapBackend::new(&png, SIZE).into_drawing_area(),
            &report.series,
            &functions,
        )?;
        cdf(
            SVGBackend::new(&svg, SIZE).into_drawing_area(),
            &report.series,
            &functions,
        )?;
        files.extend([png, svg]);
    }
    if let Some(burst) = &report.burst {
        let png = dir.join("burst.png");
        let svg = dir.join("burst.svg");
        timeline(BitMapBackend::new(&png, SIZE).into_drawing_area(), burst)?;
        timeline(SVGBackend::new(&svg, SIZE).into_drawing_area(), burst)?;
        files.extend([png, svg]);
    }
    Ok(files)
}

/// The functions the series cover, in order of appearance.
fn functions(series: &[Series]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for s in series {
        if s.summary().is_some() && !names.contains(&s.function) {
            names.push(s.function.clone());
        }
    }
    names
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}

/// Draws the series' legend at `position`.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(plot_err)
}

/// Successful latencies of `s` in ms, sorted, with their cumulative
/// fraction.
fn cdf_points(s: &Series) -> Vec<(f64, f64)> {
    let mut ms: Vec<f64> = s
        .samples
        .iter()
        .filter(|x| x.ok)
        .map(|x| x.latency_us.max(1) as f64 / 1e3)
        .collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len() as f64;
    ms.into_iter()
        .enumerate()
        .map(|(i, v)| (v, (i + 1) as f64 / n))
        .collect()
}

/// One panel per function: a CDF line per scenario, log-scale latency.
fn cdf<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    series: &[Series],
    functions: &[String],
) -> Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let panels = root.split_evenly((1, functions.len()));
    for (panel, function) in panels.iter().zip(functions) {
        let lines: Vec<(&Series, Vec<(f64, f64)>)> = series
            .iter()
            .filter(|s| &s.function == function)
            .map(|s| (s, cdf_points(s)))
            .filter(|(_, p)| !p.is_empty())
            .collect();
        let lo = lines
            .iter()
            .map(|(_, p)| p[0].0)
            .fold(f64::INFINITY, f64::min);
        let hi = lines
            .iter()
            .map(|(_, p)| p[p.len() - 1].0)
            .fold(0.0, f64::max);
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{function}: latency per invocation (CDF)"),
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), 0f64..1.0)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("latency (ms, log scale)")
            .y_desc("fraction of invocations")
            .draw()
            .map_err(plot_err)?;
        for (i, (s, points)) in lines.into_iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(plot_err)?
                .label(s.scenario.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    }
    root.present().map_err(plot_err)
}

/// Top: every burst request's latency against when it started, cold and
/// warm apart. Bottom: the function's ready instances, admitted requests
/// and queued requests over the same time.
fn timeline<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, burst: &Burst) -> Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let (top, bottom) = root.split_vertically(SIZE.1 * 3 / 5);
    let samples = &burst.series.samples;
    if samples.is_empty() {
        bail!("the burst recorded no requests");
    }
    let end_s = burst.series.wall_us as f64 / 1e6;
    let hi = samples
        .iter()
        .map(|s| s.latency_us)
        .max()
        .unwrap_or(1)
        .max(1) as f64
        / 1e3;
    let lo = samples
        .iter()
        .map(|s| s.latency_us)
        .min()
        .unwrap_or(1)
        .max(1) as f64
        / 1e3;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "burst: {} clients released at once ({} requests)",
                burst.clients,
                samples.len()
            ),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end_s, (lo * 0.8..hi * 1.25).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since release")
        .y_desc("latency (ms, log)")
        .draw()
        .map_err(plot_err)?;
    // Warm first, so the rarer cold starts and errors are drawn on top.
    let kinds = [
        (Start::Warm, "warm", GREEN),
        (Start::Cold, "cold", BLUE),
        (Start::None, "error", RED),
    ];
    for (kind, label, color) in kinds {
        let points: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.start == kind)
            .map(|s| (s.at_us as f64 / 1e6, s.latency_us.max(1) as f64 / 1e3))
            .collect();
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 1, color.mix(0.5).filled())),
            )
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;

    let top_count = burst
        .pool
        .iter()
        .map(|p| p.1.max(p.2).max(p.3))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut chart = ChartBuilder::on(&bottom)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end_s, 0f64..top_count * 1.1)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since release")
        .y_desc("count")
        .draw()
        .map_err(plot_err)?;
    type Pick = fn(&(u64, u64, u64, u64)) -> u64;
    let lines: [(&str, RGBColor, Pick); 3] = [
        ("ready instances", GREEN, |p| p.1),
        (
            "admitted requests (running or waiting for a thread)",
            BLUE,
            |p| p.2,
        ),
        ("queued requests (over the concurrency limit)", RED, |p| p.3),
    ];
    for (label, color, pick) in lines {
        let points = burst
            .pool
            .iter()
            .map(|p| (p.0 as f64 / 1e3, pick(p) as f64));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(plot_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coldstart::series::Sample;

    fn series(scenario: &str, function: &str, latencies: &[u64]) -> Series {
        let mut s = Series::new(scenario, function);
        s.samples = latencies
            .iter()
            .enumerate()
            .map(|(i, &l)| Sample {
                at_us: i as u64 * 1000,
                latency_us: l,
                ok: l != 0,
                start: Start::Warm,
            })
            .collect();
        s.wall_us = latencies.len() as u64 * 1000;
        s
    }

    #[test]
    fn cdf_is_sorted_successes_ending_at_one() {
        let s = series("a", "hello", &[300, 100, 0, 200]);
        assert_eq!(
            cdf_points(&s),
            vec![(0.1, 1.0 / 3.0), (0.2, 2.0 / 3.0), (0.3, 1.0)]
        );
        assert_eq!(
            functions(&[
                series("a", "hello", &[1]),
                series("b", "transform", &[1]),
                series("c", "hello", &[1])
            ]),
            vec!["hello".to_string(), "transform".to_string()]
        );
    }

    #[test]
    fn writes_png_and_svg_files() {
        if register_font().is_err() {
            eprintln!("*** no TrueType font installed: chart drawing not tested (install fonts-dejavu-core) ***");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let report = Report {
            machine: crate::coldstart::machine::Machine::detect(),
            series: vec![
                series("wisp cold", "hello", &[500, 600, 700]),
                series("native fork/exec", "hello", &[900, 1000]),
            ],
            burst: Some(Burst {
                clients: 2,
                series: series("wisp burst 2", "hello", &[800, 400, 0]),
                pool: vec![(0, 0, 2, 5), (50, 1, 2, 0)],
            }),
            density: None,
            python_density: None,
            skipped: vec![],
        };
        let files = write(&report, dir.path()).unwrap();
        assert_eq!(files.len(), 4);
        let png = std::fs::read(dir.path().join("latency-cdf.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let svg = std::fs::read_to_string(dir.path().join("burst.svg")).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("burst: 2 clients"),
            "{svg:.200}"
        );
    }
}
