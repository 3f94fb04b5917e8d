//! `deltallm bench`: the cross-vendor benchmark, as a library so the CLI,
//! the tests and (later) the web page share it.
//!
//! Two parts:
//! - a **kernel suite** ([`kernels`]): each case builds its op once at the
//!   real BitNet-2B4T / Llama-1B shapes (docs/DESIGN.md §3, §4), warms up, times
//!   many runs ([`timer`]) and reports the median with p10/p90. Each row also
//!   says how many bytes the kernel must move at least, so its effective
//!   bandwidth can be read against a plain copy kernel measured in the same
//!   run: that ratio, not the absolute time, is what compares across vendors.
//! - an **end-to-end** part ([`e2e`]): prefill and decode of random models
//!   with the real shapes (or a real model), in tokens per second.
//!
//! Everything lands in one [`Report`], which serialises to the JSON that
//! `--json` writes and `--compare` reads back.

mod attention;
pub mod copy;
pub mod e2e;
pub mod kernels;
pub mod timer;

use crate::gpu::Gpu;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
pub use timer::{Samples, Timer, TimingMethod};

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct BenchOptions {
    /// Tiny shapes and few runs: seconds on a CPU adapter (for CI).
    pub quick: bool,
    /// Run only the rows whose name contains this text (case-insensitive).
    pub filter: Option<String>,
    /// Time with the wall clock even when timestamp queries are available.
    pub wall_clock: bool,
}

impl BenchOptions {
    pub fn selects(&self, name: &str) -> bool {
        match &self.filter {
            Some(f) => name.to_lowercase().contains(&f.to_lowercase()),
            None => true,
        }
    }
}

/// The adapter the figures were taken on.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AdapterReport {
    pub name: String,
    pub vendor: u32,
    pub device: u32,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub backend: String,
    /// Opened with only the WebGPU baseline limits and no optional features.
    pub portable: bool,
    /// Optional features the engine chose to use.
    pub shader_f16: bool,
    pub subgroups: bool,
    pub timestamps: bool,
    /// Every feature the device was opened with, as wgpu names them.
    pub features: Vec<String>,
    /// The limits the device was opened with (wgpu's field names).
    pub limits: serde_json::Value,
}

impl AdapterReport {
    pub fn new(gpu: &Gpu) -> AdapterReport {
        let features = gpu.device.features().iter_names().map(|(name, _)| name.to_string()).collect();
        AdapterReport {
            name: gpu.info.name.clone(),
            vendor: gpu.info.vendor,
            device: gpu.info.device,
            device_type: format!("{:?}", gpu.info.device_type),
            driver: gpu.info.driver.clone(),
            driver_info: gpu.info.driver_info.clone(),
            backend: format!("{:?}", gpu.info.backend),
            portable: gpu.portable,
            shader_f16: gpu.caps.shader_f16,
            subgroups: gpu.caps.subgroups,
            timestamps: gpu.caps.timestamps,
            features,
            limits: limits_json(&gpu.limits),
        }
    }
}

/// wgpu::Limits has no serde impl without a feature; its Debug output lists
/// `name: value` pairs, which is all we need.
fn limits_json(limits: &wgpu::Limits) -> serde_json::Value {
    let text = format!("{limits:?}");
    let body = text.trim_start_matches("Limits").trim().trim_start_matches('{').trim_end_matches('}');
    let mut map = serde_json::Map::new();
    for field in body.split(',') {
        if let Some((name, value)) = field.split_once(':') {
            let value = value.trim();
            let json = value.parse::<u64>().map(serde_json::Value::from).unwrap_or_else(|_| value.into());
            map.insert(name.trim().to_string(), json);
        }
    }
    serde_json::Value::Object(map)
}

/// One timed kernel.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct KernelRow {
    /// Unique within a report; `--compare` matches rows by it.
    pub name: String,
    /// Shape in words, e.g. "M=1 K=2560 N=6912".
    pub shape: String,
    pub timing: Option<TimingMethod>,
    pub reps: usize,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    /// Median of submit + wait, always measured (equals median_ms under wall-clock timing).
    pub wall_median_ms: f64,
    /// Bytes the kernel must read and write at least (weights, activations, outputs).
    pub bytes: u64,
    /// Arithmetic operations (a multiply-add counts 2).
    pub ops: u64,
    pub gb_per_s: f64,
    pub gop_per_s: f64,
    /// gb_per_s as a percentage of the copy kernel's, when it ran.
    pub pct_of_copy: Option<f64>,
}

