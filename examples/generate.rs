//! The library API in a few lines: load a model, open a GPU, stream a reply.
//!
//! ```sh
//! models/fetch-smollm2.sh
//! cargo run --release --example generate -- models/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "Why is the sky blue?"
//! ```

use deltallm::chat::Message;
use deltallm::engine::{Engine, ModelFiles};
use deltallm::model::ModelOptions;
use deltallm::{Gpu, GpuOptions};
use std::io::Write;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args.next().ok_or_else(|| anyhow::anyhow!("usage: generate MODEL [PROMPT]"))?;
    let prompt = args.next().unwrap_or_else(|| "Write a haiku about GPUs.".to_string());

    // Model files (weights, tokenizer, chat template) from a path or a hub id.
    let files = ModelFiles::load(deltallm::hub::resolve(&model)?)?;
    // The GPU: WGPU_BACKEND, DELTALLM_ADAPTER and DELTALLM_PORTABLE choose it.
    let gpu = Gpu::new_blocking(&GpuOptions::from_env())?;
    let mut engine = Engine::new(gpu, files, ModelOptions::default())?;

    // The chat template turns messages into the prompt the model was trained on.
    let prompt_ids = engine.encode_chat(&[Message::user(prompt)])?;
    let options = engine.default_options(64);
    let tokenizer = engine.tokenizer()?.clone();
    let mut stream = tokenizer.stream(true);
    let generation = engine.generate(&prompt_ids, &options, |id| {
        print!("{}", stream.push(id)?);
        std::io::stdout().flush().ok();
        Ok(())
    })?;
    println!("{}", stream.finish()?);
    eprintln!("{:.1} tok/s", generation.decode_tokens_per_second());
    Ok(())
}
