//! Connection floods against the real server on a free port: caps answered with 503 and
//! `Retry-After` (never a process out of file descriptors), idle half-sent requests closed,
//! and the server answering again afterwards.

use coordinator::engine::Engine;
use coordinator::server::{Config, FileConfig, start};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    s.connect(to).await.unwrap()
}

/// Everything the server sends until it closes (or 3 s pass).
async fn read_all(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// The server on a free port with these settings, on a scratch directory (kept while the
/// returned guard lives).
async fn serve(file: FileConfig) -> (SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::resolve(
        file,
        Some("127.0.0.1:0".parse().unwrap()),
        Some(dir.path().into()),
        None,
        Some(dir.path().into()),
    );
    let store = Arc::new(Engine::open(&cfg.db).unwrap());
    let (addr, _server) = start(store, &cfg).await.unwrap();
    (addr, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_refused_with_503_and_idle_connections_closed() {
    let (addr, _dir) = serve(FileConfig {
        max_connections: Some(6),
        max_connections_per_ip: Some(4),
        idle_timeout_s: Some(1),
        ..Default::default()
    })
    .await;
    let half = b"GET /api/v1/status HTTP/1.1\r\nHost: qg\r\n";
    let full = b"GET /api/v1/status HTTP/1.1\r\nHost: qg\r\nConnection: close\r\n\r\n";

    // Four half-sent requests from one address fill its share.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = connect_from("127.0.0.1", addr).await;
        s.write_all(half).await.unwrap();
        held.push(s);
    }
    let mut fifth = connect_from("127.0.0.1", addr).await;
    let _ = fifth.write_all(full).await;
    let r = read_all(&mut fifth).await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.contains("Retry-After: 1"), "{r}");
    assert!(r.contains("too many connections from this address"), "{r}");
    // Two more from another address reach the global cap; a third address is refused too.
    for _ in 0..2 {
        let mut s = connect_from("127.0.0.2", addr).await;
        s.write_all(half).await.unwrap();
        held.push(s);
    }
    let mut over = connect_from("127.0.0.3", addr).await;
    let _ = over.write_all(full).await;
    let r = read_all(&mut over).await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.contains("\"error\":\"too many connections;"), "{r}");

    // The half-sent requests are closed once idle for a second...
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for mut s in held {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("closed by the server");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    // ...and the server answers as before.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut s = connect_from("127.0.0.1", addr).await;
    s.write_all(full).await.unwrap();
    let r = read_all(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("\"units\""), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_trickled_in_slowly_is_cut_off_at_its_deadline() {
    let (addr, _dir) = serve(FileConfig {
        // Idle never fires here (a byte every 300 ms); the deadlines do.
        idle_timeout_s: Some(30),
        header_timeout_s: Some(2),
        body_timeout_s: Some(2),
        ..Default::default()
    })
    .await;
    let started = std::time::Instant::now();

    // A head sent a byte at a time, for ever: closed after about 2 s.
    let mut slow = connect_from("127.0.0.1", addr).await;
    let head = b"GET /api/v1/status HTTP/1.1\r\nHost: qg\r\nX-Pad: ";
    slow.write_all(head).await.unwrap();
    let mut closed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if slow.write_all(b"a").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await
        {
            // Either hyper's 408 or a plain close.
            closed = n == 0 || String::from_utf8_lossy(&buf[..n]).contains("408");
            if closed {
                break;
            }
        }
    }
    let took = started.elapsed();
    assert!(closed, "the trickled head was never cut off");
    assert!(took < Duration::from_secs(6), "{took:?}");

    // A body trickled in after a full head: the request fails at the body's deadline.
    let mut slow = connect_from("127.0.0.1", addr).await;
    let head = "POST /api/v1/volunteers HTTP/1.1\r\nHost: qg\r\nContent-Type: application/json\r\n\
                Content-Length: 1000\r\nConnection: close\r\n\r\n{\"nickname\": \"";
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = String::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = slow.write_all(b"a").await;
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await
        {
            answer = String::from_utf8_lossy(&buf[..n]).into_owned();
            break;
        }
    }
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer:?}");
    assert!(answer.contains("\"error\""), "a JSON error: {answer}");
    assert!(started.elapsed() < Duration::from_secs(6));

    // A keep-alive connection waiting for its next request is not held to the head deadline
    // (only to the idle timeout): it is reused after longer than the deadline.
    let mut kept = connect_from("127.0.0.1", addr).await;
    let req = b"GET /api/v1/status HTTP/1.1\r\nHost: qg\r\n\r\n";
    for round in 0..2 {
        kept.write_all(req).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(3), kept.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        let r = String::from_utf8_lossy(&buf[..n]);
        assert!(r.starts_with("HTTP/1.1 200"), "round {round}: {r}");
        if round == 0 {
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
    }

    // Honest requests are unaffected.
    let mut s = connect_from("127.0.0.1", addr).await;
    s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: qg\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let r = read_all(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

/// A keep-alive connection from `ip` that has made one request and read all its answer, and
/// now sits idle between requests.
async fn idle_keep_alive(ip: &str, to: SocketAddr) -> TcpStream {
    let mut s = connect_from(ip, to).await;
    s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: qg\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("a length");
            if body.len() >= len {
                return s;
            }
        }
    }
}

/// Whether the server has closed `s` (an end of stream or an error within `wait`).
async fn closed(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    let until = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn fresh_get(ip: &str, to: SocketAddr) -> String {
    let mut s = connect_from(ip, to).await;
    let _ = s
        .write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: qg\r\nConnection: close\r\n\r\n")
        .await;
    read_all(&mut s).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_network_gets_its_share_and_near_the_cap_the_oldest_idle_connections_go_first() {
    let (addr, _dir) = serve(FileConfig {
        max_connections: Some(16),
        max_connections_per_ip: Some(4),
        max_connections_per_prefix: Some(8),
        ..Default::default()
    })
    .await;

    // Two addresses of one /24 fill its share: a third address there is refused...
    let mut idle = Vec::new();
    for ip in ["127.0.5.1", "127.0.5.2"] {
        for _ in 0..4 {
            idle.push(idle_keep_alive(ip, addr).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let r = fresh_get("127.0.5.3", addr).await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.contains("too many connections from this network"), "{r}");
    // ...and another /24 is not.
    let r = fresh_get("127.0.6.9", addr).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");

    // A request whose body is still arriving (busy), and four more idle connections: 13 open.
    let mut busy = connect_from("127.0.7.1", addr).await;
    busy.write_all(
        b"POST /api/v1/volunteers HTTP/1.1\r\nHost: qg\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"nick",
    )
    .await
    .unwrap();
    for _ in 0..4 {
        idle.push(idle_keep_alive("127.0.6.1", addr).await);
    }
    tokio::time::sleep(Duration::from_millis(2200)).await;

    // The 14th connection reaches 7/8 of the cap: the two longest idle are closed (to 3/4),
    // and the new client is served.
    let r = fresh_get("127.0.8.1", addr).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    for (i, s) in idle.iter_mut().enumerate() {
        let gone = closed(s, Duration::from_millis(if i < 2 { 2000 } else { 200 })).await;
        assert_eq!(gone, i < 2, "connection {i}: closed {gone}");
    }
    assert!(
        !closed(&mut busy, Duration::from_millis(200)).await,
        "a request in progress is never shed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_a_new_client_takes_the_slot_of_an_idle_one() {
    let (addr, _dir) = serve(FileConfig {
        max_connections: Some(16),
        ..Default::default()
    })
    .await;
    // From sixteen networks, one each: a head that trickles in (slowloris) and fifteen
    // keep-alive connections, all just used. At the cap a new client takes the slow head's
    // slot at once (an honest head comes in one go).
    let mut slow = connect_from("127.0.20.1", addr).await;
    slow.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: qg\r\n")
        .await
        .unwrap();
    let mut idle = Vec::new();
    for n in 21..36 {
        idle.push(idle_keep_alive(&format!("127.0.{n}.1"), addr).await);
    }
    let r = fresh_get("127.0.40.1", addr).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(closed(&mut slow, Duration::from_millis(300)).await);
    // Sixteen keep-alive connections, all just used: nothing to shed, so one more is refused.
    idle.push(idle_keep_alive("127.0.36.1", addr).await);
    let r = fresh_get("127.0.41.1", addr).await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.contains("\"error\":\"too many connections;"), "{r}");
    // Once they have sat idle for 2 s, a new client gets a slot at once: idle ones close for
    // it, the oldest first, from 17 (with the new one) down to 3/4 of 16.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = fresh_get("127.0.41.1", addr).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let mut all = Vec::new();
    for (i, s) in idle.iter_mut().enumerate() {
        let gone = closed(s, Duration::from_millis(if i < 5 { 2000 } else { 100 })).await;
        all.push(gone);
    }
    for (i, gone) in all.iter().enumerate() {
        assert_eq!(*gone, i < 5, "connection {i}: closed {gone}: {all:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_the_cap_a_network_holds_only_its_share() {
    let (addr, _dir) = serve(FileConfig {
        max_connections: Some(16),
        max_connections_per_ip: Some(16),
        ..Default::default()
    })
    .await;
    // One network alone may come to 7/8 of the cap (14)...
    let mut held = Vec::new();
    for _ in 0..14 {
        held.push(idle_keep_alive("127.0.50.1", addr).await);
    }
    let r = fresh_get("127.0.50.2", addr).await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.contains("too many connections from this network"), "{r}");
    // ...and a second one still gets in (its share is 7 of 14; the first holds more).
    let r = fresh_get("127.0.51.1", addr).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    for s in &mut held {
        assert!(
            !closed(s, Duration::from_millis(50)).await,
            "none idle long enough"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_head_gets_a_json_431_and_small_routes_a_small_body_limit() {
    let (addr, _dir) = serve(FileConfig::default()).await;
    // A 1 MB bearer token.
    let mut s = connect_from("127.0.0.1", addr).await;
    let token = "a".repeat(1 << 20);
    let head = format!(
        "GET /api/v1/volunteers/me HTTP/1.1\r\nHost: qg\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let _ = s.write_all(head.as_bytes()).await;
    let r = read_all(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{}", &r[..r.len().min(200)]);
    let body = r.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    assert!(v["error"].as_str().unwrap().contains("64 KiB"), "{v}");

    // A registration body over 64 KiB is refused (413, JSON) though the server's limit is
    // 32 MiB; a report body of that size is read (and judged on its content: no such
    // assignment).
    let post = |path: &'static str, token: Option<String>, body: String| async move {
        let mut s = connect_from("127.0.0.1", addr).await;
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: qg\r\nContent-Type: application/json\r\n{auth}\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(req.as_bytes()).await;
        read_all(&mut s).await
    };
    let pad = "x".repeat(100 << 10);
    let r = post(
        "/api/v1/volunteers",
        None,
        format!("{{\"nickname\": \"{pad}\"}}"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 413"), "{}", &r[..r.len().min(300)]);
    assert!(r.contains("\"error\""), "{r}");
    let r = post("/api/v1/volunteers", None, "{}".into()).await;
    let body = r.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).expect("a registration");
    let token = v["token"].as_str().unwrap().to_owned();
    let report = format!("{{\"assignment_id\": 12345, \"error\": \"{pad}\"}}");
    let r = post("/api/v1/results", Some(token), report).await;
    assert!(r.starts_with("HTTP/1.1 404"), "{}", &r[..r.len().min(300)]);
}
