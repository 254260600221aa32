//! `ustack bench --plot FILE.svg`: what the bench printed, drawn as SVG with
//! plotters (its SVG backend only: text stays `<text>`, no fonts are read).

use crate::error::CliError;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

const SIZE: (u32, u32) = (960, 540);
/// Colours by series: ustack, a second ustack variant, the Linux baseline.
const USTACK: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const USTACK_2: RGBColor = RGBColor(0x7f, 0xb8, 0xe0);
const LINUX: RGBColor = RGBColor(0xd6, 0x27, 0x28);

/// Linux's series is red, ustack's first blue and any other light blue.
fn color(name: &str, i: usize) -> RGBColor {
    match (name, i) {
        ("Linux", _) => LINUX,
        (_, 0) => USTACK,
        _ => USTACK_2,
    }
}

/// One named curve or bar set.
pub struct Series {
    pub name: String,
    /// (x, y) for a sweep; one point (0, y) for a bar.
    pub points: Vec<(u64, f64)>,
}

fn error(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::Plot { path: path.display().to_string(), why: e.to_string() }
}

/// 8192 → "8K", 1048576 → "1M".
fn size_label(x: f64) -> String {
    let x = x.round() as u64;
    match x {
        x if x >= 1 << 20 && x.is_multiple_of(1 << 20) => format!("{}M", x >> 20),
        x if x >= 1 << 10 && x.is_multiple_of(1 << 10) => format!("{}K", x >> 10),
        x => x.to_string(),
    }
}

/// One curve per series over a doubling sweep, x on a log2 axis.
pub fn sweep(path: &Path, title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> Result<(), CliError> {
    draw_sweep(path, title, x_desc, y_desc, series).map_err(|e| error(path, e))
}

fn draw_sweep(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    let log = |x: u64| (x.max(1) as f64).log2();
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (lo, hi) = xs.fold((u64::MAX, 0), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if lo > hi {
        return Err("nothing to draw".into());
    }
    let (x0, x1) = (log(lo), log(hi).max(log(lo) + 1.0));
    let n_points = series.iter().map(|s| s.points.len()).max().unwrap_or(0);
    let top = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max).max(1e-9) * 1.15;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x0 - 0.2..x1 + 0.2, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(n_points + 2)
        .x_label_formatter(&|v| if (v - v.round()).abs() < 1e-6 { size_label(2f64.powf(*v)) } else { String::new() })
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = color(&s.name, i);
        let xy: Vec<(f64, f64)> = s.points.iter().map(|p| (log(p.0), p.1)).collect();
        chart
            .draw_series(LineSeries::new(xy.iter().copied(), color.stroke_width(2)))?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2)));
        chart.draw_series(xy.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).border_style(BLACK).background_style(WHITE).draw()?;
    root.present()?;
    Ok(())
}

/// 822000 → "822000", 67.7 → "67.70", 0.5 → "0.500".
fn figure(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

/// One bar per stack: `bars` are (name, value) in `unit`.
pub fn bars(path: &Path, title: &str, unit: &str, bars: &[(&str, f64)]) -> Result<(), CliError> {
    draw_bars(path, title, unit, bars).map_err(|e| error(path, e))
}

fn draw_bars(path: &Path, title: &str, unit: &str, bars: &[(&str, f64)]) -> Result<(), Box<dyn std::error::Error>> {
    let top = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9) * 1.2;
    let n = bars.len() as u32;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(72)
        .build_cartesian_2d((0..n.saturating_sub(1)).into_segmented(), 0.0..top)?;
    let names: Vec<String> = bars.iter().map(|b| b.0.to_string()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(unit)
        .y_label_formatter(&|v| figure(*v))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            SegmentValue::Last => String::new(),
        })
        .draw()?;
    for (i, (name, value)) in bars.iter().enumerate() {
        let color = color(name, i);
        let i = i as u32;
        chart.draw_series(Histogram::vertical(&chart).style(color.filled()).margin(60).data([(i, *value)]))?;
        let style = TextStyle::from(("sans-serif", 16).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(std::iter::once(Text::new(figure(*value), (SegmentValue::CenterOf(i), *value * 1.02), style)))?;
    }
    root.present()?;
    Ok(())
}
