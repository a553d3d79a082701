//! pgha: highly available PostgreSQL from one binary. See README.md and docs/ for the
//! architecture; DESIGN-level rules are referenced from the modules that implement them.

pub mod clock;
pub mod config;
pub mod dcs;
pub mod tls;
pub mod types;
