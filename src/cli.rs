//! The offline subcommands (`latchkey audit`, `latchkey user …`,
//! `latchkey keys …`): they open
//! the data directory themselves, so they run while the server is stopped
//! (sled's lock makes a running server a clear error), and print for a
//! terminal or, with `--json`, one JSON object per line. The only importer
//! of `rpassword`. Depends on `service` and `config`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{AuditArgs, Config, KeysCommand, UserCommand};
use crate::error::{Error, Result};
use crate::model::{AuditEvent, ClientInfo, DEFAULT_ROLE, User, format_time};
use crate::service::{Latchkey, MAX_PAGE, UserChange};
use crate::tokens::keys::KeyRing;

/// Who the audit log names as the actor of command-line changes.
const CLI_ACTOR: &str = "command-line";

/// Opens an existing data directory for an offline command.
///
/// # Errors
/// [`Error::Config`] when the directory holds no latchkey database,
/// [`Error::DataDirLocked`] when the server is running on it, or what
/// [`Latchkey::open`] returns.
pub fn open_existing(config: Config) -> Result<Latchkey> {
    let config = Config {
        offline: true,
        ..config
    };
    if !config.data_dir.join("db").exists() {
        return Err(Error::Config(format!(
            "{} holds no latchkey database (pass --data-dir)",
            config.data_dir.display()
        )));
    }
    Latchkey::open(config).map_err(|err| match err {
        Error::DataDirLocked(dir) => Error::Config(format!(
            "data directory {dir} is in use by a running latchkey; stop it first"
        )),
        other => other,
    })
}

/// `latchkey audit`: prints the matching events to `out`.
///
/// # Errors
/// See [`open_existing`]; I/O errors writing `out` become [`Error::Internal`].
pub fn audit(args: &AuditArgs, out: &mut impl Write) -> Result<()> {
    let core = open_existing(Config::with_data_dir(&args.data_dir))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    let since = args
        .since
        .map_or(0, |window| now.saturating_sub(window.as_secs()));
    let events = core.audit_events(since, args.user.as_deref(), args.limit)?;
    let write_error = |err: std::io::Error| Error::Internal(format!("cannot write: {err}"));
    for event in &events {
        let line = if args.json {
            json_line(event)?
        } else {
            text_line(event)
        };
        writeln!(out, "{line}").map_err(write_error)?;
    }
    Ok(())
}

fn json_line(event: &AuditEvent) -> Result<String> {
    let mut value = serde_json::to_value(event)
        .map_err(|err| Error::Internal(format!("cannot encode an event: {err}")))?;
    if let Some(object) = value.as_object_mut() {
        object.insert("time".into(), format_time(event.at).into());
    }
    Ok(value.to_string())
}

