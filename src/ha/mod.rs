//! The HA loop's policy: what the local node should do next. `observe` describes the inputs,
//! `decide` is the pure decision (table-tested in `tests`), `eligibility` the promotion rules.

pub mod decide;
pub mod eligibility;
pub mod observe;
#[cfg(test)]
mod tests;
