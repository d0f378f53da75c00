//! Serving connections: HTTP/1.1 only, with a header-read time-out, an idle time-out, a deadline and a minimum
//! transfer rate for each request, a cap on open connections and a share of it per peer address, and a deadline
//! on graceful shutdown.
//!
//! Why not `axum::serve`: it gives hyper no timer (so no header-read time-out), caps nothing, and its graceful
//! shutdown waits for every connection, however long a client holds one. A client that sends half a request
//! head, or nothing, could hold a socket forever and a thousand such clients exhausted the process's file
//! descriptors; one of them kept the process alive after SIGTERM. Here every connection is bounded in time
//! whatever the client does, and the number of connections is bounded below the descriptor limit.
//!
//! Time-outs on silence are not enough: a client that keeps a request *moving* (a byte a second of a body, or of
//! a body nobody reads, which hyper drains before the next request) was never closed, and one such client held
//! every slot. So each request must arrive whole within [`ServeSettings::request_deadline`] of when the
//! connection began waiting for it, and its body at [`ServeSettings::min_receive_rate`] on average once the
//! header time-out has passed (`Paced`); between requests (writing the answer, draining an unread body,
//! waiting for the next head) a connection gets the same deadline. And one peer address may hold only
//! [`ServeSettings::max_connections_per_peer`] of the slots, so that whatever one client does, the others (and
//! health probes) still get in.
//!
//! HTTP/2 is not served: EHRs and the sandbox call over HTTP/1.1 (behind TLS terminated in front of the
//! service), and one protocol is one set of limits to reason about. A client that opens with the HTTP/2
//! preface gets an HTTP/1.1 error and a closed connection.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower::Service;

use crate::logsafe::Occasional;
use crate::ops::metrics as ops;

/// Refusals (503 to a peer over its share) written at once; past that, such connections are closed unanswered.
const REFUSING_AT_ONCE: usize = 64;
/// How long a refusal may take to read the request's first bytes and write the 503.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

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
    /// A request, head and body, must have arrived within this time of when the connection began waiting for it
    /// (it opened, or the previous answer was handed over); a connection between requests is closed after this
    /// long too. Beyond it the request gets 408 and the connection is closed.
    pub request_deadline: Duration,
    /// Once `header_read_timeout` has passed, a request's body must have arrived at this many bytes a second on
    /// average since the connection began waiting for it; slower gets 408 and a closed connection. 0: no
    /// minimum (the deadline still holds).
    pub min_receive_rate: u64,
    /// Connections one peer address may hold at once; further ones get 503 and are closed. 0: no share (all
    /// `max_connections` to anyone). Behind a load balancer every connection comes from the balancer's
    /// addresses: set it to 0 there (or to the slots each balancer node may use) and let the balancer limit
    /// each client.
    pub max_connections_per_peer: usize,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            max_connections: default_max_connections(),
            shutdown_grace: Duration::from_secs(10),
            request_deadline: Duration::from_secs(30),
            min_receive_rate: 1024,
            max_connections_per_peer: default_share(default_max_connections()),
        }
    }
}

/// The default share of the connection slots one peer may hold: a quarter (at least 16, at most all of them).
/// An EHR's connection pool is tens of connections; four clients of that kind fit side by side.
pub fn default_share(max_connections: usize) -> usize {
    (max_connections / 4).max(16).min(max_connections)
}

/// File descriptors kept for everything but client connections: outgoing FHIR and JWKS connections, the
/// listener, files, logs.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The default connection cap: the process's file-descriptor limit less `RESERVED_DESCRIPTORS` (at least 64,
/// at most 10,000, where per-connection memory rather than descriptors becomes the bound). With the common
/// soft limit of 1,024 that is 768.
pub fn default_max_connections() -> usize {
    let limit = descriptor_limit().unwrap_or(1024);
    limit.saturating_sub(RESERVED_DESCRIPTORS).clamp(64, 10_000) as usize
}

#[cfg(unix)]
#[allow(unsafe_code)] // getrlimit: see the SAFETY comment
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
    let peers = Peers::new(settings.max_connections_per_peer);
    let mut refusals = JoinSet::new();
    let mut at_cap = Occasional::new();
    let mut over_share = Occasional::new();
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
        let Some(seat) = peers.seat(peer.ip()) else {
            // The peer holds its share: answer 503 and close, without taking one of the slots. At most
            // `REFUSING_AT_ONCE` refusals are written at a time; past that the socket is simply closed.
            drop(permit);
            metrics::counter!(ops::CONNECTIONS_REFUSED, "reason" => "peer_share").increment(1);
            over_share.warn(|times| {
                tracing::warn!(
                    max_connections_per_peer = settings.max_connections_per_peer,
                    times,
                    "a peer address holds its share of the connection slots: its further connections get 503"
                );
            });
            while refusals.try_join_next().is_some() {}
            if refusals.len() < REFUSING_AT_ONCE {
                refusals.spawn(refuse(stream));
            }
            continue;
        };
        connections.spawn(connection(
            stream,
            peer,
            app.clone(),
            settings,
            stopping.clone(),
            (permit, seat),
        ));
    }
    refusals.abort_all();
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
    _slot: (OwnedSemaphorePermit, Seat),
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let in_service = activity.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let waiting_since = in_service.waiting_since();
        let busy = in_service.begin();
        let mut request = request.map(|body| axum::body::Body::new(Paced::new(body, waiting_since, &settings)));
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
                    // A request in progress: its body is paced by `Paced`, its handler by the router's time-out.
                    continue;
                }
                if activity.waiting_since().elapsed() >= settings.request_deadline {
                    // Between requests for that long while bytes still move: an answer read a byte at a time, a
                    // body nobody reads drained a byte at a time, or a head that hyper's time-out has not caught.
                    metrics::counter!(ops::SLOW_REQUESTS, "reason" => "between_requests").increment(1);
                    tracing::debug!("closing a connection that was between requests past the request deadline");
                    return;
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
    /// When the last request's handling ended (0: none yet, the connection's opening counts).
    last_handled_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_moved_ms: AtomicU64::new(0),
            handling: AtomicUsize::new(0),
            last_handled_ms: AtomicU64::new(0),
        }
    }

    /// When the connection began waiting for its next request: when it opened, or when the last request's
    /// answer was handed to hyper.
    fn waiting_since(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_handled_ms.load(Ordering::Relaxed))
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
        let now = self.0.opened.elapsed().as_millis() as u64;
        self.0.last_handled_ms.store(now, Ordering::Relaxed);
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

