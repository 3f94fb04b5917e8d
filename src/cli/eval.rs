//! `deltallm eval`: the flags mapped onto `deltallm::eval::run`, which reads
//! the data, loads the model, scores it and writes the results.

use super::args::{GpuArgs, ModelArgs, read_files};
use clap::Args;
use deltallm::eval::run::{Eval, EvalOptions, Task};
use std::path::PathBuf;

#[derive(Args)]
pub struct EvalCommand {
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    eval: EvalArgs,
}

/// What `deltallm eval` scores and where its results go.
#[derive(Args, Clone, Debug)]
struct EvalArgs {
    /// ppl: perplexity of a text file; mc: WinoGrande JSON lines (sentence with one `_`, option1, option2, answer);
    /// squad2: the official SQuAD v2 JSON (greedy answers, exact match and F1).
    #[arg(long, value_enum)]
    task: Task,
    /// The task's data file.
    #[arg(long, value_name = "FILE")]
    data: PathBuf,
    /// ppl: tokens per chunk; each chunk starts from an empty cache.
    #[arg(long, value_name = "N", default_value_t = 512)]
    ctx: usize,
    /// ppl: use only the first N tokens of the text.
    #[arg(long, value_name = "N")]
    limit_tokens: Option<usize>,
    /// Score only the first N items (ppl: chunks).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Write the report with per-item results to this JSON file (with --sweep, also the prefix of the CSV and SVG).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Run every combination of DeltaLLM settings, e.g. "delta-threshold=0,0.5,1,2"; repeat for more knobs
    /// (delta-threshold, delta-target-sparsity, window, window-scale, sinks).
    #[arg(long, value_name = "KNOB=V1,V2,...")]
    sweep: Vec<String>,
    /// With --sweep: write PREFIX.csv, PREFIX.json and PREFIX.svg [default: eval-TASK-sweep, or --json's stem].
    #[arg(long, value_name = "PREFIX")]
    out: Option<PathBuf>,
    /// squad2: what the model is told to answer when the context lacks the answer; such an answer is the
    /// empty (no-answer) prediction.
    #[arg(long, value_name = "TEXT", default_value = "unanswerable")]
    unanswerable: String,
}

impl EvalArgs {
    fn options(&self) -> EvalOptions {
        EvalOptions {
            task: self.task,
            data: self.data.clone(),
            ctx: self.ctx,
            limit_tokens: self.limit_tokens,
            limit: self.limit,
            json: self.json.clone(),
            sweep: self.sweep.clone(),
            out: self.out.clone(),
            unanswerable: self.unanswerable.clone(),
        }
    }
}

pub fn eval(args: &EvalCommand) -> anyhow::Result<()> {
    args.model.check_default()?;
    let settings = args.model.settings();
    let eval = Eval::prepare(args.eval.options(), &settings)?;
    let path = args.model.resolve()?;
    let files = read_files(&path)?;
    eval.run(&path, files, &args.gpu.options(), &settings, &mut std::io::stdout(), &mut |line| eprintln!("{line}"))?;
    Ok(())
}
