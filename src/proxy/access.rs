//! The access log: one line per request, written without slowing the request path.
//!
//! A `tracing` event per request cost about 60% more CPU per request than the proxying
//! itself (bench/compare.sh, evenkeel-log vs evenkeel). Here each worker thread
//! formats its lines into a buffer of its own, reused from batch to batch (no
//! allocation per line), and hands the buffer as a whole to one writer thread when it
//! passes [`BATCH`] bytes, on the worker's once-a-second sweep, and when the worker
//! stops. The hand-over is a bounded channel: when the writer falls behind (a slow
//! terminal, pipe or disk), a batch is dropped and its lines counted
//! ([`dropped`], `evenkeel_access_log_dropped_total`) rather than waited for.
//!
//! Lines go to stderr with the rest of the log by default, or to stdout or a file
//! ([`Destination`]). A file is opened for appending and reopened by [`reopen`]
//! (`serve` calls it on SIGUSR1), so logrotate can move it away and have the next line
//! land in a new file: the writer notices within a second even when no request comes.
//!
//! Text lines look like the rest of the log (`TIME  INFO evenkeel::access: id=…
//! method=GET path=/x status=200 …`); JSON lines like evenkeel's other JSON log lines
//! (`timestamp`, `level`, `target`, `fields`). [`Entry`] lists the fields.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use http::Method;

/// A worker hands its buffer over once it holds this many bytes.
pub const BATCH: usize = 16 * 1024;
/// Batches waiting for the writer at most.
const QUEUE: usize = 64;
/// How often an idle writer looks for a reopen request.
const REOPEN_CHECK: Duration = Duration::from_secs(1);

/// Where the access log goes (`serve --access-log`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Destination {
    /// With evenkeel's own log lines (the default).
    #[default]
    Stderr,
    /// Standard output (`--access-log -`).
    Stdout,
    /// A file, appended to, reopened on SIGUSR1.
    File(PathBuf),
}

/// How access-log lines are written (`serve --access-log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// `key=value` fields after the time, level and target.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A batch of lines and how many there are.
struct Batch {
    bytes: Vec<u8>,
    lines: u64,
}

struct Writer {
    batches: SyncSender<Batch>,
    /// Batches handed over and not written yet.
    pending: std::sync::Arc<AtomicU64>,
    format: Format,
}

static WRITER: OnceLock<Writer> = OnceLock::new();
/// Set by [`reopen`]; the writer reopens its file before its next write.
static REOPEN: AtomicBool = AtomicBool::new(false);
/// Lines dropped: the writer fell behind, or writing failed.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Request ids evenkeel made so far (see [`Entry::id`]).
static IDS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static BUFFER: RefCell<Batch> = RefCell::new(Batch {
        bytes: Vec::with_capacity(BATCH * 2),
        lines: 0,
    });
}

/// Where the writer thread puts the lines.
enum Sink {
    Stderr,
    Stdout,
    File { path: PathBuf, file: File },
}

impl Sink {
    fn open(destination: &Destination) -> std::io::Result<Sink> {
        Ok(match destination {
            Destination::Stderr => Sink::Stderr,
            Destination::Stdout => Sink::Stdout,
            Destination::File(path) => Sink::File {
                file: append(path)?,
                path: path.clone(),
            },
        })
    }

