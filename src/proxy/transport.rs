//! The byte stream under an upstream connection: plain TCP, or TLS over it (a pool with
//! `tls`, see [`crate::config::backend_tls`]).
//!
//! [`Transport`] is an enum rather than a type parameter of [`super::h1::Connection`],
//! so the per-worker pools, the forwarding code and the response bodies stay one type
//! each; on the plain path it costs one well-predicted match per read or write, and no
//! allocation (the TLS state, about a kilobyte, is boxed, so a plain connection does
//! not carry it).
//!
//! Two things differ over TLS and are handled here, so the HTTP/1 code above need not
//! know which stream it has:
//! - **A write is on the wire when it says so.** tokio-rustls accepts plaintext into
//!   rustls's buffer and may keep the encrypted records when the socket is full, until
//!   a later write or a flush. The HTTP/1 code writes a request and then only reads, so
//!   each TLS write here is followed by a flush before it reports its bytes written
//!   (see `TlsTransport::poll_write_through`).
//! - **An idle connection's stray bytes.** A pooled connection is reused only when the
//!   backend has neither closed it nor sent anything since its last response (issue 12,
//!   defect 4). Over TCP one `recv(MSG_PEEK)` answers that. Over TLS 1.3 the server
//!   sends NewSessionTicket records after the handshake, and may send a KeyUpdate at any
//!   time, so raw bytes on the socket do not mean stray HTTP bytes: the idle check reads
//!   them through rustls, without blocking, and judges what they were — application
//!   data is stray (not reusable), a `close_notify` or the end of the stream is a close,
//!   handshake messages are fine ([`Transport::is_idle_and_open`]).

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::TlsTarget;

/// A connection's byte stream.
pub enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (in a cell, so an upload can read and write it at once: see
    /// [`Transport::split`]).
    Tls(Box<RefCell<TlsTransport>>),
}

/// A TLS stream to a backend.
pub struct TlsTransport {
    stream: TlsStream<Records>,
    /// Plaintext bytes rustls accepted from the last write whose records are not all
    /// on the socket yet (0: none).
    accepted: usize,
    /// What the connection was made with: kept alive while it is, so the idle lists'
    /// key for it (its address) cannot be taken by other settings.
    _target: Arc<TlsTarget>,
}

impl Transport {
    /// The TLS handshake over `tcp` with `target`'s client config and server name.
    pub async fn tls(tcp: TcpStream, target: &Arc<TlsTarget>) -> io::Result<Transport> {
        let connector = TlsConnector::from(Arc::clone(&target.client));
        let stream = connector
            .connect(target.server_name.clone(), Records::new(tcp))
            .await?;
        Ok(Transport::Tls(Box::new(RefCell::new(TlsTransport {
            stream,
            accepted: 0,
            _target: Arc::clone(target),
        }))))
    }

    /// Whether an idle connection can take a request: the backend has neither closed
    /// it nor sent anything since its last response. It asks the socket itself, not
    /// tokio's readiness: readiness is only as fresh as the worker's last turn of its
    /// event loop, which a busy worker may not take between a check-in and the next
    /// checkout — and stray bytes that arrived in that gap were read as another
    /// request's response (issue 12, defect 4; going by readiness, as NGINX and HAProxy
    /// do, was tried and reproduced it). The cost is one system call per checkout
    /// (docs/benchmarks.md). Over TLS, what arrived is read through rustls (see the
    /// module docs).
    pub fn is_idle_and_open(&mut self) -> bool {
        match self {
            Transport::Plain(tcp) => {
                let mut probe = [MaybeUninit::<u8>::uninit(); 1];
                matches!(socket2::SockRef::from(&*tcp).peek(&mut probe),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Transport::Tls(tls) => tls.get_mut().is_idle_and_open(),
        }
    }

    /// Whether the TLS handshake agreed on HTTP/2 (ALPN `h2`); never for plain TCP.
    pub fn agreed_h2(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(tls) => tls.borrow().stream.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }

    /// Runs `f` on the TCP socket under the stream (tests).
    #[cfg(test)]
    pub(crate) fn with_tcp<T>(&self, f: impl FnOnce(&TcpStream) -> T) -> T {
        match self {
            Transport::Plain(tcp) => f(tcp),
            Transport::Tls(tls) => f(&tls.borrow().stream.get_ref().0.tcp),
        }
    }

    /// Halves that read and write the stream at once, within one task (an upload that
    /// watches for an early answer); the whole stream reads and writes through them
    /// too (making them costs nothing: references to the socket or the cell).
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Transport::Plain(tcp) => {
                let (read, write) = tcp.split();
                (ReadHalf::Plain(read), WriteHalf::Plain(write))
            }
            Transport::Tls(tls) => (ReadHalf::Tls(tls), WriteHalf::Tls(tls)),
        }
    }
}

