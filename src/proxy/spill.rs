//! A response's overflow, kept in a temporary file while its client reads slower than
//! its backend sends.
//!
//! A slow reader of a large response would otherwise hold the backend's connection
//! (and a `limits.max_connections` slot) for as long as it takes to read: a thousand
//! of them took every connection of a pool in `bench/slow_clients.sh`. NGINX answers
//! this by buffering responses to temporary files (`proxy_max_temp_file_size`, 1 GiB by
//! default); so does evenkeel, once a response's in-memory read-ahead
//! (`limits.body_buffer`) is full: further bytes go to an unnamed temporary file (in
//! `$TMPDIR`, removed by the kernel when closed) up to `limits.body_spill` bytes, and
//! are written to the client from there. A response that fits in memory never
//! touches a file. File reads and writes are plain system calls on the worker's thread
//! (as NGINX does without `aio`): they hit the page cache, not the disk, in the common
//! case.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::budget::ByteBudget;

/// The overflow of one response: bytes appended at the end, taken from the front.
pub struct Spill {
    limit: u64,
    /// The worker's budget for bytes in files, over all its responses.
    budget: Option<Rc<ByteBudget>>,
    file: Option<File>,
    /// Bytes appended since the file was last emptied.
    written: u64,
    /// Bytes taken back of those.
    taken: u64,
    /// Bytes reserved from the budget.
    reserved: usize,
    /// What could not go to the file after it failed (a full disk, no `$TMPDIR`): held
    /// in memory behind the file's bytes, and no more is spilled.
    failed: Option<VecDeque<Bytes>>,
}

impl Spill {
    /// An empty overflow that may hold up to `limit` bytes (0: none), within what
    /// `budget` has left.
    pub fn new(limit: u64, budget: Option<Rc<ByteBudget>>) -> Spill {
        Spill {
            limit,
            budget,
            file: None,
            written: 0,
            taken: 0,
            reserved: 0,
            failed: None,
        }
    }

    /// Whether a file was ever made (for tests).
    #[cfg(test)]
    pub fn was_used(&self) -> bool {
        self.file.is_some()
    }

    /// Whether nothing waits in it.
    pub fn is_empty(&self) -> bool {
        self.written == self.taken && self.failed.as_ref().is_none_or(VecDeque::is_empty)
    }

    /// Whether more may be appended (the last append may pass the limit by its size).
    pub fn has_room(&self) -> bool {
        self.failed.is_none()
            && self.written < self.limit
            && self
                .budget
                .as_ref()
                .is_none_or(|b| b.left() >= SPILL_STEP || self.reserved as u64 > self.written)
    }

    /// Appends `bytes`. A file that cannot be made or written is given up: what it
    /// could not take waits in memory behind what it holds, and nothing more is
    /// spilled (the backend then waits for the client, as without a spill).
    pub fn append(&mut self, bytes: Bytes) {
        if let Some(held) = &mut self.failed {
            held.push_back(bytes);
            return;
        }
        if let Err(error) = self.write(&bytes) {
            tracing::warn!(%error, "cannot keep a response in a temporary file; the backend waits for its client instead");
            self.failed = Some(VecDeque::from([bytes]));
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let needed = self.written as usize + bytes.len();
        while self.reserved < needed {
            match &self.budget {
                Some(budget) if !budget.take(SPILL_STEP) => {
                    return Err(io::Error::other("the worker's spill budget is used up"))
                }
                Some(_) => self.reserved += SPILL_STEP,
                None => self.reserved = needed,
            }
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(tempfile::tempfile()?),
        };
        file.write_all_at(bytes, self.written)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Takes up to `max` bytes from the front; empty when nothing waits.
    pub fn take(&mut self, max: usize) -> io::Result<Bytes> {
        if self.written == self.taken {
            return Ok(self
                .failed
                .as_mut()
                .and_then(VecDeque::pop_front)
                .unwrap_or_default());
        }
        let Some(file) = &self.file else {
            return Ok(Bytes::new());
        };
        let len = (self.written - self.taken).min(max as u64) as usize;
        let mut out = BytesMut::zeroed(len);
        file.read_exact_at(&mut out, self.taken)?;
        self.taken += len as u64;
        if self.written == self.taken {
            // Drained: start again at the front, and give the disk space back.
            self.written = 0;
            self.taken = 0;
            file.set_len(0)?;
            self.release();
        }
        Ok(out.freeze())
    }

    fn release(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give(self.reserved);
        }
        self.reserved = 0;
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        self.release();
    }
}

/// Budget is reserved from in steps of this many bytes.
const SPILL_STEP: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_back_in_order_and_the_file_is_emptied_when_drained() {
        let budget = Rc::new(ByteBudget::new(4 * SPILL_STEP));
        let mut spill = Spill::new(100, Some(Rc::clone(&budget)));
        assert!(spill.is_empty() && spill.has_room());
        spill.append(Bytes::from_static(b"hello, "));
        spill.append(Bytes::from_static(b"world"));
        assert_eq!(budget.left(), 3 * SPILL_STEP);
        assert_eq!(spill.take(5).expect("take"), "hello");
        spill.append(Bytes::from_static(b"!"));
        assert_eq!(spill.take(100).expect("take"), ", world!");
        assert!(spill.is_empty());
        assert_eq!(
            budget.left(),
            4 * SPILL_STEP,
            "drained: the budget is given back"
        );
        let size = spill
            .file
            .as_ref()
            .map(|f| f.metadata().expect("meta").len());
        assert_eq!(size, Some(0));
        spill.append(Bytes::from(vec![b'x'; 100]));
        assert!(!spill.has_room());
        assert_eq!(spill.take(1000).expect("take").len(), 100);
        assert!(spill.has_room());
        assert!(!Spill::new(0, None).has_room());
        drop(spill);
        assert_eq!(budget.left(), 4 * SPILL_STEP);
    }

    #[test]
    fn past_the_budget_what_is_left_waits_in_memory_behind_the_file_and_no_more_spills() {
        let budget = Rc::new(ByteBudget::new(SPILL_STEP));
        let mut spill = Spill::new(u64::MAX, Some(budget));
        spill.append(Bytes::from(vec![b'a'; SPILL_STEP - 1]));
        spill.append(Bytes::from_static(b"bc"));
        assert!(!spill.has_room());
        let mut all = Vec::new();
        while !spill.is_empty() {
            all.extend_from_slice(&spill.take(4096).expect("take"));
        }
        assert_eq!(all.len(), SPILL_STEP + 1);
        assert!(all.ends_with(b"abc"));
    }
}
