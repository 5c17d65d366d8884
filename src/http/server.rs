//! Serving connections, with a bound on what each socket can cost: the
//! accept loop, TLS handshakes, hyper's HTTP/1.1 and HTTP/2 connections,
//! and shutdown.
//!
//! What one client can spend, and the bound on it:
//! - open connections: at most `--max-connections` (lowered to what the
//!   open-file limit allows), at most `--max-connections-per-ip` from one
//!   address (trusted proxies exempt); over the per-address cap new
//!   connections are closed; at the global cap a new connection takes the
//!   place of the one that has waited longest without ever sending a
//!   request (else of the longest idle one), so silent sockets from many
//!   addresses cannot keep a client that talks out; when every connection
//!   is busy, new ones wait in the kernel's backlog;
//! - a connection that sends nothing, half a request head or never finishes
//!   its TLS handshake: closed after `--header-timeout`; an idle HTTP/1.1
//!   keep-alive connection too;
//! - a connection that sits without a request (HTTP/2 included): closed
//!   after `--idle-timeout`;
//! - a request body: 16 KiB and `--body-timeout`, for every protocol (the
//!   guard in `mod.rs` reads it);
//! - a request head: 32 KiB (HTTP/1.1 gets 431 beyond it);
//! - HTTP/2: 64 concurrent streams, 32 KiB of headers, small flow-control
//!   windows, hyper's limits on reset floods;
//! - when `accept` fails (out of descriptors), the loop backs off instead of
//!   spinning.
//!
//! hyper answers requests it cannot parse (400, 414, 431) itself; [`Guarded`]
//! adds the security headers to those answers on their way out. At
//! shutdown, idle connections close at once and busy ones finish their
//! requests (up to 30 s); [`serve`] returns only once every connection task
//! has ended, so the core it served is no longer held.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use ipnet::IpNet;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Addr, Endpoint, EndpointExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::ConnectionLimits;

/// How long shutdown waits for in-flight requests.
const GRACEFUL_SHUTDOWN: Duration = Duration::from_secs(30);
/// How long a connection closed for idleness may take to say goodbye.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Descriptors kept free of connections (the database, the log, TLS files).
const RESERVED_DESCRIPTORS: u64 = 64;
/// HTTP/2 limits: concurrent streams, header list bytes, window bytes.
const H2_MAX_STREAMS: u32 = 64;
const H2_MAX_HEADER_LIST: u32 = 32 * 1024;
const H2_WINDOW: u32 = 64 * 1024;
/// HTTP/1.1 read buffer: bounds a request head (hyper answers 431 beyond it).
const H1_MAX_BUF: usize = 32 * 1024;
/// Back-off after a failed `accept`, from the first to the longest.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// Marks a request as read by latchkey's own server (not handed over by an
/// embedding app or a test client): HTTP/1.1's rules on `Host` apply.
#[derive(Clone, Copy)]
pub(super) struct OwnServer;

/// What a connection needs to know.
pub(super) struct Settings {
    pub limits: ConnectionLimits,
    pub trusted_proxies: Vec<IpNet>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Security header lines (`name: value\r\n`) for hyper's own answers.
    pub header_lines: Vec<u8>,
}

/// Serves `endpoint` on `listener` until `shutdown` completes.
///
/// # Errors
/// The I/O error that stopped the listener (failed `accept`s are retried).
pub(super) async fn serve<E>(
    listener: TcpListener,
    endpoint: E,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()>
where
    E: Endpoint + 'static,
{
    let endpoint: SharedEndpoint = Arc::new(endpoint.map_to_response().boxed());
    let settings = Arc::new(settings);
    let local = listener.local_addr()?;
    let connections = Arc::new(Semaphore::new(connection_cap(
        settings.limits.max_connections,
    )));
    let per_ip = Arc::new(PerIp::default());
    let open = Arc::new(Registry::default());
    let (stop, stopping) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF.0;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF.0;
                accepted
            }
            Err(err) => {
                // Out of descriptors (or memory): wait for connections to
                // close instead of spinning on the same error.
                tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        let peer_ip = peer.ip().to_canonical();
        let trusted = settings
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&peer_ip));
        let slot = match trusted {
            true => None,
            false => match per_ip.claim(peer_ip, settings.limits.max_connections_per_ip) {
                Some(slot) => Some(slot),
                None => {
                    tracing::debug!(%peer_ip, "connection refused: too many from this address");
                    continue;
                }
            },
        };
        let permit = match Arc::clone(&connections).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Full: make room by closing the connection that has waited
                // longest without a request, then wait for its place (or,
                // if every connection is busy, for any).
                if open.evict_one() {
                    tracing::debug!(
                        "at the connection cap: closed the longest-waiting idle connection"
                    );
                }
                let permit = tokio::select! {
                    () = &mut shutdown => break,
                    permit = Arc::clone(&connections).acquire_owned() => permit,
                };
                let Ok(permit) = permit else { break };
                permit
            }
        };
        let activity = Arc::new(Activity::new());
        let registered = open.register(Arc::clone(&activity));
        let connection = Connection {
            stream,
            peer,
            local,
            settings: Arc::clone(&settings),
            endpoint: Arc::clone(&endpoint),
            stopping: stopping.clone(),
            activity,
        };
        tasks.spawn(async move {
            connection.run().await;
            drop((permit, slot, registered));
        });
    }
    let _ = stop.send(true);
    let drained = tokio::time::timeout(GRACEFUL_SHUTDOWN, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "shutdown: closing connections still busy"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    Ok(())
}

