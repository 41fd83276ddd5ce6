//! The production HTTP server, [`serve`]: hyper HTTP/1.1 with bounded
//! per-connection buffers and the limits of `http` in the config, so a
//! client that holds a connection without making progress is cut:
//!
//! - the request head must arrive whole within `header_timeout_secs` of
//!   its first byte;
//! - a connection waiting for its first or next request is closed after
//!   `idle_timeout_secs`; while a response is being sent (an event stream)
//!   no deadline runs, unless a write waits that long for a client that
//!   does not read;
//! - a request body must keep up with `body_min_bytes_per_sec` (after a
//!   grace of `header_timeout_secs` from its first read), or it is cut;
//! - at most `max_connections` connections are open at once; past it a
//!   connection is answered 503 and closed at once.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use vetting_core::config::HttpConfig;

use crate::AppState;

/// The most a connection's read buffer grows to. hyper's default (about
/// 400 KiB) lets every connection that once uploaded an artifact keep a
/// buffer of that size: with a thousand agents each holding a connection,
/// that alone was 130 MB of the orchestrator's memory. Headers must fit.
pub const READ_BUFFER_LIMIT: usize = 32 * 1024;

/// How long open connections get to finish after `shutdown` resolves.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What a connection refused past `max_connections` is sent before it is
/// closed.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\ncontent-length: 33\r\nconnection: close\r\n\r\n\
{\"error\":\"too many connections\"}";

/// Serves [`crate::router`] on `listener` until `shutdown` resolves, then
/// lets open requests finish (up to [`SHUTDOWN_GRACE`]). HTTP/1.1 with
/// keep-alive, under the limits of the config's `http` section; each
/// request carries the client's address (`ConnectInfo`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    use tower::ServiceExt;

    let limits = Limits::of(&state.orchestrator.config().http);
    if let Some(open_files) = open_file_limit()
        && open_files < limits.max_connections as u64 + 64
    {
        tracing::warn!(
            open_files,
            max_connections = limits.max_connections,
            "the open-file limit is below http.max_connections: connections past it fail to be accepted"
        );
    }
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut refused = Refusals::default();
    let router = crate::router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(READ_BUFFER_LIMIT)
        .timer(hyper_util::rt::TokioTimer::new())
        // the head and idle deadlines are the connection's watchdog's:
        // hyper's own counts the idle time of keep-alive into the head's
        .header_read_timeout(None);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // out of file descriptors and the like: wait, go on
                    tracing::warn!("accepting a connection failed: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            // refused at once, so the client neither hangs nor holds a
            // descriptor: the answer fits the fresh socket's buffer
            let _ = stream.try_write(TOO_MANY_CONNECTIONS);
            refused.note(peer, limits.max_connections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let watch = Arc::new(ConnectionWatch::new(limits));
        let router = router.clone();
        let service_watch = watch.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                let number = service_watch.request_started();
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                let request = request.map(|body| {
                    Body::new(MinRateBody::new(
                        body,
                        limits.body_min_bytes_per_sec,
                        limits.header_timeout,
                    ))
                });
                let watch = service_watch.clone();
                let response = router.clone().oneshot(request);
                async move {
                    let response = response.await?;
                    Ok::<_, std::convert::Infallible>(response.map(|body| {
                        Body::new(ResponseBody {
                            body,
                            watch,
                            number,
                        })
                    }))
                }
            },
        );
        let io = hyper_util::rt::TokioIo::new(WatchedStream {
            stream,
            watch: watch.clone(),
        });
        let connection = graceful.watch(builder.serve_connection(io, service));
        tokio::spawn(async move {
            let _permit = permit;
            match watch.guard(connection).await {
                Some(Ok(())) => {}
                Some(Err(error)) => tracing::debug!(%peer, "connection ended: {error}"),
                None => tracing::debug!(%peer, "connection closed at its deadline"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open {} s after shutdown; closing them",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    Ok(())
}

/// How often refused connections are logged: a flood of them must not
/// become a flood of lines.
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(10);

/// Connections refused past `max_connections`, logged at most once every
/// [`REFUSALS_LOGGED_EVERY`] with the count since the last line.
#[derive(Debug, Default)]
struct Refusals {
    since_logged: u64,
    logged_at: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, peer: std::net::SocketAddr, max_connections: usize) {
        self.since_logged += 1;
        let now = Instant::now();
        if self
            .logged_at
            .is_some_and(|at| now.duration_since(at) < REFUSALS_LOGGED_EVERY)
        {
            return;
        }
        tracing::warn!(
            %peer,
            refused = self.since_logged,
            "connections refused: http.max_connections ({max_connections}) are open"
        );
        self.since_logged = 0;
        self.logged_at = Some(now);
    }
}

/// The soft limit of open files of this process, if known.
pub fn open_file_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _hard)| soft)
}

