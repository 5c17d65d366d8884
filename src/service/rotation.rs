//! Refresh-token rotation and logout. [`decide_rotation`] is the security
//! core of the token flow, a pure function table-tested below: given the
//! presented token's record, its session and its user as stored now, the
//! time, the reuse grace and the already-signed successor, it says what to
//! write and how the exchange went. [`Latchkey::refresh`] only loads,
//! decides inside one transaction, and answers.

use crate::error::{Error, Result};
use crate::metrics::RefreshOutcome;
use crate::model::{
    AuditEvent, AuditKind, ClientInfo, RefreshRecord, RevokeReason, Session, TokenDigest, UnixTime,
};
use crate::storage::{Exchange, Stored};
use crate::tokens::RefreshClaims;

use super::{Latchkey, TokenPair};

/// How a refresh exchange went.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rotation {
    /// A live token was rotated.
    Rotated,
    /// A just-rotated token came back within the grace while its successor
    /// is still unused (a client retrying a refresh whose answer it lost,
    /// two tabs sending the same cookie): it is handed that same successor
    /// again. Nothing is written, and the session never has two live
    /// branches.
    Raced {
        /// The successor's digest, as stored.
        digest: TokenDigest,
        /// The successor's record.
        next: Box<RefreshRecord>,
    },
    /// A rotated token came back after the grace, or within it once its
    /// successor had been used: two holders of one token, presumed theft,
    /// so the session is revoked (`revoked_now` unless it was dead already).
    Reused {
        /// Whether this exchange revoked the session.
        revoked_now: bool,
    },
}

/// Everything an exchange knows before it reads the store: the presented
/// token's verified claims, the time, the reuse grace (seconds), the
/// successor already signed (stored only if the exchange succeeds) and the
/// client asking.
#[derive(Debug, Clone)]
struct Presented<'a> {
    claims: &'a RefreshClaims,
    now: UnixTime,
    grace: u64,
    successor: Successor<'a>,
    client: &'a ClientInfo,
    /// `--require-verified-email`.
    require_verified: bool,
}

/// The refresh token signed for an exchange.
#[derive(Debug, Clone)]
struct Successor<'a> {
    digest: TokenDigest,
    jti: &'a str,
    expires_at: UnixTime,
}

/// The rotation decision, on what the store holds now.
fn decide_rotation(presented: &Presented<'_>, stored: Stored) -> Result<(Exchange, Rotation)> {
    let Presented {
        claims,
        now,
        grace,
        successor,
        client,
        require_verified,
    } = presented;
    let (now, grace) = (*now, *grace);
    let Stored {
        record,
        successor: next_record,
        session,
        user,
    } = stored;
    let user = user.ok_or(Error::RefreshTokenNotRecognized)?;
    if user.disabled {
        return Err(Error::AccountDisabled);
    }
    if *require_verified && !user.email_verified {
        return Err(Error::EmailNotVerified);
    }
    let mut record = record
        .filter(|record| record.user_id == claims.sub && record.family_id == claims.fam)
        .ok_or(Error::RefreshTokenNotRecognized)?;
    if now >= record.expires_at {
        return Err(Error::RefreshTokenExpired);
    }
    let rotated_at = match record.rotated_at() {
        Some(rotated_at) => Some(rotated_at),
        // Logged out, not rotated: dead, and no sign of theft.
        None if record.revoked_at.is_some() => return Err(Error::RefreshTokenRevoked),
        None => None,
    };
    let live = session.filter(|session| session.is_live_for(&user, now));
    let within_grace = rotated_at.map(|rotated_at| now < rotated_at.saturating_add(grace));
    if within_grace == Some(true) && live.is_some() {
        let unused = next_record.filter(|next| {
            next.family_id == record.family_id && next.revoked_at.is_none() && now < next.expires_at
        });
        return match (record.successor, unused) {
            (Some(digest), Some(next)) => Ok((
                Exchange::default(),
                Rotation::Raced {
                    digest,
                    next: Box::new(next),
                },
            )),
            // Rotated by a version that did not keep the successor: it
            // cannot be handed out again, and this is no sign of theft.
            (None, _) => Err(Error::RefreshTokenRevoked),
            // The successor has been used: someone else holds it.
            (Some(_), None) => Ok(theft(live, now)),
        };
    }
    if within_grace == Some(false) {
        return Ok(theft(live, now));
    }
    let mut session = live.ok_or(Error::RefreshTokenRevoked)?;
    session.touch(now, successor.expires_at, client);
    let next = RefreshRecord::issued(
        &record.user_id,
        successor.jti,
        &record.family_id,
        now,
        successor.expires_at,
        client,
    );
    record.rotate(now, successor.jti, successor.digest);
    let exchange = Exchange {
        old: Some(record),
        new: Some((successor.digest, next)),
        session: Some(session),
    };
    Ok((exchange, Rotation::Rotated))
}

