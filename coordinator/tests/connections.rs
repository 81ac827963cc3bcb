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
