//! A bound on how long a stream may make no progress, paid for only when it pauses.
//!
//! Most responses arrive whole with their head and most writes complete at once, so
//! the timer is made at the first pause (a poll that returns `Pending`) and re-armed
//! after each step of progress; a stream that never pauses never touches the timer
//! wheel.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// How long a stream may pause, and the timer that watches it once it does.
#[derive(Debug)]
pub struct Stall {
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Stall {
    /// A bound of `limit` per pause.
    pub fn new(limit: Duration) -> Stall {
        Stall { limit, timer: None }
    }

    /// The bound.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Call when the stream returned `Pending`: `Ready` once the pause has lasted
    /// `limit` (the stream should then fail), else `Pending` with `cx` woken at the
    /// limit.
    pub fn poll_paused(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let limit = self.limit;
        self.timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)))
            .as_mut()
            .poll(cx)
    }

    /// Call when the stream made progress: the next pause gets the whole `limit`.
    pub fn progressed(&mut self) {
        if let Some(timer) = self.timer.as_mut() {
            timer.as_mut().reset(Instant::now() + self.limit);
        }
    }
}