/// Raises this process's soft limit of open files to its hard limit (one
/// descriptor per connection: the default 1024 is below
/// `http.max_connections`). Returns the limit now in effect.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
    }
    Ok(hard.max(soft))
}

/// The config's `http` limits as the server uses them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_timeout: Duration,
    idle_timeout: Duration,
    body_min_bytes_per_sec: u64,
    max_connections: usize,
}

impl Limits {
    fn of(config: &HttpConfig) -> Self {
        Limits {
            header_timeout: Duration::from_secs(config.header_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs.max(1)),
            body_min_bytes_per_sec: config.body_min_bytes_per_sec.max(1),
            max_connections: config
                .max_connections
                .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
        }
    }
}

/// Where a connection is, and the deadline that runs there.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Reading a request head: it must be whole by then.
    Head { deadline: Instant },
    /// A request is being answered: no deadline (the body has its rate).
    Busy,
    /// Keep-alive, waiting for the next request.
    Idle { deadline: Instant },
}

impl Phase {
    fn deadline(self) -> Option<Instant> {
        match self {
            Phase::Head { deadline } | Phase::Idle { deadline } => Some(deadline),
            Phase::Busy => None,
        }
    }
}

/// A connection's phase, and the deadline its guard sleeps until.
#[derive(Debug)]
struct WatchState {
    phase: Phase,
    armed: Option<Instant>,
    /// How many requests have started: a response ends the busy phase
    /// only if it answers the latest.
    requests: u64,
    /// Since when a write has waited for the client to read (its socket
    /// buffer full); none while writes go through.
    write_blocked_since: Option<Instant>,
}

impl WatchState {
    /// The deadline in force: the phase's, or a stalled write's
    /// (`idle_timeout` without the client reading), whichever is first.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let stalled = self
            .write_blocked_since
            .map(|since| since + limits.idle_timeout);
        match (self.phase.deadline(), stalled) {
            (Some(phase), Some(stalled)) => Some(phase.min(stalled)),
            (phase, stalled) => phase.or(stalled),
        }
    }
}

/// A connection's phase, kept by its stream (bytes arrive), its service (a
/// request starts) and its responses (one is sent), and watched by
/// [`ConnectionWatch::guard`]. The guard is woken only when a deadline
/// comes before the one it sleeps until (one wake per request on
/// keep-alive); a later one it finds when it wakes.
#[derive(Debug)]
struct ConnectionWatch {
    state: Mutex<WatchState>,
    changed: tokio::sync::Notify,
    limits: Limits,
}

