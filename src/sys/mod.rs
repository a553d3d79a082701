//! The few operating-system facts and changes pgha needs beyond std and tokio, done without
//! libc's NSS so the static binary never dlopens a host module (STACK.md item 2). Each
//! submodule owns one noun; none of them decides policy (when to drop privileges, which
//! directories to chown): the CLI and the drivers do.

pub mod notify;
pub mod resolve;
pub mod user;
