//! Password hashing with argon2id (the only importer of `argon2`) and the
//! password policy (the only importer of `zxcvbn`).
//!
//! Hashing and verifying take ~20–30 ms of CPU and ~19 MiB of memory each, so
//! they run on a fixed set of hashing threads (`--hash-concurrency`), each
//! with its argon2 memory allocated once and reused: a login storm queues
//! here instead of starving the async workers that serve token checks, and
//! memory stays where it started (allocating 19 MiB per hash on a growing
//! pool of threads left it in the allocator's per-thread arenas). The queue
//! is bounded in length and in waiting time: past either, the request is
//! refused as overloaded (503) instead of making everyone behind it wait. A
//! request whose client hung up is skipped when its turn comes. Callers who
//! have shown who they are (a login from a known device of the account, a
//! password change with a valid access token) queue in a lane of their own
//! that the threads serve first, so a storm of strangers' logins cannot keep
//! the owners out. An unknown
//! user is "verified" against a dummy hash so that the response time does
//! not reveal whether an email has an account.
//!
//! The policy follows NIST SP 800-63B §3.1.1.2: length only (8 to 128
//! characters, checked in `model`), no composition rules, and a refusal of
//! passwords that are common (zxcvbn's embedded list of ~30 000 passwords
//! from breach corpora, matched whole, also reversed, capitalized or in l33t),
//! a single repeated, sequential or keyboard pattern, or that contain the
//! username or the email's local part.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::Rng;
use tokio::sync::oneshot;
use zxcvbn::matching::patterns::MatchPattern;

use crate::background;
use crate::error::{Error, Result};
use crate::model::Password;

/// How a presented password compared with a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// It does not match (or there is no such account).
    Wrong,
    /// It matches.
    Right,
    /// It matches only as typed, not in NFKC form: the hash predates
    /// normalization and should be replaced.
    RightAsTyped,
}

impl Verified {
    /// Whether the password is right, in either form.
    pub fn is_right(self) -> bool {
        self != Verified::Wrong
    }
}

/// Which queue a hash waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Callers who have shown who they are: a login from a known device of
    /// the account, a password change with a valid access token. Served
    /// first.
    Known,
    /// Everyone else: registrations, logins from new devices.
    Stranger,
}

/// How many hashes may run and wait, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct HashQueue {
    /// Hashes running at once (at least 1).
    pub concurrency: usize,
    /// Requests waiting for a hash at most, in each lane; more are refused.
    pub max_waiting: usize,
    /// The longest a request waits for its hash; longer, it is refused.
    pub max_wait: Duration,
}

/// Hashes and verifies passwords on a fixed set of threads, with a bounded
/// queue in two lanes.
pub struct Passwords {
    jobs: Arc<Jobs>,
    threads: Vec<JoinHandle<()>>,
    /// Requests waiting, by lane ([`Lane::Known`], [`Lane::Stranger`]).
    waiting: [Arc<AtomicUsize>; 2],
    queue: HashQueue,
    dummy_hash: Arc<str>,
}

/// Work for a hashing thread, given the thread's argon2 memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// The queued jobs, by lane, and whether the queue is closed.
#[derive(Default)]
struct Jobs {
    state: Mutex<Lanes>,
    ready: Condvar,
    /// Told how long each hash ran (see [`Passwords::observe_hashes`]).
    on_hash: OnceLock<OnHash>,
}

/// Told how long one hash or verification ran on its thread.
pub type OnHash = Box<dyn Fn(Duration) + Send + Sync>;

