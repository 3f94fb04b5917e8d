//! The `deltallm` binary; the commands are in `src/cli/`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