    /// Writes all of `bytes`; on failure, how many were written and why.
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), (usize, std::io::Error)> {
        let mut done = 0;
        while done < bytes.len() {
            let wrote = match self {
                Sink::Stderr => std::io::stderr().lock().write(&bytes[done..]),
                Sink::Stdout => std::io::stdout().lock().write(&bytes[done..]),
                Sink::File { file, .. } => file.write(&bytes[done..]),
            };
            match wrote {
                Ok(0) => return Err((done, std::io::ErrorKind::WriteZero.into())),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err((done, e)),
            }
        }
        if let Sink::Stdout = self {
            let _ = std::io::stdout().lock().flush();
        }
        Ok(())
    }

    /// Writes a batch. Lines that could not be written (a full disk, a closed pipe)
    /// are counted as dropped and reported at most once a minute; a line cut short
    /// is ended, so the next batch does not run on from it.
    fn write_batch(&mut self, batch: &Batch, last_error: &mut Option<std::time::Instant>) {
        let Err((done, error)) = self.write_all(&batch.bytes) else {
            return;
        };
        let lost = batch.bytes[done..].iter().filter(|&&b| b == b'\n').count() as u64;
        DROPPED.fetch_add(lost, Ordering::Relaxed);
        if done > 0 && batch.bytes[done - 1] != b'\n' {
            let _ = self.write_all(b"\n");
        }
        if last_error.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            *last_error = Some(std::time::Instant::now());
            tracing::error!(%error, lost, "cannot write the access log; lines are dropped (evenkeel_access_log_dropped_total)");
        }
    }

    /// Opens the file's path again (logrotate moved the old one away). Should that
    /// fail, lines keep going to the old file, and the next SIGUSR1 tries again.
    fn reopen(&mut self) {
        if let Sink::File { path, file } = self {
            match append(path) {
                Ok(new) => *file = new,
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "cannot reopen the access log; still writing to the old file");
                }
            }
        }
    }
}

fn append(path: &std::path::Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Starts the writer thread (once per process; later calls do nothing). Fails only
/// when the destination is a file that cannot be opened for appending.
pub fn start(destination: &Destination, format: Format) -> std::io::Result<()> {
    if WRITER.get().is_some() {
        return Ok(());
    }
    let mut sink = Sink::open(destination)?;
    WRITER.get_or_init(|| {
        let (batches, receiver) = sync_channel::<Batch>(QUEUE);
        let pending = std::sync::Arc::new(AtomicU64::new(0));
        let written = std::sync::Arc::clone(&pending);
        let _ = std::thread::Builder::new()
            .name("evenkeel-access".into())
            .spawn(move || {
                let mut last_error = None;
                loop {
                    let next = receiver.recv_timeout(REOPEN_CHECK);
                    if REOPEN.swap(false, Ordering::Relaxed) {
                        sink.reopen();
                    }
                    match next {
                        Ok(batch) => {
                            sink.write_batch(&batch, &mut last_error);
                            written.fetch_sub(1, Ordering::Relaxed);
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            });
        Writer {
            batches,
            pending,
            format,
        }
    });
    Ok(())
}

/// Asks the writer to reopen the access-log file (SIGUSR1, after logrotate moved it).
pub fn reopen() {
    REOPEN.store(true, Ordering::Relaxed);
}

/// Lines dropped because the writer fell behind or could not write.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// One request as its access-log line shows it. Absent values are written `-` in
/// text and left out of JSON.
pub struct Entry<'a> {
    /// The client's `X-Request-Id` when it sent a plain one ([`is_plain_id`]); `None`:
    /// the line gets an id evenkeel makes, unique within the process.
    pub id: Option<&'a str>,
    /// The client's address.
    pub client: SocketAddr,
    pub method: &'a Method,
    /// The path, without the query (queries often carry secrets).
    pub path: &'a str,
    /// What the client was sent; 499 when it went away before its response began.
    pub status: u16,
    /// The route that matched, as `HOST/PREFIX` (`/PREFIX` for a route of any host).
    pub route: Option<&'a str>,
    /// The pool that served it (a backup pool while its pool has failed over).
    pub pool: Option<&'a str>,
    /// The backend of the last try.
    pub backend: Option<&'a str>,
    /// Tries sent to backends (1 + retries); 0 when none was.
    pub tries: u32,
    /// Response body bytes handed to the client.
    pub bytes_out: u64,
    /// From the request's head to the end of its response.
    pub duration: Duration,
    /// From the last try's start to its response head: the backend's share.
    pub upstream: Option<Duration>,
    /// The client connection's TLS version (`1.2`, `1.3`); `None`: plain HTTP.
    pub tls: Option<&'static str>,
    /// The response broke off after it had begun.
    pub aborted: bool,
    /// A gRPC call's `grpc-status` (its trailers', or evenkeel's own); `None`: not
    /// gRPC, or the call ended without one.
    pub grpc_status: Option<u32>,
}

/// Appends one request's line to this thread's buffer.
pub fn line(entry: &Entry<'_>) {
    let Some(writer) = WRITER.get() else { return };
    BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        let id = RequestId::of(entry.id);
        match writer.format {
            Format::Json => write_json(&mut buffer.bytes, entry, &id),
            Format::Text => write_text(&mut buffer.bytes, entry, &id),
        }
        buffer.lines += 1;
        if buffer.bytes.len() >= BATCH {
            hand_over(&mut buffer);
        }
    });
}

/// A request's id as the log writes it: the client's, or one evenkeel makes — this
/// process's start (to tell restarts apart) and a counter, 20 hex digits.
enum RequestId<'a> {
    Client(&'a str),
    Made(u32, u64),
}

impl RequestId<'_> {
    fn of(client: Option<&str>) -> RequestId<'_> {
        static PREFIX: OnceLock<u32> = OnceLock::new();
        match client {
            Some(id) => RequestId::Client(id),
            None => {
                let prefix = PREFIX.get_or_init(|| {
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default();
                    (now.as_secs() as u32) ^ std::process::id().rotate_left(16)
                });
                RequestId::Made(*prefix, IDS.fetch_add(1, Ordering::Relaxed))
            }
        }
    }
}

