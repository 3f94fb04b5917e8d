//! `deltallm run`: one prompt, the generated text streamed to stdout (or one
//! JSON object), speed and DeltaLLM's statistics to stderr.

use super::args::{GpuArgs, ModelArgs, PromptArgs, SamplingArgs};
use clap::Args;
use deltallm::model::PlanSource;
use std::io::Write;

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Wrap the prompt in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Print one JSON object {"prompt_tokens", "tokens", "text", "sequence"}
    /// instead of streaming ("sequence": the phases the prompt and decode
    /// ran; with DeltaLLM on, also "delta": its statistics; with a layer plan
    /// or routers, "routing": the plan used and layers saved).
    #[arg(long)]
    json: bool,
    /// Print DeltaLLM's sparsity table (per layer, prefill/decode/total), the
    /// layer plan used (with the layers it saved) and the sequence's phases
    /// (routing, Θ calibration, prefill, decode: tokens and GPU submits) to
    /// stderr.
    #[arg(long)]
    stats: bool,
}

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let (json, stats) = (args.json, args.stats);
    let mut engine = args.model.load_engine(&args.gpu, false)?;
    let routed = engine.model.routing_report().source != PlanSource::Plain;
    if stats && engine.model.options.delta.is_none() && !routed {
        eprintln!(
            "note: --stats reports DeltaLLM's sparsity and the layer plan; DeltaLLM is off (pass --delta-threshold \
             or --delta-target-sparsity) and every layer runs once (pass --layer-plan or --routers)"
        );
    }
    let ids = args.prompt.tokens(&engine, args.chat)?;
    let mut options = engine.default_options(args.max_tokens);
    options.sampler = args.sampling.config();
    options.delta_stats = stats || json;
    let tokenizer = engine.tokenizer.clone();
    let mut stream = tokenizer.as_ref().map(|t| t.stream(true));
    let mut stdout = std::io::stdout();
    let generation = engine.generate(&ids, &options, |id| {
        if !json {
            match &mut stream {
                Some(s) => write!(stdout, "{}", s.push(id)?).ok(),
                None => write!(stdout, "{id} ").ok(),
            };
            stdout.flush().ok();
        }
        Ok(())
    })?;
    let text = match &tokenizer {
        Some(t) => t.decode_with(&generation.tokens, true)?,
        None => String::new(),
    };
    if json {
        let mut object = serde_json::json!({
            "prompt_tokens": generation.prompt_tokens,
            "tokens": generation.tokens,
            "text": text,
            "sequence": generation.sequence,
        });
        if let Some(delta) = &generation.delta {
            object["delta"] = serde_json::to_value(delta)?;
        }
        if routed && let Some(routing) = &generation.routing {
            object["routing"] = serde_json::to_value(routing)?;
        }
        println!("{object}");
    } else {
        if let Some(s) = &mut stream {
            write!(stdout, "{}", s.finish()?)?;
        }
        writeln!(stdout)?;
    }
    eprintln!(
        "prefill: {} tokens, {:.2} tok/s | decode: {} tokens, {:.2} tok/s",
        generation.prompt_tokens.len(),
        generation.prefill_tokens_per_second(),
        generation.tokens.len(),
        generation.decode_tokens_per_second()
    );
    if stats && let Some(delta) = &generation.delta {
        eprint!("{}", delta.table());
    }
    if stats
        && routed
        && let Some(routing) = &generation.routing
    {
        eprintln!("{}", routing.summary());
    }
    if stats {
        eprintln!("{}", generation.sequence.summary());
    }
    Ok(())
}
