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

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;

use bytes::{Bytes, BytesMut};

/// The overflow of one response: bytes appended at the end, taken from the front.
pub struct Spill {
    limit: u64,
    file: Option<File>,
    /// Bytes appended since the file was last emptied.
    written: u64,
    /// Bytes taken back of those.
    taken: u64,
}

impl Spill {
    /// An empty overflow that may hold up to `limit` bytes (0: none).
    pub fn new(limit: u64) -> Spill {
        Spill {
            limit,
            file: None,
            written: 0,
            taken: 0,
        }
    }

    /// Whether a file was ever made (for tests).
    #[cfg(test)]
    pub fn was_used(&self) -> bool {
        self.file.is_some()
    }

    /// Whether nothing waits in it.
    pub fn is_empty(&self) -> bool {
        self.written == self.taken
    }

    /// Whether more may be appended (the last append may pass the limit by its size).
    pub fn has_room(&self) -> bool {
        self.written < self.limit
    }

    /// Appends `bytes`.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
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
        let (Some(file), false) = (&self.file, self.is_empty()) else {
            return Ok(Bytes::new());
        };
        let len = (self.written - self.taken).min(max as u64) as usize;
        let mut out = BytesMut::zeroed(len);
        file.read_exact_at(&mut out, self.taken)?;
        self.taken += len as u64;
        if self.is_empty() {
            // Drained: start again at the front, and give the disk space back.
            self.written = 0;
            self.taken = 0;
            file.set_len(0)?;
        }
        Ok(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_back_in_order_and_the_file_is_emptied_when_drained() {
        let mut spill = Spill::new(100);
        assert!(spill.is_empty() && spill.has_room());
        spill.append(b"hello, ").expect("append");
        spill.append(b"world").expect("append");
        assert_eq!(spill.take(5).expect("take"), "hello");
        spill.append(b"!").expect("append");
        assert_eq!(spill.take(100).expect("take"), ", world!");
        assert!(spill.is_empty());
        assert_eq!(
            spill
                .file
                .as_ref()
                .map(|f| f.metadata().expect("meta").len()),
            Some(0)
        );
        spill.append(&[b'x'; 100]).expect("append");
        assert!(!spill.has_room());
        assert_eq!(spill.take(1000).expect("take").len(), 100);
        assert!(spill.has_room());
        assert!(!Spill::new(0).has_room());
    }
}
