//! Connections are bounded: at most `max` at once, `per_ip` from one address and `per_prefix`
//! from one network (/24 for IPv4, /64 for IPv6: one host's share of addresses), and one that
//! moves no byte either way for `idle` is closed (a half-sent request, an idle keep-alive, a
//! body that never comes). A request's head must arrive within `header` and its body within
//! `body` of the request, however slowly it trickles in. Beyond a cap the connection is
//! answered at once with 503 and `Retry-After` and closed, so a flood never runs the process
//! out of file descriptors and every honest client hears a clear "later" instead of a timeout.
//!
//! Near the global cap (7/8 of it) two things happen, so a new client always finds a slot:
//! - each network may hold only an equal share of 7/8 among the networks holding connections
//!   (its new connections beyond that are refused), so no set of networks can hold the rest
//!   out, however many connections they open;
//! - the connections that hold a slot without using it are closed, oldest idle first, down
//!   to 3/4 of the cap: keep-alives idle for 2 s between requests, HTTP/2 connections silent
//!   for 5 s, and heads still arriving (or nothing sent) 1 s after they began, at once at the
//!   cap itself. The overload behaviour of Envoy's overload manager and nginx. A request
//!   whose head has arrived is never closed this way.

use axum::serve::Listener;
use futures_util::task::AtomicWaker;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// A listening socket on `addr` whose accept queue holds 4096 connections (the kernel may cap
/// it lower: `net.core.somaxconn`), so a burst of connections is answered, not dropped until a
/// SYN retransmit a second later.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// The caps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max: usize,
    pub per_ip: usize,
    /// Connections from one /24 (IPv4) or /64 (IPv6).
    pub per_prefix: usize,
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
    conns: Arc<Mutex<Conns>>,
    /// When the listener started: idle times are kept as milliseconds since.
    epoch: Instant,
}

impl BoundedListener {
    pub fn new(inner: TcpListener, limits: Limits) -> Self {
        Self {
            inner,
            open: Arc::new(Semaphore::new(limits.max.max(1))),
            peak: Arc::default(),
            conns: Arc::default(),
            epoch: Instant::now(),
            limits,
        }
    }

    /// The most connections one network may hold once `open` (the new one included) reach
    /// 7/8 of the cap: an equal share of 7/8 among the networks holding any, the new one's
    /// included. So many networks together cannot push the server to the cap where idle
    /// connections are shed, and a network with few connections always gets in: fair
    /// queueing by network, under load only.
    fn fair_share(&self, m: &Conns, open: usize, new_net: bool) -> usize {
        let max = self.limits.max.max(1);
        let high = max - max / 8;
        if open < high || max < 8 {
            return usize::MAX;
        }
        let networks = m.per_prefix.len() + usize::from(new_net);
        (high / networks.max(1)).max(1)
    }

    /// Closes the connections idle between requests, oldest idle first, once those open reach
    /// 7/8 of the cap, until 3/4 of it would be open; says how many it asked to close, now
    /// or before, that have not closed yet.
    fn shed_idle(&self, open: usize) -> usize {
        let max = self.limits.max.max(1);
        let high = max - max / 8;
        if open < high || max < 8 {
            return 0;
        }
        let now = self.epoch.elapsed().as_micros() as u64;
        let mut m = lock(&self.conns);
        // Those already asked to close are on their way out: not counted twice.
        let open = open.saturating_sub(m.evicting);
        if open < high {
            return m.evicting;
        }
        let want = open - (max - max / 4);
        // Oldest idle first; of two idle since the same moment, the older connection.
        let mut idle: Vec<((u64, u64), &Arc<Activity>)> = m
            .live
            .iter()
            .filter_map(|(id, a)| a.idle_since(now, open > max).map(|t| ((t, *id), a)))
            .collect();
        if idle.len() > want {
            idle.select_nth_unstable_by_key(want, |(t, _)| *t);
            idle.truncate(want);
        }
        for (_, a) in &idle {
            a.evict();
        }
        let closed = idle.len();
        m.evicting += closed;
        tracing::debug!(
            open,
            closed,
            "near the connection cap: idle connections closed"
        );
        m.evicting
    }
}

/// The open connections: each one's activity, and how many each address and prefix holds.
#[derive(Default)]
struct Conns {
    next: u64,
    live: HashMap<u64, Arc<Activity>>,
    /// Asked to close and not closed yet.
    evicting: usize,
    per_ip: HashMap<IpAddr, usize>,
    per_prefix: HashMap<IpAddr, usize>,
}

