//! Crash loop: proves that every write latchkey acknowledges survives a
//! SIGKILL. It runs the real binary on one data directory, drives
//! concurrent registrations, logins, refreshes, logouts and password
//! changes, kills the process at a random moment, restarts it and checks
//! every acknowledged write:
//! - every user that got a 201 logs in with the password last acknowledged
//!   (and no longer with the one a change replaced);
//! - every logout stays revoked, and so does every session a password
//!   change ended;
//! - every rotated refresh token is dead, and the newest one of every live
//!   session works.
//!
//! Writes in flight when the process died may or may not have happened;
//! their users and sessions are left out of the checks.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example crash_loop -- --cycles 200 [--binary target/release/latchkey]
//! ```
//!
//! Prints cycles, writes checked and violations; exits 1 on any violation.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::Server;

/// How the server runs: no rate limits (the clients are one address), and
/// every reuse of a rotated token counts as theft.
const ARGS: &[&str] = &["--rate-limits", "off", "--reuse-grace", "0s"];

/// The password every user starts with.
const FIRST_PASSWORD: &str = "correct horse battery staple";
/// Concurrent clients during a burst.
const WORKERS: usize = 8;

#[derive(Debug)]
struct Args {
    cycles: u32,
    binary: PathBuf,
    seed: u64,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        cycles: 5,
        binary: support::binary(),
        seed: 0x5eed,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--cycles" => args.cycles = value.parse().map_err(|_| "--cycles: a number")?,
            "--binary" => args.binary = PathBuf::from(value),
            "--seed" => args.seed = value.parse().map_err(|_| "--seed: a number")?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !args.binary.exists() {
        return Err(format!(
            "{} does not exist: run `cargo build` first or pass --binary",
            args.binary.display()
        ));
    }
    Ok(args)
}

/// A small deterministic random source (xorshift64*), one per worker.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

/// What the clients were told, which the server must still know.
#[derive(Default)]
struct Model {
    users: Vec<User>,
    sessions: Vec<Session>,
    /// Entities with a request in flight (by index), left out of checks if
    /// the process dies meanwhile.
    busy_users: Vec<bool>,
    busy_sessions: Vec<bool>,
    next_user: u64,
}

struct User {
    email: String,
    password: String,
    /// Passwords a change replaced: they must no longer work.
    replaced: Vec<String>,
    /// A write whose outcome is unknown (it was in flight at the crash).
    uncertain: bool,
    /// Created or changed since it was last checked.
    dirty: bool,
}

/// Users checked after each restart besides those that changed: a sample
/// (each check costs a password hash).
const SAMPLED_USERS: usize = 16;

#[derive(Clone)]
struct Session {
    user: usize,
    access: String,
    refresh: String,
    /// Tokens rotated out: they must be refused.
    rotated: Vec<String>,
    /// Ended by a logout or by a password change of its user.
    ended: bool,
    uncertain: bool,
}

#[derive(Default)]
struct Tally {
    checked: u64,
    violations: Vec<String>,
}

impl Tally {
    fn expect(&mut self, holds: bool, what: impl FnOnce() -> String) {
        self.checked += 1;
        if !holds {
            let what = what();
            eprintln!("VIOLATION: {what}");
            self.violations.push(what);
        }
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn post(
        &self,
        path: &str,
        body: Value,
        cookie: Option<&str>,
    ) -> Option<(u16, Value, Option<String>)> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = cookie {
            request = request.header("Cookie", format!("refresh_token={token}"));
        }
        Self::answer(request).await
    }

    async fn with_bearer(
        &self,
        path: &str,
        access: &str,
        body: Value,
    ) -> Option<(u16, Value, Option<String>)> {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(access)
            .json(&body);
        Self::answer(request).await
    }

    /// Status, JSON body and refresh cookie; `None` when no answer came
    /// (the process died): the write is then uncertain.
    async fn answer(request: reqwest::RequestBuilder) -> Option<(u16, Value, Option<String>)> {
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(|value| value.strip_prefix("refresh_token="))
            .and_then(|rest| rest.split(';').next())
            .filter(|token| !token.is_empty())
            .map(str::to_owned);
        let body = response.json().await.ok()?;
        Some((status, body, cookie))
    }

