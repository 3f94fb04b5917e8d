//! `deltallm logits`: the logits of the last position, or the top K of
//! every position, as JSON (what the golden tests compare).

use super::args::{GpuArgs, ModelArgs, PromptArgs};
use clap::Args;

#[derive(Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Print JSON (the only output format; accepted for clarity).
    #[arg(long)]
    #[allow(dead_code)]
    json: bool,
    /// With --all-positions: how many (id, logit) pairs per position.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// One entry per input position with its top K, instead of the full last row.
    #[arg(long)]
    all_positions: bool,
}

pub fn logits(args: &LogitsArgs) -> anyhow::Result<()> {
    let mut engine = args.model.load_engine(&args.gpu, args.all_positions)?;
    let ids = args.prompt.tokens(&engine, false)?;
    let vocab = engine.model.config.vocab_size;
    if args.all_positions {
        let all = engine.model.forward_all(&engine.gpu, &ids)?;
        let positions: Vec<serde_json::Value> = all
            .chunks(vocab)
            .map(|row| {
                let top = deltallm::cpu::sampling::top_k(row, args.top_k.max(1));
                serde_json::json!({ "top": top.iter().map(|(id, v)| serde_json::json!([id, v])).collect::<Vec<_>>() })
            })
            .collect();
        println!("{}", serde_json::json!({ "tokens": ids, "positions": positions }));
    } else {
        engine.model.forward(&engine.gpu, &ids)?;
        let logits = engine.model.logits(&engine.gpu)?;
        println!("{}", serde_json::json!({ "tokens": ids, "logits": logits }));
    }
    Ok(())
}
