//! `deltallm chat`: an interactive conversation in the model's chat template.

use super::args::{GpuArgs, ModelArgs, SamplingArgs};
use clap::Args;
use deltallm::chat::Message;
use std::io::Write;

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Most tokens per reply.
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// A system message to start the conversation with.
    #[arg(long)]
    system: Option<String>,
}

pub fn chat(args: &ChatArgs) -> anyhow::Result<()> {
    let mut engine = args.model.load_engine(&args.gpu, false)?;
    let tokenizer = engine.tokenizer()?.clone();
    let mut messages: Vec<Message> = args.system.iter().cloned().map(Message::system).collect();
    let mut options = engine.default_options(args.max_tokens);
    options.sampler = args.sampling.config();
    eprintln!("type a message and press Enter; an empty line or Ctrl-D ends the chat");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(());
        }
        messages.push(Message::user(line.trim_end().to_string()));
        let ids = engine.encode_chat(&messages)?;
        let mut stream = tokenizer.stream(true);
        let mut stdout = std::io::stdout();
        let generation = engine.generate(&ids, &options, |id| {
            write!(stdout, "{}", stream.push(id)?).ok();
            stdout.flush().ok();
            Ok(())
        })?;
        writeln!(stdout, "{}", stream.finish()?)?;
        eprintln!("[{:.1} tok/s]", generation.decode_tokens_per_second());
        messages.push(Message::assistant(tokenizer.decode_with(&generation.tokens, true)?));
        options.sampler.seed = options.sampler.seed.wrapping_add(1);
    }
}
