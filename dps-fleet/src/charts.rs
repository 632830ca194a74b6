//! The two charts, drawn with plotters' SVG backend: a latency histogram (one colour per device
//! kind) and registrations per second over the run.

use crate::error::FleetError;
use crate::mix::DeviceKind;
use crate::provision::DeviceOutcome;
use crate::report::ThroughputPoint;
use plotters::prelude::*;
use std::path::Path;

const SIZE: (u32, u32) = (960, 540);

fn colour(kind: DeviceKind) -> RGBColor {
    match kind {
        DeviceKind::SymmetricIndividual => RGBColor(0x1f, 0x77, 0xb4),
        DeviceKind::SymmetricGroup => RGBColor(0x2c, 0xa0, 0x2c),
        DeviceKind::DiceGroup => RGBColor(0xff, 0x7f, 0x0e),
        DeviceKind::Tpm => RGBColor(0xd6, 0x27, 0x28),
    }
}

fn chart_err(file: &Path) -> impl Fn(String) -> FleetError + '_ {
    move |reason| FleetError::Chart {
        file: file.to_path_buf(),
        reason,
    }
}

/// Writes the histogram of successful registrations' latency to `file`: 40 bins from 0 to the
/// slowest, stacked per device kind.
pub fn latency_histogram(file: &Path, outcomes: &[DeviceOutcome]) -> Result<(), FleetError> {
    let err = chart_err(file);
    const BINS: usize = 40;
    let ok: Vec<(DeviceKind, f64)> = outcomes
        .iter()
        .filter(|o| o.result.is_ok())
        .map(|o| (o.kind, o.latency.as_secs_f64() * 1e3))
        .collect();
    let max_ms = ok.iter().map(|(_, ms)| *ms).fold(1.0_f64, f64::max);
    let width = max_ms / BINS as f64;
    let kinds: Vec<DeviceKind> = DeviceKind::ALL
        .into_iter()
        .filter(|k| ok.iter().any(|(kk, _)| kk == k))
        .collect();
    // counts[kind][bin]
    let mut counts = vec![vec![0usize; BINS]; kinds.len()];
    for (k, ms) in &ok {
        let bin = ((ms / width) as usize).min(BINS - 1);
        if let Some(ki) = kinds.iter().position(|kk| kk == k) {
            counts[ki][bin] += 1;
        }
    }
    let tallest = (0..BINS)
        .map(|b| counts.iter().map(|c| c[b]).sum::<usize>())
        .max()
        .unwrap_or(0)
        .max(1);
    let root = SVGBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Registration latency ({} devices)", ok.len()),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_ms * 1.02, 0.0..tallest as f64 * 1.1)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("latency (ms)")
        .y_desc("registrations")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let mut base = vec![0usize; BINS];
    for (ki, kind) in kinds.iter().enumerate() {
        let c = colour(*kind);
        let rects: Vec<Rectangle<(f64, f64)>> = (0..BINS)
            .filter(|b| counts[ki][*b] > 0)
            .map(|b| {
                let x0 = b as f64 * width;
                let y0 = base[b] as f64;
                let y1 = (base[b] + counts[ki][b]) as f64;
                Rectangle::new([(x0, y0), (x0 + width, y1)], c.mix(0.8).filled())
            })
            .collect();
        for (b, n) in base.iter_mut().enumerate() {
            *n += counts[ki][b];
        }
        chart
            .draw_series(rects)
            .map_err(|e| err(e.to_string()))?
            .label(kind.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}

/// Writes successful (and failed, when any) registrations per second over the run to `file`.
pub fn throughput(file: &Path, points: &[ThroughputPoint]) -> Result<(), FleetError> {
    let err = chart_err(file);
    let last = points.last().map(|p| p.second).unwrap_or(0).max(1);
    let top = points
        .iter()
        .map(|p| p.succeeded.max(p.failed))
        .max()
        .unwrap_or(0)
        .max(1);
    let root = SVGBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Registrations per second", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..last, 0usize..top + top / 10 + 1)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("seconds since provisioning started")
        .y_desc("registrations completed in that second")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let green = RGBColor(0x2c, 0xa0, 0x2c);
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.second, p.succeeded)),
            green.stroke_width(2),
        ))
        .map_err(|e| err(e.to_string()))?
        .label("succeeded")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], green.stroke_width(2)));
    if points.iter().any(|p| p.failed > 0) {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.second, p.failed)),
                RED.stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?
            .label("failed")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], RED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}
