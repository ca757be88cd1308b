//! Running a load test: connection workers on one single-threaded runtime.
//!
//! - **Closed loop**: each of `connections` workers sends a request, waits for the
//!   whole response, and sends the next; latency is measured per request.
//! - **Open loop**: a dispatcher emits the *intended* send time of request `i`,
//!   `start + i / rate`, into a queue the workers drain. A worker measures latency
//!   from the intended time, not from when it got round to sending: when the server
//!   stalls, requests queue up and their waiting shows in the percentiles. Measuring
//!   from the actual send time would hide exactly the stalls a load test is for
//!   ("coordinated omission", Gil Tene).
//!
//! A failed request (no connection, a broken one, no answer within the timeout)
//! counts as an error of its kind and its worker reconnects for the next one.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use super::report::{ErrorKind, Recorder, Report};
use super::spec::{LoadSpec, Pacing, Stop};

/// Runs `spec` to its end on a new single-threaded runtime; `progress` shows a bar on
/// stderr. Blocks the calling thread.
pub fn run_blocking(spec: &LoadSpec, progress: bool) -> std::io::Result<Report> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    Ok(local.block_on(&rt, run(spec, progress)))
}

/// Runs `spec` to its end on the current `LocalSet`.
pub async fn run(spec: &LoadSpec, progress: bool) -> Report {
    let recorder = Rc::new(RefCell::new(Recorder::default()));
    let start = Instant::now();
    let bar = progress.then(|| progress_bar(spec));
    let ticker = bar.clone().map(|bar| {
        let recorder = Rc::clone(&recorder);
        tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                bar.set_position(recorder.borrow().done);
                bar.set_message(format!(
                    "{:.0}/s",
                    recorder.borrow().done as f64 / start.elapsed().as_secs_f64().max(0.001)
                ));
            }
        })
    });
    let spec = Rc::new(spec.clone());
    let workers = match spec.pacing {
        Pacing::Closed { .. } => closed(&spec, &recorder, start),
        Pacing::Open { rate, .. } => open(&spec, &recorder, start, rate),
    };
    for worker in workers {
        let _ = worker.await;
    }
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = recorder.borrow().report(start.elapsed());
    report
}

fn progress_bar(spec: &LoadSpec) -> ProgressBar {
    let style = ProgressStyle::with_template("{spinner} {pos} requests {msg} [{elapsed}]")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bar = match spec.stop {
        Stop::Count(n) => ProgressBar::new(n),
        Stop::Duration(_) => ProgressBar::new_spinner(),
    };
    bar.set_style(style);
    bar
}

type Workers = Vec<tokio::task::JoinHandle<()>>;

fn closed(spec: &Rc<LoadSpec>, recorder: &Rc<RefCell<Recorder>>, start: Instant) -> Workers {
    let issued = Rc::new(Cell::new(0u64));
    (0..spec.pacing.connections())
        .map(|_| {
            let (spec, recorder, issued) =
                (Rc::clone(spec), Rc::clone(recorder), Rc::clone(&issued));
            tokio::task::spawn_local(async move {
                let mut connection = None;
                loop {
                    let more = match spec.stop {
                        Stop::Count(n) => issued.get() < n,
                        Stop::Duration(d) => start.elapsed() < d,
                    };
                    if !more {
                        return;
                    }
                    let n = issued.get();
                    issued.set(n + 1);
                    let sent = Instant::now();
                    exchange(&spec, &mut connection, &recorder, sent, n).await;
                }
            })
        })
        .collect()
}

fn open(
    spec: &Rc<LoadSpec>,
    recorder: &Rc<RefCell<Recorder>>,
    start: Instant,
    rate: f64,
) -> Workers {
    let (queue, intended) = tokio::sync::mpsc::unbounded_channel::<(Instant, u64)>();
    let intended = Rc::new(tokio::sync::Mutex::new(intended));
    let dispatch_spec = Rc::clone(spec);
    let dispatcher = tokio::task::spawn_local(async move {
        let every = Duration::from_secs_f64(1.0 / rate.max(0.001));
        for i in 0u64.. {
            let at = start + every.mul_f64(i as f64);
            let more = match dispatch_spec.stop {
                Stop::Count(n) => i < n,
                Stop::Duration(d) => at < start + d,
            };
            if !more {
                return;
            }
            tokio::time::sleep_until(at).await;
            if queue.send((at, i)).is_err() {
                return;
            }
        }
    });
    let mut workers: Workers = (0..spec.pacing.connections())
        .map(|_| {
            let (spec, recorder, intended) =
                (Rc::clone(spec), Rc::clone(recorder), Rc::clone(&intended));
            tokio::task::spawn_local(async move {
                let mut connection = None;
                loop {
                    let next = intended.lock().await.recv().await;
                    let Some((at, n)) = next else { return };
                    exchange(&spec, &mut connection, &recorder, at, n).await;
                }
            })
        })
        .collect();
    workers.push(dispatcher);
    workers
}

