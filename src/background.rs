//! Threads for CPU-heavy work that must not compete with requests: the
//! password-hashing threads run at a lower scheduling priority than the
//! async workers that answer requests, so that a login storm barely shows in
//! a token check's latency, while hashing still uses every core the requests
//! leave idle. Only for work that holds no lock a request may wait for: a
//! low-priority thread preempted while holding one would stall the request
//! (the sweeper, which commits database transactions, paces itself instead).
//! The only user of `rustix`'s process and thread calls.

use std::thread::JoinHandle;

/// Niceness of the password-hashing threads, the lowest: on a busy core
/// the async workers (nice 0) preempt them at once, and they still get a
/// small share (about 1.5 %), so logins progress, slowly, even when token
/// checks keep every core busy. (Measured: with nice 10, a login storm
/// raised the p99 of token checks 6×; with nice 19, 1.3×.)
pub(crate) const HASHING: i32 = 19;

/// Starts a thread named `name` that lowers its own priority to `niceness`
/// before it runs `work`. (Linux's priorities are per thread; elsewhere,
/// or where it is refused, the thread runs at the normal priority: slower
/// requests under background load, nothing worse.)
///
/// # Errors
/// The error of starting the thread.
pub(crate) fn spawn<T: Send + 'static>(
    name: String,
    niceness: i32,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<JoinHandle<T>> {
    std::thread::Builder::new().name(name).spawn(move || {
        lower_priority(niceness);
        work()
    })
}

fn lower_priority(niceness: i32) {
    #[cfg(target_os = "linux")]
    if let Err(err) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), niceness)
    {
        tracing::warn!(error = %err, niceness, "cannot lower a background thread's priority");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = niceness;
}