impl std::fmt::Display for RequestId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestId::Client(id) => f.write_str(id),
            RequestId::Made(prefix, n) => write!(f, "{prefix:08x}{:012x}", n & 0xffff_ffff_ffff),
        }
    }
}

/// Whether a client's request id may be logged as it is: nothing that could forge
/// a field or a line.
pub fn is_plain_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A value as a text line writes it: printable ASCII but `"` and `\\` as it is, every
/// other byte percent-encoded (as NGINX's `escape=default`), so no value can end the
/// line or forge a field — not even with a Unicode line break (U+2028, U+0085) that
/// some readers split lines at. Empty: `-`.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        let mut plain = 0;
        let bytes = self.0.as_bytes();
        for (at, &b) in bytes.iter().enumerate() {
            if (0x21..0x7f).contains(&b) && b != b'"' && b != b'\\' {
                continue;
            }
            // Only printable ASCII lies between escaped bytes: valid UTF-8 on its own.
            f.write_str(std::str::from_utf8(&bytes[plain..at]).unwrap_or_default())?;
            write!(f, "%{b:02X}")?;
            plain = at + 1;
        }
        f.write_str(std::str::from_utf8(&bytes[plain..]).unwrap_or_default())
    }
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

fn write_text(out: &mut Vec<u8>, e: &Entry<'_>, id: &RequestId<'_>) {
    let upstream = e.upstream.map(millis);
    let _ = write!(
        out,
        "{}  INFO evenkeel::access: id={id} client={} method={} path={} status={} route={} pool={} backend={} tries={} bytes_out={} duration_ms={:.3} upstream_ms=",
        humantime::format_rfc3339_micros(SystemTime::now()),
        e.client,
        e.method,
        Escaped(e.path),
        e.status,
        e.route.unwrap_or("-"),
        e.pool.unwrap_or("-"),
        e.backend.unwrap_or("-"),
        e.tries,
        e.bytes_out,
        e.duration.as_secs_f64() * 1000.0,
    );
    let _ = match upstream {
        Some(ms) => write!(out, "{ms:.3}"),
        None => write!(out, "-"),
    };
    let _ = write!(out, " tls={}", e.tls.unwrap_or("-"));
    if let Some(code) = e.grpc_status {
        let _ = write!(out, " grpc_status={code}");
    }
    if e.aborted {
        out.extend_from_slice(b" aborted=true");
    }
    out.push(b'\n');
}

