//! pgha: highly available PostgreSQL from one binary. See README.md and docs/ for the
//! architecture; DESIGN-level rules are referenced from the modules that implement them.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod ctl;
pub mod dcs;
pub mod fence;
pub mod ha;
pub mod pg;
pub mod proxy;
pub mod sys;
pub mod tls;
pub mod types;
pub mod watchdog;

/// This build's version, shown by `pgha version`, the API and `pgha ctl members`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
