//! Sweeps over DeltaLLM's knobs: every combination of the given values runs
//! the same task; the results become one table, a CSV, a JSON file and an
//! SVG plot of the metric against MAC sparsity (hand-written SVG: a dozen
//! lines of text need no plotting crate).

use super::{GpuSource, TaskReport};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::{DeltaOptions, Model};
use serde::Serialize;
use std::fmt::Write;

/// A DeltaLLM knob a sweep can vary, named as its CLI flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Knob {
    DeltaThreshold,
    DeltaTargetSparsity,
    Window,
    WindowScale,
    Sinks,
}

impl Knob {
    const ALL: [(Knob, &'static str); 5] = [
        (Knob::DeltaThreshold, "delta-threshold"),
        (Knob::DeltaTargetSparsity, "delta-target-sparsity"),
        (Knob::Window, "window"),
        (Knob::WindowScale, "window-scale"),
        (Knob::Sinks, "sinks"),
    ];

    pub fn name(self) -> &'static str {
        Knob::ALL.iter().find(|(k, _)| *k == self).map(|(_, n)| *n).unwrap_or("?")
    }

    pub fn apply(self, options: &mut DeltaOptions, value: f64) {
        match self {
            Knob::DeltaThreshold => options.threshold = value as f32,
            Knob::DeltaTargetSparsity => options.target_sparsity = Some(value as f32),
            Knob::Window => options.window_min = value as u32,
            Knob::WindowScale => options.window_scale = value as f32,
            Knob::Sinks => options.sinks = value as u32,
        }
    }
}

/// One `--sweep KNOB=V1,V2,…`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Axis {
    pub knob: Knob,
    pub values: Vec<f64>,
}

impl std::str::FromStr for Axis {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Axis> {
        let names: Vec<&str> = Knob::ALL.iter().map(|(_, n)| *n).collect();
        let bad = |why: String| {
            Error::Invalid(format!(
                "--sweep {spec:?}: {why}; expected KNOB=V1,V2,… with KNOB one of {}",
                names.join(", ")
            ))
        };
        let (name, list) = spec.split_once('=').ok_or_else(|| bad("no `=`".into()))?;
        let name = name.trim().trim_start_matches("--");
        let knob = Knob::ALL.iter().find(|(_, n)| *n == name).map(|(k, _)| *k);
        let knob = knob.ok_or_else(|| bad(format!("unknown knob {name:?}")))?;
        let values = list
            .split(',')
            .map(|v| v.trim().parse::<f64>().map_err(|_| bad(format!("{v:?} is not a number"))))
            .collect::<Result<Vec<f64>>>()?;
        if values.is_empty() || values.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(bad("values must be finite numbers ≥ 0".into()));
        }
        if matches!(knob, Knob::Window | Knob::Sinks) && values.iter().any(|v| v.fract() != 0.0) {
            return Err(bad(format!("{name} takes whole numbers of tokens")));
        }
        Ok(Axis { knob, values })
    }
}

/// Every combination of the axes' values, the last axis varying fastest.
pub fn combinations(axes: &[Axis]) -> Vec<Vec<(Knob, f64)>> {
    axes.iter().fold(vec![vec![]], |sets, axis| {
        sets.iter()
            .flat_map(|set| {
                axis.values.iter().map(move |&v| {
                    let mut s = set.clone();
                    s.push((axis.knob, v));
                    s
                })
            })
            .collect()
    })
}

/// One setting of a sweep and the task's report under it.
#[derive(Clone, Debug, Serialize)]
pub struct SweepRow {
    pub settings: Vec<(Knob, f64)>,
    /// Θ per layer as used (calibrated ones differ per layer).
    pub thresholds: Vec<f32>,
    pub report: TaskReport,
}

impl SweepRow {
    pub fn label(&self) -> String {
        self.settings.iter().map(|(k, v)| format!("{}={v}", k.name())).collect::<Vec<_>>().join(" ")
    }
}

