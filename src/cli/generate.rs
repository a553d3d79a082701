//! Hidden subcommands that turn the clap definitions into files the packages ship: shell
//! completion scripts (`pgha completions bash|zsh|fish`, on stdout) and man pages (`pgha man
//! --dir DIR`: `pgha.1` and one page per visible subcommand, `pgha-ctl-switchover.1` and so
//! on). Generated from the binary itself, so they can never describe another version.

use super::Cli;
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing)
    #[arg(long)]
    pub dir: PathBuf,
}

pub fn completions(args: CompletionsArgs) -> Result<()> {
    // Into a buffer first: clap_complete panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "pgha", &mut script);
    std::io::stdout().write_all(&script).context("cannot write the completion script to stdout")
}

pub fn man(args: ManArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    clap_mangen::generate_to(Cli::command(), &args.dir)
        .with_context(|| format!("cannot write man pages into {}", args.dir.display()))
}
