//! The offline subcommands (`latchkey audit`): they open the data directory
//! themselves, so they run while the server is stopped (sled's lock makes a
//! running server a clear error), and print for a terminal or, with
//! `--json`, one JSON object per line. Depends on `service` and `config`.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{AuditArgs, Config};
use crate::error::{Error, Result};
use crate::model::{AuditEvent, format_time};
use crate::service::Latchkey;

/// Opens an existing data directory for an offline command.
///
/// # Errors
/// [`Error::Config`] when the directory holds no latchkey database,
/// [`Error::DataDirLocked`] when the server is running on it, or what
/// [`Latchkey::open`] returns.
pub fn open_existing(config: Config) -> Result<Latchkey> {
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