impl KernelRow {
    /// A row from samples and the work the kernel does.
    pub fn new(name: impl Into<String>, shape: impl Into<String>, samples: &Samples, bytes: u64, ops: u64) -> Self {
        let median_ms = timer::percentile(&samples.ms, 50.0);
        let seconds = median_ms / 1e3;
        KernelRow {
            name: name.into(),
            shape: shape.into(),
            timing: Some(samples.method),
            reps: samples.ms.len(),
            median_ms,
            p10_ms: timer::percentile(&samples.ms, 10.0),
            p90_ms: timer::percentile(&samples.ms, 90.0),
            wall_median_ms: timer::percentile(&samples.wall_ms, 50.0),
            bytes,
            ops,
            gb_per_s: bytes as f64 / seconds / 1e9,
            gop_per_s: ops as f64 / seconds / 1e9,
            pct_of_copy: None,
        }
    }
}

/// One end-to-end measurement (a model, a phase).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct E2eRow {
    /// Unique within a report, e.g. "bitnet-2b4t-shaped (4 of 30 layers) decode".
    pub name: String,
    pub model: String,
    /// Transformer layers actually run.
    pub layers: usize,
    pub tokens: usize,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub tokens_per_s: f64,
    /// Delta sparsity measured on the run, for rows with DeltaLLM attention.
    pub delta_sparsity: Option<f64>,
    /// Compute dispatches per step ([`crate::model::Model::step_cost`]):
    /// per token on decode rows, per prefill step (of up to
    /// `prefill_chunk` tokens) on prefill rows; 0 in reports from before.
    pub dispatches: u32,
    /// Decode rows: bytes one decode step reads (every weight once and the
    /// dense K/V cache at the median step's context; activations left out).
    pub bytes_per_token: Option<u64>,
    /// Of `bytes_per_token`, the output head's (final norm and lm_head).
    pub head_bytes_per_token: Option<u64>,
    /// Decode rows: `bytes_per_token` over the median time per token.
    pub gb_per_s: Option<f64>,
}

/// Everything one `deltallm bench` run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// Bump when a field changes meaning.
    pub schema: u32,
    pub deltallm_version: String,
    /// Seconds since the Unix epoch when the run started.
    pub unix_time: u64,
    pub quick: bool,
    pub adapter: AdapterReport,
    pub timing: Option<TimingMethod>,
    pub kernels: Vec<KernelRow>,
    pub e2e: Vec<E2eRow>,
    /// Cases the run left out, each with why and how to run it.
    pub skipped: Vec<String>,
}

pub const SCHEMA_VERSION: u32 = 1;

impl Report {
    pub fn new(gpu: &Gpu, options: &BenchOptions, timing: TimingMethod) -> Report {
        Report {
            schema: SCHEMA_VERSION,
            deltallm_version: env!("CARGO_PKG_VERSION").to_string(),
            unix_time: web_time::SystemTime::now()
                .duration_since(web_time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            quick: options.quick,
            adapter: AdapterReport::new(gpu),
            timing: Some(timing),
            kernels: Vec::new(),
            e2e: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// The readable table `deltallm bench` prints.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let a = &self.adapter;
        let _ = writeln!(
            s,
            "adapter: {} ({}, {} {}), portable={}, f16={} subgroups={}",
            a.name, a.backend, a.driver, a.driver_info, a.portable, a.shader_f16, a.subgroups
        );
        if let Some(t) = self.timing {
            let _ = writeln!(s, "timing: {}", t.describe());
        }
        if !self.kernels.is_empty() {
            let _ = writeln!(
                s,
                "\n| kernel | shape | median ms | p10–p90 ms | MB moved | GB/s | GOP/s | % of copy |\n|---|---|---:|---:|---:|---:|---:|---:|"
            );
            for r in &self.kernels {
                let pct = r.pct_of_copy.map(|p| format!("{p:.0}%")).unwrap_or_else(|| "–".into());
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {}–{} | {:.2} | {:.1} | {:.1} | {} |",
                    r.name,
                    r.shape,
                    fmt_ms(r.median_ms),
                    fmt_ms(r.p10_ms),
                    fmt_ms(r.p90_ms),
                    r.bytes as f64 / 1e6,
                    r.gb_per_s,
                    r.gop_per_s,
                    pct
                );
            }
        }
        for why in &self.skipped {
            let _ = writeln!(s, "skipped: {why}");
        }
        if !self.e2e.is_empty() {
            let _ = writeln!(
                s,
                "\n| end to end | tokens | median ms | p10–p90 ms | tok/s | delta sparsity | dispatches | MB/token | GB/s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for r in &self.e2e {
                let sparsity = r.delta_sparsity.map_or("–".to_string(), |d| format!("{:.1}%", 100.0 * d));
                let mb = r.bytes_per_token.map_or("–".to_string(), |b| format!("{:.1}", b as f64 / 1e6));
                let gb_per_s = r.gb_per_s.map_or("–".to_string(), |g| format!("{g:.2}"));
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {}–{} | {:.2} | {sparsity} | {} | {mb} | {gb_per_s} |",
                    r.name,
                    r.tokens,
                    fmt_ms(r.median_ms),
                    fmt_ms(r.p10_ms),
                    fmt_ms(r.p90_ms),
                    r.tokens_per_s,
                    r.dispatches
                );
            }
        }
        s
    }
}

