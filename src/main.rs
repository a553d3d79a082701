//! The `pgha` binary: parses the command line and hands over to `pgha::cli`.

use clap::Parser;
use pgha::cli::{self, Cli, Command};
use std::process::ExitCode;

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

fn main() -> ExitCode {
    // Exactly one rustls crypto provider (STACK.md item 1).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Cli::parse();
    let result = match args.command {
        // `run` drops privileges before it starts its own runtime.
        Command::Run(a) => cli::run::run(a),
        Command::Init(a) => {
            cli::logging::init(None);
            cli::init::run(a)
        }
        Command::Join(a) => {
            cli::logging::init(None);
            runtime().map_err(Into::into).and_then(|rt| rt.block_on(cli::join::run(a)))
        }
        Command::Ctl(a) => runtime().map_err(Into::into).and_then(|rt| rt.block_on(cli::ctl::run(a))),
        Command::Demo(a) => {
            cli::logging::init(None);
            runtime().map_err(Into::into).and_then(|rt| rt.block_on(cli::demo::run(a)))
        }
        Command::Version => {
            println!("pgha {}", pgha::VERSION);
            Ok(())
        }
        Command::Completions(a) => cli::generate::completions(a),
        Command::Man(a) => cli::generate::man(a),
        Command::Resolve(a) => runtime().map_err(Into::into).and_then(|rt| rt.block_on(cli::resolve::run(a))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: each cause once (many of our errors already quote their source).
            let mut line = e.to_string();
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !line.contains(&text) {
                    line.push_str(": ");
                    line.push_str(&text);
                }
            }
            eprintln!("pgha: {line}");
            ExitCode::FAILURE
        }
    }
}