/// The network an address belongs to for the per-prefix cap: its /24 (IPv4, IPv4-mapped
/// IPv6 included) or its /64 (IPv6).
pub fn prefix(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => prefix(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

/// Whether a connection holds its slot without using it (and since when), and the signal
/// that asks it to close.
struct Activity {
    /// Microseconds since the listener's epoch when it went idle, or began its head;
    /// [`BUSY`] in the rest of a request.
    idle_since: AtomicU64,
    /// What the idle time means: [`FRESH`], [`BETWEEN`], [`IN_HEAD`] or [`H2`].
    kind: AtomicU8,
    evict: AtomicBool,
    waker: AtomicWaker,
}

const BUSY: u64 = u64::MAX;
/// How long a connection at the cap waits for the idle ones just asked to close.
const SHED_WAIT: Duration = Duration::from_millis(100);
/// An HTTP/1 connection between requests: taken for idle 2 s after its last response byte, so
/// an event stream that writes every second (the dashboard's) or a response a client reads
/// steadily is never idle.
const BETWEEN: u8 = 0;
/// An HTTP/1 request head still arriving 1 s after its first byte: an honest client sends
/// its head at once, so near the cap this is a slow head (slowloris) and goes first. The
/// head deadline cuts such heads anyway; near the cap they only go sooner.
const IN_HEAD: u8 = 1;
/// HTTP/2 (every stream on one connection): taken for idle after 5 s without a byte.
const H2: u8 = 2;
/// Connected and not a byte sent yet: taken for idle after 1 s.
const FRESH: u8 = 3;

impl Activity {
    fn new(now: u64) -> Self {
        // A connection that has sent nothing yet is idle from the start.
        Self {
            idle_since: AtomicU64::new(now),
            kind: AtomicU8::new(FRESH),
            evict: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    /// Since when it is idle, if it counts as idle: near the cap after the minimum ages
    /// above; at the cap a slow head or a silent new connection counts at once (an honest
    /// client sends its head in one go), so a new client always finds a slot.
    fn idle_since(&self, now: u64, at_cap: bool) -> Option<u64> {
        let t = self.idle_since.load(Ordering::Relaxed);
        if t == BUSY || self.evict.load(Ordering::Relaxed) {
            return None;
        }
        let min = match self.kind.load(Ordering::Relaxed) {
            IN_HEAD | FRESH if at_cap => 0,
            IN_HEAD | FRESH => 1_000_000,
            H2 => 5_000_000,
            _ => 2_000_000,
        };
        (now.saturating_sub(t) >= min).then_some(t)
    }

    fn set(&self, kind: u8, since: u64) {
        self.kind.store(kind, Ordering::Relaxed);
        self.idle_since.store(since, Ordering::Relaxed);
    }

    fn evict(&self) {
        self.evict.store(true, Ordering::Relaxed);
        self.waker.wake();
    }
}

use crate::lock;

/// The answer to a head over [`MAX_HEAD_BYTES`]: 431 with a JSON error.
fn head_too_big() -> String {
    let body = format!(
        "{{\"error\":\"the request head (its headers) is larger than {} KiB: shorten it\"}}",
        MAX_HEAD_BYTES >> 10
    );
    format!(
        "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
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
            let ip = addr.ip();
            let net = prefix(ip);
            // The address's and network's caps first: a connection they refuse sheds nobody.
            let why = {
                let m = lock(&self.conns);
                let from_ip = m.per_ip.get(&ip).copied().unwrap_or(0);
                let from_net = m.per_prefix.get(&net).copied().unwrap_or(0);
                if from_ip >= self.limits.per_ip {
                    Some("too many connections from this address")
                } else if from_net >= self.limits.per_prefix
                    || from_net >= self.fair_share(&m, open + 1, from_net == 0)
                {
                    Some("too many connections from this network")
                } else {
                    None
                }
            };
            if let Some(why) = why {
                tracing::debug!(%addr, "refused: {why}");
                refuse(stream, why);
                continue;
            }
            let permit = match self.open.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                // At the cap: idle connections make room, and this one waits the moment they
                // take to close rather than being refused.
                Err(_) if self.shed_idle(open + 1) > 0 => {
                    tokio::time::timeout(SHED_WAIT, self.open.clone().acquire_owned())
                        .await
                        .ok()
                        .and_then(|p| p.ok())
                }
                Err(_) => None,
            };
            let Some(permit) = permit else {
                tracing::debug!(%addr, "refused: too many connections");
                refuse(stream, "too many connections");
                continue;
            };
            let activity = Arc::new(Activity::new(self.epoch.elapsed().as_micros() as u64));
            // Only this loop adds to the counts, so the caps checked above still hold.
            let id = {
                let mut m = lock(&self.conns);
                *m.per_ip.entry(ip).or_insert(0) += 1;
                *m.per_prefix.entry(net).or_insert(0) += 1;
                m.next += 1;
                let id = m.next;
                m.live.insert(id, activity.clone());
                id
            };
            self.shed_idle(self.limits.max.max(1) - self.open.available_permits());
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!("TCP_NODELAY: {e}");
            }
            let io = Bounded {
                stream,
                idle: self.limits.idle,
                timer: Box::pin(tokio::time::sleep(self.limits.idle)),
                head: Head::new(self.limits.header),
                activity: activity.clone(),
                epoch: self.epoch,
                _slot: Slot {
                    _permit: permit,
                    id,
                    ip,
                    net,
                    conns: self.conns.clone(),
                    activity,
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
    id: u64,
    ip: IpAddr,
    net: IpAddr,
    conns: Arc<Mutex<Conns>>,
    activity: Arc<Activity>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        fn release(m: &mut HashMap<IpAddr, usize>, k: IpAddr) {
            if let Some(n) = m.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&k);
                }
            }
        }
        let mut m = lock(&self.conns);
        m.live.remove(&self.id);
        if self.activity.evict.load(Ordering::Relaxed) {
            m.evicting = m.evicting.saturating_sub(1);
        }
        release(&mut m.per_ip, self.ip);
        release(&mut m.per_prefix, self.net);
    }
}

/// An accepted connection that closes itself after `idle` without a byte either way, or when
/// a request's head takes longer than its deadline to arrive.
pub struct Bounded {
    stream: TcpStream,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    head: Head,
    activity: Arc<Activity>,
    epoch: Instant,
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
    /// Bytes of the head being read.
    size: usize,
}

/// The largest request head (request line and headers) taken, below hyper's own limit so
/// that the answer is this module's JSON 431, not hyper's empty one.
pub const MAX_HEAD_BYTES: usize = 64 << 10;

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
            size: 0,
        }
    }

    fn too_big(&self) -> bool {
        self.reading && self.size > MAX_HEAD_BYTES
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
            self.size = 0;
            self.timer.as_mut().reset(Instant::now() + self.within);
        }
        while self.reading && !bytes.is_empty() {
            let b = bytes[0];
            bytes = &bytes[1..];
            self.size += 1;
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

    /// Between requests: the last response was written and no byte of the next has come.
    /// (A response still streaming, such as an event stream, writes on and so stays young.)
    fn between(&self) -> bool {
        self.awaiting && !self.reading
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

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Tells the listener whether this connection holds its slot idle (after bytes moved).
    fn note_activity(&mut self) {
        let now = self.now_us();
        let a = &self.activity;
        if self.head.off {
            a.set(H2, now);
        } else if self.head.between() {
            a.set(BETWEEN, now);
        } else if self.head.reading {
            if a.kind.load(Ordering::Relaxed) != IN_HEAD
                || a.idle_since.load(Ordering::Relaxed) == BUSY
            {
                a.set(IN_HEAD, now);
            }
        } else {
            a.set(BETWEEN, BUSY);
        }
    }

    /// Asked to close near the cap, and still idle (or still in its head): reads end, and
    /// hyper closes the connection as it would on a client's close.
    fn evicted(&mut self, cx: &mut Context<'_>) -> bool {
        self.activity.waker.register(cx.waker());
        self.activity.evict.load(Ordering::Relaxed)
            && (self.head.off || self.head.between() || self.head.reading)
    }

    /// What a write did: progress resets the idle timer; a pending write fails once the
    /// connection has been idle too long.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        first: &[u8],
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.progressed();
                    // hyper's own `100 Continue` asks for the body: no request ended.
                    if !first.starts_with(b"HTTP/1.1 100 ") {
                        self.head.wrote();
                    }
                    self.note_activity();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // A response the client is slow to read is in progress, not idle.
                self.activity.set(BETWEEN, BUSY);
                match self.check_idle(cx) {
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    _ => Poll::Pending,
                }
            }
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
                    self.note_activity();
                    if self.head.too_big() {
                        // Answered here (a few hundred bytes fit any socket buffer), then
                        // the connection ends.
                        let _ = self.stream.try_write(head_too_big().as_bytes());
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "request head too large",
                        )));
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if self.evicted(cx) {
                    return Poll::Ready(Ok(()));
                }
                match self.head.check(cx) {
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    _ => self.check_idle(cx),
                }
            }
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
        self.wrote(cx, buf, r)
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
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        self.wrote(cx, first, r)
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

