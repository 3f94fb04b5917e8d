//! Timing one op: replay its dispatches many times and keep one sample per
//! run.
//!
//! Every run is its own submit followed by a wait, as a decode step is, so
//! the wall clock always includes the submit and queue round trip. When the
//! device has timestamp queries ([`crate::gpu::Capabilities::timestamps`]),
//! the compute pass also writes a timestamp at its start and end, and the
//! difference (the GPU's own view of the kernel, without the round trip) is
//! the sample we report; the wall clock is kept alongside for comparison.

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu};
use serde::{Deserialize, Serialize};
use web_time::Instant;

/// How the reported times were taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimingMethod {
    /// Timestamps written by the GPU at the start and end of the compute pass.
    GpuTimestamps,
    /// Host wall clock around submit + wait.
    WallClock,
}

impl TimingMethod {
    pub fn describe(self) -> &'static str {
        match self {
            TimingMethod::GpuTimestamps => "GPU timestamp queries (start and end of the compute pass)",
            TimingMethod::WallClock => "wall clock around submit + wait",
        }
    }
}

/// The samples of one timed op, in milliseconds.
#[derive(Clone, Debug)]
pub struct Samples {
    pub method: TimingMethod,
    /// The reported samples (GPU timestamps when taken, else wall clock).
    pub ms: Vec<f64>,
    /// Wall clock around submit + wait, always taken.
    pub wall_ms: Vec<f64>,
}

/// Percentile `p` (0..=100) of `values`, by the nearest-rank method.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// How many runs to make of one op.
#[derive(Clone, Copy, Debug)]
pub struct Repetitions {
    /// Untimed runs first (first-use costs, caches, clocks ramping up).
    pub warmup: usize,
    pub min: usize,
    pub max: usize,
    /// Wall-time budget: after `min` runs, stop once this much is spent.
    pub budget_ms: f64,
}

/// Timed runs of a case whose first warm-up alone took longer than the
/// budget (a prefill over thousands of keys on a CPU adapter takes tens of
/// seconds): enough for a median, and the suite stays minutes long.
pub const SLOW_CASE_RUNS: usize = 3;

/// Queries per resolve; runs beyond this are timed in several batches.
const QUERY_CAPACITY: u32 = 256;

/// Replays dispatches and collects samples. Built once per benchmark run.
pub struct Timer {
    queries: Option<TimestampQueries>,
}

struct TimestampQueries {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
}

impl Timer {
    /// Use timestamp queries if the device was opened with them, unless
    /// `force_wall_clock`.
    pub fn new(gpu: &Gpu, force_wall_clock: bool) -> Timer {
        let queries = (gpu.caps.timestamps && !force_wall_clock).then(|| {
            let bytes = QUERY_CAPACITY as u64 * 8;
            TimestampQueries {
                set: gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("bench.timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: QUERY_CAPACITY,
                }),
                resolve: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("bench.timestamps.resolve"),
                    size: bytes,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                readback: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("bench.timestamps.readback"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                period_ns: gpu.queue.get_timestamp_period() as f64,
            }
        });
        Timer { queries }
    }

    pub fn method(&self) -> TimingMethod {
        if self.queries.is_some() { TimingMethod::GpuTimestamps } else { TimingMethod::WallClock }
    }

