//! What latchkey counts about itself, for `GET /metrics` in the Prometheus
//! (OpenMetrics) text format: requests and their latency, logins and
//! refreshes by outcome, live sessions, the password-hash queue, the
//! durable flush, the sweeper, rate-limit refusals and the build. The only
//! importer of `prometheus-client`; the other modules record through
//! [`Metrics`]' methods. Every label takes its values from a fixed set
//! (route templates, standard methods, status codes, outcome names), never
//! from what a client sends, so no client can grow the number of series.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The media type of [`Metrics::encode`]'s text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `outcome` label of each [`LoginOutcome`], in declaration order.
const LOGIN_OUTCOMES: [&str; 7] = [
    "succeeded",
    "wrong_credentials",
    "throttled",
    "overloaded",
    "refused",
    "second_factor_required",
    "wrong_code",
];
/// The `outcome` label of each [`RefreshOutcome`], in declaration order.
const REFRESH_OUTCOMES: [&str; 4] = ["rotated", "raced", "reused", "refused"];
/// The `kind` label of the sweeper's counts, in [`SweptCounts`]' order.
const SWEPT_KINDS: [&str; 3] = ["refresh_token", "session", "audit_event"];
/// The `outcome` label of each [`MailOutcome`], in declaration order.
const MAIL_OUTCOMES: [&str; 3] = ["delivered", "retried", "given_up"];
/// The rate-limit rules (see `limits`), listed at zero from the start.
const RATE_LIMIT_RULES: [&str; 8] = [
    "login/ip",
    "login/account",
    "login/device",
    "password/user",
    "register/ip",
    "refresh/ip",
    "mail/ip",
    "mail/account",
];

/// How a login ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum LoginOutcome {
    /// A session was started.
    Succeeded,
    /// Unknown account or wrong password.
    WrongCredentials,
    /// Refused by a rate limit.
    Throttled,
    /// The password-hash queue was full or too slow.
    Overloaded,
    /// Refused for another reason: a disabled account, a change while the
    /// password was checked, a storage failure.
    Refused,
    /// The password was right; a second factor was asked for.
    SecondFactorRequired,
    /// A wrong second-factor code, or a failed passkey.
    WrongCode,
}

/// How a refresh ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RefreshOutcome {
    /// A fresh token was exchanged for its successor.
    Rotated,
    /// A just-rotated token came again within the grace (two tabs): it got
    /// the same successor.
    Raced,
    /// A rotated token came after the grace: theft, the session was revoked.
    Reused,
    /// Refused: missing, unknown, expired, revoked or throttled.
    Refused,
}

/// How one delivery attempt of a mail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum MailOutcome {
    /// Handed to the relay, or written to the file outbox.
    Delivered,
    /// Failed; another attempt is scheduled.
    Retried,
    /// Failed for good (a refused address, or too many attempts).
    GivenUp,
}

/// Records removed by a sweep, by kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SweptCounts {
    /// Expired refresh records.
    pub refresh_tokens: usize,
    /// Expired sessions.
    pub sessions: usize,
    /// Audit events past their retention.
    pub audit_events: usize,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<String>,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Arc<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request latencies: 100 µs to about 6.5 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
}

