//! Serving connections: HTTP/1.1 only, with a header-read time-out, an idle time-out, a cap on open
//! connections and a deadline on graceful shutdown.
//!
//! Why not `axum::serve`: it gives hyper no timer (so no header-read time-out), caps nothing, and its graceful
//! shutdown waits for every connection, however long a client holds one. A client that sends half a request
//! head, or nothing, could hold a socket forever and a thousand such clients exhausted the process's file
//! descriptors; one of them kept the process alive after SIGTERM. Here every connection is bounded in time
//! whatever the client does, and the number of connections is bounded below the descriptor limit.
//!
//! HTTP/2 is not served: EHRs and the sandbox call over HTTP/1.1 (behind TLS terminated in front of the
//! service), and one protocol is one set of limits to reason about. A client that opens with the HTTP/2
//! preface gets an HTTP/1.1 error and a closed connection.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower::Service;

use crate::logsafe::Occasional;

/// Connection-level limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeSettings {
    /// A request head (request line and headers) must arrive within this time of the connection opening or of
    /// the previous response; otherwise the connection is closed.
    pub header_read_timeout: Duration,
    /// A keep-alive connection on which nothing moves and no request is in progress is closed after this long.
    /// At most `header_read_timeout`, which bounds waiting for the next request anyway.
    pub idle_timeout: Duration,
    /// Open connections at once. Further connections wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// After SIGTERM: how long requests in progress may take to finish before their connections are closed.
    pub shutdown_grace: Duration,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            max_connections: default_max_connections(),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// File descriptors kept for everything but client connections: outgoing FHIR and JWKS connections, the
/// listener, files, logs.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The default connection cap: the process's file-descriptor limit less [`RESERVED_DESCRIPTORS`] (at least 64,
/// at most 10,000, where per-connection memory rather than descriptors becomes the bound). With the common
/// soft limit of 1,024 that is 768.
pub fn default_max_connections() -> usize {
    let limit = descriptor_limit().unwrap_or(1024);
    limit.saturating_sub(RESERVED_DESCRIPTORS).clamp(64, 10_000) as usize
}

#[cfg(unix)]
fn descriptor_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives for the call.
    let status = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (status == 0).then_some(limit.rlim_cur)
}

#[cfg(not(unix))]
fn descriptor_limit() -> Option<u64> {
    None
}

/// Serves `app` on `listener` until `shutdown` completes, then lets requests in progress finish for at most
/// [`ServeSettings::shutdown_grace`] and closes what remains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let trimmer = tokio::spawn(super::memory::trim_after_bursts());
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut at_cap = Occasional::new();
    let mut accept_failed = Occasional::new();
    loop {
        while connections.try_join_next().is_some() {}
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                at_cap.warn(|times| {
                    tracing::warn!(
                        max_connections = settings.max_connections,
                        times,
                        "connection cap reached: new connections wait until one closes"
                    );
                });
                tokio::select! {
                    permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors or memory, or a connection reset before it was accepted. Pause briefly
                    // rather than spin: the condition usually clears as connections close.
                    accept_failed.warn(|times| tracing::warn!(%error, times, "accepting a connection failed"));
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        connections.spawn(connection(
            stream,
            peer,
            app.clone(),
            settings,
            stopping.clone(),
            permit,
        ));
    }
    drop(listener);
    let _ = stop.send(true);
    let finished = tokio::time::timeout(settings.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "shutdown deadline passed: closing the remaining connections"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    trimmer.abort();
    Ok(())
}

/// One connection, from accept to close. Ends when hyper ends it (the client closed, a time-out, an error), when
/// shutdown asks it to end after its request in progress, or when it has been idle or stalled too long.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    settings: ServeSettings,
    mut stopping: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let in_service = activity.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let busy = in_service.begin();
        let mut request = request.map(axum::body::Body::new);
        // As `axum::serve` does: handlers that care who is calling (`/metrics` on the main port) can ask.
        request.extensions_mut().insert(ConnectInfo(peer));
        let call = app.clone().call(request);
        async move {
            let response = call.await;
            drop(busy);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut closing = false;
    let mut check = tokio::time::interval((settings.idle_timeout / 4).max(Duration::from_millis(50)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            _ = stopping.changed(), if !closing => {
                // Closes an idle connection now; one with a request in progress after its response.
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = check.tick() => {
                if activity.busy() {
                    continue;
                }
                let quiet = activity.quiet_for();
                if quiet >= settings.idle_timeout + settings.header_read_timeout {
                    // Nothing has moved for that long with no request in progress: a client that stopped
                    // reading its response. Dropping the connection closes it.
                    tracing::debug!("closing a stalled connection");
                    return;
                }
                if quiet >= settings.idle_timeout && !closing {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// When bytes last moved on a connection, and how many requests on it are being handled.
struct Activity {
    opened: Instant,
    last_moved_ms: AtomicU64,
    handling: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_moved_ms: AtomicU64::new(0),
            handling: AtomicUsize::new(0),
        }
    }

    fn moved(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        self.last_moved_ms.store(now, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_moved_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.handling.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    fn busy(&self) -> bool {
        self.handling.load(Ordering::Relaxed) > 0
    }
}

/// A request being handled; dropped when its response (or the handler's cancellation) is done.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
        self.0.moved();
    }
}

/// A socket that notes when bytes move through it, in either direction.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.moved();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = std::pin::Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.moved();
        }
        result
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = std::pin::Pin::new(&mut this.inner).poll_write_vectored(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.moved();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
