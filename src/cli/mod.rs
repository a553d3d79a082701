//! The command line: clap definitions and the glue of each subcommand. `anyhow` is used here
//! and in `main` only; everything below returns typed errors.

pub mod ctl;
pub mod ctl_config;
pub mod ctl_members;
pub mod demo;
pub mod files;
pub mod generate;
pub mod init;
pub mod join;
pub mod logging;
pub mod reload;
pub mod resolve;
pub mod run;
pub mod service;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "pgha",
    version = crate::VERSION,
    propagate_version = true,
    about = "Highly available PostgreSQL from one binary: Raft consensus, HA loop, REST API and proxy",
    long_about = "Highly available PostgreSQL from one binary.\n\nOn the first node: `pgha init --name node1 --advertise 10.0.0.11`, then start `pgha run` (or `systemctl enable --now pgha`).\nOn every other node: `pgha join <TOKEN> --name node2 --advertise 10.0.0.12`, then start `pgha run`.\nTo try it locally: `pgha demo`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the config file is: `--config`, else `PGHA_CONFIG`, else /etc/pgha/pgha.yml.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArg {
    /// Config file [default: $PGHA_CONFIG or /etc/pgha/pgha.yml]
    #[arg(long, short = 'c', global = true)]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn path(&self) -> PathBuf {
        crate::config::file::config_path(self.config.clone(), std::env::var_os("PGHA_CONFIG"))
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new cluster on this node: CA, certificates, config and the initial Raft state.
    ///
    /// With an existing config file (--config), uses it and fills in only what is missing.
    /// Prints a join token for the other nodes on stdout.
    Init(init::InitArgs),
    /// Join an existing cluster with a token from `pgha init` or `pgha ctl token create`.
    ///
    /// Verifies the cluster by the CA fingerprint in the token, obtains this node's
    /// certificates by CSR, and writes the config and an empty Raft store. Start `pgha run`
    /// afterwards: the node catches up as a learner and becomes a voter.
    Join(join::JoinArgs),
    /// Run this node: the Raft member, the REST API and, on a data member, the HA loop that
    /// supervises Postgres. Started by systemd as `pgha.service`.
    ///
    /// SIGTERM or SIGINT stops it in order (Postgres cleanly, a held lease released first);
    /// SIGHUP re-reads the config file (`systemctl reload pgha`).
    Run(run::RunArgs),
    /// Operate the cluster through the REST API (like patronictl).
    Ctl(ctl::CtlArgs),
    /// Start a local cluster of N nodes on 127.0.0.1 in a temporary directory; Ctrl-C stops
    /// it and removes everything.
    Demo(demo::DemoArgs),
    /// Print the version.
    Version,
    /// Write a shell completion script to stdout (packaging).
    #[command(hide = true)]
    Completions(generate::CompletionsArgs),
    /// Write the man pages into a directory (packaging).
    #[command(hide = true)]
    Man(generate::ManArgs),
    /// Print the addresses pgha resolves a host name to, without libc (diagnostics).
    #[command(hide = true)]
    Resolve(resolve::ResolveArgs),
}
