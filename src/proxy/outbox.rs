//! Copying a body from one side to the other: read what is at hand, write it in one go.
//!
//! An [`Outbox`] is a queue of byte pieces (a head, body frames, chunk-size lines)
//! written with one vectored write, so a body that arrives as many small frames (an
//! upload sent as one-byte chunks, say) costs one system call per batch rather than
//! three per frame, and no body byte is copied on the way. [`pump`] moves a body
//! through one: it reads ahead while the writer is slow, up to a bound, so a backend
//! can finish its response while a slow client still reads it (the backend's
//! connection then goes back to the pool at once), and it bounds every pause in which
//! neither side moves a byte.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice, Write as _};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::Body;
use tokio::io::AsyncWrite;

use super::spill::Spill;
use super::stall::Stall;

/// Most pieces given to one vectored write (Linux takes up to 1,024; the array is
/// made for every write, so it is kept small).
pub const MAX_SLICES: usize = 16;
/// The last chunk of a chunked body, without trailers.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// Pieces up to this size are copied behind the head rather than queued.
const COPY_SMALL: usize = 4 * 1024;
/// ... as long as the head stays within this size.
const COPY_LIMIT: usize = 16 * 1024;
/// Bytes taken back from a spill at a time.
const SPILL_READ: usize = 64 * 1024;

/// Byte pieces waiting to be written, in order: a message head first (built in place,
/// its room kept between uses), then body pieces.
#[derive(Default)]
pub struct Outbox {
    head: Vec<u8>,
    /// Bytes of `head` already written.
    head_sent: usize,
    pieces: VecDeque<Bytes>,
    /// Bytes in `pieces`.
    len: usize,
    /// Room for chunk-size lines, split off as they are made.
    lines: BytesMut,
}

/// Spare outboxes a worker keeps for its next responses at most.
const SPARE_OUTBOXES: usize = 64;

thread_local! {
    /// Each worker's spare outboxes: a response takes one and gives it back, so
    /// writing a response allocates nothing once the worker is warm, and an idle
    /// connection holds none.
    static SPARE: std::cell::RefCell<Vec<Outbox>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An outbox taken from this thread's spares; given back (emptied) when dropped.
pub struct Pooled(Option<Outbox>);

impl std::ops::Deref for Pooled {
    type Target = Outbox;

    fn deref(&self) -> &Outbox {
        self.0.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Outbox {
        self.0.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(mut outbox) = self.0.take() else {
            return;
        };
        // Only modest ones are kept: a huge head's room is given back.
        if outbox.head.capacity() > 16 * 1024 {
            return;
        }
        outbox.head.clear();
        outbox.head_sent = 0;
        outbox.pieces.clear();
        outbox.len = 0;
        SPARE.with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_OUTBOXES {
                spare.push(outbox);
            }
        });
    }
}

impl Outbox {
    /// An empty outbox from this thread's spares (or a new one).
    pub fn pooled() -> Pooled {
        Pooled(Some(
            SPARE
                .with(|spare| spare.borrow_mut().pop())
                .unwrap_or_default(),
        ))
    }