#[derive(Default)]
struct Lanes {
    known: VecDeque<Job>,
    strangers: VecDeque<Job>,
    closed: bool,
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, lane: Lane, job: Job) -> bool {
        let mut lanes = self.lock();
        if lanes.closed {
            return false;
        }
        match lane {
            Lane::Known => lanes.known.push_back(job),
            Lane::Stranger => lanes.strangers.push_back(job),
        }
        drop(lanes);
        self.ready.notify_one();
        true
    }

    /// The next job, known callers first; `None` once closed and drained.
    fn next(&self) -> Option<Job> {
        let mut lanes = self.lock();
        loop {
            if let Some(job) = lanes
                .known
                .pop_front()
                .or_else(|| lanes.strangers.pop_front())
            {
                return Some(job);
            }
            if lanes.closed {
                return None;
            }
            lanes = self
                .ready
                .wait(lanes)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

impl Passwords {
    /// A hasher with this queue: starts its threads, each with its memory.
    /// Computes the dummy hash once, which takes one hash's time.
    ///
    /// # Errors
    /// [`Error::Internal`] if argon2 fails or a thread cannot start.
    pub fn new(queue: HashQueue) -> Result<Self> {
        let jobs = Arc::new(Jobs::default());
        let threads = (0..queue.concurrency.max(1))
            .map(|n| {
                let jobs = Arc::clone(&jobs);
                background::spawn(
                    format!("latchkey-hash-{n}"),
                    background::HASHING,
                    move || {
                        hash_thread(&jobs);
                    },
                )
                .map_err(|err| Error::Internal(format!("cannot start a hashing thread: {err}")))
            })
            .collect::<Result<Vec<_>>>();
        let threads = match threads {
            Ok(threads) => threads,
            Err(err) => {
                jobs.close();
                return Err(err);
            }
        };
        let dummy_hash = hash_with(&mut memory(), "latchkey dummy password, never matches")?;
        Ok(Passwords {
            jobs,
            threads,
            waiting: Default::default(),
            queue,
            dummy_hash: dummy_hash.into(),
        })
    }

    /// Has `observe` told how long each hash runs (its time on a hashing
    /// thread, without the wait). Only the first call counts.
    pub fn observe_hashes(&self, observe: OnHash) {
        let _ = self.jobs.on_hash.set(observe);
    }

    /// How many requests wait for a hash now, in both lanes.
    pub fn waiting(&self) -> usize {
        self.waiting
            .iter()
            .map(|waiting| waiting.load(Ordering::SeqCst))
            .sum()
    }

    /// The default concurrency: one hashing thread per core (they run at a
    /// lower priority, so token checks keep the CPU they need).
    pub fn default_concurrency() -> usize {
        std::thread::available_parallelism().map_or(1, |cores| cores.get())
    }

    /// Hashes a password to an argon2id PHC string (OWASP minimum parameters:
    /// m=19456 KiB, t=2, p=1, random salt).
    ///
    /// # Errors
    /// [`Error::Internal`] if argon2 fails, [`Error::Overloaded`] when the
    /// queue is full or the wait too long.
    pub async fn hash(&self, password: &Password, lane: Lane) -> Result<String> {
        let password = password.clone();
        self.run(lane, move |memory| hash_with(memory, password.expose()))
            .await
    }

    /// Checks `password` against a stored PHC string: its NFKC form, then,
    /// if that differs and fails, the form typed (a hash from before
    /// passwords were normalized). With `None` (no such user) it spends the
    /// same time on a dummy hash and answers [`Verified::Wrong`].
    ///
    /// # Errors
    /// [`Error::Internal`] if the stored hash cannot be parsed,
    /// [`Error::Overloaded`] when the queue is full or the wait too long.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
        lane: Lane,
    ) -> Result<Verified> {
        let password = password.clone();
        let known = stored.is_some();
        let phc: Arc<str> = stored.map_or_else(|| self.dummy_hash.clone(), Arc::from);
        let verified = self
            .run(lane, move |memory| {
                Ok(if verify_with(memory, password.expose(), &phc)? {
                    Verified::Right
                } else if let Some(typed) = password.as_typed()
                    && verify_with(memory, typed, &phc)?
                {
                    Verified::RightAsTyped
                } else {
                    Verified::Wrong
                })
            })
            .await?;
        Ok(if known { verified } else { Verified::Wrong })
    }

    /// Queues `work` in `lane` for a hashing thread and waits for its result.
    async fn run<T: Send + 'static>(
        &self,
        lane: Lane,
        work: impl FnOnce(&mut Vec<Block>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let retry_after = self.queue.max_wait.as_secs().max(1);
        let waiting = Arc::clone(&self.waiting[lane as usize]);
        if waiting.fetch_add(1, Ordering::SeqCst) >= self.queue.max_waiting {
            waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Overloaded { retry_after });
        }
        let (reply, result) = oneshot::channel();
        let queued = Arc::clone(&waiting);
        let deadline = Instant::now() + self.queue.max_wait;
        let jobs = Arc::clone(&self.jobs);
        let job: Job = Box::new(move |memory| {
            queued.fetch_sub(1, Ordering::SeqCst);
            // The client hung up, or waited too long: no hash.
            if reply.is_closed() {
                return;
            }
            let started = Instant::now();
            let outcome = match started < deadline {
                true => work(memory),
                false => Err(Error::Overloaded { retry_after }),
            };
            if let (Some(observe), Ok(_)) = (jobs.on_hash.get(), &outcome) {
                observe(started.elapsed());
            }
            let _ = reply.send(outcome);
        });
        if !self.jobs.push(lane, job) {
            waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Internal("the hashing threads have stopped".into()));
        }
        result
            .await
            .map_err(|_| Error::Internal("a hashing thread failed".into()))?
    }
}