fn write_json(out: &mut Vec<u8>, e: &Entry<'_>, id: &RequestId<'_>) {
    let mut fields = serde_json::json!({
        "id": id.to_string(),
        "client": e.client.to_string(),
        "method": e.method.as_str(),
        "path": e.path,
        "status": e.status,
        "tries": e.tries,
        "bytes_out": e.bytes_out,
        "duration_ms": millis(e.duration),
    });
    let optional = [
        ("route", e.route),
        ("pool", e.pool),
        ("backend", e.backend),
        ("tls", e.tls),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            fields[name] = value.into();
        }
    }
    if let Some(upstream) = e.upstream {
        fields["upstream_ms"] = millis(upstream).into();
    }
    if let Some(code) = e.grpc_status {
        fields["grpc_status"] = code.into();
    }
    if e.aborted {
        fields["aborted"] = true.into();
    }
    let line = serde_json::json!({
        "timestamp": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
        "level": "INFO",
        "target": "evenkeel::access",
        "fields": fields,
    });
    let _ = writeln!(out, "{line}");
}

/// Hands this thread's lines to the writer now (the workers' sweep and shutdown).
pub fn flush() {
    BUFFER.with(|buffer| hand_over(&mut buffer.borrow_mut()));
}

fn hand_over(buffer: &mut Batch) {
    if buffer.bytes.is_empty() {
        return;
    }
    let Some(writer) = WRITER.get() else {
        buffer.bytes.clear();
        buffer.lines = 0;
        return;
    };
    let batch = std::mem::replace(
        buffer,
        Batch {
            bytes: Vec::with_capacity(BATCH * 2),
            lines: 0,
        },
    );
    let lines = batch.lines;
    writer.pending.fetch_add(1, Ordering::Relaxed);
    if writer.batches.try_send(batch).is_err() {
        writer.pending.fetch_sub(1, Ordering::Relaxed);
        DROPPED.fetch_add(lines, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            id: Some("abc-1"),
            client: "10.0.0.9:51234".parse().expect("address"),
            method: &Method::GET,
            path: "/api/users",
            status: 200,
            route: Some("api.example.com/api"),
            pool: Some("web"),
            backend: Some("10.0.0.11:8080"),
            tries: 2,
            bytes_out: 1234,
            duration: Duration::from_micros(2345),
            upstream: Some(Duration::from_micros(1500)),
            tls: Some("1.3"),
            aborted: false,
            grpc_status: None,
        }
    }

    /// Every documented field is on the text line, in `key=value` form.
    #[test]
    fn a_text_line_has_every_field() {
        let mut out = Vec::new();
        write_text(&mut out, &entry(), &RequestId::Client("abc-1"));
        let line = String::from_utf8(out).expect("utf-8");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        for field in [
            " INFO evenkeel::access: id=abc-1 ",
            " client=10.0.0.9:51234 ",
            " method=GET path=/api/users status=200 ",
            " route=api.example.com/api pool=web backend=10.0.0.11:8080 tries=2 ",
            " bytes_out=1234 duration_ms=2.345 upstream_ms=1.500 tls=1.3\n",
        ] {
            assert!(line.contains(field), "{field:?} in {line:?}");
        }
        let mut out = Vec::new();
        let refused = Entry {
            route: None,
            pool: None,
            backend: None,
            upstream: None,
            tls: None,
            tries: 0,
            aborted: true,
            ..entry()
        };
        write_text(&mut out, &refused, &RequestId::Client("x"));
        let line = String::from_utf8(out).expect("utf-8");
        assert!(
            line.contains(" route=- pool=- backend=- tries=0 ")
                && line.ends_with(" upstream_ms=- tls=- aborted=true\n"),
            "{line:?}"
        );
        // A gRPC call's status comes before `aborted`, in both forms.
        let call = Entry {
            grpc_status: Some(14),
            ..entry()
        };
        let mut out = Vec::new();
        write_text(&mut out, &call, &RequestId::Client("x"));
        let line = String::from_utf8(out).expect("utf-8");
        assert!(line.ends_with(" tls=1.3 grpc_status=14\n"), "{line:?}");
        let mut out = Vec::new();
        write_json(&mut out, &call, &RequestId::Client("x"));
        let json: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(json["fields"]["grpc_status"], 14);
    }

    /// JSON lines carry the same fields, numbers as numbers, absent ones left out.
    #[test]
    fn a_json_line_has_every_field_and_leaves_out_the_absent() {
        let mut out = Vec::new();
        write_json(&mut out, &entry(), &RequestId::Client("abc-1"));
        let line: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        let fields = &line["fields"];
        assert_eq!(line["target"], "evenkeel::access");
        assert_eq!(fields["id"], "abc-1");
        assert_eq!(fields["client"], "10.0.0.9:51234");
        assert_eq!(fields["status"], 200);
        assert_eq!(fields["route"], "api.example.com/api");
        assert_eq!(fields["tries"], 2);
        assert_eq!(fields["bytes_out"], 1234);
        assert_eq!(fields["duration_ms"], 2.345);
        assert_eq!(fields["upstream_ms"], 1.5);
        assert_eq!(fields["tls"], "1.3");
        let mut out = Vec::new();
        let refused = Entry {
            pool: None,
            upstream: None,
            tls: None,
            ..entry()
        };
        write_json(&mut out, &refused, &RequestId::Client("x"));
        let line: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        for absent in ["pool", "upstream_ms", "tls", "aborted"] {
            assert!(line["fields"].get(absent).is_none(), "{absent}: {line}");
        }
    }

    /// A path cannot end a text line or forge a field: spaces, quotes, controls and
    /// every non-ASCII byte (Unicode line breaks included) are percent-encoded.
    #[test]
    fn a_text_line_escapes_what_could_forge_a_field_or_a_line() {
        let escaped = |path: &str| Escaped(path).to_string();
        assert_eq!(escaped("/a/b?x=1"), "/a/b?x=1");
        assert_eq!(escaped(""), "-");
        assert_eq!(escaped("/a b\"x\\"), "/a%20b%22x%5C");
        assert_eq!(
            escaped("/a\u{2028}status=200\u{85}"),
            "/a%E2%80%A8status=200%C2%85"
        );
        assert_eq!(escaped("/\u{e9}t\u{e9}"), "/%C3%A9t%C3%A9");
        let mut out = Vec::new();
        let forged = Entry {
            path: "/x\u{2028}status=500",
            ..entry()
        };
        write_text(&mut out, &forged, &RequestId::Client("a"));
        let line = String::from_utf8(out).expect("utf-8");
        assert!(
            line.contains(" path=/x%E2%80%A8status=500 status=200 "),
            "{line}"
        );
        assert_eq!(line.lines().count(), 1);
    }

    /// Lines that cannot be written (here: /dev/full, a full disk) are counted as
    /// dropped, not lost silently.
    #[test]
    fn lines_that_cannot_be_written_are_counted_as_dropped() {
        let mut sink = Sink::open(&Destination::File("/dev/full".into())).expect("open /dev/full");
        let before = dropped();
        let batch = Batch {
            bytes: b"one\ntwo\nthree\n".to_vec(),
            lines: 3,
        };
        let mut last_error = None;
        sink.write_batch(&batch, &mut last_error);
        assert!(dropped() >= before + 3);
        assert!(last_error.is_some(), "reported");
    }

    /// A client's request id is logged only when it cannot forge a field or a line.
    #[test]
    fn only_plain_request_ids_are_taken_from_the_client() {
        for plain in ["abc", "0f8fad5b-d9cb-469f-a165-70867728950e", "a.b:c_d"] {
            assert!(is_plain_id(plain.as_bytes()), "{plain}");
        }
        let long = "a".repeat(129);
        for hostile in ["", "a b", "a=b", "a\"b", "a\nb", long.as_str()] {
            assert!(!is_plain_id(hostile.as_bytes()), "{hostile:?}");
        }
    }

    /// Ids evenkeel makes differ from request to request.
    #[test]
    fn made_request_ids_are_unique() {
        let (a, b) = (
            RequestId::of(None).to_string(),
            RequestId::of(None).to_string(),
        );
        assert_ne!(a, b);
        assert_eq!(a.len(), 20);
        assert!(is_plain_id(a.as_bytes()));
    }
}
