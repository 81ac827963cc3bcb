//! Connections are bounded: at most `max` at once, `per_ip` from one address, and one that
//! moves no byte either way for `idle` is closed (a half-sent request, an idle keep-alive, a
//! body that never comes). A request's head must arrive within `header` and its body within
//! `body` of the request, however slowly it trickles in. Beyond a cap the connection is
//! answered at once with 503 and `Retry-After` and closed, so a flood never runs the process
//! out of file descriptors and every honest client hears a clear "later" instead of a timeout.

use axum::serve::Listener;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The caps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max: usize,
    pub per_ip: usize,
    pub idle: Duration,
    /// The most a request's head may take to arrive.
    pub header: Duration,
    /// The most a request's body may take to arrive, from when its head did.
    pub body: Duration,
}

/// A TCP listener that applies [`Limits`].
pub struct BoundedListener {
    inner: TcpListener,
    limits: Limits,
    open: Arc<Semaphore>,
    /// The most connections open at once (accepted or refused) since the last memory trim.
    peak: Arc<AtomicUsize>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl BoundedListener {
    pub fn new(inner: TcpListener, limits: Limits) -> Self {
        Self {
            inner,
            open: Arc::new(Semaphore::new(limits.max.max(1))),
            peak: Arc::default(),
            per_ip: Arc::default(),
            limits,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Answers a connection over a cap: 503, `Retry-After`, a JSON error, closed.
fn refuse(mut stream: TcpStream, why: &'static str) {
    tokio::spawn(async move {
        let body = format!("{{\"error\":\"{why}; try again shortly\"}}");
        let resp = format!(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(resp.as_bytes()).await?;
            stream.shutdown().await
        })
        .await;
    });
}

impl Listener for BoundedListener {
    type Io = Bounded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = Listener::accept(&mut self.inner).await;
            let open = self.limits.max.max(1) - self.open.available_permits();
            self.peak.fetch_max(open + 1, Ordering::Relaxed);
            let Ok(permit) = self.open.clone().try_acquire_owned() else {
                tracing::debug!(%addr, "refused: too many connections");
                refuse(stream, "too many connections");
                continue;
            };
            let ip = addr.ip();
            {
                let mut m = lock(&self.per_ip);
                let n = m.entry(ip).or_insert(0);
                if *n >= self.limits.per_ip {
                    drop(m);
                    tracing::debug!(%addr, "refused: too many connections from this address");
                    refuse(stream, "too many connections from this address");
                    continue;
                }
                *n += 1;
            }
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!("TCP_NODELAY: {e}");
            }
            let io = Bounded {
                stream,
                idle: self.limits.idle,
                timer: Box::pin(tokio::time::sleep(self.limits.idle)),
                head: Head::new(self.limits.header),
                _slot: Slot {
                    _permit: permit,
                    ip,
                    per_ip: self.per_ip.clone(),
                },
            };
            return (io, addr);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection's place under the caps, given back when it closes.
struct Slot {
    _permit: OwnedSemaphorePermit,
    ip: IpAddr,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = lock(&self.per_ip);
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// An accepted connection that closes itself after `idle` without a byte either way, or when
/// a request's head takes longer than its deadline to arrive.
pub struct Bounded {
    stream: TcpStream,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    head: Head,
    _slot: Slot,
}

/// The head deadline of an HTTP/1 connection: it starts with a request's first byte (not
/// while a keep-alive connection waits for the next request) and ends with the blank line
/// that ends the head; HTTP/2 connections (their preface) are left to the idle timeout.
struct Head {
    within: Duration,
    timer: Pin<Box<Sleep>>,
    /// A response was written since the last head (or nothing was read yet): the next byte
    /// read starts a request.
    awaiting: bool,
    /// Reading a head: its deadline runs.
    reading: bool,
    /// How much of "\r\n\r\n" the last bytes matched.
    matched: u8,
    /// Not HTTP/1: no head deadline.
    off: bool,
    fresh: bool,
}

impl Head {
    fn new(within: Duration) -> Self {
        Self {
            within,
            timer: Box::pin(tokio::time::sleep(within)),
            awaiting: true,
            reading: false,
            matched: 0,
            off: false,
            fresh: true,
        }
    }

    fn read(&mut self, bytes: &[u8]) {
        if self.fresh {
            self.fresh = false;
            self.off = bytes.starts_with(b"PRI ");
        }
        if self.off || bytes.is_empty() {
            return;
        }
        let mut bytes = bytes;
        if self.awaiting {
            self.awaiting = false;
            self.reading = true;
            self.matched = 0;
            self.timer.as_mut().reset(Instant::now() + self.within);
        }
        while self.reading && !bytes.is_empty() {
            let b = bytes[0];
            bytes = &bytes[1..];
            let want = if self.matched.is_multiple_of(2) {
                b'\r'
            } else {
                b'\n'
            };
            self.matched = if b == want {
                self.matched + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
            if self.matched == 4 {
                self.reading = false;
            }
        }
    }

    fn wrote(&mut self) {
        self.awaiting = true;
    }

    /// Pending read: an error once a head has taken too long.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.reading && self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head took too long",
            )));
        }
        Poll::Pending
    }
}

