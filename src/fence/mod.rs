//! Fencing (DESIGN.md lease rule 4): Postgres never outlives its lease. The HA runtime tells
//! the fence, after every accepted renewal, until when the local Postgres may stay writable and
//! which process group it is; the fence kills that group the moment the deadline passes, even
//! if pgha hangs. `NoFence` does nothing (tests of the HA loop without a fencer process).

use crate::clock::BootInstant;

/// What the HA runtime tells the fence.
pub trait Fence: Send + Sync {
    /// Postgres (process group `pgid`) may stay up until `deadline` on the boot clock.
    fn extend(&self, pgid: i32, deadline: BootInstant);
    /// Postgres is not primary any more (stopped, or a replica): nothing to fence.
    fn disarm(&self);
}

/// A fence that fences nothing.
pub struct NoFence;

impl Fence for NoFence {
    fn extend(&self, _pgid: i32, _deadline: BootInstant) {}
    fn disarm(&self) {}
}

mod fencer;
pub use fencer::{FenceError, FencerHandle};
