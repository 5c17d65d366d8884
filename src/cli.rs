//! The command line: `latchkey` (serve) and its offline subcommands
//! (`openapi`, `audit`, `user …`, `keys …`, `export`, `import`,
//! `migrate`). Part of the binary, not of the library: it uses only
//! latchkey's public API, like any other client. The offline commands open
//! the store themselves: on sled they run while the server is stopped
//! (sled's lock makes a running server a clear error; `export` then asks
//! the server for the dump over its socket), on PostgreSQL
//! (`DATABASE_URL`) while nodes run. They print for a terminal or, with
//! `--json`, one JSON object per line. The only importer of `rpassword`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use latchkey::config::{Config, DEFAULT_DATA_DIR, SigningAlg};
use latchkey::{AuditEvent, ClientInfo, Error, Latchkey, MAX_PAGE, Result, User, UserChange};

/// latchkey's command line.
#[derive(Debug, Parser)]
#[command(
    name = "latchkey",
    version,
    about = "A self-hosted authentication server: argon2id passwords, short-lived access JWTs, rotating refresh tokens.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do; without a subcommand latchkey serves.
    #[command(subcommand)]
    command: Option<Command>,
    /// Directory of the database and generated secrets (every command).
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_DATA_DIR",
        default_value = DEFAULT_DATA_DIR
    )]
    data_dir: PathBuf,
    /// Comma-separated role names accounts may hold besides `user` and
    /// `admin` (every command).
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_EXTRA_ROLES",
        value_delimiter = ','
    )]
    extra_roles: Vec<String>,
    /// `serve` flags, also accepted without the `serve` word.
    #[command(flatten)]
    serve: ServeArgs,
}

/// What every command shares: where the data is and which roles exist.
#[derive(Debug, Clone)]
pub struct Shared {
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--extra-roles`.
    pub extra_roles: Vec<String>,
}

impl Shared {
    /// The default settings on this data directory with these roles.
    fn config(&self) -> Config {
        Config {
            extra_roles: self.extra_roles.clone(),
            ..Config::with_data_dir(&self.data_dir)
        }
        .with_secrets_from_env()
    }
}

impl Cli {
    /// The command to run (`serve` with the top-level flags when none was
    /// named) and what every command shares.
    pub fn into_command(self) -> (Command, Shared) {
        let command = self.command.unwrap_or(Command::Serve(self.serve));
        let shared = Shared {
            data_dir: self.data_dir,
            extra_roles: self.extra_roles,
        };
        (command, shared)
    }
}

/// latchkey's subcommands.
// Parsed once at startup: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(ServeArgs),
    /// Print the OpenAPI spec (the checked-in openapi.json is exactly this output).
    Openapi,
    /// Print security events from the audit log (on sled, while the server is stopped).
    Audit(AuditArgs),
    /// Manage users from the command line (on sled, while the server is stopped).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage the access-token signing keys (on sled, while the server is stopped).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Write a dump of everything stored (JSON lines), also while the server runs.
    Export(ExportArgs),
    /// Load a dump into an empty store (a new data directory or an empty database).
    Import(ImportArgs),
    /// Bring the PostgreSQL schema up to date (every start does it too).
    Migrate,
}

/// `latchkey export`: a dump of everything stored.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Write the dump to this file (created owner-only) instead of
    /// standard output.
    file: Option<PathBuf>,
}

/// `latchkey import`: load a dump into an empty store.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Read the dump from this file instead of standard input.
    file: Option<PathBuf>,
}

/// How `latchkey serve` writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text, one line per event.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Flags of `latchkey serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LATCHKEY_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 5000)]
    pub port: u16,
    /// Log lines as text (`pretty`) or one JSON object per line (`json`);
    /// the level comes from `RUST_LOG` (default `info`).
    #[arg(long, env = "LATCHKEY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Core settings.
    #[command(flatten)]
    pub config: Config,
}

/// Flags of `latchkey audit`.
#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Only events of this user id.
    #[arg(long)]
    user: Option<String>,
    /// Only events newer than this (humantime: 1h, 7d); default: all kept.
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// At most this many events (the oldest first).
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
    /// One JSON object per line instead of aligned text.
    #[arg(long)]
    json: bool,
}

