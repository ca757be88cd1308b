//! TCP listeners (`mode = "tcp"`) against real Redis servers (Debian's
//! `redis-server`, started by each test) and `redis-benchmark`: connections balanced
//! over a pool, a backend killed under open connections, reloads, and the PROXY
//! protocol both ways.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{eventually, Proxy};

/// A `redis-server` on a free loopback port, stopped when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server (apt install redis-server)");
            let mut redis = Redis {
                child: Some(child),
                port,
            };
            if eventually(Duration::from_secs(5), || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            }) {
                return redis;
            }
            redis.stop();
        }
        panic!("redis-server did not start");
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client connection speaking RESP.
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Conn {
            reader: BufReader::new(stream),
        }
    }

    /// Sends `command` (inline form) and reads one reply line and, for a bulk or an
    /// array, what follows; `None` when the connection failed or closed.
    fn ask(&mut self, command: &str) -> Option<String> {
        self.reader
            .get_mut()
            .write_all(format!("{command}\r\n").as_bytes())
            .ok()?;
        let mut reply = String::new();
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        reply.push_str(&line);
        // `CONFIG GET port`: *2, $4, port, $N, value.
        if line.starts_with('*') {
            for _ in 0..4 {
                line.clear();
                if self.reader.read_line(&mut line).ok()? == 0 {
                    return None;
                }
                reply.push_str(&line);
            }
        }
        Some(reply)
    }

    /// The port of the Redis this connection reached.
    fn backend_port(&mut self) -> Option<u16> {
        let reply = self.ask("CONFIG GET port")?;
        reply.lines().last()?.trim().parse().ok()
    }
}

fn config(name: &str, pool: &str, redis: &[&Redis], pool_extra: &str, extra: &str) -> String {
    let backends: Vec<String> = redis
        .iter()
        .map(|r| format!("{{ address = \"{}\" }}", r.address()))
        .collect();
    format!(
        "[[listener]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"{pool}\"\n{extra}\n\
         [pool.{pool}]\nbackends = [{}]\n{pool_extra}\n\
         [pool.{pool}.health]\ntype = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nunhealthy_after = 1\n",
        backends.join(", ")
    )
}

/// `redis-benchmark` connections over three Redis: a third each (the pool's unit is the
/// connection), every request answered, and `/status` counts connections.
#[test]
fn connections_spread_evenly_over_three_redis_servers() {
    let redis: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let all: Vec<&Redis> = redis.iter().collect();
    let proxy = Proxy::start_with_admin(&config("cache", "redis", &all, "", ""), 2);
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &proxy.addr().port().to_string()])
        .args([
            "-c",
            "30",
            "-n",
            "6000",
            "-t",
            "ping,set,get",
            "-q",
            "--csv",
        ])
        .output()
        .expect("run redis-benchmark");
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{csv}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(csv.contains("\"GET\""), "{csv}");
    // Three tests of 30 connections (and redis-benchmark's own few): as many per
    // backend, give or take one, none failed. The proxy counts a connection when both
    // sides have closed, which can trail redis-benchmark's exit by a moment.
    let settled = eventually(Duration::from_secs(5), || {
        redis
            .iter()
            .all(|r| proxy.backend_status("redis", &r.address())["in_flight"] == 0)
    });
    assert!(settled, "{}", proxy.pool_status("redis"));
    let pool = proxy.pool_status("redis");
    assert_eq!(pool["tcp"], true, "{pool}");
    let total = pool["requests"].as_u64().unwrap_or(0);
    assert!(total >= 90, "{pool}");
    for r in &redis {
        let status = proxy.backend_status("redis", &r.address());
        let connections = status["requests"].as_u64().unwrap_or(0);
        assert!(connections.abs_diff(total / 3) <= 1, "{pool}");
        assert_eq!(status["failures"], 0, "{status}");
        assert_eq!(status["responses"][1], connections, "all 2xx: {status}");
        assert!(status["bytes"].as_u64().unwrap_or(0) > 1000, "{status}");
    }
}

/// A Redis killed under open connections: only the connections already on it fail;
/// once it is found dead, no new connection reaches it, and the others never notice.
#[test]
fn a_killed_redis_fails_only_its_own_connections_and_gets_no_new_ones() {
    let mut redis: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let all: Vec<&Redis> = redis.iter().collect();
    let proxy = Proxy::start(&config("cache", "redis", &all, "", ""), 2);
    let mut open: Vec<(Conn, u16)> = (0..9)
        .map(|_| {
            let mut conn = Conn::open(proxy.addr());
            let port = conn.backend_port().expect("a backend answers");
            (conn, port)
        })
        .collect();
    let victim = redis[0].port;
    assert_eq!(open.iter().filter(|(_, p)| *p == victim).count(), 3);
    redis[0].stop();
    for (conn, port) in &mut open {
        let answer = conn.ask("PING");
        if *port == victim {
            assert_eq!(answer, None, "a connection to the killed Redis answered");
        } else {
            assert_eq!(answer.as_deref(), Some("+PONG\r\n"), "port {port}");
        }
    }
    // Found dead by the next probe (200 ms, one failure): new connections avoid it.
    std::thread::sleep(Duration::from_millis(800));
    for _ in 0..12 {
        let mut conn = Conn::open(proxy.addr());
        let port = conn.backend_port().expect("a live backend answers");
        assert_ne!(port, victim);
    }
}

