//! Configuration in three layers (STYLE.md): the local file (`file`, checked by `validate`), the
//! dynamic configuration replicated in Raft (`dynamic`), and the effective configuration merged
//! from both.

pub mod dynamic;
pub mod file;
mod validate;
