//! The `deltallm` command line: one file per command, the flag groups they
//! share in `args.rs`. Each command maps its flags onto the library and
//! prints what it returns; the work itself lives in the library.

mod args;
mod bench;
mod chat;
mod eval;
mod info;
mod logits;
mod run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "deltallm",
    version,
    about = "Small LLMs on any GPU wgpu reaches, with ternary BitNet kernels and DeltaLLM attention",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streaming it to stdout; prefill and
    /// decode speed go to stderr.
    Run(run::RunArgs),
    /// Chat interactively with the model's chat template.
    Chat(chat::ChatArgs),
    /// Print the logits of the last position (or the top K of every position) as JSON.
    Logits(logits::LogitsArgs),
    /// Time the engine's kernels at BitNet-2B4T / Llama-1B shapes (and, with
    /// --e2e or -m, whole models); a table goes to stdout, progress to stderr.
    Bench(bench::BenchArgs),
    /// Score the model on a task (perplexity of a text, WinoGrande-style
    /// multiple choice) with the DeltaLLM settings given, or sweep them
    /// (--sweep): a table to stdout, progress to stderr, CSV/JSON/SVG files.
    Eval(eval::EvalCommand),
    /// List GPU adapters with their backend, driver, limits and features,
    /// and show which one deltallm would use.
    Info(info::InfoArgs),
}

/// Parse the command line, run the command, and turn an error into its
/// message on stderr and exit code 1 (clap exits with 2 on bad flags).
pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,wgpu_hal::gles=off")).init();
    let result = match Cli::parse().command {
        Command::Run(args) => run::run(&args),
        Command::Chat(args) => chat::chat(&args),
        Command::Logits(args) => logits::logits(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Eval(args) => eval::eval(&args),
        Command::Info(args) => info::info(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
