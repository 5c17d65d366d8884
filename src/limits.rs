//! Rate limits: the only importer of `governor`.
//!
//! One keyed GCRA limiter per rule: login per client IP, login per account
//! (several tiers, so repeated failures slow down progressively), registration
//! per IP and refresh per IP. IPv6 clients are keyed by their /64, the block
//! one subscriber usually holds, so rotating addresses inside it does not
//! escape the limit.
//!
//! The account tiers are a throttle no stranger can turn into a lockout
//! (OWASP's device cookie): a client that presents a valid device token for
//! the account counts against that device's own tiers; only untrusted
//! clients share the account's. A password check by the holder of a valid
//! access token (changing the password, deleting the account) counts against
//! that user's own tiers, which strangers cannot reach.
//!
//! Memory stays bounded under a flood of distinct clients: a limiter that
//! grows past its key budget first forgets keys whose state has fully
//! recovered, and if that is not enough it starts over empty. Starting over
//! forgives current offenders (it fails open), which is the price of a hard
//! bound; keying IPv6 by /64 makes such floods need real address space.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{Rate, RateLimits, Switch};

/// Keys a limiter may hold before it prunes.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// A refused request: which rule refused it and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The rule (`login/ip`, `login/account`, `register/ip`, `refresh/ip`).
    pub rule: &'static str,
    /// Whole seconds until a retry can pass (at least 1).
    pub retry_after: u64,
}