/// Run `task` on the GPU model under every combination of `axes` applied
/// to `base` (the model must have been loaded with DeltaLLM on).
pub fn run(
    gpu: &Gpu,
    model: &mut Model,
    base: &DeltaOptions,
    axes: &[Axis],
    task: &mut dyn FnMut(&mut GpuSource) -> Result<TaskReport>,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<SweepRow>> {
    let mut rows = Vec::new();
    for settings in combinations(axes) {
        let mut options = base.clone();
        for &(knob, value) in &settings {
            knob.apply(&mut options, value);
        }
        model.set_delta_options(gpu, options)?;
        let label = settings.iter().map(|(k, v)| format!("{}={v}", k.name())).collect::<Vec<_>>().join(" ");
        log(&format!("sweep: {label}"));
        let report = task(&mut GpuSource { gpu, model })?;
        let thresholds = model.delta_thresholds().unwrap_or_default().to_vec();
        log(&format!("sweep: {label}: {} {:.4}", report.metric_name, report.metric));
        rows.push(SweepRow { settings, thresholds, report });
    }
    Ok(rows)
}

/// Columns shared by the table and the CSV (numbers unrounded in the CSV).
fn columns(row: &SweepRow) -> Vec<(&'static str, f64)> {
    let s = row.report.sparsity.clone().unwrap_or_default();
    vec![
        (row.report.metric_name, row.report.metric),
        ("delta sparsity", s.phases.total.delta_sparsity),
        ("MAC sparsity", s.phases.total.mac_sparsity),
        ("prefill MAC sparsity", s.phases.prefill.mac_sparsity),
        ("decode MAC sparsity", s.phases.decode.mac_sparsity),
        ("authors' sparsity", s.phases.total.authors_sparsity),
        ("K bytes vs dense f16", s.k_cache_ratio),
        ("tok/s", row.report.tokens_per_second),
    ]
}

/// A Markdown table, one row per setting.
pub fn table(rows: &[SweepRow]) -> String {
    let Some(first) = rows.first() else { return String::new() };
    let mut out = String::new();
    let knobs: Vec<&str> = first.settings.iter().map(|(k, _)| k.name()).collect();
    let names: Vec<&str> = columns(first).iter().map(|(n, _)| *n).collect();
    writeln!(out, "| {} | {} |", knobs.join(" | "), names.join(" | ")).unwrap();
    writeln!(out, "|{}", "---|".repeat(knobs.len() + names.len())).unwrap();
    for row in rows {
        let settings: Vec<String> = row.settings.iter().map(|(_, v)| v.to_string()).collect();
        let cells: Vec<String> = columns(row)
            .iter()
            .map(|(name, v)| match *name {
                "perplexity" | "accuracy" => format!("{v:.4}"),
                "tok/s" => format!("{v:.1}"),
                _ => format!("{:.1} %", 100.0 * v),
            })
            .collect();
        writeln!(out, "| {} | {} |", settings.join(" | "), cells.join(" | ")).unwrap();
    }
    out
}

/// The same columns as CSV (fractions, not percentages).
pub fn csv(rows: &[SweepRow]) -> String {
    let Some(first) = rows.first() else { return String::new() };
    let mut out = String::new();
    let mut header: Vec<String> = first.settings.iter().map(|(k, _)| k.name().to_string()).collect();
    header.extend(columns(first).iter().map(|(n, _)| n.replace(' ', "_").replace('\'', "").replace('/', "_per_")));
    writeln!(out, "{}", header.join(",")).unwrap();
    for row in rows {
        let mut cells: Vec<String> = row.settings.iter().map(|(_, v)| v.to_string()).collect();
        cells.extend(columns(row).iter().map(|(_, v)| v.to_string()));
        writeln!(out, "{}", cells.join(",")).unwrap();
    }
    out
}

/// An SVG scatter plot of the metric (y) against MAC sparsity (x), points
/// labelled with their settings and joined in sweep order.
pub fn svg(rows: &[SweepRow], title: &str) -> String {
    let (width, height, margin) = (640.0, 420.0, 60.0);
    let points: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.report.sparsity.as_ref().map_or(0.0, |s| s.phases.total.mac_sparsity), r.report.metric))
        .collect();
    let metric_name = rows.first().map_or("metric", |r| r.report.metric_name);
    let range = |values: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        if !lo.is_finite() {
            (0.0, 1.0)
        } else if hi - lo < 1e-9 {
            (lo - 0.5 * lo.abs().max(1e-3), hi + 0.5 * hi.abs().max(1e-3))
        } else {
            (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        }
    };
    let (x0, x1) = (0.0, range(&mut points.iter().map(|p| p.0)).1.clamp(0.1, 1.0));
    let (y0, y1) = range(&mut points.iter().map(|p| p.1));
    let px = |x: f64| margin + (x - x0) / (x1 - x0) * (width - 2.0 * margin);
    let py = |y: f64| height - margin - (y - y0) / (y1 - y0) * (height - 2.0 * margin);
    let mut s = String::new();
    writeln!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#).unwrap();
    writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#).unwrap();
    writeln!(s, r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#, width / 2.0, escape(title))
        .unwrap();
    let (left, right, top, bottom) = (margin, width - margin, margin, height - margin);
    writeln!(s, r#"<path d="M{left} {top} V{bottom} H{right}" fill="none" stroke="black"/>"#).unwrap();
    for i in 0..=4 {
        let x = x0 + (x1 - x0) * i as f64 / 4.0;
        let y = y0 + (y1 - y0) * i as f64 / 4.0;
        writeln!(s, r#"<text x="{:.1}" y="{}" text-anchor="middle">{:.0} %</text>"#, px(x), bottom + 18.0, 100.0 * x)
            .unwrap();
        writeln!(s, r#"<text x="{}" y="{:.1}" text-anchor="end">{y:.3}</text>"#, left - 6.0, py(y) + 4.0).unwrap();
    }
    writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">MAC sparsity of QKᵀ</text>"#, width / 2.0, height - 16.0)
        .unwrap();
    writeln!(
        s,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{metric_name}</text>"#,
        height / 2.0,
        height / 2.0
    )
    .unwrap();
    let path: Vec<String> = points.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
    writeln!(s, r#"<polyline points="{}" fill="none" stroke="steelblue"/>"#, path.join(" ")).unwrap();
    for (row, &(x, y)) in rows.iter().zip(&points) {
        writeln!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="steelblue"/>"#, px(x), py(y)).unwrap();
        writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="10">{}</text>"#,
            px(x) + 6.0,
            py(y) - 6.0,
            escape(&row.label())
        )
        .unwrap();
    }
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