/// A rotated token presented by a second holder: the session is revoked if
/// it still lives, and the answer says so either way.
fn theft(live: Option<Session>, now: UnixTime) -> (Exchange, Rotation) {
    let revoked = live.map(|mut session| {
        session.revoke(now, RevokeReason::Reuse);
        session
    });
    let revoked_now = revoked.is_some();
    let exchange = Exchange {
        session: revoked,
        ..Exchange::default()
    };
    (exchange, Rotation::Reused { revoked_now })
}

impl Latchkey {
    /// Exchanges a refresh token for a new pair in the same session. The
    /// presented token is marked rotated and its successor stored in one
    /// transaction. A rotated token presented again:
    /// - within `reuse_grace` of its rotation, while its successor is
    ///   unused (a client retrying a refresh whose answer it lost, two tabs
    ///   sending the same cookie), gets that same successor again, with a
    ///   fresh access token;
    /// - later, or once its successor has been used, counts as theft: the
    ///   whole session is revoked, with every token in it, and the answer
    ///   is [`Error::RefreshTokenReused`].
    ///
    /// # Errors
    /// [`Error::MissingRefreshToken`], [`Error::RateLimited`],
    /// [`Error::InvalidRefreshToken`], [`Error::RefreshTokenNotRecognized`],
    /// [`Error::RefreshTokenRevoked`], [`Error::RefreshTokenExpired`],
    /// [`Error::RefreshTokenReused`], [`Error::AccountDisabled`], [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn refresh(
        &self,
        refresh_token: Option<&str>,
        client: ClientInfo,
    ) -> Result<TokenPair> {
        let answered = self.exchange(refresh_token, client).await;
        self.inner.metrics.refresh(match &answered {
            Ok((_, raced)) if *raced => RefreshOutcome::Raced,
            Ok(_) => RefreshOutcome::Rotated,
            Err(Error::RefreshTokenReused) => RefreshOutcome::Reused,
            Err(_) => RefreshOutcome::Refused,
        });
        answered.map(|(pair, _)| pair)
    }

    /// [`Latchkey::refresh`], saying whether the token was a raced one.
    async fn exchange(
        &self,
        refresh_token: Option<&str>,
        client: ClientInfo,
    ) -> Result<(TokenPair, bool)> {
        let token = refresh_token
            .filter(|token| !token.is_empty())
            .ok_or(Error::MissingRefreshToken)?;
        self.limited(self.inner.limits.refresh(client.ip), None, &client)
            .await?;
        let now = self.now();
        let tokens = self.tokens();
        let claims = tokens.verify_refresh(token, now)?;
        // A token from before sessions had a deadline starts one now.
        let session_ends = claims
            .sxp
            .unwrap_or_else(|| now.saturating_add(self.inner.config.session_max_age.as_secs()));
        let next = tokens.issue_refresh(&claims.sub, &claims.fam, now, session_ends)?;
        let successor = Successor {
            digest: next.digest,
            jti: &next.jti,
            expires_at: next.expires_at,
        };
        let presented = Presented {
            claims: &claims,
            now,
            grace: self.inner.config.reuse_grace.as_secs(),
            successor,
            client: &client,
            require_verified: self.inner.config.require_verified_email,
        };
        let outcome = self
            .inner
            .store
            .exchange_refresh(
                &TokenDigest::of(token),
                &claims.fam,
                &claims.sub,
                |stored| {
                    let user = stored.user.clone();
                    let amr = stored
                        .session
                        .as_ref()
                        .map(|session| session.amr.clone())
                        .unwrap_or_default();
                    let (exchange, rotation) = decide_rotation(&presented, stored)?;
                    Ok((exchange, (rotation, (user, amr))))
                },
                |(rotation, _)| Some(self.rotation_event(rotation, &claims, &client)),
            )
            .await;
        let (rotation, (user, amr)) = match outcome {
            Ok(outcome) => outcome,
            Err(err) => {
                tracing::info!(user_id = %claims.sub, session_id = %claims.fam, jti = %claims.jti, code = err.code(), "refresh refused");
                return Err(err);
            }
        };
        // The exchange's transaction wrote its audit event; one wait makes both durable.
        self.inner.store.durable().await?;
        let user =
            user.ok_or_else(|| Error::Internal("a refresh went through without a user".into()));
        let (user, kind, next) = match rotation {
            Rotation::Reused { revoked_now } => {
                tracing::warn!(user_id = %claims.sub, session_id = %claims.fam, jti = %claims.jti, revoked_now, "refresh token reuse detected: session revoked");
                if revoked_now {
                    self.inner.metrics.sessions_ended(1);
                }
                return Err(Error::RefreshTokenReused);
            }
            Rotation::Raced { digest, next } => {
                // The very token the first exchange handed out: signing is
                // deterministic. Should it differ (the refresh secret or the
                // issuer changed since), it cannot be handed out again.
                let again = tokens.reissue_refresh(&next, claims.sxp)?;
                if again.digest != digest {
                    tracing::warn!(user_id = %claims.sub, session_id = %claims.fam, "a retried refresh cannot be answered with its successor again");
                    return Err(Error::RefreshTokenRevoked);
                }
                (user?, AuditKind::RefreshRaced, again)
            }
            Rotation::Rotated => (user?, AuditKind::Refresh, next),
        };
        let pair = self.token_pair(&user, &claims.fam, &amr, &next, now)?;
        let raced = kind == AuditKind::RefreshRaced;
        tracing::info!(user_id = %user.id, session_id = %claims.fam, jti = %next.jti, raced, "refresh answered");
        Ok((pair, raced))
    }

    /// The audit event of an exchange's outcome.
    fn rotation_event(
        &self,
        rotation: &Rotation,
        claims: &RefreshClaims,
        client: &ClientInfo,
    ) -> AuditEvent {
        let event = |kind| {
            self.event(kind, client)
                .user(&claims.sub)
                .session(&claims.fam)
        };
        match rotation {
            Rotation::Reused { revoked_now } => {
                let detail = match revoked_now {
                    true => format!("jti={}; session revoked", claims.jti),
                    false => format!("jti={}; session already revoked", claims.jti),
                };
                event(AuditKind::ReuseDetected).detail(detail)
            }
            Rotation::Raced { .. } => event(AuditKind::RefreshRaced),
            Rotation::Rotated => event(AuditKind::Refresh),
        }
    }

    /// Ends the session of a refresh token: the session is revoked, so every
    /// token of it (including rotated siblings and the access tokens on
    /// latchkey's routes) stops working. Idempotent: no token, an invalid,
    /// unknown, expired or already revoked token all succeed.
    ///
    /// # Errors
    /// [`Error::Storage`] only.
    #[tracing::instrument(skip_all)]
    pub async fn logout(&self, refresh_token: Option<&str>, client: ClientInfo) -> Result<()> {
        let Some(token) = refresh_token.filter(|token| !token.is_empty()) else {
            return Ok(());
        };
        let now = self.now();
        let Ok(claims) = self.tokens().verify_refresh(token, now) else {
            return Ok(());
        };
        let ended = self
            .inner
            .store
            .exchange_refresh(
                &TokenDigest::of(token),
                &claims.fam,
                &claims.sub,
                |stored| {
                    let (exchange, changed) =
                        decide_logout(&claims, stored.record, stored.session, now);
                    let session_ended = exchange.session.is_some();
                    Ok((exchange, (changed, session_ended)))
                },
                |(changed, _)| {
                    changed.then(|| {
                        self.event(AuditKind::Logout, &client)
                            .user(&claims.sub)
                            .session(&claims.fam)
                    })
                },
            )
            .await?;
        self.inner.store.durable().await?;
        let (ended, session_ended) = ended;
        if session_ended {
            self.inner.metrics.sessions_ended(1);
        }
        if ended {
            tracing::info!(user_id = %claims.sub, session_id = %claims.fam, "logged out");
        }
        Ok(())
    }
}