    /// The head to write first, to be built in place before anything else is queued
    /// (small pieces are copied behind it, so a head added to later would land behind
    /// body bytes).
    pub fn head_mut(&mut self) -> &mut Vec<u8> {
        debug_assert!(
            self.head.is_empty() && self.pieces.is_empty(),
            "a head is built into an empty outbox only"
        );
        &mut self.head
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.head.len() - self.head_sent + self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `bytes` as they are. Small ones right behind the head (or a previous
    /// small one) are copied into the head's room: one contiguous write (`send`) costs
    /// less than a vectored one (`writev`) of several small pieces.
    pub fn push(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if self.pieces.is_empty()
            && bytes.len() <= COPY_SMALL
            && self.head.len() + bytes.len() <= COPY_LIMIT
        {
            self.head.extend_from_slice(&bytes);
            return;
        }
        self.len += bytes.len();
        self.pieces.push_back(bytes);
    }

    /// Queues `data` as one chunk of a chunked body (RFC 9112 §7.1).
    pub fn push_chunk(&mut self, data: Bytes) {
        if data.is_empty() {
            return; // an empty chunk would end the body
        }
        if self.lines.capacity() < 32 {
            self.lines.reserve(512);
        }
        let (line, len) = chunk_line(data.len());
        self.lines.extend_from_slice(&line[..len]);
        let line = self.lines.split().freeze();
        self.push(line);
        self.push(data);
        self.push(Bytes::from_static(b"\r\n"));
    }

    /// Queues the last chunk of a chunked body (no trailers).
    pub fn push_last_chunk(&mut self) {
        self.push(Bytes::from_static(LAST_CHUNK));
    }

    /// Writes as much as one vectored write takes; the bytes written.
    pub fn poll_write<W>(&mut self, writer: &mut W, cx: &mut Context<'_>) -> Poll<io::Result<usize>>
    where
        W: FnMut(&mut Context<'_>, &[IoSlice<'_>]) -> Poll<io::Result<usize>>,
    {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let head = &self.head[self.head_sent..];
        let first = usize::from(!head.is_empty());
        slices[0] = IoSlice::new(head);
        let mut count = first;
        for (slot, piece) in slices[first..].iter_mut().zip(&self.pieces) {
            *slot = IoSlice::new(piece);
            count += 1;
        }
        let mut written = ready!(writer(cx, &slices[..count]))?;
        if written == 0 && count > 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        let total = written;
        let from_head = written.min(self.head.len() - self.head_sent);
        self.head_sent += from_head;
        written -= from_head;
        if self.head_sent == self.head.len() {
            self.head.clear();
            self.head_sent = 0;
        }
        self.len -= written;
        while written > 0 {
            let Some(front) = self.pieces.front_mut() else {
                break;
            };
            if written >= front.len() {
                written -= front.len();
                self.pieces.pop_front();
            } else {
                let _ = front.split_to(written);
                written = 0;
            }
        }
        Poll::Ready(Ok(total))
    }
}

/// Writes `slices` to `stream`: one slice with a plain write (`send`), several with a
/// vectored one (`writev`). No slices at all is a flush (`Ok(0)` once done): a TLS
/// stream keeps what it has encrypted but not yet sent, and the writers here flush
/// before they wait for more to write, or finish (for a TCP socket it returns at once).
#[inline]
pub fn poll_write_slices<S: AsyncWrite>(
    stream: Pin<&mut S>,
    cx: &mut Context<'_>,
    slices: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    match slices {
        [] => stream.poll_flush(cx).map_ok(|()| 0),
        [one] => stream.poll_write(cx, one),
        _ => stream.poll_write_vectored(cx, slices),
    }
}

/// Flushes `writer` (see [`poll_write_slices`]); a pause is bounded by `stall`.
pub async fn flush<W>(writer: &mut W, stall: &mut Stall) -> io::Result<()>
where
    W: FnMut(&mut Context<'_>, &[IoSlice<'_>]) -> Poll<io::Result<usize>>,
{
    poll_fn(|cx| match writer(cx, &[]) {
        Poll::Pending => {
            ready!(stall.poll_paused(cx));
            Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
        }
        Poll::Ready(done) => Poll::Ready(done.map(drop)),
    })
    .await
}

/// Writes `bytes` through `writer` and flushes it, each pause bounded by `stall` (the
/// timer is made only once a write has to wait): a peer that takes nothing for its
/// limit fails it with `TimedOut`.
pub async fn write_all<W>(writer: &mut W, mut bytes: &[u8], stall: &mut Stall) -> io::Result<()>
where
    W: FnMut(&mut Context<'_>, &[IoSlice<'_>]) -> Poll<io::Result<usize>>,
{
    while !bytes.is_empty() {
        let written = poll_fn(|cx| match writer(cx, &[IoSlice::new(bytes)]) {
            Poll::Pending => {
                ready!(stall.poll_paused(cx));
                Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
            }
            written => written,
        })
        .await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        stall.progressed();
        bytes = &bytes[written..];
    }
    flush(writer, stall).await
}

/// Writes `pieces` whole, in order, gathered into vectored writes as an [`Outbox`]
/// gathers them (a small piece copied behind the one before), then flushes; a pause is
/// bounded by `stall`.
pub async fn write_all_pieces<'a, W>(
    writer: &mut W,
    pieces: impl IntoIterator<Item = &'a Bytes>,
    stall: &mut Stall,
) -> io::Result<()>
where
    W: FnMut(&mut Context<'_>, &[IoSlice<'_>]) -> Poll<io::Result<usize>>,
{
    let mut outbox = Outbox::pooled();
    for piece in pieces {
        outbox.push(piece.clone());
    }
    while !outbox.is_empty() {
        poll_fn(|cx| match outbox.poll_write(writer, cx) {
            Poll::Pending => {
                ready!(stall.poll_paused(cx));
                Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
            }
            written => written,
        })
        .await?;
        stall.progressed();
    }
    flush(writer, stall).await
}

