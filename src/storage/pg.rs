//! The PostgreSQL backend (`DATABASE_URL`): the only importer of `sqlx`.
//!
//! Each tree is a table `latchkey_<tree> (key bytea primary key, value
//! bytea)`, holding exactly what sled holds, so every operation of
//! [`Store`](super::Store) means the same on both backends. The schema is
//! created by versioned migrations embedded here ([`MIGRATIONS`]), applied
//! at start (under an advisory lock, so nodes starting together apply each
//! once) or by `latchkey migrate`.
//!
//! **Transactions** run at READ COMMITTED with every row they read locked
//! until commit (`SELECT … FOR UPDATE`; `FOR SHARE` for rows a transaction
//! only reads, where its caller says so: the user of a refresh): strict
//! two-phase locking over the rows a transaction touches, so two
//! transactions that touch one row are serialized, as sled serializes all
//! of them, and a change to a user waits for the refreshes reading it. A
//! transaction body is plain synchronous code (the same as for sled): it
//! runs over the rows fetched so far and, when it needs one more, stops;
//! the row is fetched and locked and the body runs again (see
//! [`Staged`](super::Staged)). The rows a caller knows it will read are
//! fetched first, in one statement, tree by tree in one order (fewer
//! deadlocks); the writes go in one statement; then it commits (durable
//! before the answer, with PostgreSQL's default `synchronous_commit`). A key the body read as
//! absent is written with a plain `INSERT`, so two transactions that both
//! found an email free cannot both take it: the second fails on the
//! primary key and runs again, now seeing the first's row. Serialization
//! failures, deadlocks and those conflicts are retried, with a short random
//! pause, up to [`ATTEMPTS`] times.
//!
//! Also here: the table of sealed secrets shared by every node,
//! consistent snapshots for export, and the
//! advisory locks that let one node at a time run the sweeper and the
//! outbox sender ([`Leader`]).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Row as _};

use super::{Entries, Fetched, Row, Staged, TreeId, Tx, TxError, TxResult, View, Writes};
use crate::error::{Error, Result};

/// How a node connects: pool size and the waits it tolerates.
#[derive(Debug, Clone)]
pub(crate) struct PgOptions {
    /// Connections in this node's pool.
    pub pool_size: u32,
    /// How long a request waits for a free connection, or for a row lock,
    /// before it fails (503).
    pub wait: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 16,
            wait: Duration::from_secs(5),
        }
    }
}

/// The migrations, in order: (version, what it does, SQL). Never edit one
/// that has shipped; add the next.
const MIGRATIONS: &[(i32, &str, &str)] = &[(1, "trees and secrets", MIGRATION_1)];