/// `latchkey user …`: bootstrap and manage accounts offline.
#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Create an account (with `--role admin`, the first administrator). The
    /// password is asked on the terminal, or read from standard input with
    /// `--password-stdin`.
    Create {
        /// The account's email.
        #[arg(long)]
        email: String,
        /// The account's username.
        #[arg(long)]
        username: String,
        /// A role besides `user` (repeat for several).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts (id, email, username, roles, state).
    List {
        /// Only accounts whose email or username contains this.
        #[arg(long)]
        query: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Replace an account's roles (comma-separated, e.g. `admin,user`).
    SetRoles {
        /// The user id or email.
        user: String,
        /// The roles, comma-separated.
        #[arg(value_delimiter = ',')]
        roles: Vec<String>,
    },
    /// Disable an account and end its sessions.
    Disable {
        /// The user id or email.
        user: String,
    },
    /// Enable a disabled account again.
    Enable {
        /// The user id or email.
        user: String,
    },
    /// Remove an account's second factors (authenticator app, recovery
    /// codes) and passkeys, for a user who lost them; the password stays
    /// and signs in alone. The user is told by mail.
    ResetMfa {
        /// The user id or email.
        user: String,
    },
}

/// `latchkey keys …`.
#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key active. The previous public keys stay published
    /// and valid until every token they signed has expired.
    Rotate {
        /// Algorithm of the new key (default: that of the current key).
        #[arg(long, value_enum)]
        signing_alg: Option<SigningAlg>,
    },
    /// List the signing keys (kid, algorithm, state).
    List,
}

/// Who the audit log names as the actor of command-line changes.
const CLI_ACTOR: &str = "command-line";

fn write_error(err: std::io::Error) -> Error {
    Error::Internal(format!("cannot write: {err}"))
}

/// RFC 3339 UTC, as the API prints times.
fn format_time(time: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(time)).to_string()
}

/// Opens the data directory for an offline command: an existing one, or a
/// new one only when `create` (the first admin may be made before the first
/// start).
///
/// # Errors
/// [`Error::Config`] when the directory holds no latchkey database or a
/// running server holds it, or what [`Latchkey::open_offline`] returns.
async fn open(shared: &Shared, create: bool) -> Result<Latchkey> {
    let data_dir = &shared.data_dir;
    let config = shared.config();
    if !create && config.database_url.is_none() && !data_dir.join("db").exists() {
        return Err(Error::Config(format!(
            "{} holds no latchkey database (pass --data-dir)",
            data_dir.display()
        )));
    }
    Latchkey::open_offline(config)
        .await
        .map_err(|err| match err {
            Error::DataDirLocked(dir) => Error::Config(format!(
                "data directory {dir} is in use by a running latchkey; stop it first"
            )),
            other => other,
        })
}

/// `latchkey audit`: prints the matching events to `out`.
///
/// # Errors
/// See [`open`]; I/O errors writing `out` become [`Error::Internal`].
pub async fn audit(args: &AuditArgs, shared: &Shared, out: &mut impl Write) -> Result<()> {
    let core = open(shared, false).await?;
    let now = core.clock().now();
    let since = args
        .since
        .map_or(0, |window| now.saturating_sub(window.as_secs()));
    for event in core
        .audit_events(since, args.user.as_deref(), args.limit)
        .await?
    {
        let line = match args.json {
            true => json_line(&event),
            false => text_line(&event),
        };
        writeln!(out, "{line}").map_err(write_error)?;
    }
    Ok(())
}

/// An event as the API shows it (`GET /api/admin/audit`): camelCase, the
/// time in RFC 3339, absent fields left out.
fn json_line(event: &AuditEvent) -> String {
    let mut object = serde_json::Map::new();
    object.insert("time".into(), format_time(event.at).into());
    object.insert("kind".into(), event.kind.as_str().into());
    let fields = [
        ("userId", &event.user_id),
        ("sessionId", &event.session_id),
        ("ip", &event.ip),
        ("userAgent", &event.user_agent),
        ("detail", &event.detail),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            object.insert(name.into(), value.clone().into());
        }
    }
    serde_json::Value::Object(object).to_string()
}