impl Drop for Passwords {
    fn drop(&mut self) {
        // Closing the queue ends the threads once they have drained it.
        self.jobs.close();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A hashing thread: takes jobs, known callers' first, until the queue
/// closes, reusing one allocation of argon2 memory for all of them.
/// The memory is allocated at the first job, so an idle server holds none.
fn hash_thread(jobs: &Jobs) {
    let mut memory = Vec::new();
    while let Some(job) = jobs.next() {
        if memory.is_empty() {
            memory = self::memory();
        }
        job(&mut memory);
    }
}

/// Working memory for one argon2 hash with latchkey's parameters.
fn memory() -> Vec<Block> {
    vec![Block::default(); Params::DEFAULT.block_count()]
}

/// Hashes `password` with latchkey's parameters and a random salt, in
/// `memory`, to a PHC string.
fn hash_with(memory: &mut [Block], password: &str) -> Result<String> {
    let params = Params::DEFAULT;
    let mut salt = [0u8; Salt::RECOMMENDED_LENGTH];
    rand::rng().fill_bytes(&mut salt);
    let mut out = [0u8; 32];
    let failed =
        |err: &dyn std::fmt::Display| Error::Internal(format!("cannot hash a password: {err}"));
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, memory)
        .map_err(|err| failed(&err))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|err| failed(&err))?,
        salt: Some(Salt::new(&salt).map_err(|err| failed(&err))?),
        hash: Some(Output::new(&out).map_err(|err| failed(&err))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `stored`, computed in `memory`
/// (grown if the stored parameters ask for more) and compared in constant time.
fn verify_with(memory: &mut Vec<Block>, password: &str, stored: &str) -> Result<bool> {
    let unreadable = |err: &dyn std::fmt::Display| {
        Error::Internal(format!("stored password hash is unreadable: {err}"))
    };
    let parsed = PasswordHash::new(stored).map_err(|err| unreadable(&err))?;
    let algorithm =
        Algorithm::try_from(parsed.algorithm.as_str()).map_err(|err| unreadable(&err))?;
    let version = parsed
        .version
        .map_or(Ok(Version::V0x13), Version::try_from)
        .map_err(|err| unreadable(&err))?;
    let params = Params::try_from(&parsed).map_err(|err| unreadable(&err))?;
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return Err(Error::Internal(
            "stored password hash has no salt or hash".into(),
        ));
    };
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    let expected = expected.as_bytes();
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params.clone())
        .hash_password_into_with_memory(
            password.as_bytes(),
            salt.as_ref(),
            &mut out,
            &mut memory[..params.block_count()],
        )
        .map_err(|err| unreadable(&err))?;
    let difference = out
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    Ok(difference == 0)
}