impl ConnectionWatch {
    fn new(limits: Limits) -> Self {
        ConnectionWatch {
            // a fresh connection idles until its first byte: clients open
            // connections ahead and keep them in their pools unused, and
            // cutting those at the head deadline races their first request
            state: Mutex::new(WatchState {
                phase: Phase::Idle {
                    deadline: Instant::now() + limits.idle_timeout,
                },
                armed: None,
                requests: 0,
                write_blocked_since: None,
            }),
            changed: tokio::sync::Notify::new(),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set(&self, update: impl FnOnce(&mut WatchState) -> Option<Phase>) {
        let wake = {
            let mut state = self.lock();
            let Some(next) = update(&mut state) else {
                return;
            };
            state.phase = next;
            match (state.deadline(&self.limits), state.armed) {
                (Some(deadline), Some(armed)) => deadline < armed,
                (Some(_), None) => true,
                (None, _) => false,
            }
        };
        if wake {
            self.changed.notify_waiters();
        }
    }

    /// Bytes arrived: on an idle connection they start the next head.
    fn bytes_received(&self) {
        let header_timeout = self.limits.header_timeout;
        self.set(|state| match state.phase {
            Phase::Idle { .. } => Some(Phase::Head {
                deadline: Instant::now() + header_timeout,
            }),
            _ => None,
        });
    }

    /// A request started: its number, for [`ConnectionWatch::response_sent`].
    fn request_started(&self) -> u64 {
        let mut number = 0;
        self.set(|state| {
            state.requests += 1;
            number = state.requests;
            Some(Phase::Busy)
        });
        number
    }

    /// The response to request `number` is sent (its body dropped).
    fn response_sent(&self, number: u64) {
        let idle_timeout = self.limits.idle_timeout;
        self.set(|state| match state.phase {
            Phase::Busy if state.requests == number => Some(Phase::Idle {
                deadline: Instant::now() + idle_timeout,
            }),
            _ => None,
        });
    }

    /// A write found the client's socket full: unless it goes on within
    /// `idle_timeout`, the connection is closed (a client that never
    /// reads its answer holds no connection forever; an event stream with
    /// nothing to send writes nothing, so it is not stalled).
    fn write_blocked(&self) {
        self.set(|state| {
            if state.write_blocked_since.is_some() {
                return None;
            }
            state.write_blocked_since = Some(Instant::now());
            Some(state.phase)
        });
    }

    /// A write went through.
    fn write_went_through(&self) {
        let mut state = self.lock();
        state.write_blocked_since = None;
    }

    /// Drives `connection` until it ends (`Some`), or drops it, closing
    /// the socket, when the deadline of its phase passes (`None`).
    async fn guard<F: std::future::Future>(&self, connection: F) -> Option<F::Output> {
        let mut connection = std::pin::pin!(connection);
        loop {
            // created before the deadline is read: a change after it wakes
            let changed = self.changed.notified();
            let deadline = {
                let mut state = self.lock();
                state.armed = state.deadline(&self.limits);
                state.armed
            };
            tokio::select! {
                output = &mut connection => return Some(output),
                () = changed => {}
                () = sleep_until(deadline) => {
                    let now = Instant::now();
                    if self.lock().deadline(&self.limits).is_some_and(|deadline| deadline <= now) {
                        return None;
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The TCP stream of a connection, telling its watch when bytes arrive.
struct WatchedStream {
    stream: tokio::net::TcpStream,
    watch: Arc<ConnectionWatch>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.watch.bytes_received();
        }
        polled
    }
}

impl WatchedStream {
    /// Notes whether a write went through or waits for the client.
    fn noted<T>(&self, polled: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match &polled {
            Poll::Pending => self.watch.write_blocked(),
            Poll::Ready(_) => self.watch.write_went_through(),
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.noted(polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        this.noted(polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.noted(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A response body that tells its connection's watch when it is done
/// (dropped), so the idle deadline starts only then.
struct ResponseBody {
    body: Body,
    watch: Arc<ConnectionWatch>,
    number: u64,
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.watch.response_sent(self.number);
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that arrived slower than `http.body_min_bytes_per_sec`.
/// The agent API answers it 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived slower than {min_bytes_per_sec} bytes/s")]
pub struct SlowBody {
    pub min_bytes_per_sec: u64,
}

/// A request body that must keep up with a rate: by `grace` + n / rate
/// after its first read, more than n bytes must have arrived. The clock
/// starts at the first read, so a body that waits unread for its turn (an
/// artifact waiting for a permit) is not cut for it.
struct MinRateBody {
    body: hyper::body::Incoming,
    min_bytes_per_sec: u64,
    grace: Duration,
    started: Option<Instant>,
    received: u64,
    timer: Pin<Box<Sleep>>,
}

impl MinRateBody {
    fn new(body: hyper::body::Incoming, min_bytes_per_sec: u64, grace: Duration) -> Self {
        MinRateBody {
            body,
            min_bytes_per_sec,
            grace,
            started: None,
            received: 0,
            timer: Box::pin(tokio::time::sleep(grace)),
        }
    }
}

impl HttpBody for MinRateBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let started = *this.started.get_or_insert_with(Instant::now);
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        let owed = Duration::from_secs_f64(this.received as f64 / this.min_bytes_per_sec as f64);
        let deadline = started + this.grace + owed;
        let min_bytes_per_sec = this.min_bytes_per_sec;
        let slow = || {
            Poll::Ready(Some(Err(Box::new(SlowBody { min_bytes_per_sec })
                as Box<dyn std::error::Error + Send + Sync>)))
        };
        if deadline <= Instant::now() {
            return slow();
        }
        if this.timer.deadline() != deadline {
            this.timer.as_mut().reset(deadline);
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => slow(),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Whether `error` (a body rejection) comes from a [`SlowBody`].
pub fn is_slow_body(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<SlowBody>() {
            return true;
        }
        current = error.source();
    }
    false
}