fn text_line(event: &AuditEvent) -> String {
    let mut line = format!("{}  {:<24}", format_time(event.at), event.kind.as_str());
    let fields = [
        ("user", &event.user_id),
        ("session", &event.session_id),
        ("ip", &event.ip),
        ("detail", &event.detail),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            line.push_str(&format!("  {name}={value}"));
        }
    }
    if let Some(agent) = &event.user_agent {
        line.push_str(&format!("  agent={agent:?}"));
    }
    line
}

/// `latchkey user …`. `create` reads the password from `input` when
/// `--password-stdin` is given, else from the terminal.
///
/// # Errors
/// What the core returns (a weak password, a taken email…), or
/// [`Error::Config`] when the data directory cannot be used.
pub async fn user(
    command: UserCommand,
    shared: &Shared,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> Result<()> {
    match command {
        UserCommand::Create {
            email,
            username,
            roles,
            password_stdin,
        } => {
            let password = read_password(password_stdin, input)?;
            let core = open(shared, true).await?;
            let mut all = vec![latchkey::DEFAULT_ROLE.to_owned()];
            all.extend(roles);
            let user = core
                .create_user(&username, &email, &password, &all, ClientInfo::default())
                .await?;
            writeln!(out, "created {}", describe(&core, &user).await?).map_err(write_error)?;
        }
        UserCommand::List { query, json } => {
            let core = open(shared, false).await?;
            let mut cursor = None;
            loop {
                let page = core
                    .list_users(query.as_deref(), MAX_PAGE, cursor.as_deref())
                    .await?;
                for user in &page.users {
                    let line = match json {
                        true => serde_json::json!({
                            "id": user.id, "email": user.email, "username": user.username,
                            "roles": user.roles, "disabled": user.disabled,
                            "emailVerified": user.email_verified,
                            "createdAt": format_time(user.created_at),
                        })
                        .to_string(),
                        false => describe(&core, user).await?,
                    };
                    writeln!(out, "{line}").map_err(write_error)?;
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        UserCommand::SetRoles { user, roles } => {
            let core = open(shared, false).await?;
            let change = UserChange {
                roles: Some(roles),
                disabled: None,
            };
            let user = change_user(&core, &user, change).await?;
            writeln!(out, "updated {}", describe(&core, &user).await?).map_err(write_error)?;
        }
        UserCommand::Disable { user } => set_disabled(shared, &user, true, out).await?,
        UserCommand::Enable { user } => set_disabled(shared, &user, false, out).await?,
        UserCommand::ResetMfa { user } => {
            let core = open(shared, false).await?;
            let id = match user.contains('@') {
                true => core.user_by_email(&user).await?.id,
                false => user.clone(),
            };
            let removed = core
                .reset_factors(CLI_ACTOR, &id, ClientInfo::default())
                .await?;
            let user = core.user(&id).await?;
            let verb = match removed == latchkey::MfaSummary::default() {
                true => "no second factors to reset for",
                false => "reset second factors (the notice mail goes out at the next start) of",
            };
            writeln!(out, "{verb} {}", describe(&core, &user).await?).map_err(write_error)?;
        }
    }
    Ok(())
}

async fn set_disabled(
    shared: &Shared,
    user: &str,
    disabled: bool,
    out: &mut impl Write,
) -> Result<()> {
    let core = open(shared, false).await?;
    let change = UserChange {
        roles: None,
        disabled: Some(disabled),
    };
    let user = change_user(&core, user, change).await?;
    let verb = if disabled { "disabled" } else { "enabled" };
    writeln!(out, "{verb} {}", describe(&core, &user).await?).map_err(write_error)
}

async fn change_user(core: &Latchkey, user: &str, change: UserChange) -> Result<User> {
    let id = match user.contains('@') {
        true => core.user_by_email(user).await?.id,
        false => user.to_owned(),
    };
    core.change_user(CLI_ACTOR, &id, change, ClientInfo::default())
        .await
}

/// One line about a user.
async fn describe(core: &Latchkey, user: &User) -> Result<String> {
    let state = if user.disabled { "disabled" } else { "active" };
    let email = if user.email_verified {
        "verified"
    } else {
        "unverified"
    };
    let totp = if user.mfa.totp { "on" } else { "off" };
    Ok(format!(
        "{}  {}  {}  roles={}  {state}  email={email}  sessions={}  totp={totp}  passkeys={}",
        user.id,
        user.email,
        user.username,
        user.roles.join(","),
        core.live_session_count(&user.id).await?,
        user.mfa.passkeys
    ))
}

/// The new account's password: the first line of `input` with
/// `--password-stdin`, else asked twice on the terminal.
fn read_password(from_stdin: bool, input: &mut impl BufRead) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        input.read_line(&mut line).map_err(|err| {
            Error::Config(format!(
                "cannot read the password from standard input: {err}"
            ))
        })?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::Config(
            "no terminal to ask for the password on; pass --password-stdin".into(),
        ));
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map_err(|err| Error::Config(format!("cannot read the password: {err}")))
    };
    let first = ask("Password: ")?;
    if ask("Password again: ")? != first {
        return Err(Error::InvalidInput("the two passwords differ".into()));
    }
    Ok(first)
}

/// `latchkey keys …`: rotate or list the access-token signing keys. Holds
/// the data directory's lock while it works, so it cannot race a server.
///
/// # Errors
/// [`Error::Config`] when there is no key ring (HS256) or the data
/// directory cannot be used.
pub async fn keys(command: KeysCommand, shared: &Shared, out: &mut impl Write) -> Result<()> {
    let core = open(shared, false).await?;
    match command {
        KeysCommand::Rotate { signing_alg } => {
            let rotated = core.rotate_signing_key(signing_alg).await?;
            writeln!(
                out,
                "active {} {}",
                rotated.active.kid,
                rotated.active.alg.as_str()
            )
            .map_err(write_error)?;
            if let Some(old) = rotated.retired {
                writeln!(
                    out,
                    "retired {}: still published and accepted until the access tokens it signed expire",
                    old.kid
                )
                .map_err(write_error)?;
            }
        }
        KeysCommand::List => {
            for key in core.signing_keys().await? {
                let state = match key.retired_at {
                    None => "active".to_owned(),
                    Some(at) => format!("retired {}", format_time(at)),
                };
                writeln!(
                    out,
                    "{}  {:<5}  created {}  {state}",
                    key.kid,
                    key.alg.as_str(),
                    format_time(key.created_at)
                )
                .map_err(write_error)?;
            }
        }
    }
    Ok(())
}

/// `latchkey export`: the dump, from the store or (sled, server running)
/// from the server over its socket, to `out` or the named file.
///
/// # Errors
/// See [`open`]; a file that exists already; I/O errors.
pub async fn export(args: &ExportArgs, shared: &Shared, out: &mut impl Write) -> Result<()> {
    let Some(path) = &args.file else {
        return export_to(shared, out).await;
    };
    let mut file = create_private(path)?;
    let written = match export_to(shared, &mut file).await {
        Ok(()) => file.sync_all().map_err(write_error),
        Err(err) => Err(err),
    };
    if written.is_err() {
        // Half a dump must not pass for a backup.
        let _ = std::fs::remove_file(path);
    }
    written
}

/// Writes the dump to `target`: from the store, or (sled, server running)
/// from the server over its socket.
async fn export_to(shared: &Shared, target: &mut impl Write) -> Result<()> {
    let mut write = |line: &str| writeln!(target, "{line}").map_err(write_error);
    match open(shared, false).await {
        Ok(core) => {
            core.export(&mut write).await?;
        }
        Err(Error::Config(reason)) if reason.contains("in use by a running latchkey") => {
            latchkey::control::request_export(&shared.data_dir, &mut write)?;
        }
        Err(err) => return Err(err),
    }
    target.flush().map_err(write_error)
}

/// A new file only its owner reads.
fn create_private(path: &std::path::Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|err| Error::Config(format!("cannot create {}: {err}", path.display())))
}

