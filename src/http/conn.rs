//! The accept loop and each connection's limits ([`HttpLimits`]). warp's own
//! server has none: a client that sends half a request, or nothing, holds its
//! connection and descriptor forever; descriptors run out and `accept` fails in a
//! loop that logs an error a second; and every client that hangs up mid-request is
//! an `ERROR` line, so a port scan pages whoever alerts on errors.
//!
//! Here hyper serves each connection (HTTP/1.1) with:
//! - a **head deadline**: a new connection's first request head must be complete
//!   within `header_read_timeout` of the connection opening; a kept-alive one may
//!   wait `idle_timeout` for its next request, whose head must then be complete
//!   within `header_read_timeout` of its first byte ([`HeadTimer`]);
//! - a **body deadline**, in [`super::body::limited`];
//! - a **cap** on open connections: at the cap the loop stops accepting and new
//!   clients wait in the listen backlog until a connection ends, which the deadlines
//!   guarantee; the cap is lowered to what the descriptor limit leaves room for.
//!
//! Descriptor or memory exhaustion while accepting backs off (10 ms doubling to
//! 1 s) instead of spinning; a client's own failure (reset, hang-up, timeout) is
//! logged at `debug`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower_service::Service;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::config::HttpLimits;

/// The client's address, for [`super::filters::peer`] (warp's `addr::remote` reads
/// an extension only warp's own server can set).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Descriptors kept for everything but client connections: the database pool is
/// added to this; the broker, provider clients, the listener and files share it.
const RESERVED_DESCRIPTORS: usize = 64;

/// Serves `routes` on `listener` until `shutdown` fires; then stops accepting and
/// waits for the open requests to finish (idle connections are closed at once).
pub async fn serve(
    listener: TcpListener,
    routes: BoxedFilter<(Response,)>,
    limits: HttpLimits,
    pool_size: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let cap = connection_cap(limits.max_connections, pool_size, descriptor_limit());
    let slots = Arc::new(Semaphore::new(cap));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Backoff::default();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) if is_the_clients_failure(&e) => continue,
                Err(e) => {
                    backoff.wait(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        backoff.reset();
        let _ = stream.set_nodelay(true);
        let clock = Arc::new(ReadClock::default());
        let io = TokioIo::new(Watched {
            inner: stream,
            clock: clock.clone(),
        });
        let routes = warp::service(routes.clone());
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(Peer(peer));
            routes.clone().call(req)
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(HeadTimer {
                clock,
                limits,
                opened: Instant::now(),
            })
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(io, svc);
        let conn = graceful.watch(conn);
        metrics::gauge!("http_open_connections").increment(1.0);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended by the client's failure");
            }
            metrics::gauge!("http_open_connections").decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// `max_connections`, lowered when the process's descriptor limit leaves less room.
fn connection_cap(configured: usize, pool_size: usize, limit: Option<u64>) -> usize {
    let Some(limit) = limit else {
        return configured;
    };
    let room = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(RESERVED_DESCRIPTORS + pool_size)
        .max(1);
    if room < configured {
        tracing::warn!(
            configured,
            used = room,
            descriptor_limit = limit,
            "HTTP_MAX_CONNECTIONS lowered to what the descriptor limit (ulimit -n) leaves room for"
        );
    }
    configured.min(room)
}

/// The soft `RLIMIT_NOFILE`, where the platform has one.
fn descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `rlimit` through a valid pointer to our local.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        (rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
    }
    #[cfg(not(unix))]
    None
}

/// Failures of one connection that `accept` reports: nothing to wait for.
fn is_the_clients_failure(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Waits after an `accept` failure of the process (out of descriptors or memory):
/// 10 ms, doubling to 1 s while it lasts. A warning per wait, so at most one a second.
#[derive(Default)]
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    async fn wait(&mut self, e: &io::Error) {
        let wait = self.next.unwrap_or(Duration::from_millis(10));
        self.next = Some((wait * 2).min(Duration::from_secs(1)));
        tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "cannot accept connections");
        metrics::counter!("http_accept_errors_total").increment(1);
        tokio::time::sleep(wait).await;
    }

    fn reset(&mut self) {
        self.next = None;
    }
}

/// When a connection last started receiving a request: the first byte read after
/// hyper began waiting for a request head. Shared by [`Watched`] and [`HeadTimer`].
#[derive(Debug, Default)]
struct ReadClock {
    /// Nanoseconds since `ORIGIN` plus one; zero while no byte came since the arm.
    first_byte: AtomicU64,
    armed_before: AtomicBool,
}

static ORIGIN: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

impl ReadClock {
    /// Hyper starts waiting for a head. True the first time (a new connection).
    fn arm(&self) -> bool {
        self.first_byte.store(0, Ordering::Relaxed);
        !self.armed_before.swap(true, Ordering::Relaxed)
    }

    fn saw_bytes(&self) {
        let now = Instant::now().saturating_duration_since(*ORIGIN).as_nanos() as u64 + 1;
        let _ = self
            .first_byte
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn first_byte(&self) -> Option<Instant> {
        match self.first_byte.load(Ordering::Relaxed) {
            0 => None,
            n => Some(*ORIGIN + Duration::from_nanos(n - 1)),
        }
    }
}

/// The socket, noting when bytes arrive.
struct Watched {
    inner: tokio::net::TcpStream,
    clock: Arc<ReadClock>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.saw_bytes();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Hyper's timer, used by its HTTP/1 server only for the head deadline, which it
/// arms when it starts waiting for a request head: from a connection's opening,
/// and again as soon as each response is sent. One deadline would make the idle
/// wait as short as a head read; this one moves: while no byte has come it is the
/// idle timeout (the head timeout on a new connection), and from the first byte on
/// it is that byte plus the head timeout.
#[derive(Clone)]
struct HeadTimer {
    clock: Arc<ReadClock>,
    limits: HttpLimits,
    opened: Instant,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Fixed(Box::pin(tokio::time::sleep(duration))))
    }

    fn sleep_until(&self, _hypers_deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let first = self.clock.arm();
        let waiting = if first {
            self.opened + self.limits.header_read_timeout
        } else {
            Instant::now() + self.limits.idle_timeout
        };
        Box::pin(HeadDeadline {
            clock: self.clock.clone(),
            head: self.limits.header_read_timeout,
            waiting,
            current: waiting,
            sleep: Box::pin(tokio::time::sleep_until(waiting)),
        })
    }
}

/// Any other sleep hyper asks for (none today in the HTTP/1 server).
struct Fixed(Pin<Box<tokio::time::Sleep>>);

impl Future for Fixed {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for Fixed {}

struct HeadDeadline {
    clock: Arc<ReadClock>,
    head: Duration,
    /// The deadline while no byte has come.
    waiting: Instant,
    current: Instant,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeadDeadline {
    type Output = ();

    /// Hyper polls this each time a read leaves the head incomplete, so the first
    /// byte's arrival is seen here before the deadline it moves matters.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = match self.clock.first_byte() {
            Some(at) => at + self.head,
            None => self.waiting,
        };
        if deadline != self.current {
            self.current = deadline;
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HeadDeadline {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_the_pool_and_the_rest() {
        assert_eq!(connection_cap(1024, 32, None), 1024);
        assert_eq!(connection_cap(1024, 32, Some(1_048_576)), 1024);
        assert_eq!(connection_cap(1024, 32, Some(256)), 256 - 64 - 32);
        assert_eq!(connection_cap(1024, 32, Some(50)), 1);
    }
}