/// Milliseconds with three significant-ish digits.
fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else if ms >= 1.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.3}")
    }
}

/// Fill in every row's share of the copy kernel's bandwidth.
pub fn relate_to_copy(rows: &mut [KernelRow]) {
    let copy = rows.iter().find(|r| r.name.starts_with(copy::ROW_PREFIX)).map(|r| r.gb_per_s);
    if let Some(copy) = copy.filter(|c| *c > 0.0) {
        for r in rows {
            r.pct_of_copy = Some(100.0 * r.gb_per_s / copy);
        }
    }
}

/// Run the kernel suite (and the end-to-end part with `e2e`), reporting
/// progress lines through `progress`. Async so the browser runs the same code.
pub async fn run_async(
    gpu: &Gpu,
    options: &BenchOptions,
    e2e: Option<&e2e::E2eOptions>,
    progress: &mut dyn FnMut(&str),
) -> crate::Result<Report> {
    let timer = Timer::new(gpu, options.wall_clock);
    let mut report = Report::new(gpu, options, timer.method());
    let suite = kernels::run(gpu, &timer, options, progress).await?;
    report.kernels = suite.rows;
    report.skipped = suite.skipped;
    relate_to_copy(&mut report.kernels);
    if let Some(e2e_options) = e2e {
        report.e2e = e2e::run(gpu, options, e2e_options, progress).await?;
    }
    Ok(report)
}

/// Blocking form of [`run_async`] for native code.
#[cfg(not(target_arch = "wasm32"))]
pub fn run(
    gpu: &Gpu,
    options: &BenchOptions,
    e2e: Option<&e2e::E2eOptions>,
    progress: &mut dyn FnMut(&str),
) -> crate::Result<Report> {
    pollster::block_on(run_async(gpu, options, e2e, progress))
}

/// One line of `deltallm bench --compare`.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub name: String,
    pub a_ms: f64,
    pub b_ms: f64,
    /// b's time over a's: above 1 means B is slower.
    pub b_over_a: f64,
}

/// Rows present in both reports (kernels then end to end), matched by name.
pub fn compare(a: &Report, b: &Report) -> Vec<Comparison> {
    let pairs = |xs: &[(String, f64)], ys: &[(String, f64)]| -> Vec<Comparison> {
        xs.iter()
            .filter_map(|(name, a_ms)| {
                let (_, b_ms) = ys.iter().find(|(n, _)| n == name)?;
                Some(Comparison { name: name.clone(), a_ms: *a_ms, b_ms: *b_ms, b_over_a: b_ms / a_ms })
            })
            .collect()
    };
    let kernel_times = |r: &Report| r.kernels.iter().map(|k| (k.name.clone(), k.median_ms)).collect::<Vec<_>>();
    let e2e_times = |r: &Report| r.e2e.iter().map(|k| (k.name.clone(), k.median_ms)).collect::<Vec<_>>();
    let mut out = pairs(&kernel_times(a), &kernel_times(b));
    out.extend(pairs(&e2e_times(a), &e2e_times(b)));
    out
}

/// The side-by-side table of [`compare`].
pub fn comparison_table(a: &Report, b: &Report) -> String {
    let mut s = String::new();
    for (label, r) in [("A", a), ("B", b)] {
        let timing = r.timing.map(TimingMethod::describe).unwrap_or("unknown timing");
        let _ = writeln!(
            s,
            "{label}: {} ({}, portable={}), {timing}",
            r.adapter.name, r.adapter.backend, r.adapter.portable
        );
    }
    if a.timing != b.timing {
        let _ = writeln!(s, "note: A and B were timed differently; wall-clock times include the submit round trip");
    }
    let _ = writeln!(s, "\n| row | A ms | B ms | B / A |\n|---|---:|---:|---:|");
    let rows = compare(a, b);
    for c in &rows {
        let _ = writeln!(s, "| {} | {} | {} | {:.2}× |", c.name, fmt_ms(c.a_ms), fmt_ms(c.b_ms), c.b_over_a);
    }
    let only = |x: &Report| {
        let names = x.kernels.iter().map(|k| &k.name).chain(x.e2e.iter().map(|e| &e.name));
        names.filter(|n| !rows.iter().any(|c| &c.name == *n)).count()
    };
    let (only_a, only_b) = (only(a), only(b));
    if only_a + only_b > 0 {
        let _ = writeln!(s, "\n{only_a} row(s) only in A, {only_b} only in B (not compared)");
    }
    s
}