    async fn login(&self, email: &str, password: &str) -> Option<(u16, Value, Option<String>)> {
        self.post(
            "/api/auth/login",
            json!({"email": email, "password": password}),
            None,
        )
        .await
    }
}

fn client(base: &str) -> Client {
    Client {
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        base: base.to_owned(),
    }
}

/// One random operation on the model; returns once it is acknowledged or
/// has failed (a crash leaves its entity marked busy).
async fn operate(model: &Mutex<Model>, api: &Client, dice: &mut Dice) {
    let choice = dice.below(100);
    // Register when there are few users, else mostly work on sessions.
    if choice < 15 || model.lock().expect("model").users.len() < 4 {
        let (index, email) = {
            let mut m = model.lock().expect("model");
            m.next_user += 1;
            let email = format!("crash{}-{}@example.com", m.next_user, dice.next() % 100_000);
            m.users.push(User {
                email: email.clone(),
                password: FIRST_PASSWORD.into(),
                replaced: Vec::new(),
                uncertain: true,
                dirty: true,
            });
            m.busy_users.push(true);
            (m.users.len() - 1, email)
        };
        let username = format!(
            "u{}",
            email.split('@').next().unwrap_or("x").replace('-', "_")
        );
        let answer = api
            .post(
                "/api/auth/register",
                json!({"username": username, "email": email, "password": FIRST_PASSWORD}),
                None,
            )
            .await;
        let mut m = model.lock().expect("model");
        if let Some((201, _, _)) = answer {
            m.users[index].uncertain = false;
            m.busy_users[index] = false;
        } else if answer.is_some() {
            // Refused: the account does not exist; keep it out of checks.
            m.busy_users[index] = false;
        }
        return;
    }
    // Pick an idle, certain user or session.
    let pick_user = |m: &mut Model, dice: &mut Dice| -> Option<usize> {
        let idle: Vec<usize> = (0..m.users.len())
            .filter(|&i| !m.busy_users[i] && !m.users[i].uncertain)
            .collect();
        let index = *idle.get(dice.below(idle.len() as u64) as usize)?;
        m.busy_users[index] = true;
        Some(index)
    };
    if choice < 40 {
        // Log in.
        let Some((index, email, password)) = ({
            let mut m = model.lock().expect("model");
            pick_user(&mut m, dice)
                .map(|i| (i, m.users[i].email.clone(), m.users[i].password.clone()))
        }) else {
            return;
        };
        let answer = api.login(&email, &password).await;
        let mut m = model.lock().expect("model");
        if let Some((200, body, Some(refresh))) = answer {
            let access = body["accessToken"].as_str().unwrap_or_default().to_owned();
            m.sessions.push(Session {
                user: index,
                access,
                refresh,
                rotated: Vec::new(),
                ended: false,
                uncertain: false,
            });
            m.busy_sessions.push(false);
            m.busy_users[index] = false;
        } else if answer.is_some() {
            m.busy_users[index] = false;
        }
        return;
    }
    let picked = {
        let mut m = model.lock().expect("model");
        let idle: Vec<usize> = (0..m.sessions.len())
            .filter(|&i| {
                let session = &m.sessions[i];
                !m.busy_sessions[i]
                    && !session.ended
                    && !session.uncertain
                    && !m.busy_users[session.user]
                    && !m.users[session.user].uncertain
            })
            .collect();
        let Some(&index) = idle.get(dice.below(idle.len() as u64) as usize) else {
            return;
        };
        m.busy_sessions[index] = true;
        let session = m.sessions[index].clone();
        if choice >= 90 {
            m.busy_users[session.user] = true;
        }
        (index, session)
    };
    let (index, session) = picked;
    if choice < 75 {
        // Refresh.
        let answer = api
            .post("/api/auth/refresh", json!({}), Some(&session.refresh))
            .await;
        let mut m = model.lock().expect("model");
        match answer {
            Some((200, body, Some(refresh))) => {
                let entry = &mut m.sessions[index];
                entry
                    .rotated
                    .push(std::mem::replace(&mut entry.refresh, refresh));
                entry.access = body["accessToken"].as_str().unwrap_or_default().to_owned();
                m.busy_sessions[index] = false;
            }
            Some(_) => {
                m.sessions[index].uncertain = true;
                m.busy_sessions[index] = false;
            }
            None => m.sessions[index].uncertain = true,
        }
    } else if choice < 90 {
        // Log out.
        let answer = api
            .post("/api/auth/logout", json!({}), Some(&session.refresh))
            .await;
        let mut m = model.lock().expect("model");
        match answer {
            Some((200, _, _)) => {
                m.sessions[index].ended = true;
                m.busy_sessions[index] = false;
            }
            _ => m.sessions[index].uncertain = true,
        }
    } else {
        // Change the password from this session: every other session ends.
        let (current, new) = {
            let m = model.lock().expect("model");
            let user = &m.users[session.user];
            (
                user.password.clone(),
                format!("a changed passphrase {}", dice.next() % 1_000_000),
            )
        };
        let answer = api
            .with_bearer(
                "/api/auth/password",
                &session.access,
                json!({"currentPassword": current, "newPassword": new}),
            )
            .await;
        let mut m = model.lock().expect("model");
        match answer {
            Some((200, _, _)) => {
                let user_index = session.user;
                let user = &mut m.users[user_index];
                user.replaced
                    .push(std::mem::replace(&mut user.password, new));
                user.dirty = true;
                for (other, entry) in m.sessions.iter_mut().enumerate() {
                    if entry.user == user_index && other != index {
                        entry.ended = true;
                    }
                }
                m.busy_sessions[index] = false;
                m.busy_users[user_index] = false;
            }
            Some(_) => {
                m.busy_sessions[index] = false;
                m.busy_users[session.user] = false;
            }
            None => {
                m.users[session.user].uncertain = true;
                m.sessions[index].uncertain = true;
            }
        }
    }
}

