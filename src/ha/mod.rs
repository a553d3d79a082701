//! The HA loop: what the local node should do next, and doing it. `observe` describes the
//! inputs, `decide` is the pure decision (table-tested in `tests`), `eligibility` the promotion
//! rules; `run` is the loop (gather, decide, act), `local` the local Postgres it owns and `act`
//! the execution of one action. `control` is the API's view of the loop and its manual
//! requests (`manual` carries them out); `callbacks` runs the operator's scripts on events.

mod act;
pub mod callbacks;
pub mod control;
pub mod decide;
pub mod eligibility;
pub mod local;
#[cfg(test)]
mod local_tests;
pub mod manual;
pub mod observe;
pub mod run;
pub mod sync;
#[cfg(test)]
mod tests;
