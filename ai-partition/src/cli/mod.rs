//! Command line: `serve`, `run`, `list`, `pull`, `info`.

mod args;
mod bench;
mod commands;
mod info;
mod serve;

use std::process::ExitCode;

use clap::Parser;

pub use args::{Cli, Command, CommonArgs, ServeArgs};

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs its progress; one-shot commands only warnings (their output is the point).
    let quiet = !matches!(cli.command, Command::Serve(_));
    init_logs(cli.verbose, quiet);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nexus-ai: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(a) => serve::serve(a).await,
            Command::Run(a) => commands::run(a).await,
            Command::List(a) => commands::list(a).await,
            Command::Pull(a) => commands::pull(a).await,
            Command::Info(a) => info::info(a),
            Command::BenchEngine(a) => bench::bench_engine(a),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nexus-ai: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(verbose: bool, quiet: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let default = match (verbose, quiet) {
        (true, _) => "nexus_ai=debug,info",
        (false, true) => "warn",
        (false, false) => "info",
    };
    let filter =
        EnvFilter::try_from_env("NEXUS_AI_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