/// `latchkey import`: loads a dump into an empty store (a new data
/// directory, or an empty PostgreSQL database).
///
/// # Errors
/// See [`open`] and [`Latchkey::import`].
pub async fn import(
    args: &ImportArgs,
    shared: &Shared,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> Result<()> {
    let core = open(shared, true).await?;
    let imported = match &args.file {
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|err| Error::Config(format!("cannot open {}: {err}", path.display())))?;
            core.import(std::io::BufReader::new(file).lines()).await?
        }
        None => core.import(input.lines()).await?,
    };
    core.flush()?;
    writeln!(
        out,
        "imported {} entries ({} users) and {} secrets into {}",
        imported.entries,
        imported.users,
        imported.secrets,
        core.backend()
    )
    .map_err(write_error)
}

/// `latchkey migrate`: brings the PostgreSQL schema up to date (it also
/// happens at every start).
///
/// # Errors
/// [`Error::Config`] without `DATABASE_URL`; what connecting returns.
pub async fn migrate(shared: &Shared, out: &mut impl Write) -> Result<()> {
    if shared.config().database_url.is_none() {
        writeln!(
            out,
            "no DATABASE_URL: the sled data directory is migrated when latchkey opens it"
        )
        .map_err(write_error)?;
        return Ok(());
    }
    let core = open(shared, true).await?;
    writeln!(out, "the {} schema is up to date", core.backend()).map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_defaults_match_config_default() {
        let cli = Cli::try_parse_from(["latchkey"]).expect("parses");
        let (Command::Serve(args), shared) = cli.into_command() else {
            panic!("expected serve");
        };
        let parsed = args.config;
        let default = Config::default();
        assert_eq!(shared.data_dir, default.data_dir);
        assert_eq!(shared.extra_roles, default.extra_roles);
        assert_eq!(parsed.access_ttl, default.access_ttl);
        assert_eq!(parsed.refresh_ttl, default.refresh_ttl);
        assert_eq!(parsed.sweep_interval, default.sweep_interval);
        assert_eq!(parsed.secure_cookies, default.secure_cookies);
        assert_eq!(parsed.issuer, default.issuer);
        assert_eq!(parsed.audience, default.audience);
        assert_eq!(parsed.reuse_grace, default.reuse_grace);
        assert_eq!(parsed.audit_retention, default.audit_retention);
        assert_eq!(parsed.limits.login_ip, default.limits.login_ip);
        assert_eq!(parsed.limits.login_account, default.limits.login_account);
        assert_eq!(parsed.limits.register_ip, default.limits.register_ip);
        assert_eq!(parsed.limits.refresh_ip, default.limits.refresh_ip);
        assert_eq!(parsed.limits.enabled, default.limits.enabled);
    }

    #[test]
    fn serve_flags_work_with_and_without_the_subcommand() {
        let bare = Cli::try_parse_from(["latchkey", "--access-ttl", "2s"]).expect("parses");
        let (Command::Serve(args), _) = bare.into_command() else {
            panic!("expected serve");
        };
        assert_eq!(args.config.access_ttl, Duration::from_secs(2));
        let named =
            Cli::try_parse_from(["latchkey", "serve", "--refresh-ttl", "1d"]).expect("parses");
        let (Command::Serve(args), _) = named.into_command() else {
            panic!("expected serve");
        };
        assert_eq!(args.config.refresh_ttl, Duration::from_secs(86_400));
    }

    #[test]
    fn data_dir_is_one_flag_that_every_command_takes() {
        for line in [
            vec!["latchkey", "--data-dir", "/x"],
            vec!["latchkey", "serve", "--data-dir", "/x"],
            vec!["latchkey", "audit", "--data-dir", "/x"],
            vec!["latchkey", "user", "list", "--data-dir", "/x"],
            vec!["latchkey", "keys", "rotate", "--data-dir", "/x"],
        ] {
            let cli = Cli::try_parse_from(&line).unwrap_or_else(|err| panic!("{line:?}: {err}"));
            assert_eq!(
                cli.into_command().1.data_dir,
                PathBuf::from("/x"),
                "{line:?}"
            );
        }
    }

    #[test]
    fn a_wildcard_cors_origin_is_refused() {
        assert!(Cli::try_parse_from(["latchkey", "--cors-origins", "*"]).is_err());
    }
}