/// The bodies over 1 MiB being read at once share `max_body_bytes` between them (each takes
/// its `Content-Length`, or the whole budget when it does not say), so a few large reports at
/// once cannot hold many times the body limit in memory; smaller bodies never wait. A
/// request waiting its turn is still held to its body deadline.
#[derive(Clone)]
pub struct BodyBudget {
    kib: Arc<Semaphore>,
    max_kib: u32,
}

/// Bodies up to this size skip the budget.
const LARGE_BODY: u64 = 1 << 20;

impl BodyBudget {
    pub fn new(max_body_bytes: usize) -> Self {
        let max_kib = u32::try_from(max_body_bytes >> 10)
            .unwrap_or(u32::MAX >> 4)
            .clamp(1, Semaphore::MAX_PERMITS as u32);
        Self {
            kib: Arc::new(Semaphore::new(max_kib as usize)),
            max_kib,
        }
    }

    /// Middleware: waits for the body's share of the budget, then runs the request.
    pub async fn admit(
        self,
        req: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        use http_body::Body as _;
        let body = req.body();
        let len = body.size_hint().exact().or_else(|| {
            req.headers()
                .get(axum::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        });
        if body.is_end_stream() || len.is_some_and(|n| n <= LARGE_BODY) {
            return next.run(req).await;
        }
        let kib = len.map_or(self.max_kib, |n| {
            u32::try_from(n >> 10).unwrap_or(u32::MAX).min(self.max_kib)
        });
        let _permit = self.kib.acquire_many_owned(kib).await;
        next.run(req).await
    }
}
