//! `deltallm bench`: the kernel suite (and, with --e2e or -m, whole models)
//! through `deltallm::bench`; a table to stdout, progress to stderr, and
//! side-by-side ratios of two saved reports.

use super::args::GpuArgs;
use clap::Args;
use deltallm::bench::e2e::E2eOptions;
use deltallm::bench::{BenchOptions, Report};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    gpu: GpuArgs,
    /// Tiny shapes and few runs (seconds on a CPU adapter).
    #[arg(long)]
    quick: bool,
    /// Also write every figure and the adapter's details to this JSON file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Run only the rows whose name contains this text (case-insensitive).
    #[arg(long, value_name = "SUBSTR")]
    filter: Option<String>,
    #[command(flatten)]
    e2e: E2eArgs,
    /// Time with the wall clock even when the GPU offers timestamp queries.
    #[arg(long)]
    wall_clock: bool,
    /// Print side-by-side ratios of the rows two JSON files share, and run nothing.
    #[arg(long, num_args = 2, value_names = ["A.json", "B.json"], conflicts_with_all = ["quick", "json", "e2e", "model"])]
    compare: Option<Vec<PathBuf>>,
}

/// The end-to-end part of `deltallm bench`.
#[derive(Args, Clone, Debug)]
struct E2eArgs {
    /// Also time prefill and decode of random BitNet-2B4T- and Llama-1B-shaped models.
    #[arg(long)]
    e2e: bool,
    /// Time prefill and decode of this model (file, folder or Hugging Face id) instead of the random ones.
    #[arg(short, long, value_name = "MODEL")]
    model: Option<String>,
    /// Layers of each random model to run (default 2; 0 = all). Per-layer cost is what matters.
    #[arg(long, value_name = "N")]
    layers: Option<usize>,
    /// Prompt lengths of the end-to-end rows; decode is timed at each as context [default: 128,512,1024; --quick 8,16].
    #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
    prefill_tokens: Option<Vec<usize>>,
    /// End-to-end rows with DeltaLLM attention too, Θ calibrated per layer to this delta sparsity (0 = dense only).
    #[arg(long, value_name = "P", default_value_t = 0.6)]
    delta_sparsity: f32,
}

impl E2eArgs {
    /// None when no end-to-end rows were asked for.
    fn options(&self, quick: bool) -> anyhow::Result<Option<E2eOptions>> {
        if !self.e2e && self.model.is_none() {
            return Ok(None);
        }
        if !(0.0..1.0).contains(&self.delta_sparsity) {
            anyhow::bail!("--delta-sparsity must be in [0, 1), got {}", self.delta_sparsity);
        }
        let mut o = E2eOptions::new(quick);
        if let Some(m) = &self.model {
            o.model = Some(deltallm::hub::resolve(m)?.to_string_lossy().into_owned());
        }
        if let Some(n) = self.layers {
            o.layers = (n > 0).then_some(n);
        }
        if let Some(lengths) = &self.prefill_tokens {
            if lengths.is_empty() || lengths.contains(&0) {
                anyhow::bail!("--prefill-tokens needs positive lengths, got {lengths:?}");
            }
            o.prefill_lengths = lengths.clone();
        }
        o.delta_sparsity = (self.delta_sparsity > 0.0).then_some(self.delta_sparsity);
        Ok(Some(o))
    }
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(files) = &args.compare {
        return compare_reports(&files[0], &files[1]);
    }
    let options = BenchOptions { quick: args.quick, filter: args.filter.clone(), wall_clock: args.wall_clock };
    let e2e = args.e2e.options(args.quick)?;
    let gpu = deltallm::Gpu::new_blocking(&args.gpu.options())?;
    eprintln!("benchmarking on {} ({:?}), portable={}", gpu.info.name, gpu.info.backend, gpu.portable);
    let report = deltallm::bench::run(&gpu, &options, e2e.as_ref(), &mut |line| eprintln!("  {line}"))?;
    println!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn compare_reports(a: &Path, b: &Path) -> anyhow::Result<()> {
    let read = |path: &Path| -> anyhow::Result<Report> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a `deltallm bench --json` file: {e}", path.display()))
    };
    let (a, b) = (read(a)?, read(b)?);
    print!("{}", deltallm::bench::comparison_table(&a, &b));
    Ok(())
}