/// The connection cap, lowered to what the open-file limit leaves room for.
fn connection_cap(asked: u32) -> usize {
    let asked = u64::from(asked.max(1));
    let allowed = match rlimit::Resource::NOFILE.get() {
        Ok((soft, _)) => soft.saturating_sub(RESERVED_DESCRIPTORS).max(1),
        Err(_) => asked,
    };
    if asked > allowed {
        tracing::warn!(
            asked,
            allowed,
            "--max-connections is above what the open-file limit allows; lowered"
        );
    }
    usize::try_from(asked.min(allowed)).unwrap_or(usize::MAX)
}

/// Open connections per client address.
#[derive(Default)]
struct PerIp {
    open: Mutex<HashMap<IpAddr, u32>>,
}

impl PerIp {
    /// A slot for one more connection from `ip`, if it has fewer than `cap`.
    fn claim(self: &Arc<Self>, ip: IpAddr, cap: u32) -> Option<PerIpSlot> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= cap.max(1) {
            return None;
        }
        *count += 1;
        Some(PerIpSlot {
            owner: Arc::clone(self),
            ip,
        })
    }
}

/// One connection's place in [`PerIp`], given back on drop.
struct PerIpSlot {
    owner: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut open = self
            .owner
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Every open connection's [`Activity`], to pick one to close at the cap.
#[derive(Default)]
struct Registry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl Registry {
    fn register(self: &Arc<Self>, activity: Arc<Activity>) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, activity);
        Registered {
            owner: Arc::clone(self),
            id,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks the connection that has waited longest without ever sending a
    /// request (else the one idle the longest) to close. `false` when every
    /// connection has a request in flight.
    fn evict_one(&self) -> bool {
        let open = self.lock();
        let chosen = open
            .values()
            .filter(|activity| activity.can_be_evicted())
            .min_by_key(|activity| activity.eviction_rank());
        match chosen {
            Some(activity) => {
                activity.evict();
                true
            }
            None => false,
        }
    }
}

/// A connection's place in the [`Registry`], given back on drop.
struct Registered {
    owner: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.owner.lock().remove(&self.id);
    }
}

type SharedEndpoint = Arc<poem::endpoint::BoxEndpoint<'static, poem::Response>>;

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    settings: Arc<Settings>,
    endpoint: SharedEndpoint,
    stopping: watch::Receiver<bool>,
    activity: Arc<Activity>,
}