/// An open connection's request side.
enum Connection {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Connection {
    async fn open(spec: &LoadSpec) -> Result<Connection, ErrorKind> {
        let stream = tokio::time::timeout(
            spec.timeout,
            tokio::net::TcpStream::connect(spec.target.addr),
        )
        .await
        .map_err(|_| ErrorKind::Connect)?
        .map_err(|_| ErrorKind::Connect)?;
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        if spec.http2 {
            let (sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|_| ErrorKind::Connect)?;
            tokio::spawn(connection);
            Ok(Connection::Http2(sender))
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|_| ErrorKind::Connect)?;
            tokio::spawn(connection);
            Ok(Connection::Http1(sender))
        }
    }

    async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> hyper::Result<http::Response<Incoming>> {
        match self {
            Connection::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
            Connection::Http2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
        }
    }
}

fn request(spec: &LoadSpec, n: u64) -> Request<Full<Bytes>> {
    let uri = if spec.http2 {
        Uri::builder()
            .scheme("http")
            .authority(spec.target.host.to_str().unwrap_or("localhost"))
            .path_and_query(spec.target.path.to_string())
            .build()
            .unwrap_or_else(|_| spec.target.path.clone())
    } else {
        spec.target.path.clone()
    };
    let mut request = Request::new(Full::new(spec.body.clone()));
    *request.method_mut() = spec.method.clone();
    *request.uri_mut() = uri;
    if !spec.http2 {
        request
            .headers_mut()
            .insert(header::HOST, spec.target.host.clone());
    }
    for (name, value) in &spec.headers {
        request.headers_mut().append(name.clone(), value.clone());
    }
    if let Some(key) = &spec.key {
        if let Some(value) = key.value(n) {
            let (name, value) = if key.cookie {
                (header::COOKIE, format!("{}={value}", key.name))
            } else {
                (key.name.clone(), value)
            };
            if let Ok(value) = http::HeaderValue::from_str(&value) {
                request.headers_mut().append(name, value);
            }
        }
    }
    request
}

/// One request on `connection` (opened if needed), recorded with its latency since
/// `since` (the send time, or the intended one in open loop).
async fn exchange(
    spec: &LoadSpec,
    connection: &mut Option<Connection>,
    recorder: &RefCell<Recorder>,
    since: Instant,
    n: u64,
) {
    if connection.is_none() {
        match Connection::open(spec).await {
            Ok(c) => *connection = Some(c),
            Err(kind) => {
                recorder.borrow_mut().error(kind, since.elapsed());
                // Do not spin on a target that refuses connections.
                tokio::time::sleep(Duration::from_millis(10)).await;
                return;
            }
        }
    }
    let Some(open) = connection.as_mut() else {
        return;
    };
    let attempt = async {
        let response = open
            .send(request(spec, n))
            .await
            .map_err(|_| ErrorKind::Protocol)?;
        let status = response.status().as_u16();
        let group = spec.group_by.as_ref().map(|name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        });
        response
            .into_body()
            .collect()
            .await
            .map_err(|_| ErrorKind::Protocol)?;
        Ok::<_, ErrorKind>((status, group))
    };
    match tokio::time::timeout(spec.timeout, attempt).await {
        Ok(Ok((status, group))) => recorder
            .borrow_mut()
            .response(status, since.elapsed(), group),
        Ok(Err(kind)) => {
            *connection = None;
            recorder.borrow_mut().error(kind, since.elapsed());
        }
        Err(_) => {
            *connection = None;
            recorder
                .borrow_mut()
                .error(ErrorKind::Timeout, since.elapsed());
        }
    }
}