/// The logout decision: end the token's record and its session, whatever
/// state they are in; `true` when anything changed.
fn decide_logout(
    claims: &RefreshClaims,
    record: Option<RefreshRecord>,
    session: Option<Session>,
    now: UnixTime,
) -> (Exchange, bool) {
    let Some(mut record) =
        record.filter(|record| record.user_id == claims.sub && record.family_id == claims.fam)
    else {
        return (Exchange::default(), false);
    };
    let mut exchange = Exchange::default();
    if let Some(mut session) = session.filter(|session| session.revoked_at.is_none()) {
        session.revoke(now, RevokeReason::Logout);
        exchange.session = Some(session);
    }
    if record.revoked_at.is_none() {
        record.revoked_at = Some(now);
        exchange.old = Some(record);
    }
    let changed = exchange.session.is_some() || exchange.old.is_some();
    (exchange, changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Email, User, Username};

    const NOW: UnixTime = 1_800_000_000;
    const GRACE: u64 = 10;
    const TTL: u64 = 3600;

    fn user() -> User {
        User::new(
            "u1".into(),
            &Username::parse("alice").expect("valid"),
            &Email::parse("alice@example.com").expect("valid"),
            "$argon2id$hash".into(),
            vec!["user".into()],
            NOW - 1000,
        )
    }

    fn client() -> ClientInfo {
        ClientInfo::new(Some([127, 0, 0, 1].into()), Some("test"))
    }

    fn claims() -> RefreshClaims {
        RefreshClaims {
            iss: "latchkey".into(),
            sub: "u1".into(),
            fam: "f1".into(),
            iat: NOW - 100,
            exp: NOW - 100 + TTL,
            jti: "j1".into(),
            nbf: None,
            sxp: None,
        }
    }

    /// The presented token's record: issued 100 s ago.
    fn record() -> RefreshRecord {
        RefreshRecord::issued("u1", "j1", "f1", NOW - 100, NOW - 100 + TTL, &client())
    }

    /// The digest of the presented token's successor.
    const NEXT: TokenDigest = TokenDigest([2; 32]);

    /// The same record, rotated `ago` seconds before now.
    fn rotated(ago: u64) -> RefreshRecord {
        let mut record = record();
        record.rotate(NOW - ago, "j2", NEXT);
        record
    }

    /// The record of the successor of a token rotated `ago` seconds ago.
    fn successor(ago: u64) -> RefreshRecord {
        RefreshRecord::issued("u1", "j2", "f1", NOW - ago, NOW - ago + TTL, &client())
    }

    fn session() -> Session {
        Session::start(
            "f1".into(),
            &user(),
            NOW - 100,
            NOW - 100 + TTL,
            &client(),
            Vec::new(),
        )
    }

    fn revoked_session() -> Session {
        let mut session = session();
        session.revoke(NOW - 50, RevokeReason::Logout);
        session
    }

    /// What a call with these stored values decides (the successor's
    /// record is found when the presented one was rotated within the last
    /// minute, unused unless `next` says otherwise).
    fn decide(
        record: Option<RefreshRecord>,
        session: Option<Session>,
        user: Option<User>,
    ) -> Result<(Exchange, Rotation)> {
        let next = record
            .as_ref()
            .and_then(RefreshRecord::rotated_at)
            .map(|at| successor(NOW - at));
        decide_with_successor(record, next, session, user)
    }

    fn decide_with_successor(
        record: Option<RefreshRecord>,
        next: Option<RefreshRecord>,
        session: Option<Session>,
        user: Option<User>,
    ) -> Result<(Exchange, Rotation)> {
        let claims = claims();
        let client = client();
        let presented = Presented {
            claims: &claims,
            now: NOW,
            grace: GRACE,
            successor: Successor {
                digest: TokenDigest([7; 32]),
                jti: "j3",
                expires_at: NOW + TTL,
            },
            require_verified: false,
            client: &client,
        };
        let stored = Stored {
            record,
            successor: next,
            session,
            user,
        };
        decide_rotation(&presented, stored)
    }

    /// The successor's record and the touched session, as a successful
    /// exchange writes them.
    fn written_successor() -> (Option<(TokenDigest, RefreshRecord)>, Option<Session>) {
        let mut touched = session();
        touched.touch(NOW, NOW + TTL, &client());
        let next = RefreshRecord::issued("u1", "j3", "f1", NOW, NOW + TTL, &client());
        (Some((TokenDigest([7; 32]), next)), Some(touched))
    }

    #[test]
    fn every_case_of_the_rotation_decision() {
        let disabled = User {
            disabled: true,
            ..user()
        };
        let mut password_changed = user();
        password_changed
            .set_password("$argon2id$new".into(), 0)
            .expect("set");
        let mut wrong_user = record();
        wrong_user.user_id = "u2".into();
        let mut wrong_family = record();
        wrong_family.family_id = "f2".into();
        let mut logged_out = record();
        logged_out.revoked_at = Some(NOW - 5);
        let expired = RefreshRecord::issued("u1", "j1", "f1", NOW - TTL, NOW, &client());
        let mut revoked_for_reuse = session();
        revoked_for_reuse.revoke(NOW, RevokeReason::Reuse);

        let (new, touched) = written_successor();
        let fresh = Exchange {
            old: Some({
                let mut old = record();
                old.rotate(NOW, "j3", TokenDigest([7; 32]));
                old
            }),
            new,
            session: touched,
        };
        type Case = (
            &'static str,
            Option<RefreshRecord>,
            Option<Session>,
            Option<User>,
            Result<(Exchange, Rotation)>,
        );
        let cases: Vec<Case> = vec![
            (
                "fresh token",
                Some(record()),
                Some(session()),
                Some(user()),
                Ok((fresh, Rotation::Rotated)),
            ),
            (
                "raced within the grace",
                Some(rotated(GRACE - 1)),
                Some(session()),
                Some(user()),
                Ok((
                    Exchange::default(),
                    Rotation::Raced {
                        digest: NEXT,
                        next: Box::new(successor(GRACE - 1)),
                    },
                )),
            ),
            (
                "reused after the grace, session live",
                Some(rotated(GRACE)),
                Some(session()),
                Some(user()),
                Ok((
                    Exchange {
                        session: Some(revoked_for_reuse),
                        ..Exchange::default()
                    },
                    Rotation::Reused { revoked_now: true },
                )),
            ),
            (
                "reused after the grace, session already revoked",
                Some(rotated(GRACE + 60)),
                Some(revoked_session()),
                Some(user()),
                Ok((Exchange::default(), Rotation::Reused { revoked_now: false })),
            ),
            (
                "reused after the grace, session swept",
                Some(rotated(GRACE + 60)),
                None,
                Some(user()),
                Ok((Exchange::default(), Rotation::Reused { revoked_now: false })),
            ),
            (
                "reused after the grace, sessions ended by a password change",
                Some(rotated(GRACE + 60)),
                Some(session()),
                Some(password_changed.clone()),
                Ok((Exchange::default(), Rotation::Reused { revoked_now: false })),
            ),
            (
                "raced within the grace, session revoked",
                Some(rotated(1)),
                Some(revoked_session()),
                Some(user()),
                Err(Error::RefreshTokenRevoked),
            ),
            (
                "logged out",
                Some(logged_out),
                Some(revoked_session()),
                Some(user()),
                Err(Error::RefreshTokenRevoked),
            ),
            (
                "expired",
                Some(expired),
                Some(session()),
                Some(user()),
                Err(Error::RefreshTokenExpired),
            ),
            (
                "wrong user",
                Some(wrong_user),
                Some(session()),
                Some(user()),
                Err(Error::RefreshTokenNotRecognized),
            ),
            (
                "wrong family",
                Some(wrong_family),
                Some(session()),
                Some(user()),
                Err(Error::RefreshTokenNotRecognized),
            ),
            (
                "unknown token",
                None,
                Some(session()),
                Some(user()),
                Err(Error::RefreshTokenNotRecognized),
            ),
            (
                "account deleted",
                Some(record()),
                Some(session()),
                None,
                Err(Error::RefreshTokenNotRecognized),
            ),
            (
                "account disabled",
                Some(record()),
                Some(session()),
                Some(disabled),
                Err(Error::AccountDisabled),
            ),
            (
                "session revoked (a device signed out)",
                Some(record()),
                Some(revoked_session()),
                Some(user()),
                Err(Error::RefreshTokenRevoked),
            ),
            (
                "session swept",
                Some(record()),
                None,
                Some(user()),
                Err(Error::RefreshTokenRevoked),
            ),
            (
                "password changed since the session started",
                Some(record()),
                Some(session()),
                Some(password_changed),
                Err(Error::RefreshTokenRevoked),
            ),
        ];
        for (case, record, session, user, expected) in cases {
            assert_eq!(decide(record, session, user), expected, "{case}");
        }
    }

    #[test]
    fn within_the_grace_only_an_unused_successor_is_handed_out_again() {
        let mut used = successor(1);
        used.rotate(NOW, "j9", TokenDigest([9; 32]));
        let mut revoked_for_reuse = session();
        revoked_for_reuse.revoke(NOW, RevokeReason::Reuse);
        let theft = || {
            Ok((
                Exchange {
                    session: Some(revoked_for_reuse.clone()),
                    ..Exchange::default()
                },
                Rotation::Reused { revoked_now: true },
            ))
        };
        let mut before_successors_were_kept = rotated(1);
        before_successors_were_kept.successor = None;
        let mut expired = successor(1);
        expired.expires_at = NOW;
        let mut other_family = successor(1);
        other_family.family_id = "f2".into();
        let cases = [
            ("successor used", rotated(1), Some(used), theft()),
            ("successor swept", rotated(1), None, theft()),
            ("successor expired", rotated(1), Some(expired), theft()),
            (
                "successor of another family",
                rotated(1),
                Some(other_family),
                theft(),
            ),
            (
                "rotated before successors were kept",
                before_successors_were_kept,
                None,
                Err(Error::RefreshTokenRevoked),
            ),
        ];
        for (case, record, next, expected) in cases {
            let decided = decide_with_successor(Some(record), next, Some(session()), Some(user()));
            assert_eq!(decided, expected, "{case}");
        }
    }

    #[test]
    fn without_a_grace_every_reuse_is_theft() {
        let claims = claims();
        let client = client();
        let presented = Presented {
            claims: &claims,
            now: NOW,
            grace: 0,
            successor: Successor {
                digest: TokenDigest([7; 32]),
                jti: "j3",
                expires_at: NOW + TTL,
            },
            require_verified: false,
            client: &client,
        };
        let stored = Stored {
            record: Some(rotated(0)),
            successor: Some(successor(0)),
            session: Some(session()),
            user: Some(user()),
        };
        let decided = decide_rotation(&presented, stored);
        assert!(matches!(
            decided,
            Ok((_, Rotation::Reused { revoked_now: true }))
        ));
    }

    #[test]
    fn logout_ends_the_record_and_the_session_once() {
        let (exchange, changed) = decide_logout(&claims(), Some(record()), Some(session()), NOW);
        assert!(changed);
        assert_eq!(exchange.old.and_then(|old| old.revoked_at), Some(NOW));
        assert_eq!(
            exchange.session.and_then(|session| session.revoked_reason),
            Some(RevokeReason::Logout)
        );
        let mut ended = record();
        ended.revoked_at = Some(NOW);
        let again = decide_logout(&claims(), Some(ended), Some(revoked_session()), NOW);
        assert_eq!(again, (Exchange::default(), false));
        let mut stranger = record();
        stranger.user_id = "u2".into();
        assert_eq!(
            decide_logout(&claims(), Some(stranger), Some(session()), NOW),
            (Exchange::default(), false)
        );
    }
}
