//! The access log: one line per request, written without slowing the request path.
//!
//! A `tracing` event per request cost about 60% more CPU per request than the proxying
//! itself (bench/compare.sh, evenkeel-log vs evenkeel). Here each worker thread
//! formats its lines into a buffer of its own, reused from batch to batch (no
//! allocation per line), and hands the buffer as a whole to one writer thread when it
//! passes [`BATCH`] bytes, on the worker's once-a-second sweep, and when the worker
//! stops. The hand-over is a bounded channel: when the writer falls behind (a slow
//! terminal or pipe), a batch is dropped and counted rather than waited for.
//!
//! Lines look like the rest of the log (`TIME  INFO evenkeel::access: method=GET
//! path=/x status=200 pool=web backend=127.0.0.1:9001 duration_ms=1.234`), on stderr.

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use http::Method;

/// A worker hands its buffer over once it holds this many bytes.
pub const BATCH: usize = 16 * 1024;
/// Batches waiting for the writer at most.
const QUEUE: usize = 64;

struct Writer {
    batches: SyncSender<Vec<u8>>,
    dropped: AtomicU64,
    /// Batches handed over and not written yet.
    pending: std::sync::Arc<AtomicU64>,
}

static WRITER: OnceLock<Writer> = OnceLock::new();
/// Lines as JSON objects (`serve --log-format json`), like the rest of the log.
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes the access log as JSON objects, one per line, in the shape of evenkeel's
/// other JSON log lines (`timestamp`, `level`, `target`, `fields`).
pub fn use_json() {
    JSON.store(true, Ordering::Relaxed);
}

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(BATCH * 2));
}

/// Starts the writer thread (once per process; later calls do nothing).
pub fn start() {
    WRITER.get_or_init(|| {
        let (batches, receiver) = sync_channel::<Vec<u8>>(QUEUE);
        let pending = std::sync::Arc::new(AtomicU64::new(0));
        let written = std::sync::Arc::clone(&pending);
        let _ = std::thread::Builder::new()
            .name("evenkeel-access".into())
            .spawn(move || {
                let stderr = std::io::stderr();
                for batch in receiver {
                    let _ = stderr.lock().write_all(&batch);
                    written.fetch_sub(1, Ordering::Relaxed);
                }
            });
        Writer {
            batches,
            dropped: AtomicU64::new(0),
            pending,
        }
    });
}

/// Batches dropped because the writer fell behind.
pub fn dropped() -> u64 {
    WRITER
        .get()
        .map_or(0, |w| w.dropped.load(Ordering::Relaxed))
}

/// Appends one request's line to this thread's buffer.
pub fn line(
    method: &Method,
    path: &str,
    status: u16,
    pool: &str,
    backend: &str,
    duration: Duration,
    aborted: bool,
) {
    BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        if JSON.load(Ordering::Relaxed) {
            let mut fields = serde_json::json!({
                "method": method.as_str(),
                "path": path,
                "status": status,
                "pool": pool,
                "backend": backend,
                "duration_ms": (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0,
            });
            if aborted {
                fields["aborted"] = serde_json::Value::Bool(true);
            }
            let line = serde_json::json!({
                "timestamp": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
                "level": "INFO",
                "target": "evenkeel::access",
                "fields": fields,
            });
            let _ = writeln!(buffer, "{line}");
            if buffer.len() >= BATCH {
                hand_over(&mut buffer);
            }
            return;
        }
        let _ = writeln!(
            buffer,
            "{}  INFO evenkeel::access: method={method} path={path} status={status} pool={pool} backend={backend} duration_ms={:.3}",
            humantime::format_rfc3339_micros(SystemTime::now()),
            duration.as_secs_f64() * 1000.0
        );
        if aborted {
            // The response broke off after it had begun: the status is what was sent.
            buffer.pop();
            buffer.extend_from_slice(b" aborted=true\n");
        }
        if buffer.len() >= BATCH {
            hand_over(&mut buffer);
        }
    });
}

/// Hands this thread's lines to the writer now (the workers' sweep and shutdown).
pub fn flush() {
    BUFFER.with(|buffer| hand_over(&mut buffer.borrow_mut()));
}

fn hand_over(buffer: &mut Vec<u8>) {
    if buffer.is_empty() {
        return;
    }
    let Some(writer) = WRITER.get() else {
        buffer.clear();
        return;
    };
    let batch = std::mem::replace(buffer, Vec::with_capacity(BATCH * 2));
    writer.pending.fetch_add(1, Ordering::Relaxed);
    if writer.batches.try_send(batch).is_err() {
        writer.pending.fetch_sub(1, Ordering::Relaxed);
        writer.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits (at most `limit`) until every batch handed over is written: call it after the
/// workers have stopped and flushed, before the process exits.
pub fn drain(limit: Duration) {
    let Some(writer) = WRITER.get() else { return };
    let deadline = std::time::Instant::now() + limit;
    while writer.pending.load(Ordering::Relaxed) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}