/// A reload that points the listener at another pool leaves open connections on the
/// old one; new connections go to the new one.
#[test]
fn a_reload_moves_new_connections_and_keeps_open_ones() {
    let (a, b) = (Redis::start(), Redis::start());
    let proxy = Proxy::start(&config("cache", "first", &[&a], "", ""), 1);
    let mut old = Conn::open(proxy.addr());
    assert_eq!(old.backend_port(), Some(a.port));
    proxy.rewrite_config(&config("cache", "second", &[&b], "", ""));
    proxy.signal("HUP");
    proxy.wait_for_log("reloaded file=", 1);
    let mut new = Conn::open(proxy.addr());
    assert_eq!(new.backend_port(), Some(b.port));
    assert_eq!(old.backend_port(), Some(a.port));
    assert_eq!(old.ask("PING").as_deref(), Some("+PONG\r\n"));
}

/// A backend that reads the PROXY header evenkeel sends, then echoes what follows
/// after a line naming the client it was told of.
fn proxy_protocol_backend() -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for stream in listener.incoming().take(2) {
            let Ok(mut stream) = stream else { continue };
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut bytes = Vec::new();
            let mut buf = [0u8; 1024];
            // Until the header is whole and a line of data behind it.
            let parsed = loop {
                let Ok(n @ 1..) = stream.read(&mut buf) else {
                    break None;
                };
                bytes.extend_from_slice(&buf[..n]);
                if let ppp::HeaderResult::V2(Ok(header)) = ppp::HeaderResult::parse(&bytes) {
                    if bytes[header.len()..].ends_with(b"\n") {
                        let client = match header.addresses {
                            ppp::v2::Addresses::IPv4(a) => {
                                format!("{}:{}", a.source_address, a.source_port)
                            }
                            other => format!("{other:?}"),
                        };
                        break Some((client, bytes[header.len()..].to_vec()));
                    }
                }
            };
            match parsed {
                Some((client, data)) => {
                    seen.push(client.clone());
                    let _ = stream.write_all(format!("client {client}\n").as_bytes());
                    let _ = stream.write_all(&data);
                }
                None => seen.push(format!("no header: {:?}", String::from_utf8_lossy(&bytes))),
            }
        }
        seen
    });
    (addr, handle)
}

/// A pool with `proxy_protocol = "v2"` tells its backend who the client is; with
/// `accept_proxy_protocol`, that is the client a balancer in front named (v1 here),
/// and a connection without a header is closed before it reaches a backend.
#[test]
fn the_proxy_protocol_is_read_from_the_front_and_written_to_the_backend() {
    let (backend, seen) = proxy_protocol_backend();
    let proxy = Proxy::start(
        &format!(
            "[[listener]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"app\"\n\
             [[listener]]\nname = \"fronted\"\nlisten = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"app2\"\n\
             accept_proxy_protocol = true\nheader_timeout = \"2s\"\n\
             [pool.app]\nproxy_protocol = \"v2\"\nbackends = [{{ address = \"{backend}\" }}]\n\
             [pool.app2]\nproxy_protocol = \"v2\"\nbackends = [{{ address = \"{backend}\" }}]\n"
        ),
        1,
    );
    // Direct: the backend is told of the connection's own address.
    let mut direct = TcpStream::connect(proxy.listener("plain")).expect("connect");
    direct
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let me = direct.local_addr().expect("address");
    direct.write_all(b"hello\n").expect("send");
    let mut reply = String::new();
    BufReader::new(&direct)
        .read_line(&mut reply)
        .expect("reply");
    assert_eq!(reply, format!("client {me}\n"));

    // No header where one is required: closed, and the backend never hears of it.
    let mut bare = TcpStream::connect(proxy.listener("fronted")).expect("connect");
    bare.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    bare.write_all(b"hello\n").expect("send");
    let mut rest = Vec::new();
    let _ = bare.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");

    // A v1 header from the balancer in front: its client is the client.
    let mut fronted = TcpStream::connect(proxy.listener("fronted")).expect("connect");
    fronted
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    fronted
        .write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 6379\r\nhello\n")
        .expect("send");
    let mut reader = BufReader::new(&fronted);
    let mut line = String::new();
    reader.read_line(&mut line).expect("reply");
    assert_eq!(line, "client 203.0.113.9:5555\n");
    line.clear();
    reader.read_line(&mut line).expect("echo");
    assert_eq!(line, "hello\n");
    drop((direct, bare, fronted, proxy));
    let seen = seen.join().expect("the backend");
    assert_eq!(seen, [me.to_string(), "203.0.113.9:5555".to_string()]);
}

/// Found by review: clients that reset their connection before the backend said a
/// word are their own failure (499), not the backend's: nothing is ejected and the
/// pool's error count stays at zero.
#[test]
fn clients_that_reset_do_not_count_against_the_backends() {
    let (a, b) = (Redis::start(), Redis::start());
    let proxy = Proxy::start_with_admin(
        &config(
            "cache",
            "redis",
            &[&a, &b],
            "[pool.redis.outlier]\nconsecutive_failures = 2\n",
            "",
        ),
        1,
    );
    for _ in 0..8 {
        let stream = TcpStream::connect(proxy.addr()).expect("connect");
        // Let evenkeel reach the backend first.
        std::thread::sleep(Duration::from_millis(50));
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(stream);
    }
    let settled = eventually(Duration::from_secs(5), || {
        proxy.pool_status("redis")["requests"] == 8
            && [&a, &b]
                .iter()
                .all(|r| proxy.backend_status("redis", &r.address())["in_flight"] == 0)
    });
    assert!(settled, "{}", proxy.pool_status("redis"));
    for r in [&a, &b] {
        let status = proxy.backend_status("redis", &r.address());
        assert_eq!(status["failures"], 0, "{status}");
        assert_eq!(status["responses"][4], 0, "{status}");
        assert_eq!(status["ejected"], false, "{status}");
    }
}
