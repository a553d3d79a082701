//! `pgha ctl`'s library side: output formats shared by every subcommand. The client is
//! `api::client::ApiClient`; ctl never reads Raft state directly and never bypasses the API.

pub mod edit;
pub mod output;