impl TlsTransport {
    /// See [`Transport::is_idle_and_open`]. Reads whatever the socket holds into rustls
    /// (one `recv` when nothing came, as the plain check costs) and processes it:
    /// session tickets and key updates are taken; decrypted bytes, a `close_notify`,
    /// the end of the stream or an error mean the connection must not be reused.
    fn is_idle_and_open(&mut self) -> bool {
        let (records, session) = self.stream.get_mut();
        loop {
            match session.read_tls(&mut RecordsReader(records)) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        // A record only partly arrived decrypts to nothing yet, but its rest will come:
        // the backend sent something after its response (issue 12, defect 4, over TLS).
        if !records.at_boundary() {
            return false;
        }
        match session.process_new_packets() {
            Ok(state) => state.plaintext_bytes_to_read() == 0 && !state.peer_has_closed(),
            Err(_) => false,
        }
    }

    /// Writes `slices` and flushes their records to the socket before it reports them
    /// written; after a `Pending` in the flush, the next call (with the same bytes, as
    /// every writer here retries) finishes the flush and reports the bytes taken then.
    fn poll_write_through(
        &mut self,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.accepted == 0 {
            let written = ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, slices))?;
            if written == 0 {
                return Poll::Ready(Ok(0));
            }
            self.accepted = written;
        }
        ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
        Poll::Ready(Ok(std::mem::take(&mut self.accepted)))
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

// The whole stream reads and writes through the halves: one place decides what a read
// or a write does on each kind of stream.
impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().split().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().split().1).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().split().1).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().split().1).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().split().1).poll_shutdown(cx)
    }
}

/// The TCP stream under a backend's TLS session, following the TLS record boundaries
/// in what it reads (a record: a 5-byte header whose last two bytes are the length,
/// then that many bytes). rustls does not say how much of a record it holds
/// unprocessed, and a record that has only partly arrived decrypts to nothing, so
/// without this an idle connection with half a stray record inside rustls would look
/// clean and be reused — and the record's rest read as the next request's response.
pub struct Records {
    tcp: TcpStream,
    /// Bytes of the current record's header seen so far (0: at a header's start).
    header: [u8; 5],
    header_seen: usize,
    /// Bytes of the current record's body still to come.
    body_left: usize,
}

impl Records {
    fn new(tcp: TcpStream) -> Records {
        Records {
            tcp,
            header: [0; 5],
            header_seen: 0,
            body_left: 0,
        }
    }

    /// Whether everything read so far ends exactly at a record's end.
    fn at_boundary(&self) -> bool {
        self.header_seen == 0 && self.body_left == 0
    }

    /// Follows the records through `bytes`, just read.
    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (5 - self.header_seen).min(bytes.len());
            self.header[self.header_seen..self.header_seen + n].copy_from_slice(&bytes[..n]);
            self.header_seen += n;
            bytes = &bytes[n..];
            if self.header_seen == 5 {
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.header_seen = 0;
            }
        }
    }
}

