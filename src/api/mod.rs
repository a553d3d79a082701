//! The HTTPS REST API: the server (`server`), its errors, the bodies shared with `pgha ctl`
//! (`model`), the join token format (`token`) and the client used by ctl, join and peers.

pub mod client;
pub mod error;
pub mod health;
pub mod known;
pub mod model;
pub mod node;
pub mod patroni;
pub mod server;
pub mod switchover;
pub mod token;