impl Bounded {
    fn progressed(&mut self) {
        self.timer.as_mut().reset(Instant::now() + self.idle);
    }

    /// What a write did: progress resets the idle timer; a pending write fails once the
    /// connection has been idle too long.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.progressed();
                    self.head.wrote();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.check_idle(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
        }
    }

    /// Pending I/O: an error once the connection has been idle too long.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Bounded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.progressed();
                    self.head.read(&buf.filled()[before..]);
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.head.check(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => self.check_idle(cx),
            },
        }
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The peer's address as handlers see it (`ConnectInfo<PeerAddr>`).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, BoundedListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, BoundedListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// Serves `app` on `listener` (HTTP/1 or HTTP/2): the connections are [`Bounded`] (idle time,
/// head deadline), and every request body gets `limits.body` to arrive ([`body_deadline`]).
/// hyper's own header timeout is not used: it also runs while a keep-alive connection waits
/// for its next request, which cut idle clients off mid-reuse.
pub async fn serve(mut listener: BoundedListener, app: axum::Router) -> io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    let limits = listener.limits;
    tokio::spawn(trim_after_floods(
        listener.open.clone(),
        listener.peak.clone(),
        limits.max,
    ));
    let app = app.layer(axum::middleware::from_fn(move |req, next| {
        body_deadline(limits.body, req, next)
    }));
    loop {
        let (io, addr) = Listener::accept(&mut listener).await;
        let app = app.clone();
        let svc = hyper::service::service_fn(move |mut req: axum::http::Request<_>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(PeerAddr(addr)));
            tower::ServiceExt::oneshot(app.clone(), req)
        });
        tokio::spawn(async move {
            let b = Builder::new(TokioExecutor::new());
            if let Err(e) = b
                .serve_connection_with_upgrades(TokioIo::new(io), svc)
                .await
            {
                tracing::trace!(%addr, "connection: {e}");
            }
        });
    }
}

/// Hands the memory a flood of connections left behind back to the system: glibc's allocator
/// otherwise keeps it in its arenas for good, and the process stays at its peak. Checked every
/// 5 s; it trims only once the connections open have fallen to half of a peak of at least 512
/// since the last trim, so in normal running it never runs (trimming a large heap stalls
/// every thread for a moment).
async fn trim_after_floods(open: Arc<Semaphore>, peak: Arc<AtomicUsize>, max: usize) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let now = max.max(1).saturating_sub(open.available_permits());
        let high = peak.load(Ordering::Relaxed);
        if high >= 512 && now <= high / 2 {
            peak.store(now, Ordering::Relaxed);
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only releases free memory; it takes the allocator's own locks.
            unsafe {
                libc::malloc_trim(0);
            }
            tracing::debug!("memory trimmed after a connection flood");
        }
    }
}

/// Gives a request's body until `within` from now to arrive in full; after that, reading it
/// fails (the handler answers 400 or 408) however slowly bytes were still coming.
async fn body_deadline(
    within: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::Body::new(Deadline {
        inner: body,
        timer: Box::pin(tokio::time::sleep(within)),
    });
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

/// A body that errs once its deadline has passed.
struct Deadline {
    inner: axum::body::Body,
    timer: Pin<Box<Sleep>>,
}

impl http_body::Body for Deadline {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request body took too long to arrive",
            )))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