/// Checks a new password against the policy for the account it will protect.
///
/// # Errors
/// [`Error::WeakPassword`] saying which rule it breaks.
pub fn check_policy(password: &Password, username: &str, email: &str) -> Result<()> {
    let lowered = password.expose().to_lowercase();
    let local_part = email.split('@').next().unwrap_or_default().to_lowercase();
    if lowered.contains(&username.to_lowercase()) {
        return Err(weak("password must not contain the username"));
    }
    if local_part.chars().count() >= 3 && lowered.contains(&local_part) {
        return Err(weak("password must not contain the email address"));
    }
    let entropy = zxcvbn::zxcvbn(password.expose(), &[]);
    if let [only] = entropy.sequence() {
        match &only.pattern {
            // zxcvbn does not export its dictionary enum; its default
            // variant is the passwords list (a unit test pins this).
            MatchPattern::Dictionary(word) if word.dictionary_name == Default::default() => {
                return Err(weak(
                    "password is too common: it appears in lists of breached passwords",
                ));
            }
            MatchPattern::Repeat(_) | MatchPattern::Sequence(_) | MatchPattern::Spatial(_) => {
                return Err(weak(
                    "password is a repeated, sequential or keyboard pattern",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn weak(message: &str) -> Error {
    Error::WeakPassword(message.to_owned())
}

/// Whether a stored hash was made with weaker settings than latchkey's
/// current ones (another algorithm or version, or lower memory, time or
/// parallelism cost), so it should be re-hashed at the next login.
pub fn needs_rehash(stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let current = Params::DEFAULT;
    let algorithm_current = parsed.algorithm.as_str() == Algorithm::Argon2id.as_str()
        && parsed.version == Some(Version::V0x13.into());
    match Params::try_from(&parsed) {
        Ok(params) => {
            !algorithm_current
                || params.m_cost() < current.m_cost()
                || params.t_cost() < current.t_cost()
                || params.p_cost() < current.p_cost()
        }
        Err(_) => false,
    }
}

/// A hash made with older, weaker settings, as an account from those days has.
#[cfg(test)]
pub(crate) fn weak_hash(password: &str) -> String {
    use argon2::password_hash::PasswordHasher;
    let params = Params::new(4096, 1, 1, None).expect("params");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes())
        .expect("hash")
        .to_string()
}

/// A hash made by the argon2 crate's own hasher (for cross-checks).
#[cfg(test)]
fn hash_now(password: &str) -> Result<String> {
    use argon2::password_hash::PasswordHasher;
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|err| Error::Internal(format!("cannot hash a password: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(concurrency: usize, max_waiting: usize) -> HashQueue {
        HashQueue {
            concurrency,
            max_waiting,
            max_wait: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let passwords = Passwords::new(queue(1, 8)).expect("hasher");
        let right = Password::parse("correct horse battery").expect("valid");
        let wrong = Password::parse("incorrect horse battery").expect("valid");
        let hash = passwords
            .hash(&right, Lane::Stranger)
            .await
            .expect("hashed");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_eq!(
            passwords
                .verify(&right, Some(&hash), Lane::Stranger)
                .await
                .expect("verified"),
            Verified::Right
        );
        assert_eq!(
            passwords
                .verify(&wrong, Some(&hash), Lane::Stranger)
                .await
                .expect("verified"),
            Verified::Wrong
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_below_the_normal_priority() {
        let passwords = Passwords::new(queue(2, 8)).expect("hasher");
        // Once a hash has run, both threads have started and lowered themselves.
        let password = Password::parse("correct horse battery").expect("valid");
        for _ in 0..2 {
            passwords
                .hash(&password, Lane::Stranger)
                .await
                .expect("hashed");
        }
        // Other tests' hashing threads live in this process too: one just
        // started may not have lowered itself yet, so look again a moment later.
        let mut niceness = Vec::new();
        for _ in 0..50 {
            niceness = hashing_thread_niceness();
            if niceness.len() >= 2 && niceness.iter().all(|nice| *nice == background::HASHING) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("hashing threads' niceness: {niceness:?}");
    }

    /// The niceness of every `latchkey-hash-*` thread of this process.
    #[cfg(target_os = "linux")]
    fn hashing_thread_niceness() -> Vec<i32> {
        let mut niceness = Vec::new();
        for task in std::fs::read_dir("/proc/self/task")
            .expect("tasks")
            .flatten()
        {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // After the parenthesized name: state is field 3, nice field 19.
            let nice = stat
                .rsplit_once(") ")
                .and_then(|(_, fields)| fields.split(' ').nth(16))
                .and_then(|nice| nice.parse().ok());
            if let (true, Some(nice)) = (comm.starts_with("latchkey-hash"), nice) {
                niceness.push(nice);
            }
        }
        niceness
    }

    #[test]
    fn hashes_made_with_reused_memory_agree_with_the_argon2_crate() {
        use argon2::password_hash::PasswordVerifier;
        let mut memory = memory();
        let ours = hash_with(&mut memory, "correct horse battery").expect("hash");
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        let parsed = PasswordHash::new(&ours).expect("a PHC string");
        assert!(
            Argon2::default()
                .verify_password(b"correct horse battery", &parsed)
                .is_ok(),
            "the crate's verifier accepts ours"
        );
        let theirs = hash_now("correct horse battery").expect("hash");
        assert!(verify_with(&mut memory, "correct horse battery", &theirs).expect("verified"));
        assert!(!verify_with(&mut memory, "incorrect horse battery", &theirs).expect("verified"));
        // A weaker legacy hash verifies in the same memory.
        let weak = weak_hash("correct horse battery");
        assert!(verify_with(&mut memory, "correct horse battery", &weak).expect("verified"));
        assert!(verify_with(&mut memory, "x", "not a hash").is_err());
    }

    #[tokio::test]
    async fn an_unknown_user_never_verifies() {
        let passwords = Passwords::new(queue(1, 8)).expect("hasher");
        let guess = Password::parse("latchkey dummy password, never matches").expect("valid");
        assert_eq!(
            passwords
                .verify(&guess, None, Lane::Stranger)
                .await
                .expect("verified"),
            Verified::Wrong
        );
    }

    #[tokio::test]
    async fn a_hash_made_before_normalization_still_verifies_and_asks_for_a_new_one() {
        let passwords = Passwords::new(queue(1, 8)).expect("hasher");
        let typed = "cafe\u{301} au lait";
        let legacy = hash_now(typed).expect("hash of the password as typed");
        let presented = Password::parse(typed).expect("valid");
        assert_eq!(
            passwords
                .verify(&presented, Some(&legacy), Lane::Known)
                .await
                .expect("verified"),
            Verified::RightAsTyped
        );
        let current = passwords
            .hash(&presented, Lane::Stranger)
            .await
            .expect("hash");
        let composed = Password::parse("caf\u{e9} au lait").expect("valid");
        assert_eq!(
            passwords
                .verify(&composed, Some(&current), Lane::Known)
                .await
                .expect("verified"),
            Verified::Right,
            "NFC and NFD spellings are one password"
        );
    }

    #[tokio::test]
    async fn beyond_the_queue_requests_are_refused_as_overloaded() {
        let passwords = Arc::new(Passwords::new(queue(1, 2)).expect("hasher"));
        let password = Password::parse("correct horse battery").expect("valid");
        let hashes: Vec<_> = (0..6)
            .map(|_| {
                let passwords = Arc::clone(&passwords);
                let password = password.clone();
                tokio::spawn(async move { passwords.hash(&password, Lane::Stranger).await })
            })
            .collect();
        let mut refused = 0;
        for hash in hashes {
            match hash.await.expect("task") {
                Ok(_) => {}
                Err(Error::Overloaded { retry_after }) => {
                    assert!(retry_after >= 1);
                    refused += 1;
                }
                Err(other) => panic!("{other}"),
            }
        }
        assert!(
            refused >= 3,
            "{refused} of 6 refused with 1 running and 2 waiting"
        );
        assert_eq!(passwords.waiting(), 0, "every place was given back");
        let slow = Passwords::new(HashQueue {
            max_wait: Duration::ZERO,
            ..queue(1, 8)
        })
        .expect("hasher");
        let (first, second) = tokio::join!(
            slow.hash(&password, Lane::Stranger),
            slow.hash(&password, Lane::Stranger)
        );
        assert!(
            first.is_err() || second.is_err(),
            "a request that cannot start at once is refused"
        );
    }

    #[tokio::test]
    async fn known_callers_are_hashed_before_the_strangers_queued_ahead_of_them() {
        let passwords = Arc::new(Passwords::new(queue(1, 8)).expect("hasher"));
        let finished = Arc::new(Mutex::new(Vec::new()));
        // Hold the only thread until everything is queued.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let passwords = Arc::clone(&passwords);
            tokio::spawn(async move {
                passwords
                    .run(Lane::Stranger, move |_| {
                        let _ = held.recv();
                        Ok(())
                    })
                    .await
            })
        };
        let mut tasks = Vec::new();
        for (name, lane) in [
            ("stranger 1", Lane::Stranger),
            ("stranger 2", Lane::Stranger),
            ("known", Lane::Known),
        ] {
            let (passwords, finished) = (Arc::clone(&passwords), Arc::clone(&finished));
            tasks.push(tokio::spawn(async move {
                let record = move |_: &mut Vec<Block>| {
                    finished.lock().expect("order").push(name);
                    Ok(())
                };
                passwords.run(lane, record).await
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(passwords.waiting(), 3, "three queued behind the held job");
        release.send(()).expect("release");
        blocker.await.expect("task").expect("ran");
        for task in tasks {
            task.await.expect("task").expect("ran");
        }
        let order = finished.lock().expect("order").clone();
        assert_eq!(order, ["known", "stranger 1", "stranger 2"]);
    }

    #[tokio::test]
    async fn each_lane_has_its_own_bound() {
        let passwords = Arc::new(Passwords::new(queue(1, 1)).expect("hasher"));
        let password = Password::parse("correct horse battery").expect("valid");
        let strangers: Vec<_> = (0..4)
            .map(|_| {
                let (passwords, password) = (Arc::clone(&passwords), password.clone());
                tokio::spawn(async move { passwords.hash(&password, Lane::Stranger).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let known = passwords.hash(&password, Lane::Known).await;
        assert!(
            known.is_ok(),
            "a full strangers' lane leaves the known one open"
        );
        for stranger in strangers {
            let _ = stranger.await.expect("task");
        }
    }

    fn policy(password: &str) -> Result<()> {
        check_policy(
            &Password::parse(password).expect("valid length"),
            "alice_w",
            "alice.wonder@example.com",
        )
    }

    #[test]
    fn common_and_pattern_passwords_are_weak() {
        for common in [
            "password",
            "12345678",
            "iloveyou",
            "Password",
            "drowssap",
            "P@ssw0rd",
            "qwertyuiop",
            "aaaaaaaaaa",
            "abcdefghij",
        ] {
            assert!(
                matches!(policy(common), Err(Error::WeakPassword(_))),
                "{common} should be refused"
            );
        }
    }

    #[test]
    fn passwords_containing_the_username_or_email_are_weak() {
        let Err(Error::WeakPassword(message)) = policy("my ALICE_W rocks 42") else {
            panic!("username should be refused");
        };
        assert!(message.contains("username"));
        let Err(Error::WeakPassword(message)) = policy("alice.wonder 2026!") else {
            panic!("email local part should be refused");
        };
        assert!(message.contains("email"));
    }

    #[test]
    fn ordinary_passphrases_pass() {
        for good in [
            "correct horse battery staple",
            "tr0ub4dor&3x!",
            "blue-kettle-sings-at-noon",
        ] {
            policy(good).unwrap_or_else(|err| panic!("{good}: {err}"));
        }
    }

    #[test]
    fn weaker_parameters_need_a_rehash_and_current_ones_do_not() {
        use argon2::password_hash::PasswordHasher;
        let current = hash_now("correct horse battery").expect("hash");
        assert!(!needs_rehash(&current));
        assert!(needs_rehash(&weak_hash("correct horse battery")));
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::DEFAULT)
            .hash_password(b"correct horse battery")
            .expect("hash")
            .to_string();
        assert!(needs_rehash(&argon2i));
    }
}