fn text_line(event: &AuditEvent) -> String {
    let mut line = format!("{}  {:<16}", format_time(event.at), event.kind.as_str());
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
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> Result<()> {
    let write_error = |err: std::io::Error| Error::Internal(format!("cannot write: {err}"));
    match command {
        UserCommand::Create {
            email,
            username,
            roles,
            password_stdin,
            data_dir,
        } => {
            let password = read_password(password_stdin, input)?;
            let core = open(&data_dir, true)?;
            let mut all = vec![DEFAULT_ROLE.to_owned()];
            all.extend(roles);
            let user = core
                .create_user(&username, &email, &password, &all, ClientInfo::default())
                .await?;
            writeln!(out, "created {}", describe(&core, &user)?).map_err(write_error)?;
        }
        UserCommand::List {
            query,
            json,
            data_dir,
        } => {
            let core = open(&data_dir, false)?;
            let mut cursor = None;
            loop {
                let page = core.list_users(query.as_deref(), MAX_PAGE, cursor.as_deref())?;
                for user in &page.users {
                    let line = if json {
                        serde_json::json!({
                            "id": user.id, "email": user.email, "username": user.username,
                            "roles": user.roles, "disabled": user.disabled,
                            "createdAt": format_time(user.created_at),
                        })
                        .to_string()
                    } else {
                        describe(&core, user)?
                    };
                    writeln!(out, "{line}").map_err(write_error)?;
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        UserCommand::SetRoles {
            user,
            roles,
            data_dir,
        } => {
            let core = open(&data_dir, false)?;
            let change = UserChange {
                roles: Some(roles),
                disabled: None,
            };
            let user = change_user(&core, &user, change).await?;
            writeln!(out, "updated {}", describe(&core, &user)?).map_err(write_error)?;
        }
        UserCommand::Disable { user, data_dir } => {
            let core = open(&data_dir, false)?;
            let user = set_disabled(&core, &user, true).await?;
            writeln!(out, "disabled {}", describe(&core, &user)?).map_err(write_error)?;
        }
        UserCommand::Enable { user, data_dir } => {
            let core = open(&data_dir, false)?;
            let user = set_disabled(&core, &user, false).await?;
            writeln!(out, "enabled {}", describe(&core, &user)?).map_err(write_error)?;
        }
    }
    Ok(())
}

/// Opens the data directory: a new one only when `create` (bootstrapping
/// the first admin before the first start is allowed).
fn open(data_dir: &Path, create: bool) -> Result<Latchkey> {
    let config = Config::with_data_dir(data_dir);
    if create && !data_dir.join("db").exists() {
        return Latchkey::open(Config {
            offline: true,
            ..config
        });
    }
    open_existing(config)
}

async fn set_disabled(core: &Latchkey, user: &str, disabled: bool) -> Result<User> {
    let change = UserChange {
        roles: None,
        disabled: Some(disabled),
    };
    change_user(core, user, change).await
}

async fn change_user(core: &Latchkey, user: &str, change: UserChange) -> Result<User> {
    let id = if user.contains('@') {
        core.user_by_email(user)?.id
    } else {
        user.to_owned()
    };
    core.change_user(CLI_ACTOR, &id, change, ClientInfo::default())
        .await
}

/// One line about a user.
fn describe(core: &Latchkey, user: &User) -> Result<String> {
    let state = if user.disabled { "disabled" } else { "active" };
    Ok(format!(
        "{}  {}  {}  roles={}  {state}  sessions={}",
        user.id,
        user.email,
        user.username,
        user.roles.join(","),
        core.live_session_count(&user.id)?
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
pub fn keys(command: KeysCommand, out: &mut impl Write) -> Result<()> {
    let write_error = |err: std::io::Error| Error::Internal(format!("cannot write: {err}"));
    let data_dir = match &command {
        KeysCommand::Rotate { data_dir, .. } | KeysCommand::List { data_dir } => data_dir.clone(),
    };
    let _locked = open_existing(Config::with_data_dir(&data_dir))?;
    let mut ring = KeyRing::load(&data_dir)?.ok_or_else(|| {
        Error::Config(format!(
            "{} has no signing keys: latchkey signs with HS256 there (JWT_SECRET), which has no key pair to rotate",
            data_dir.display()
        ))
    })?;
    match command {
        KeysCommand::Rotate { signing_alg, .. } => {
            let previous = ring.active().map(|key| (key.kid.clone(), key.alg));
            let alg = signing_alg
                .or(previous.as_ref().map(|(_, alg)| *alg))
                .ok_or_else(|| Error::Config("the key ring has no active key".into()))?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or(0);
            let kid = ring.rotate(alg, now)?.kid.clone();
            ring.save(&data_dir)?;
            writeln!(out, "active {kid} {}", alg.as_str()).map_err(write_error)?;
            if let Some((old, _)) = previous {
                writeln!(
                    out,
                    "retired {old}: still published and accepted until the access tokens it signed expire"
                )
                .map_err(write_error)?;
            }
        }
        KeysCommand::List { .. } => {
            for key in ring.keys.iter().rev() {
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