impl Connection {
    async fn run(self) {
        let Connection {
            stream,
            peer,
            local,
            settings,
            endpoint,
            mut stopping,
            activity,
        } = self;
        let _ = stream.set_nodelay(true);
        let header_timeout = settings.limits.header_timeout;
        let (io, scheme): (Box<dyn Io>, Scheme) = match &settings.tls {
            Some(acceptor) => {
                let handshake = tokio::time::timeout(header_timeout, acceptor.accept(stream));
                tokio::select! {
                    handshake = handshake => match handshake {
                        Ok(Ok(tls)) => (Box::new(tls), Scheme::HTTPS),
                        // A failed or slow handshake: nothing to answer.
                        _ => return,
                    },
                    () = activity.evicted.notified() => return,
                }
            }
            None => (Box::new(stream), Scheme::HTTP),
        };
        let service = {
            let activity = Arc::clone(&activity);
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let endpoint = Arc::clone(&endpoint);
                let busy = activity.begin();
                let scheme = scheme.clone();
                async move {
                    let mut request = poem::Request::from((
                        request,
                        LocalAddr(Addr::SocketAddr(local)),
                        RemoteAddr(Addr::SocketAddr(peer)),
                        scheme,
                    ));
                    request.extensions_mut().insert(OwnServer);
                    let response = endpoint.get_response(request).await;
                    drop(busy);
                    Ok::<_, Infallible>(hyper::Response::from(response))
                }
            })
        };
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(H1_MAX_BUF);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_header_list_size(H2_MAX_HEADER_LIST)
            .initial_stream_window_size(H2_WINDOW)
            .initial_connection_window_size(H2_WINDOW)
            .max_send_buf_size(64 * 1024)
            .keep_alive_interval(settings.limits.idle_timeout / 2)
            .keep_alive_timeout(header_timeout);
        let io = Guarded::new(io, settings.header_lines.clone());
        let connection = builder.serve_connection(TokioIo::new(io), service);
        let mut connection = std::pin::pin!(connection);
        let limits = &settings.limits;
        let grace = loop {
            let check = activity.next_check(limits.header_timeout, limits.idle_timeout);
            tokio::select! {
                _ = connection.as_mut() => return,
                // At shutdown a connection with a request in flight may
                // finish it; one without (idle, silent, half a head) goes.
                _ = stopping.changed() => break match activity.in_flight.load(Ordering::SeqCst) {
                    0 => CLOSE_GRACE,
                    _ => GRACEFUL_SHUTDOWN,
                },
                () = tokio::time::sleep_until(check.into()) => {
                    if activity.is_idle(limits.header_timeout, limits.idle_timeout) {
                        break CLOSE_GRACE;
                    }
                }
                // Its place is wanted: one that never sent a request just
                // goes; a request that started meanwhile may finish.
                () = activity.evicted.notified() => match activity.last.load(Ordering::SeqCst) {
                    0 => return,
                    _ => break CLOSE_GRACE,
                },
            }
        };
        connection.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(grace, connection).await;
    }
}

/// The byte stream of a connection, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// When a connection last started or finished a request, and how many it
/// has in flight: what decides that it is idle.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` of the last request start or end; 0 before
    /// the first request.
    last: AtomicU64,
    /// Set once the connection has been asked to make room.
    evicting: AtomicBool,
    /// Wakes the connection to close (a stored permit: never missed).
    evicted: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            evicting: AtomicBool::new(false),
            evicted: Notify::new(),
        }
    }

    /// Whether closing the connection loses no request: none in flight, and
    /// not already asked.
    fn can_be_evicted(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0 && !self.evicting.load(Ordering::SeqCst)
    }

    /// Which idle connection goes first: one that never sent a request,
    /// oldest first; then the one idle the longest.
    fn eviction_rank(&self) -> (bool, Instant) {
        match self.last.load(Ordering::SeqCst) {
            0 => (false, self.opened),
            last => (true, self.opened + Duration::from_millis(last)),
        }
    }

    fn evict(&self) {
        self.evicting.store(true, Ordering::SeqCst);
        self.evicted.notify_one();
    }

    fn touch(&self) {
        let elapsed = self.opened.elapsed().as_millis();
        self.last.store(
            u64::try_from(elapsed).unwrap_or(u64::MAX).max(1),
            Ordering::SeqCst,
        );
    }

    /// Marks a request in flight until the returned guard drops.
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        Busy(Arc::clone(self))
    }

    /// When the connection goes idle unless a request comes: the header
    /// timeout after opening while no request ever came, else the idle
    /// timeout after the last request.
    fn next_check(&self, header_timeout: Duration, idle_timeout: Duration) -> Instant {
        match self.last.load(Ordering::SeqCst) {
            0 => self.opened + header_timeout,
            last => self.opened + Duration::from_millis(last) + idle_timeout,
        }
    }

    fn is_idle(&self, header_timeout: Duration, idle_timeout: Duration) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
            && Instant::now() >= self.next_check(header_timeout, idle_timeout)
    }
}

/// A request in flight; its end counts as activity.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// A connection's byte stream that adds the security headers to the
/// answers hyper writes itself, for requests it could not parse: a response
/// head for 400, 414 or 431 without a `content-type` (every answer of
/// latchkey's own to those has one).
struct Guarded {
    inner: Box<dyn Io>,
    header_lines: Vec<u8>,
    /// Rewritten bytes not yet written to `inner`.
    pending: Vec<u8>,
}