/// Why a body could not be copied.
#[derive(Debug)]
pub enum PumpError<E> {
    /// Reading the body failed.
    Body(E),
    /// Writing failed.
    Write(io::Error),
    /// Neither side moved a byte for the stall's limit; `reading`: the body owed the
    /// next byte (nothing waited to be written).
    Stalled {
        /// Whether the pause was the body's.
        reading: bool,
    },
}

/// Copies `body` through `outbox` to `writer` (after whatever the outbox already
/// holds), as chunks when `chunked` (the last chunk included), until the body ends and
/// everything is written. It reads whatever the body has at hand while fewer than
/// `read_ahead` bytes wait (at least one piece at a time), then writes all that waits
/// in one vectored write. With a `spill`, what the body sends while `read_ahead` bytes
/// already wait goes on to it (up to its limit) and comes back as the writer takes
/// the rest. `stall` bounds each pause in which neither side moves.
pub async fn pump<B, W>(
    body: &mut B,
    outbox: &mut Outbox,
    chunked: bool,
    read_ahead: usize,
    mut spill: Option<&mut Spill>,
    writer: &mut W,
    stall: &mut Stall,
) -> Result<(), PumpError<B::Error>>
where
    B: Body<Data = Bytes> + Unpin,
    W: FnMut(&mut Context<'_>, &[IoSlice<'_>]) -> Poll<io::Result<usize>>,
{
    let mut ended = body.is_end_stream() && !chunked;
    // Whether the writer has had to wait: only then is anything spilled (a client that
    // keeps up never makes evenkeel touch a file).
    let mut writer_waited = false;
    // Whether everything written has been flushed out of the writer (see
    // [`poll_write_slices`]): before the pump waits for the body, and before it ends.
    let mut flushed = true;
    poll_fn(|cx| loop {
        let mut moved = false;
        while !ended {
            let spilling = spill.as_ref().is_some_and(|s| !s.is_empty());
            let to_memory = !spilling && (outbox.is_empty() || outbox.len() < read_ahead);
            let may_spill = writer_waited && spill.as_ref().is_some_and(|s| s.has_room());
            if !to_memory && !may_spill {
                break;
            }
            let frame = match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Some(frame),
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(PumpError::Body(error))),
                Poll::Ready(None) => None,
                Poll::Pending => break,
            };
            moved = true;
            let data = match frame {
                None => {
                    ended = true;
                    None
                }
                Some(frame) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => Some(data),
                    _ => continue, // trailers (not forwarded), or nothing
                },
            };
            if to_memory {
                match data {
                    Some(data) if chunked => outbox.push_chunk(data),
                    Some(data) => outbox.push(data),
                    None if chunked => outbox.push_last_chunk(),
                    None => {}
                }
            } else if let Some(spill) = spill.as_deref_mut() {
                match data {
                    Some(data) if chunked => {
                        let (line, len) = chunk_line(data.len());
                        spill.append(Bytes::copy_from_slice(&line[..len]));
                        spill.append(data);
                        spill.append(Bytes::from_static(b"\r\n"));
                    }
                    Some(data) => spill.append(data),
                    None if chunked => spill.append(Bytes::from_static(LAST_CHUNK)),
                    None => {}
                }
            }
        }
        if outbox.is_empty() {
            if let Some(spill) = spill.as_deref_mut() {
                match spill.take(SPILL_READ) {
                    Ok(bytes) => outbox.push(bytes),
                    Err(error) => return Poll::Ready(Err(PumpError::Write(error))),
                }
            }
        }
        if !outbox.is_empty() {
            match outbox.poll_write(writer, cx) {
                Poll::Ready(Ok(_)) => {
                    moved = true;
                    flushed = false;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(PumpError::Write(error))),
                Poll::Pending => writer_waited = true,
            }
        }
        let drained = outbox.is_empty() && spill.as_ref().is_none_or(|s| s.is_empty());
        if drained && !flushed && (ended || !moved) {
            match writer(cx, &[]) {
                Poll::Ready(Ok(_)) => {
                    flushed = true;
                    // A flush that took a while was the client taking bytes.
                    stall.progressed();
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(PumpError::Write(error))),
                Poll::Pending => writer_waited = true,
            }
        }
        if ended && drained && flushed {
            return Poll::Ready(Ok(()));
        }
        if moved {
            stall.progressed();
            continue;
        }
        ready!(stall.poll_paused(cx));
        return Poll::Ready(Err(PumpError::Stalled {
            reading: outbox.is_empty() && flushed,
        }));
    })
    .await
}