    /// One run of `dispatches` (one pass, one submit, one wait); returns the
    /// wall time in ms. With `query_pair`, the pass writes timestamps
    /// `2·pair` and `2·pair + 1`.
    async fn run_once(&self, gpu: &Gpu, label: &str, dispatches: &[&Dispatch], query_pair: Option<u32>) -> Result<f64> {
        let start = Instant::now();
        let mut encoder = gpu.encoder(label);
        {
            let timestamp_writes = match (&self.queries, query_pair) {
                (Some(q), Some(pair)) => Some(wgpu::ComputePassTimestampWrites {
                    query_set: &q.set,
                    beginning_of_pass_write_index: Some(2 * pair),
                    end_of_pass_write_index: Some(2 * pair + 1),
                }),
                _ => None,
            };
            let mut pass =
                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes });
            for d in dispatches {
                d.encode(&mut pass);
            }
        }
        gpu.submit(encoder)?;
        gpu.wait_async().await?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    }

    /// Read back the first `pairs` timestamp pairs as durations in ms.
    async fn read_pairs(&self, gpu: &Gpu, q: &TimestampQueries, pairs: u32) -> Result<Vec<f64>> {
        let mut encoder = gpu.encoder("bench.resolve");
        encoder.resolve_query_set(&q.set, 0..2 * pairs, &q.resolve, 0);
        encoder.copy_buffer_to_buffer(&q.resolve, 0, &q.readback, 0, 2 * pairs as u64 * 8);
        gpu.submit(encoder)?;
        let slice = q.readback.slice(0..2 * pairs as u64 * 8);
        let (tx, rx) = futures::channel::oneshot::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        gpu.wait_async().await?;
        rx.await
            .map_err(|_| Error::Invalid("timestamp readback never completed".into()))?
            .map_err(|e| Error::Invalid(format!("mapping timestamps: {e}")))?;
        let bytes = {
            let view = slice.get_mapped_range().map_err(|e| Error::Invalid(format!("reading timestamps: {e}")))?;
            view.to_vec()
        };
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        q.readback.unmap();
        Ok(ticks.chunks_exact(2).map(|pair| pair[1].wrapping_sub(pair[0]) as f64 * q.period_ns / 1e6).collect())
    }

    /// `reps.warmup` untimed runs, then runs until `reps.min` are done and
    /// either `reps.max` are done or `reps.budget_ms` of wall time is spent.
    /// A case whose first warm-up alone overruns the budget gets no further
    /// warm-up and at most [`SLOW_CASE_RUNS`] timed runs.
    pub async fn time(&self, gpu: &Gpu, label: &str, dispatches: &[&Dispatch], reps: Repetitions) -> Result<Samples> {
        let (mut min_reps, budget_ms) = (reps.min, reps.budget_ms);
        for _ in 0..reps.warmup {
            let warmup_ms = self.run_once(gpu, label, dispatches, None).await?;
            if warmup_ms > budget_ms {
                min_reps = min_reps.min(SLOW_CASE_RUNS);
                break;
            }
        }
        let mut wall_ms = Vec::new();
        let mut gpu_ms = Vec::new();
        let started = Instant::now();
        let max_reps = reps.max.max(min_reps).max(1);
        loop {
            let batch_start = wall_ms.len();
            let mut pairs = 0;
            while pairs < QUERY_CAPACITY / 2 && wall_ms.len() < max_reps {
                let pair = self.queries.as_ref().map(|_| pairs);
                wall_ms.push(self.run_once(gpu, label, dispatches, pair).await?);
                pairs += 1;
                let spent = started.elapsed().as_secs_f64() * 1e3;
                if wall_ms.len() >= min_reps && spent >= budget_ms {
                    break;
                }
            }
            if let Some(q) = &self.queries {
                gpu_ms.extend(self.read_pairs(gpu, q, pairs).await?);
            }
            let spent = started.elapsed().as_secs_f64() * 1e3;
            let done = wall_ms.len() >= max_reps || (wall_ms.len() >= min_reps && spent >= budget_ms);
            if done || wall_ms.len() == batch_start {
                break;
            }
        }
        // A driver that accepts timestamp writes but never advances its
        // clock would report zeros; fall back to the wall clock for it.
        let usable = !gpu_ms.is_empty() && gpu_ms.iter().all(|t| t.is_finite() && *t > 0.0);
        if self.queries.is_some() && usable {
            Ok(Samples { method: TimingMethod::GpuTimestamps, ms: gpu_ms, wall_ms })
        } else {
            Ok(Samples { method: TimingMethod::WallClock, ms: wall_ms.clone(), wall_ms })
        }
    }
}