/// Whose attempt at a password a login-like request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt<'a> {
    /// An untrusted client trying the account with this (normalized) email.
    Account(&'a str),
    /// A client with a valid device token (this device id) for the account.
    KnownDevice(&'a str),
    /// The holder of a valid access token of this user, re-entering their
    /// password.
    Holder(&'a str),
}

/// Every rate limit latchkey enforces.
pub struct Limits {
    enabled: bool,
    login_ip: Bucket<IpAddr>,
    /// The account tiers, keyed by `Attempt` (one key space each).
    login_account: Vec<Bucket<String>>,
    register_ip: Bucket<IpAddr>,
    refresh_ip: Bucket<IpAddr>,
    mail_ip: Bucket<IpAddr>,
    mail_account: Bucket<String>,
    audit_noise: Bucket<(&'static str, Option<IpAddr>)>,
}

impl Limits {
    /// Limiters for these settings, each holding at most `max_keys` keys.
    pub fn new(settings: &RateLimits, max_keys: usize) -> Self {
        Limits {
            enabled: settings.enabled == Switch::On,
            login_ip: Bucket::new("login/ip", settings.login_ip, max_keys),
            login_account: settings
                .login_account
                .iter()
                .map(|rate| Bucket::new("login/account", *rate, max_keys))
                .collect(),
            register_ip: Bucket::new("register/ip", settings.register_ip, max_keys),
            refresh_ip: Bucket::new("refresh/ip", settings.refresh_ip, max_keys),
            mail_ip: Bucket::new("mail/ip", settings.mail_ip, max_keys),
            mail_account: Bucket::new("mail/account", settings.mail_account, max_keys),
            audit_noise: Bucket::new(
                "audit",
                Rate {
                    count: 1,
                    per: Duration::from_secs(60),
                },
                max_keys,
            ),
        }
    }

    /// Counts a password attempt from `ip`: per IP, then against the tiers
    /// of whoever `attempt` says is trying (an account whether or not it
    /// exists, a known device, or a token holder).
    ///
    /// # Errors
    /// The first rule that refuses it.
    pub fn login(&self, ip: Option<IpAddr>, attempt: Attempt<'_>) -> Result<(), Limited> {
        if !self.enabled {
            return Ok(());
        }
        if let Some(ip) = ip {
            self.login_ip.check(&client_key(ip))?;
        }
        let (rule, key) = match attempt {
            Attempt::Account(email) => ("login/account", format!("a:{email}")),
            Attempt::KnownDevice(device) => ("login/device", format!("d:{device}")),
            Attempt::Holder(user_id) => ("password/user", format!("u:{user_id}")),
        };
        self.login_account
            .iter()
            .try_for_each(|tier| tier.check(&key))
            .map_err(|limited| Limited { rule, ..limited })
    }

    /// Counts a passkey sign-in step from `ip` (each start stores a
    /// challenge): against the per-IP login limit.
    ///
    /// # Errors
    /// [`Limited`] when over the limit.
    pub fn passkey(&self, ip: Option<IpAddr>) -> Result<(), Limited> {
        self.per_ip(&self.login_ip, ip)
    }

    /// Counts a registration from `ip`.
    ///
    /// # Errors
    /// [`Limited`] when over the limit.
    pub fn register(&self, ip: Option<IpAddr>) -> Result<(), Limited> {
        self.per_ip(&self.register_ip, ip)
    }

    /// Counts a refresh from `ip`.
    ///
    /// # Errors
    /// [`Limited`] when over the limit.
    pub fn refresh(&self, ip: Option<IpAddr>) -> Result<(), Limited> {
        self.per_ip(&self.refresh_ip, ip)
    }

    /// Counts a mail request from `ip`.
    ///
    /// # Errors
    /// [`Limited`] when over the limit.
    pub fn mail_request(&self, ip: Option<IpAddr>) -> Result<(), Limited> {
        self.per_ip(&self.mail_ip, ip)
    }

    /// Counts a mail of kind `kind` to `address` (each kind has its own
    /// budget per address).
    ///
    /// # Errors
    /// [`Limited`] when over the limit.
    pub fn mail_to(&self, kind: &str, address: &str) -> Result<(), Limited> {
        match self.enabled {
            true => self.mail_account.check(&format!("{kind}:{address}")),
            false => Ok(()),
        }
    }

    fn per_ip(&self, bucket: &Bucket<IpAddr>, ip: Option<IpAddr>) -> Result<(), Limited> {
        match ip {
            Some(ip) if self.enabled => bucket.check(&client_key(ip)),
            _ => Ok(()),
        }
    }

    /// Whether a refusal should go to the audit log: the first per rule and
    /// client each minute, so a flood cannot fill the log.
    pub fn worth_auditing(&self, limited: &Limited, ip: Option<IpAddr>) -> bool {
        self.audit_noise
            .check(&(limited.rule, ip.map(client_key)))
            .is_ok()
    }

    /// How many keys the limiters hold in total.
    #[cfg(test)]
    fn keys(&self) -> usize {
        let accounts: usize = self.login_account.iter().map(Bucket::len).sum();
        self.login_ip.len() + self.register_ip.len() + self.refresh_ip.len() + accounts
    }
}

/// The key of a client: its IPv4 address, or the /64 of its IPv6 address.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// One keyed limiter with a key budget.
struct Bucket<K: Hash + Eq + Clone> {
    rule: &'static str,
    quota: Quota,
    max_keys: usize,
    limiter: RwLock<Arc<DefaultKeyedRateLimiter<K>>>,
}

impl<K: Hash + Eq + Clone> Bucket<K> {
    fn new(rule: &'static str, rate: Rate, max_keys: usize) -> Self {
        let quota = quota(rate);
        Bucket {
            rule,
            quota,
            max_keys: max_keys.max(1),
            limiter: RwLock::new(Arc::new(RateLimiter::keyed(quota))),
        }
    }

    fn current(&self) -> Arc<DefaultKeyedRateLimiter<K>> {
        match self.limiter.read() {
            Ok(limiter) => Arc::clone(&limiter),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn check(&self, key: &K) -> Result<(), Limited> {
        let limiter = self.current();
        let outcome = limiter.check_key(key);
        if limiter.len() > self.max_keys {
            self.prune(&limiter);
        }
        outcome.map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Limited {
                rule: self.rule,
                retry_after: whole_seconds(wait),
            }
        })
    }

    /// Forgets recovered keys; if the budget is still exceeded, starts over.
    fn prune(&self, limiter: &Arc<DefaultKeyedRateLimiter<K>>) {
        limiter.retain_recent();
        if limiter.len() <= self.max_keys / 2 {
            limiter.shrink_to_fit();
            return;
        }
        let mut slot = match self.limiter.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        if Arc::ptr_eq(&slot, limiter) {
            tracing::warn!(
                rule = self.rule,
                keys = limiter.len(),
                "rate limiter key budget exceeded; starting over"
            );
            *slot = Arc::new(RateLimiter::keyed(self.quota));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current().len()
    }
}

/// `count` requests per `per`, all of them available as a burst.
fn quota(rate: Rate) -> Quota {
    let count = NonZeroU32::new(rate.count).unwrap_or(NonZeroU32::MIN);
    let period = (rate.per / count.get()).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(count)
}

fn whole_seconds(wait: Duration) -> u64 {
    let mut seconds = wait.as_secs();
    if wait.subsec_nanos() > 0 || seconds == 0 {
        seconds += 1;
    }
    seconds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> RateLimits {
        let rate: Rate = text.parse().expect("rate parses");
        RateLimits {
            enabled: Switch::On,
            login_ip: rate,
            login_account: vec![rate],
            register_ip: rate,
            refresh_ip: rate,
            mail_ip: rate,
            mail_account: rate,
        }
    }

    #[test]
    fn a_burst_passes_then_the_next_request_waits() {
        let limits = Limits::new(&settings("3/1h"), DEFAULT_MAX_KEYS);
        let ip = Some("10.0.0.1".parse().expect("ip"));
        for _ in 0..3 {
            limits.register(ip).expect("within the burst");
        }
        let refused = limits.register(ip).expect_err("over the limit");
        assert_eq!(refused.rule, "register/ip");
        assert!((1..=1200).contains(&refused.retry_after), "{refused:?}");
        // Another client is not affected.
        limits
            .register(Some("10.0.0.2".parse().expect("ip")))
            .expect("other ip");
    }

    #[test]
    fn account_tiers_each_apply() {
        let mut settings = settings("100/1m");
        settings.login_account = vec!["5/1m".parse().expect("rate"), "7/1h".parse().expect("rate")];
        let limits = Limits::new(&settings, DEFAULT_MAX_KEYS);
        let victim = Attempt::Account("victim@example.com");
        for attempt in 0..5 {
            let ip = Some(IpAddr::from([10, 0, 0, attempt]));
            limits.login(ip, victim).expect("first tier allows 5");
        }
        let stranger = Some("10.9.9.9".parse().expect("ip"));
        let refused = limits
            .login(stranger, victim)
            .expect_err("sixth attempt on one account");
        assert_eq!(refused.rule, "login/account");
        limits
            .login(stranger, Attempt::Account("other@example.com"))
            .expect("another account");
        // The owner's known device and the owner holding a token are not
        // throttled by what strangers spent on the account.
        let owner = Some("10.7.7.7".parse().expect("ip"));
        limits
            .login(owner, Attempt::KnownDevice("device-1"))
            .expect("a known device has its own tiers");
        limits
            .login(owner, Attempt::Holder("user-1"))
            .expect("a token holder has their own tiers");
    }

    #[test]
    fn off_means_off() {
        let mut settings = settings("1/1h");
        settings.enabled = Switch::Off;
        let limits = Limits::new(&settings, DEFAULT_MAX_KEYS);
        for _ in 0..10 {
            limits
                .refresh(Some("10.0.0.1".parse().expect("ip")))
                .expect("off");
        }
        assert_eq!(limits.keys(), 0);
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let limits = Limits::new(&settings("2/1h"), DEFAULT_MAX_KEYS);
        limits
            .refresh(Some("2001:db8::1".parse().expect("ip")))
            .expect("first");
        limits
            .refresh(Some("2001:db8::2".parse().expect("ip")))
            .expect("second");
        assert!(
            limits
                .refresh(Some("2001:db8::ffff".parse().expect("ip")))
                .is_err()
        );
        limits
            .refresh(Some("2001:db8:0:1::1".parse().expect("ip")))
            .expect("another /64");
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_distinct_ips() {
        let budget = 1_000;
        let limits = Limits::new(&settings("5/1h"), budget);
        for n in 0..50_000u32 {
            let ip = IpAddr::from(n.to_be_bytes());
            let _ = limits.refresh(Some(ip));
            assert!(
                limits.keys() <= budget + 1,
                "keys {} after {n}",
                limits.keys()
            );
        }
    }
}