/// The chunk-size line for a chunk of `len` bytes, and its length.
fn chunk_line(len: usize) -> ([u8; 20], usize) {
    let mut line = [0u8; 20];
    let free = {
        let mut cursor = &mut line[..];
        let _ = write!(cursor, "{len:x}\r\n");
        cursor.len()
    };
    (line, 20 - free)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Frame;
    use std::time::Duration;

    /// A body that yields its frames one at a time.
    struct Frames(VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            Poll::Ready(self.0.pop_front().map(|data| Ok(Frame::data(data))))
        }
    }

    #[test]
    fn a_body_of_many_small_frames_is_rechunked_and_written_in_few_writes() {
        let mut body = Frames(
            (0..1000u32)
                .map(|i| Bytes::from(vec![b'a' + (i % 26) as u8]))
                .collect(),
        );
        let mut out = Vec::new();
        let mut writes = 0usize;
        let mut writer = |_: &mut Context<'_>, slices: &[IoSlice<'_>]| {
            writes += 1;
            let mut n = 0;
            for slice in slices {
                out.extend_from_slice(slice);
                n += slice.len();
            }
            Poll::Ready(Ok(n))
        };
        pump_all(&mut body, true, 64 * 1024, None, &mut writer);
        // 1000 frames of 3 pieces each plus the last chunk, at most 64 pieces a write.
        assert!(writes <= 3001 / MAX_SLICES + 1, "{writes} writes");
        let mut decoded = Vec::new();
        let mut rest = &out[..];
        loop {
            let end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("size line");
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).expect("hex"), 16)
                .expect("size");
            rest = &rest[end + 2..];
            if size == 0 {
                assert_eq!(rest, b"\r\n");
                break;
            }
            decoded.extend_from_slice(&rest[..size]);
            assert_eq!(&rest[size..size + 2], b"\r\n");
            rest = &rest[size + 2..];
        }
        assert_eq!(decoded.len(), 1000);
        assert_eq!(decoded[27], b'b');
    }

    /// [`write_all_pieces`] puts the pieces on the wire whole and in order, however
    /// little each write takes (3 bytes here), and in one write when the writer takes
    /// everything; a flush (no slices) follows.
    #[test]
    fn pieces_are_written_whole_in_order_through_partial_writes() {
        let pieces: Vec<Bytes> = [300usize, 6000, 10, 0, 5000, 4096]
            .iter()
            .enumerate()
            .map(|(i, &len)| Bytes::from(vec![b'a' + i as u8; len]))
            .collect();
        let expected: Vec<u8> = pieces.iter().flat_map(|p| p.to_vec()).collect();
        for take in [3usize, usize::MAX] {
            let mut out = Vec::new();
            let mut writes = 0usize;
            let mut writer = |_: &mut Context<'_>, slices: &[IoSlice<'_>]| {
                if slices.is_empty() {
                    return Poll::Ready(Ok(0));
                }
                writes += 1;
                let mut n = 0;
                for slice in slices {
                    let part = &slice[..slice.len().min(take - n)];
                    out.extend_from_slice(part);
                    n += part.len();
                    if n == take {
                        break;
                    }
                }
                Poll::Ready(Ok(n))
            };
            let mut stall = Stall::new(Duration::from_secs(1));
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(write_all_pieces(&mut writer, &pieces, &mut stall))
                .expect("written");
            assert_eq!(out, expected, "{take} bytes a write");
            if take == usize::MAX {
                assert_eq!(writes, 1, "one vectored write");
            } else {
                assert_eq!(writes, expected.len().div_ceil(3));
            }
        }
    }

    /// Runs [`pump`] over `body` to its end (a failure fails the test).
    fn pump_all<W>(
        body: &mut Frames,
        chunked: bool,
        read_ahead: usize,
        spill: Option<&mut Spill>,
        writer: &mut W,
    ) where
        W: FnMut(&mut Context<'_>, &[IoSlice<'_>]) -> Poll<io::Result<usize>>,
    {
        let mut outbox = Outbox::default();
        let mut stall = Stall::new(Duration::from_secs(1));
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(pump(
                body,
                &mut outbox,
                chunked,
                read_ahead,
                spill,
                writer,
                &mut stall,
            ))
            .map_err(|_| "pump")
            .expect("pumped");
    }

    /// A writer into `out` that takes at most `per_write` bytes a write.
    fn trickle(
        out: &mut Vec<u8>,
        per_write: usize,
    ) -> impl FnMut(&mut Context<'_>, &[IoSlice<'_>]) -> Poll<io::Result<usize>> + '_ {
        move |_, slices| {
            let mut n = 0;
            for slice in slices {
                let take = (per_write - n).min(slice.len());
                out.extend_from_slice(&slice[..take]);
                n += take;
                if n == per_write {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }
    }

    /// A body that yields one piece, then nothing more for ever (a long poll).
    struct OnceThenSilent(Option<Bytes>);

    impl Body for OnceThenSilent {
        type Data = Bytes;
        type Error = io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            match self.0.take() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None => Poll::Pending,
            }
        }
    }

    /// A flush that takes a while (a slow TLS client draining the session's buffer) is
    /// progress: the wait for the body's next piece that follows gets the whole stall
    /// limit, not what the flush left of it.
    #[test]
    fn a_slow_flush_counts_as_progress_for_the_stall_that_follows() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let start = tokio::time::Instant::now();
            let flushed_at = start + Duration::from_millis(800);
            let mut body = OnceThenSilent(Some(Bytes::from_static(b"event")));
            let mut writer = |cx: &mut Context<'_>, slices: &[IoSlice<'_>]| {
                if !slices.is_empty() {
                    return Poll::Ready(Ok(slices.iter().map(|s| s.len()).sum()));
                }
                if tokio::time::Instant::now() >= flushed_at {
                    return Poll::Ready(Ok(0));
                }
                // Wake when the flush is done.
                let waker = cx.waker().clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(flushed_at).await;
                    waker.wake();
                });
                Poll::Pending
            };
            let mut outbox = Outbox::default();
            let mut stall = Stall::new(Duration::from_secs(1));
            let pumped = pump(
                &mut body,
                &mut outbox,
                false,
                1024,
                None,
                &mut writer,
                &mut stall,
            )
            .await;
            assert!(
                matches!(pumped, Err(PumpError::Stalled { reading: true })),
                "{pumped:?}"
            );
            let waited = start.elapsed();
            assert!(
                waited >= Duration::from_millis(1800),
                "stalled after {waited:?}"
            );
        });
    }

    #[test]
    fn a_partial_write_keeps_the_rest_in_order() {
        let mut outbox = Outbox::pooled();
        outbox.head_mut().extend_from_slice(b"head|");
        outbox.push_chunk(Bytes::from_static(b"hello"));
        outbox.push_last_chunk();
        let mut out = Vec::new();
        let mut writer = trickle(&mut out, 3);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while !outbox.is_empty() {
            let _ = outbox.poll_write(&mut writer, &mut cx);
        }
        drop(writer);
        assert_eq!(out, b"head|5\r\nhello\r\n0\r\n\r\n");
        // Given back empty, and handed out again.
        drop(outbox);
        let again = Outbox::pooled();
        assert!(again.is_empty() && again.head.capacity() >= 5);
    }

    #[test]
    fn what_a_slow_writer_cannot_take_goes_to_the_spill_and_comes_back_in_order() {
        let mut body = Frames((0..200u32).map(|i| Bytes::from(format!("<{i}>"))).collect());
        let expected: String = (0..200u32).map(|i| format!("<{i}>")).collect();
        let mut out = Vec::new();
        // Seven bytes a write, and every other write has to wait: far slower than the
        // body.
        let mut seven = trickle(&mut out, 7);
        let mut calls = 0;
        let mut writer = |cx: &mut Context<'_>, slices: &[IoSlice<'_>]| {
            calls += 1;
            if calls % 2 == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            seven(cx, slices)
        };
        let mut spill = Spill::new(1 << 20, None);
        pump_all(&mut body, false, 16, Some(&mut spill), &mut writer);
        drop(seven);
        assert_eq!(String::from_utf8(out).expect("text"), expected);
        assert!(spill.was_used() && spill.is_empty());
    }
}