/// After a restart: everything certain must be as acknowledged. Entities
/// left busy by the crash become uncertain.
async fn verify(model: &Mutex<Model>, api: &Client, dice: &mut Dice, tally: &mut Tally) {
    let (users, sessions) = {
        let mut m = model.lock().expect("model");
        for i in 0..m.users.len() {
            if m.busy_users[i] {
                m.users[i].uncertain = true;
                m.busy_users[i] = false;
            }
        }
        for i in 0..m.sessions.len() {
            if m.busy_sessions[i] {
                m.sessions[i].uncertain = true;
                m.busy_sessions[i] = false;
            }
        }
        let certain: Vec<usize> = (0..m.users.len())
            .filter(|&i| !m.users[i].uncertain)
            .collect();
        let mut chosen: Vec<usize> = certain
            .iter()
            .copied()
            .filter(|&i| m.users[i].dirty)
            .collect();
        for _ in 0..SAMPLED_USERS.min(certain.len()) {
            chosen.push(certain[dice.below(certain.len() as u64) as usize]);
        }
        chosen.sort_unstable();
        chosen.dedup();
        let users: Vec<(usize, String, String, Vec<String>)> = chosen
            .into_iter()
            .map(|i| {
                m.users[i].dirty = false;
                let user = &m.users[i];
                (
                    i,
                    user.email.clone(),
                    user.password.clone(),
                    user.replaced.clone(),
                )
            })
            .collect();
        let sessions: Vec<(usize, Session)> = m
            .sessions
            .iter()
            .enumerate()
            .filter(|(_, session)| !session.uncertain && !m.users[session.user].uncertain)
            .map(|(i, session)| (i, session.clone()))
            .collect();
        (users, sessions)
    };
    for (_, email, password, replaced) in &users {
        let status = api.login(email, password).await.map(|answer| answer.0);
        tally.expect(status == Some(200), || {
            format!("{email} cannot log in with its acknowledged password ({status:?})")
        });
        if let Some(old) = replaced.last() {
            let status = api.login(email, old).await.map(|answer| answer.0);
            tally.expect(status == Some(401), || {
                format!("{email} still logs in with a replaced password ({status:?})")
            });
        }
    }
    let mut updates: HashMap<usize, Session> = HashMap::new();
    for (index, mut session) in sessions {
        let answer = api
            .post("/api/auth/refresh", json!({}), Some(&session.refresh))
            .await;
        let status = answer.as_ref().map(|answer| answer.0);
        if session.ended {
            tally.expect(status == Some(401), || {
                format!("an ended session's refresh token works again ({status:?})")
            });
            continue;
        }
        tally.expect(status == Some(200), || {
            format!("a live session's newest refresh token is refused ({status:?})")
        });
        if let Some((200, body, Some(refresh))) = answer {
            session
                .rotated
                .push(std::mem::replace(&mut session.refresh, refresh));
            session.access = body["accessToken"].as_str().unwrap_or_default().to_owned();
        } else {
            session.uncertain = true;
        }
        // Half the time, present a rotated token: it must be refused (and,
        // without a reuse grace, it ends the session as theft).
        if dice.below(2) == 0
            && let Some(old) = session.rotated.first().cloned()
        {
            let status = api
                .post("/api/auth/refresh", json!({}), Some(&old))
                .await
                .map(|answer| answer.0);
            tally.expect(status == Some(401), || {
                format!("a rotated refresh token works again ({status:?})")
            });
            session.ended = true;
        }
        updates.insert(index, session);
    }
    let mut m = model.lock().expect("model");
    for (index, session) in updates {
        m.sessions[index] = session;
    }
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(args) => args,
        Err(problem) => {
            eprintln!("crash_loop: {problem}");
            std::process::exit(2);
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let model = Arc::new(Mutex::new(Model::default()));
    let mut tally = Tally::default();
    let mut dice = Dice(args.seed | 1);
    println!(
        "crash loop: {} cycles of a burst of {WORKERS} clients, SIGKILL, restart, check ({})",
        args.cycles,
        args.binary.display()
    );
    for cycle in 0..args.cycles {
        let mut server = match Server::start(&args.binary, &data_dir, ARGS) {
            Ok(server) => server,
            Err(problem) => {
                tally.expect(false, || format!("cycle {cycle}: {problem}"));
                break;
            }
        };
        let api = client(&server.base);
        verify(&model, &api, &mut dice, &mut tally).await;
        // A burst of concurrent clients, killed at a random moment.
        let burst = Duration::from_millis(200 + dice.below(1300));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..WORKERS)
            .map(|worker| {
                let model = Arc::clone(&model);
                let stop = Arc::clone(&stop);
                let api = client(&server.base);
                let mut dice = Dice(dice.next() ^ (worker as u64 + 1));
                tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        operate(&model, &api, &mut dice).await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(burst).await;
        server.kill();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for worker in workers {
            let _ = worker.await;
        }
        if (cycle + 1) % 10 == 0 || cycle + 1 == args.cycles {
            let m = model.lock().expect("model");
            println!(
                "  cycle {:>4}: {} users, {} sessions, {} writes checked, {} violations",
                cycle + 1,
                m.users.len(),
                m.sessions.len(),
                tally.checked,
                tally.violations.len()
            );
        }
    }
    // One last restart to check the final burst.
    if let Ok(mut server) = Server::start(&args.binary, &data_dir, ARGS) {
        let api = client(&server.base);
        verify(&model, &api, &mut dice, &mut tally).await;
        server.kill();
    }
    println!(
        "cycles: {}  writes checked: {}  violations: {}",
        args.cycles,
        tally.checked,
        tally.violations.len()
    );
    if !tally.violations.is_empty() {
        std::process::exit(1);
    }
}