impl AsyncRead for Records {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.tcp).poll_read(cx, buf))?;
        this.observe(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Records {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// Reads [`Records`]' socket without waiting (for the idle check), following the
/// records too.
struct RecordsReader<'a>(&'a mut Records);

impl io::Read for RecordsReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = io::Read::read(&mut &*socket2::SockRef::from(&self.0.tcp), buf)?;
        self.0.observe(&buf[..read]);
        Ok(read)
    }
}

/// The reading half of a [`Transport::split`].
pub enum ReadHalf<'a> {
    /// Plain TCP.
    Plain(tcp::ReadHalf<'a>),
    /// TLS, shared with the writing half (each poll borrows it for its length only).
    Tls(&'a RefCell<TlsTransport>),
}

/// The writing half of a [`Transport::split`].
pub enum WriteHalf<'a> {
    /// Plain TCP.
    Plain(tcp::WriteHalf<'a>),
    /// TLS, shared with the reading half.
    Tls(&'a RefCell<TlsTransport>),
}

impl AsyncRead for ReadHalf<'_> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Plain(read) => Pin::new(read).poll_read(cx, buf),
            ReadHalf::Tls(tls) => tls.borrow_mut().poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf<'_> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(write) => Pin::new(write).poll_write(cx, buf),
            WriteHalf::Tls(tls) => tls
                .borrow_mut()
                .poll_write_through(cx, &[IoSlice::new(buf)]),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(write) => Pin::new(write).poll_write_vectored(cx, bufs),
            WriteHalf::Tls(tls) => tls.borrow_mut().poll_write_through(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(write) => Pin::new(write).poll_flush(cx),
            WriteHalf::Tls(tls) => Pin::new(&mut tls.borrow_mut().stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(write) => Pin::new(write).poll_shutdown(cx),
            WriteHalf::Tls(tls) => Pin::new(&mut tls.borrow_mut().stream).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::backend_tls::{self, BackendTls};
    use crate::proxy::h1::tests::{self as h1, run};
    use crate::proxy::h1::Connection;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn records_are_followed_across_reads_of_any_size() {
        let record = |len: u16| {
            let mut r = vec![23, 3, 3];
            r.extend_from_slice(&len.to_be_bytes());
            r.extend(std::iter::repeat_n(0u8, usize::from(len)));
            r
        };
        let stream: Vec<u8> = [record(3), record(0), record(300)].concat();
        for piece in [1, 2, 4, 5, 7, 64, 1000] {
            let (tcp, _) = run(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("addr");
                let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
                (a.expect("connect"), b.expect("accept"))
            });
            let mut records = run(async move { Records::new(tcp) });
            for (i, chunk) in stream.chunks(piece).enumerate() {
                records.observe(chunk);
                let end = (i + 1) * piece;
                let boundary = [8, 13, stream.len()].contains(&end.min(stream.len()));
                assert_eq!(records.at_boundary(), boundary, "piece {piece}, at {end}");
            }
            assert!(records.at_boundary());
        }
    }

    /// What the test backend does once it has answered the request.
    #[derive(Clone, Copy, Debug)]
    enum After {
        /// Sends a TLS 1.3 KeyUpdate (a handshake message, no data).
        KeyUpdate,
        /// Sends bytes of a response nobody asked for.
        Stray,
        /// Sends `close_notify`.
        CloseNotify,
        /// Sends a record of stray response bytes but its last byte (which never
        /// comes): nothing decrypts yet, and the record is not complete.
        PartialStray,
    }

    /// A TLS 1.3 backend on 127.0.0.1 (rustls, a self-signed certificate, session
    /// tickets on) that answers each request head with a 2-byte response and then does
    /// `after`, until the client closes.
    async fn backend(after: After) -> std::net::SocketAddr {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["backend.test".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let provider = crate::config::tls::provider();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = acceptor.accept(tcp).await.expect("handshake");
            loop {
                let mut seen = Vec::new();
                while !seen.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if tls.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    seen.push(byte[0]);
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let _ = tls.flush().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                match after {
                    After::KeyUpdate => {
                        tls.get_mut().1.refresh_traffic_keys().expect("key update");
                        let _ = tls.flush().await;
                    }
                    After::Stray => {
                        let _ = tls.write_all(b"HTTP/1.1 200 OK\r\n").await;
                        let _ = tls.flush().await;
                    }
                    After::CloseNotify => {
                        let _ = tls.shutdown().await;
                    }
                    After::PartialStray => {
                        let (tcp, session) = tls.get_mut();
                        let _ = std::io::Write::write_all(
                            &mut session.writer(),
                            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nSTRAY",
                        );
                        let mut record = Vec::new();
                        while session.wants_write() {
                            let _ = session.write_tls(&mut record);
                        }
                        let _ = tcp.write_all(&record[..record.len() - 1]).await;
                    }
                }
            }
        });
        addr
    }

    async fn connect(addr: std::net::SocketAddr) -> Connection {
        let tls = BackendTls {
            sni: Some("backend.test".into()),
            ca: None,
            verify: false,
            verify_span: None,
            span: 0..0,
        };
        let target = Arc::new(TlsTarget {
            client: backend_tls::client_config(&tls, false),
            server_name: backend_tls::parse_sni("backend.test").expect("name"),
        });
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let transport = Transport::tls(tcp, &target).await.expect("handshake");
        let open = Arc::new(AtomicU64::new(0));
        Connection::new(transport, super::super::upstream::Counted::new(&open))
    }

    /// One GET on `connection`, its 2-byte body read to the end.
    async fn get(connection: &mut Connection) {
        let head = connection
            .exchange(&h1::get(), &mut h1::no_body(), h1::later())
            .await
            .expect("response head");
        assert_eq!(
            h1::body(connection, head.framing).await.expect("body"),
            b"ok"
        );
        assert!(connection.is_drained());
    }

    /// Whether the kernel holds unread bytes for `connection` (what a `MSG_PEEK`
    /// check sees).
    fn raw_bytes_waiting(connection: &Connection) -> bool {
        connection.with_tcp(|tcp| {
            let mut probe = [MaybeUninit::<u8>::uninit(); 1];
            matches!(socket2::SockRef::from(tcp).peek(&mut probe), Ok(n) if n > 0)
        })
    }

    /// TLS 1.3 session tickets after the handshake, and a KeyUpdate after a response,
    /// are bytes on the socket but no stray HTTP bytes: the connection stays reusable
    /// (a `MSG_PEEK` check would have closed it) and serves the next request.
    #[test]
    fn tls_handshake_records_on_an_idle_connection_leave_it_reusable() {
        run(async {
            let addr = backend(After::KeyUpdate).await;
            let mut connection = connect(addr).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(
                raw_bytes_waiting(&connection),
                "the backend's session tickets should be waiting on the socket"
            );
            assert!(connection.is_idle_and_open(), "tickets are not stray bytes");
            get(&mut connection).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert!(
                raw_bytes_waiting(&connection),
                "the KeyUpdate should be waiting"
            );
            assert!(
                connection.is_idle_and_open(),
                "a KeyUpdate is not stray bytes"
            );
            get(&mut connection).await;
        });
    }

    /// Application data after a response is stray (it belongs to no request): the
    /// connection is not reused — even when only part of its record has come, so
    /// nothing decrypts yet. So is one the backend closed with `close_notify`.
    #[test]
    fn stray_data_or_a_close_notify_on_an_idle_tls_connection_make_it_unusable() {
        run(async {
            for after in [After::Stray, After::CloseNotify, After::PartialStray] {
                let addr = backend(after).await;
                let mut connection = connect(addr).await;
                get(&mut connection).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
                assert!(!connection.is_idle_and_open(), "{after:?}");
            }
        });
    }
}
