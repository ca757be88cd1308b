//! Bounds on the bytes one worker holds for all its connections together: request
//! bodies read ahead ([`super::read_ahead`]) and responses kept in temporary files
//! ([`super::spill`]). Each worker has its own (thread-per-core: no lock, no atomic);
//! past a budget, bodies stream as they come and backends wait for their clients, as
//! they would without the buffering.

use std::cell::Cell;
use std::rc::Rc;

/// Request-body bytes one worker holds read ahead at most. An HTTP/2 connection may
/// carry 128 requests at once, so without a bound per worker 10,000 such connections
/// could make evenkeel hold tens of GiB; past the budget, bodies stream as they come.
pub const READ_AHEAD_BUDGET: usize = 64 * 1024 * 1024;

/// Response bytes one worker keeps in temporary files at most, over all its slow
/// readers ([`super::spill`]); past it, backends wait for their clients again.
pub const SPILL_BUDGET: usize = 1024 * 1024 * 1024;

/// Bytes that may still be reserved.
pub struct ByteBudget {
    left: Cell<usize>,
}

impl ByteBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> ByteBudget {
        ByteBudget {
            left: Cell::new(bytes),
        }
    }

    /// Reserves up to `bytes`, or nothing when fewer are left; given back when the
    /// reservation is dropped.
    pub fn reserve(self: &Rc<Self>, bytes: usize) -> Option<Reserved> {
        (bytes > 0 && self.take(bytes)).then(|| Reserved {
            budget: Rc::clone(self),
            bytes,
        })
    }

    /// Bytes left.
    pub fn left(&self) -> usize {
        self.left.get()
    }

    /// Takes `bytes` if that many are left.
    pub fn take(&self, bytes: usize) -> bool {
        let left = self.left.get();
        let enough = left >= bytes;
        if enough {
            self.left.set(left - bytes);
        }
        enough
    }

    /// Gives back `bytes` taken before.
    pub fn give(&self, bytes: usize) {
        self.left.set(self.left.get() + bytes);
    }
}

/// Bytes reserved from a [`ByteBudget`] while they are held.
pub struct Reserved {
    budget: Rc<ByteBudget>,
    bytes: usize,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget.give(self.bytes);
    }
}