impl Guarded {
    fn new(inner: Box<dyn Io>, header_lines: Vec<u8>) -> Self {
        Guarded {
            inner,
            header_lines,
            pending: Vec::new(),
        }
    }

    /// The head with the security header lines added after its status line,
    /// if `buf` is a whole automatic error head.
    fn rewrite(&self, buf: &[u8]) -> Option<Vec<u8>> {
        let automatic = [
            b"HTTP/1.1 400 ",
            b"HTTP/1.1 414 ",
            b"HTTP/1.1 431 ",
            b"HTTP/1.0 400 ",
        ];
        if !automatic.iter().any(|start| buf.starts_with(&start[..])) || !buf.ends_with(b"\r\n\r\n")
        {
            return None;
        }
        let head = String::from_utf8_lossy(buf).to_ascii_lowercase();
        if head.contains("\r\ncontent-type:") {
            return None;
        }
        let status_end = buf.windows(2).position(|pair| pair == b"\r\n")? + 2;
        let mut rewritten = Vec::with_capacity(buf.len() + self.header_lines.len());
        rewritten.extend_from_slice(&buf[..status_end]);
        rewritten.extend_from_slice(&self.header_lines);
        rewritten.extend_from_slice(&buf[status_end..]);
        Some(rewritten)
    }

    /// Writes out what a rewrite left pending.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let written =
                std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..written);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        if let Some(rewritten) = self.rewrite(buf) {
            // Taken whole; written out by the next calls.
            self.pending = rewritten;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guarded() -> Guarded {
        let (stream, _) = tokio::io::duplex(64);
        Guarded::new(Box::new(stream), b"x-frame-options: DENY\r\n".to_vec())
    }

    #[tokio::test]
    async fn only_hypers_own_error_heads_are_rewritten() {
        let io = guarded();
        let automatic =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let rewritten = io.rewrite(automatic).expect("rewritten");
        assert_eq!(
            String::from_utf8_lossy(&rewritten),
            "HTTP/1.1 431 Request Header Fields Too Large\r\nx-frame-options: DENY\r\ncontent-length: 0\r\ndate: x\r\n\r\n"
        );
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n";
        assert!(io.rewrite(ours).is_none());
        assert!(
            io.rewrite(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .is_none()
        );
        assert!(
            io.rewrite(b"HTTP/1.1 400 Bad Req").is_none(),
            "a partial head"
        );
    }

    #[test]
    fn a_connection_is_idle_after_the_header_timeout_without_requests() {
        let activity = Arc::new(Activity::new());
        let (header, idle) = (Duration::from_millis(0), Duration::from_secs(60));
        assert!(activity.is_idle(header, idle));
        let busy = activity.begin();
        assert!(!activity.is_idle(header, idle), "a request is in flight");
        drop(busy);
        assert!(
            !activity.is_idle(header, idle),
            "the idle timeout runs from the last request"
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(activity.is_idle(header, Duration::from_millis(1)));
    }

    #[test]
    fn at_the_cap_a_silent_connection_goes_first_then_an_idle_one_never_a_busy_one() {
        let open = Arc::new(Registry::default());
        let busy = Arc::new(Activity::new());
        let _request = busy.begin();
        let idle = Arc::new(Activity::new());
        drop(idle.begin());
        let silent = Arc::new(Activity::new());
        let _places: Vec<_> = [&busy, &idle, &silent]
            .into_iter()
            .map(|activity| open.register(Arc::clone(activity)))
            .collect();
        assert!(open.evict_one());
        assert!(
            silent.evicting.load(Ordering::SeqCst),
            "the silent one first"
        );
        assert!(open.evict_one());
        assert!(idle.evicting.load(Ordering::SeqCst), "then the idle one");
        assert!(!open.evict_one(), "a connection with a request stays");
        assert!(!busy.evicting.load(Ordering::SeqCst));
    }

    #[test]
    fn the_per_address_cap_gives_slots_back() {
        let per_ip = Arc::new(PerIp::default());
        let ip: IpAddr = [10, 0, 0, 1].into();
        let first = per_ip.claim(ip, 2).expect("first");
        let _second = per_ip.claim(ip, 2).expect("second");
        assert!(per_ip.claim(ip, 2).is_none());
        assert!(
            per_ip.claim([10, 0, 0, 2].into(), 2).is_some(),
            "another address"
        );
        drop(first);
        assert!(per_ip.claim(ip, 2).is_some());
    }
}