/// Connections held per peer address, against [`ServeSettings::max_connections_per_peer`].
///
/// Written here rather than taken from a rate-limiting crate: what is limited is connections held at once (a
/// count that goes down when a connection closes), not requests per second, and the count lives in the accept
/// loop, below the router, where tower's layers do not reach.
#[derive(Clone)]
struct Peers {
    share: usize,
    held: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place in its peer's share; given back on drop.
struct Seat {
    peers: Option<(Peers, IpAddr)>,
}

impl Peers {
    fn new(share: usize) -> Peers {
        Peers {
            share,
            held: Arc::default(),
        }
    }

    /// A seat for a connection from `ip`, or `None` when the peer holds its share. IPv4 peers on a dual-stack
    /// listener (`::ffff:a.b.c.d`) count as the IPv4 address they are.
    fn seat(&self, ip: IpAddr) -> Option<Seat> {
        if self.share == 0 {
            return Some(Seat { peers: None });
        }
        let ip = ip.to_canonical();
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = held.entry(ip).or_insert(0);
        if *count >= self.share {
            return None;
        }
        *count += 1;
        Some(Seat {
            peers: Some((self.clone(), ip)),
        })
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let Some((peers, ip)) = self.peers.take() else {
            return;
        };
        let mut held = peers.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = held.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                held.remove(&ip);
            }
        }
    }
}

/// Answers a connection over its peer's share: reads what the client sent first (so that closing does not
/// reset the connection before the answer is read), writes a 503 with an OperationOutcome, and closes. Bounded
/// by [`REFUSAL_TIME`] whatever the client does.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BODY: &str = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"throttled","diagnostics":"too many connections from this address; retry after 1 s"}]}"#;
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        let mut first = [0u8; 4096];
        let _ = tokio::time::timeout(REFUSAL_TIME / 4, stream.read(&mut first)).await;
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/fhir+json\r\nretry-after: 1\r\n\
             connection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The body was too slow: past [`ServeSettings::request_deadline`], or below
/// [`ServeSettings::min_receive_rate`]. The handler reading it answers 408 and the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlowRequest {
    #[error("the request did not arrive within {0} s")]
    Deadline(u64),
    #[error("the request body arrived slower than {0} bytes a second")]
    Rate(u64),
}

/// A request body held to the request deadline and the minimum rate.
///
/// Why a body wrapper and not a check on the connection: only the body knows whether it has all arrived (a
/// handler fetching from a FHIR server while the socket is silent is not a slow client), and a body error is
/// how the handler learns to answer 408 rather than have its connection vanish. The timer is armed only while
/// the body waits for bytes, for the moment the next bytes are due.
struct Paced {
    inner: Incoming,
    /// When the connection began waiting for this request.
    since: Instant,
    deadline: Instant,
    grace: Duration,
    min_rate: u64,
    received: u64,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    failed: bool,
}

impl Paced {
    fn new(inner: Incoming, since: Instant, settings: &ServeSettings) -> Paced {
        Paced {
            inner,
            since,
            deadline: since + settings.request_deadline,
            grace: settings.header_read_timeout,
            min_rate: settings.min_receive_rate,
            received: 0,
            timer: None,
            failed: false,
        }
    }

    /// When more bytes must have arrived, and what it is called if they have not.
    fn due(&self) -> (Instant, SlowRequest) {
        let deadline = (
            self.deadline,
            SlowRequest::Deadline(self.deadline.duration_since(self.since).as_secs()),
        );
        if self.min_rate == 0 {
            return deadline;
        }
        // At `min_rate` on average since `since`, after the grace: `received` bytes cover this long.
        let covered = Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        let due = self.since + self.grace + covered;
        if due < deadline.0 {
            (due, SlowRequest::Rate(self.min_rate))
        } else {
            deadline
        }
    }
}

impl http_body::Body for Paced {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                this.timer = None;
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        let (due, slow) = this.due();
        if Instant::now() >= due {
            this.failed = true;
            return Poll::Ready(Some(Err(slow.into())));
        }
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due.into())));
        if timer.deadline() != due.into() {
            timer.as_mut().reset(due.into());
        }
        if timer.as_mut().poll(cx).is_ready() {
            this.failed = true;
            return Poll::Ready(Some(Err(slow.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