/// Every metric latchkey keeps, in one registry. Cheap to record from any
/// thread; shared by the core and the HTTP layer.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<RouteLabel>,
    logins: Family<OutcomeLabel, Counter>,
    refreshes: Family<OutcomeLabel, Counter>,
    live_sessions: Gauge,
    hash_waiting: Gauge,
    hash_seconds: Histogram,
    flush_batch: Histogram,
    flush_seconds: Histogram,
    sweeps: Counter,
    swept: Family<KindLabel, Counter>,
    rate_limited: Family<RuleLabel, Counter>,
    mails: Family<OutcomeLabel, Counter>,
    outbox_depth: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("latchkey");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        let request_seconds: Histograms<RouteLabel> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer, by route template",
            request_seconds.clone(),
        );
        let logins = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "logins",
            "Password logins by outcome (succeeded, wrong_credentials, throttled, overloaded, refused)",
            logins.clone(),
        );
        let refreshes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "refreshes",
            "Refresh-token exchanges by outcome (rotated, raced, reused, refused)",
            refreshes.clone(),
        );
        let live_sessions = Gauge::default();
        registry.register(
            "sessions_live",
            "Sessions neither revoked nor swept (recounted by every sweep, kept current by logins and revocations in between)",
            live_sessions.clone(),
        );
        let hash_waiting = Gauge::default();
        registry.register(
            "password_hash_queue_depth",
            "Requests waiting for a password hash",
            hash_waiting.clone(),
        );
        // One hash takes tens of milliseconds: 5 ms to about 5 s.
        let hash_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 11));
        registry.register(
            "password_hash_duration_seconds",
            "Time one password hash or verification takes on a hashing thread",
            hash_seconds.clone(),
        );
        let flush_batch = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "db_flush_batch_size",
            "Writes made durable by one flush of the database (group commit)",
            flush_batch.clone(),
        );
        let flush_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        registry.register(
            "db_flush_duration_seconds",
            "Time one flush of the database to disk takes",
            flush_seconds.clone(),
        );
        let sweeps = Counter::default();
        registry.register("sweeps", "Sweeps of expired records run", sweeps.clone());
        let swept = Family::<KindLabel, Counter>::default();
        registry.register(
            "swept_records",
            "Records removed by the sweeper, by kind (refresh_token, session, audit_event)",
            swept.clone(),
        );
        let rate_limited = Family::<RuleLabel, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit, by rule",
            rate_limited.clone(),
        );
        let mails = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "mails",
            "Mail delivery attempts by outcome (delivered, retried, given_up)",
            mails.clone(),
        );
        let outbox_depth = Gauge::default();
        registry.register(
            "outbox_depth",
            "Outbox entries: mails waiting to go (or given up on, for 7 days) and requests not yet looked at",
            outbox_depth.clone(),
        );
        registry.register(
            "build",
            "The running latchkey",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        // Every known series exists from the start, at zero, so a rate or an
        // alert over it works before the first event.
        for outcome in LOGIN_OUTCOMES {
            drop(logins.get_or_create(&OutcomeLabel { outcome }));
        }
        for outcome in REFRESH_OUTCOMES {
            drop(refreshes.get_or_create(&OutcomeLabel { outcome }));
        }
        for kind in SWEPT_KINDS {
            drop(swept.get_or_create(&KindLabel { kind }));
        }
        for outcome in MAIL_OUTCOMES {
            drop(mails.get_or_create(&OutcomeLabel { outcome }));
        }
        for rule in RATE_LIMIT_RULES {
            drop(rate_limited.get_or_create(&RuleLabel { rule }));
        }
        Metrics {
            registry,
            requests,
            request_seconds,
            logins,
            refreshes,
            live_sessions,
            hash_waiting,
            hash_seconds,
            flush_batch,
            flush_seconds,
            sweeps,
            swept,
            rate_limited,
            mails,
            outbox_depth,
        }
    }

    /// One answered request: its route template (never the path a client
    /// chose), method, status and latency.
    pub(crate) fn request(
        &self,
        route: &Arc<String>,
        method: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                route: Arc::clone(route),
                method,
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabel {
                route: Arc::clone(route),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// One login's outcome.
    pub(crate) fn login(&self, outcome: LoginOutcome) {
        let outcome = LOGIN_OUTCOMES[outcome as usize];
        self.logins.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// One refresh's outcome.
    pub(crate) fn refresh(&self, outcome: RefreshOutcome) {
        let outcome = REFRESH_OUTCOMES[outcome as usize];
        self.refreshes
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// `count` sessions started.
    pub(crate) fn sessions_started(&self, count: usize) {
        self.live_sessions.inc_by(as_i64(count));
    }

    /// `count` live sessions revoked.
    pub(crate) fn sessions_ended(&self, count: usize) {
        self.live_sessions.dec_by(as_i64(count));
    }

    /// The live sessions, as counted now.
    pub(crate) fn set_live_sessions(&self, count: usize) {
        self.live_sessions.set(as_i64(count));
    }

    /// The requests waiting for a password hash now.
    pub(crate) fn set_hash_waiting(&self, count: usize) {
        self.hash_waiting.set(as_i64(count));
    }

    /// One password hash or verification, as long as it ran.
    pub(crate) fn hashed(&self, elapsed: Duration) {
        self.hash_seconds.observe(elapsed.as_secs_f64());
    }

    /// One flush of the database, for `batch` waiting writers.
    pub(crate) fn flushed(&self, batch: usize, elapsed: Duration) {
        self.flush_batch.observe(batch as f64);
        self.flush_seconds.observe(elapsed.as_secs_f64());
    }

    /// One sweep and what it removed.
    pub(crate) fn swept(&self, counts: SweptCounts) {
        self.sweeps.inc();
        let counts = [counts.refresh_tokens, counts.sessions, counts.audit_events];
        for (kind, count) in SWEPT_KINDS.into_iter().zip(counts) {
            self.swept
                .get_or_create(&KindLabel { kind })
                .inc_by(count as u64);
        }
    }

    /// One request refused by the rate-limit rule `rule`.
    pub(crate) fn rate_limited(&self, rule: &'static str) {
        self.rate_limited.get_or_create(&RuleLabel { rule }).inc();
    }

    /// One delivery attempt's outcome.
    pub(crate) fn mail(&self, outcome: MailOutcome) {
        let outcome = MAIL_OUTCOMES[outcome as usize];
        self.mails.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The outbox's entries now.
    pub(crate) fn set_outbox_depth(&self, count: usize) {
        self.outbox_depth.set(as_i64(count));
    }

    /// Every metric, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub(crate) fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn as_i64(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_but_the_requests_is_listed_before_anything_is_recorded_and_the_text_ends_with_eof()
     {
        let text = Metrics::new().encode();
        for name in [
            "latchkey_logins",
            "latchkey_refreshes",
            "latchkey_sessions_live",
            "latchkey_password_hash_queue_depth",
            "latchkey_password_hash_duration_seconds",
            "latchkey_db_flush_batch_size",
            "latchkey_db_flush_duration_seconds",
            "latchkey_sweeps",
            "latchkey_swept_records",
            "latchkey_rate_limited",
            "latchkey_mails",
            "latchkey_outbox_depth",
            "latchkey_build",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains(&format!(
                "latchkey_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
    }

    #[test]
    fn recorded_values_show_with_their_labels() {
        let metrics = Metrics::new();
        let route = Arc::new("/api/auth/login".to_owned());
        metrics.request(&route, "POST", 200, Duration::from_millis(3));
        metrics.login(LoginOutcome::WrongCredentials);
        metrics.refresh(RefreshOutcome::Raced);
        metrics.sessions_started(3);
        metrics.sessions_ended(1);
        metrics.swept(SweptCounts {
            refresh_tokens: 4,
            sessions: 2,
            audit_events: 0,
        });
        metrics.rate_limited("login/ip");
        let text = metrics.encode();
        for line in [
            r#"latchkey_http_requests_total{route="/api/auth/login",method="POST",status="200"} 1"#,
            r#"latchkey_http_request_duration_seconds_count{route="/api/auth/login"} 1"#,
            r#"latchkey_logins_total{outcome="wrong_credentials"} 1"#,
            r#"latchkey_refreshes_total{outcome="raced"} 1"#,
            "latchkey_sessions_live 2",
            "latchkey_sweeps_total 1",
            r#"latchkey_swept_records_total{kind="refresh_token"} 4"#,
            r#"latchkey_rate_limited_total{rule="login/ip"} 1"#,
            r#"latchkey_rate_limited_total{rule="register/ip"} 0"#,
            r#"latchkey_logins_total{outcome="succeeded"} 0"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