const MIGRATION_1: &str = "
CREATE TABLE latchkey_users (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE latchkey_users_by_email (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE latchkey_users_by_username (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE latchkey_refresh_tokens (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE latchkey_refresh_expiry (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE latchkey_session_tokens (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE latchkey_sessions (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE latchkey_session_expiry (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE latchkey_user_sessions (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE latchkey_audit (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE latchkey_mail_tokens (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE latchkey_mail_token_expiry (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE latchkey_outbox (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE latchkey_factors (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE latchkey_challenges (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE latchkey_challenge_expiry (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE latchkey_secrets (
    name text PRIMARY KEY,
    sealed bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
";

/// Advisory-lock keys (one namespace: "latc" in ASCII, then the role).
const LOCK_MIGRATE: i64 = 0x6c61_7463_0000_0001;

/// The advisory lock of each role only one node at a time plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Deleting what has expired.
    Sweeper,
    /// Delivering queued mail.
    Sender,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Sweeper => "sweeper",
            Role::Sender => "sender",
        }
    }
}

/// How many times a transaction runs before a conflict is reported (503).
const ATTEMPTS: u32 = 30;

pub(super) struct Pg {
    pool: PgPool,
    /// The advisory-lock keys of [`Role::Sweeper`] and [`Role::Sender`]:
    /// derived from the schema, because advisory locks are per database,
    /// and two deployments in two schemas of one database must not stand
    /// by for each other.
    locks: [i64; 2],
}

impl Pg {
    pub(super) async fn connect(url: &str, options: &PgOptions) -> Result<Pg> {
        let wait_ms = options.wait.as_millis().to_string();
        if !["postgres://", "postgresql://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return Err(Error::Config(
                "DATABASE_URL must start with postgres:// or postgresql://".into(),
            ));
        }
        let connect = PgConnectOptions::from_str(url)
            .map_err(|err| Error::Config(format!("DATABASE_URL is not a PostgreSQL URL: {err}")))?
            .application_name("latchkey")
            .options([
                ("lock_timeout", wait_ms.as_str()),
                ("idle_in_transaction_session_timeout", "60000"),
                // PostgreSQL's notices ("already exists, skipping") are not
                // latchkey's news.
                ("client_min_messages", "warning"),
            ]);
        // One connection first, so that a server out of reach or a refused
        // login says why (the pool would only say it timed out).
        tokio::time::timeout(options.wait, PgConnection::connect_with(&connect))
            .await
            .map_err(|_| {
                Error::Storage(format!(
                    "cannot connect to PostgreSQL: no answer within {} s",
                    options.wait.as_secs()
                ))
            })?
            .map_err(|err| Error::Storage(format!("cannot connect to PostgreSQL: {err}")))?
            .close()
            .await
            .map_err(failed)?;
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size.max(2))
            .acquire_timeout(options.wait)
            .connect_with(connect)
            .await
            .map_err(|err| Error::Storage(format!("cannot connect to PostgreSQL: {err}")))?;
        let mut pg = Pg {
            pool,
            locks: [0; 2],
        };
        pg.migrate().await?;
        for role in [Role::Sweeper, Role::Sender] {
            pg.locks[role as usize] = sqlx::query_scalar(
                "SELECT hashtextextended('latchkey ' || current_schema() || ' ' || $1, 0)",
            )
            .bind(role.name())
            .fetch_one(&pg.pool)
            .await
            .map_err(failed)?;
        }
        Ok(pg)
    }

    /// Applies the migrations this database lacks, under an advisory lock.
    async fn migrate(&self) -> Result<i32> {
        let mut tx = self.pool.begin().await.map_err(failed)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_MIGRATE)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        // A schema of its own, named first on the search path
        // (`?options[search_path]=latchkey` in DATABASE_URL), is created.
        let wanted: Option<String> = sqlx::query_scalar(
            "SELECT trim(both '\"' from split_part(current_setting('search_path'), ',', 1))",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(failed)?;
        if let Some(schema) = wanted.filter(|name| !name.is_empty() && !name.starts_with('$')) {
            let create = format!(
                "CREATE SCHEMA IF NOT EXISTS \"{}\"",
                schema.replace('"', "\"\"")
            );
            sqlx::raw_sql(AssertSqlSafe(create))
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
        }
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS latchkey_migrations (
                version integer PRIMARY KEY,
                description text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        let current: i32 =
            sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM latchkey_migrations")
                .fetch_one(&mut *tx)
                .await
                .map_err(failed)?;
        let latest = MIGRATIONS.last().map_or(0, |(version, _, _)| *version);
        if current > latest {
            return Err(Error::Storage(format!(
                "the database has schema version {current}; this latchkey knows versions up to {latest}"
            )));
        }
        for (version, description, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
            sqlx::raw_sql(*sql)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            sqlx::query("INSERT INTO latchkey_migrations (version, description) VALUES ($1, $2)")
                .bind(version)
                .bind(description)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            tracing::info!(version, description, "PostgreSQL schema migrated");
        }
        tx.commit().await.map_err(failed)?;
        Ok(latest)
    }

    pub(super) async fn ready(&self) -> Result<()> {
        tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query("SELECT 1").execute(&self.pool),
        )
        .await
        .map_err(|_| Error::Storage("PostgreSQL did not answer within 2 s".into()))?
        .map(drop)
        .map_err(failed)
    }

    pub(super) async fn read(&self, id: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let sql = format!("SELECT value FROM {} WHERE key = $1", table(id));
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(failed)
    }

    pub(super) async fn read_many(&self, rows: &[(TreeId, &[u8])]) -> Result<Vec<Option<Vec<u8>>>> {
        let columns: Vec<String> = rows
            .iter()
            .enumerate()
            .map(|(index, (id, _))| {
                format!(
                    "(SELECT value FROM {} WHERE key = ${})",
                    table(*id),
                    index + 1
                )
            })
            .collect();
        let mut query = sqlx::query(AssertSqlSafe(format!("SELECT {}", columns.join(", "))));
        for (_, key) in rows {
            query = query.bind(*key);
        }
        let row = query.fetch_one(&self.pool).await.map_err(failed)?;
        (0..rows.len())
            .map(|index| row.try_get::<Option<Vec<u8>>, _>(index).map_err(failed))
            .collect()
    }

    pub(super) async fn scan(
        &self,
        id: TreeId,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries> {
        scan(&self.pool, id, start, end, limit).await
    }

    pub(super) async fn count(&self, id: TreeId) -> Result<usize> {
        let sql = format!("SELECT count(*) FROM {}", table(id));
        let count: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .map_err(failed)?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    pub(super) async fn transaction<T>(
        &self,
        ids: &[TreeId],
        reads: &[Row],
        shared: &[TreeId],
        body: impl Fn(&Tx<'_>) -> TxResult<T>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(ids, (reads, shared), &body).await {
                Err(Failure::Conflict(err)) if attempt < ATTEMPTS => {
                    tracing::debug!(attempt, error = %err, "transaction conflict; running it again");
                    let pause = rand::random_range(1..=4 * u64::from(attempt.min(10)));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(Failure::Conflict(err)) => {
                    return Err(Error::Storage(format!(
                        "a transaction kept conflicting with others ({ATTEMPTS} attempts): {err}"
                    )));
                }
                Err(Failure::Refused(err)) => return Err(err),
                Ok(value) => return Ok(value),
            }
        }
    }

    async fn attempt<T>(
        &self,
        ids: &[TreeId],
        (reads, shared): (&[Row], &[TreeId]),
        body: &impl Fn(&Tx<'_>) -> TxResult<T>,
    ) -> std::result::Result<T, Failure> {
        let mut tx = self.pool.begin().await.map_err(Failure::of)?;
        let mut fetched: Fetched = HashMap::new();
        fetch_locked(&mut tx, reads, shared, &mut fetched).await?;
        loop {
            let next = {
                let staged = Staged {
                    fetched: &fetched,
                    writes: Default::default(),
                    unread: Default::default(),
                };
                let outcome = body(&Tx {
                    ids,
                    view: View::Pg(&staged),
                });
                match outcome {
                    Ok(value) => Next::Commit(value, staged.writes.into_inner()),
                    Err(TxError::Unread) => match staged.unread.into_inner() {
                        Some(wanted) => Next::Fetch(wanted),
                        None => Next::Fail(Error::Internal("an unread row without its key".into())),
                    },
                    Err(TxError::Abort(err)) => Next::Fail(err),
                    Err(TxError::Sled(err)) => Next::Fail(Error::Internal(format!(
                        "a sled error in a PostgreSQL transaction: {err:?}"
                    ))),
                }
            };
            match next {
                Next::Fetch(wanted) => {
                    fetch_locked(&mut tx, std::slice::from_ref(&wanted), shared, &mut fetched)
                        .await?;
                }
                Next::Fail(err) => return Err(Failure::Refused(err)),
                Next::Commit(value, writes) => {
                    apply(&mut tx, &fetched, writes).await?;
                    tx.commit().await.map_err(Failure::of)?;
                    return Ok(value);
                }
            }
        }
    }

    /// Calls `visit` with every entry of every tree, read in one snapshot
    /// (REPEATABLE READ, read only): what an export writes, consistent
    /// while nodes keep writing.
    pub(super) async fn snapshot(
        &self,
        mut visit: impl FnMut(TreeId, &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(failed)?;
        for id in TreeId::ALL {
            let mut after: Option<Vec<u8>> = None;
            loop {
                let start = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                let page = scan(&mut *tx, *id, start, Bound::Unbounded, super::PAGE).await?;
                for (key, value) in &page {
                    visit(*id, key, value)?;
                }
                if page.len() < super::PAGE {
                    break;
                }
                after = page.last().map(|(key, _)| key.clone());
            }
        }
        tx.commit().await.map_err(failed)
    }

    /// Every sealed secret, by name.
    pub(super) async fn secrets(&self) -> Result<BTreeMap<String, Vec<u8>>> {
        let rows = sqlx::query("SELECT name, sealed FROM latchkey_secrets")
            .fetch_all(&self.pool)
            .await
            .map_err(failed)?;
        Ok(rows
            .into_iter()
            .map(|row| (row.get::<String, _>(0), row.get::<Vec<u8>, _>(1)))
            .collect())
    }

    /// Stores a sealed secret: with `replace`, whatever was there goes;
    /// without, it is stored only if absent. Returns whether it was stored.
    pub(super) async fn put_secret(
        &self,
        name: &str,
        sealed: &[u8],
        replace: bool,
    ) -> Result<bool> {
        let sql = match replace {
            true => {
                "INSERT INTO latchkey_secrets (name, sealed) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed, updated_at = now()"
            }
            false => {
                "INSERT INTO latchkey_secrets (name, sealed) VALUES ($1, $2)
                 ON CONFLICT (name) DO NOTHING"
            }
        };
        let done = sqlx::query(sql)
            .bind(name)
            .bind(sealed)
            .execute(&self.pool)
            .await
            .map_err(failed)?;
        Ok(done.rows_affected() == 1)
    }

    /// Takes the advisory lock of `role` on a connection of its own, if no
    /// other node holds it. The lock lives as long as the [`Leader`] (and
    /// its connection: a node that dies lets it go).
    pub(super) async fn lead(&self, role: Role) -> Result<Option<Leader>> {
        let mut conn = self.pool.acquire().await.map_err(failed)?.detach();
        let won: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.locks[role as usize])
            .fetch_one(&mut conn)
            .await
            .map_err(failed)?;
        Ok(won.then_some(Leader { conn: Some(conn) }))
    }
}

/// The advisory lock of one role, held on its own connection.
pub(crate) struct Leader {
    /// `None` for sled, where there is one node.
    conn: Option<PgConnection>,
}

impl Leader {
    /// The lead of the only node (sled).
    pub(super) fn alone() -> Leader {
        Leader { conn: None }
    }

    /// Whether the lock is still held: its connection still answers.
    pub(crate) async fn holds(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(conn) => conn.ping().await.is_ok(),
        }
    }
}

enum Next<T> {
    Commit(T, Writes),
    Fetch(Row),
    Fail(Error),
}

/// Why one attempt at a transaction ended without committing.
enum Failure {
    /// It met another transaction (serialization failure, deadlock, a key
    /// taken meanwhile) and may run again.
    Conflict(sqlx::Error),
    /// It failed for good: its body said no, or the database did.
    Refused(Error),
}

impl Failure {
    fn of(err: sqlx::Error) -> Failure {
        let conflict = err
            .as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| matches!(&*code, "40001" | "40P01" | "23505"));
        match conflict {
            true => Failure::Conflict(err),
            false => Failure::Refused(failed(err)),
        }
    }
}

/// Reads and locks `keys` (shared in the trees `shared`, else exclusive),
/// in one statement (tree by tree, in [`TreeId`] order, so transactions
/// take their locks in one order), noting absent ones as `None` in
/// `fetched`.
async fn fetch_locked(
    tx: &mut PgConnection,
    keys: &[Row],
    shared: &[TreeId],
    fetched: &mut Fetched,
) -> std::result::Result<(), Failure> {
    let mut by_tree: BTreeMap<TreeId, Vec<Vec<u8>>> = BTreeMap::new();
    for (id, key) in keys {
        if !fetched.contains_key(&(*id, key.clone())) {
            by_tree.entry(*id).or_default().push(key.clone());
        }
    }
    if by_tree.is_empty() {
        return Ok(());
    }
    let trees: Vec<TreeId> = by_tree.keys().copied().collect();
    let mut ctes = Vec::new();
    let mut selects = Vec::new();
    for (index, id) in trees.iter().enumerate() {
        let lock = match shared.contains(id) {
            true => "SHARE",
            false => "UPDATE",
        };
        ctes.push(format!(
            "r{index} AS (SELECT key, value FROM {} WHERE key = ANY(${}) ORDER BY key FOR {lock})",
            table(*id),
            index + 1
        ));
        selects.push(format!("SELECT {index}, key, value FROM r{index}"));
    }
    let sql = format!("WITH {} {}", ctes.join(", "), selects.join(" UNION ALL "));
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for keys in by_tree.values() {
        query = query.bind(keys);
    }
    let rows = query.fetch_all(&mut *tx).await.map_err(Failure::of)?;
    for (id, keys) in by_tree {
        for key in keys {
            fetched.insert((id, key), None);
        }
    }
    for row in rows {
        let index: i32 = row.get(0);
        let id = usize::try_from(index)
            .ok()
            .and_then(|index| trees.get(index))
            .ok_or_else(|| Failure::Refused(Error::Internal("a row of no tree".into())))?;
        fetched.insert((*id, row.get(1)), Some(row.get(2)));
    }
    Ok(())
}

/// Sends every write of a transaction in one statement: per tree, the
/// removals, the plain inserts (keys read as absent: a concurrent insert
/// of the same key fails the transaction, which runs again), and the
/// upserts (keys read as present, so locked, or never read).
async fn apply(
    tx: &mut PgConnection,
    fetched: &Fetched,
    writes: Writes,
) -> std::result::Result<(), Failure> {
    #[derive(Default)]
    struct Parts {
        removed: Vec<Vec<u8>>,
        inserted: (Vec<Vec<u8>>, Vec<Vec<u8>>),
        upserted: (Vec<Vec<u8>>, Vec<Vec<u8>>),
    }
    if writes.is_empty() {
        return Ok(());
    }
    let mut by_tree: BTreeMap<TreeId, Parts> = BTreeMap::new();
    for ((id, key), value) in writes {
        let parts = by_tree.entry(id).or_default();
        let read_absent = matches!(fetched.get(&(id, key.clone())), Some(None));
        match value {
            None => parts.removed.push(key),
            Some(value) if read_absent => {
                parts.inserted.0.push(key);
                parts.inserted.1.push(value);
            }
            Some(value) => {
                parts.upserted.0.push(key);
                parts.upserted.1.push(value);
            }
        }
    }
    let mut clauses = Vec::new();
    let mut binds: Vec<Vec<Vec<u8>>> = Vec::new();
    for (id, parts) in by_tree {
        let table = table(id);
        if !parts.removed.is_empty() {
            binds.push(parts.removed);
            clauses.push(format!(
                "DELETE FROM {table} WHERE key = ANY(${})",
                binds.len()
            ));
        }
        for (rows, conflict) in [
            (parts.inserted, ""),
            (
                parts.upserted,
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            ),
        ] {
            if rows.0.is_empty() {
                continue;
            }
            binds.push(rows.0);
            binds.push(rows.1);
            clauses.push(format!(
                "INSERT INTO {table} (key, value) SELECT * FROM unnest(${}::bytea[], ${}::bytea[]){conflict}",
                binds.len() - 1,
                binds.len()
            ));
        }
    }
    let sql = match clauses.as_slice() {
        [only] => only.clone(),
        _ => {
            let ctes: Vec<String> = clauses
                .iter()
                .enumerate()
                .map(|(index, clause)| format!("w{index} AS ({clause})"))
                .collect();
            format!("WITH {} SELECT 1", ctes.join(", "))
        }
    };
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for bind in binds {
        query = query.bind(bind);
    }
    query.execute(&mut *tx).await.map_err(Failure::of)?;
    Ok(())
}

/// Up to `limit` entries of `id` between the bounds, in key order.
async fn scan<'e, E>(
    executor: E,
    id: TreeId,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    limit: usize,
) -> Result<Entries>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let mut conditions = Vec::new();
    let mut binds: Vec<Vec<u8>> = Vec::new();
    for (bound, included, excluded) in [(start, ">=", ">"), (end, "<=", "<")] {
        let (operator, key) = match bound {
            Bound::Included(key) => (included, key),
            Bound::Excluded(key) => (excluded, key),
            Bound::Unbounded => continue,
        };
        binds.push(key.to_vec());
        conditions.push(format!("key {operator} ${}", binds.len()));
    }
    let filter = match conditions.is_empty() {
        true => String::new(),
        false => format!("WHERE {}", conditions.join(" AND ")),
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT key, value FROM {} {filter} ORDER BY key LIMIT {limit}",
        table(id)
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for bind in binds {
        query = query.bind(bind);
    }
    let rows = query.fetch_all(executor).await.map_err(failed)?;
    Ok(rows
        .into_iter()
        .map(|row| (row.get::<Vec<u8>, _>(0), row.get::<Vec<u8>, _>(1)))
        .collect())
}

/// The table of tree `id` (names come from [`TreeId`], never from input).
fn table(id: TreeId) -> String {
    format!("latchkey_{}", id.name())
}

fn failed(err: sqlx::Error) -> Error {
    Error::Storage(format!("PostgreSQL: {err}"))
}

#[cfg(test)]
mod tests {
    use super::{MIGRATION_1, TreeId, table};

    #[test]
    fn the_first_migration_creates_a_table_for_every_tree() {
        for id in TreeId::ALL {
            let create = format!("CREATE TABLE {} (key bytea PRIMARY KEY", table(*id));
            assert!(MIGRATION_1.contains(&create), "no table for {}", id.name());
        }
    }
}
