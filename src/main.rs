//! The `latchkey` binary: parse the command line, then serve until Ctrl-C or
//! SIGTERM or run an offline command. Errors are one line on stderr and a
//! non-zero exit.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command, LogFormat, ServeArgs};
use latchkey::{Latchkey, http};

fn main() -> ExitCode {
    // `.env` in the working directory, if present, feeds the environment
    // (JWT_SECRET, REFRESH_TOKEN_SECRET, PORT…); real variables win.
    let _ = dotenvy::dotenv();
    let (command, shared) = Cli::parse().into_command();
    match command {
        Command::Openapi => {
            println!("{}", http::spec());
            ExitCode::SUCCESS
        }
        Command::Serve(args) => {
            // Kept to the end: dropping it writes out the lines still queued.
            let _log_writer = init_logging(args.log_format);
            match serve(args, shared) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("latchkey: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        command => exit_with(offline(command, &shared)),
    }
}

/// Runs an offline command (user, keys, audit, export, import, migrate).
#[tokio::main]
async fn offline(command: Command, shared: &cli::Shared) -> latchkey::Result<()> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let (input, out) = (&mut stdin.lock(), &mut stdout.lock());
    match command {
        Command::Audit(args) => cli::audit(&args, shared, out).await,
        Command::User(command) => cli::user(command, shared, input, out).await,
        Command::Keys(command) => cli::keys(command, shared, out).await,
        Command::Export(args) => cli::export(&args, shared, out).await,
        Command::Import(args) => cli::import(&args, shared, input, out).await,
        Command::Migrate => cli::migrate(shared, out).await,
        Command::Serve(_) | Command::Openapi => Ok(()),
    }
}

fn exit_with(outcome: latchkey::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("latchkey: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr through a writer thread, so that a request never waits
/// for the terminal or the pipe behind stderr (under load a slow reader
/// would stall every worker); lines beyond its queue are dropped, not
/// waited for.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let (mut filter, unreadable) = match EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, None),
        Err(err) => {
            let set = std::env::var_os(EnvFilter::DEFAULT_ENV).is_some();
            (EnvFilter::new("info"), set.then(|| err.to_string()))
        }
    };
    // sled's debug and trace events print whole records (emails, password
    // hashes): never shown, whatever RUST_LOG asks.
    if let Ok(directive) = "sled=info".parse() {
        filter = filter.add_directive(directive);
    }
    // Buffered: the writer thread flushes whenever it has drained its
    // queue, so a busy server writes its lines in batches.
    let stderr = std::io::BufWriter::with_capacity(64 << 10, std::io::stderr());
    // At most 16,384 lines wait (a few MiB: a request's line is short);
    // beyond, lines are dropped.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(16_384)
        .lossy(true)
        .finish(stderr);
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    match format {
        LogFormat::Pretty => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
    if let Some(err) = unreadable {
        tracing::warn!(error = %err, "RUST_LOG is not a valid filter; logging at info");
    }
    guard
}

#[tokio::main]
async fn serve(args: ServeArgs, shared: cli::Shared) -> anyhow::Result<()> {
    // Every connection is a descriptor: take all the kernel allows (the
    // server caps connections below it).
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %err, "cannot raise the open-file limit");
    }
    let mut config = latchkey::Config {
        data_dir: shared.data_dir,
        extra_roles: shared.extra_roles,
        ..args.config
    }
    .with_secrets_from_env();
    config.validate()?;
    let address = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    if config.public_url.is_none() {
        // Where this server listens (the port it got, for `--port 0`):
        // right for a machine of one's own; behind a proxy, set --public-url.
        let scheme = if config.serves_tls() { "https" } else { "http" };
        let local = listener.local_addr()?;
        config.public_url = Some(format!("{scheme}://{local}"));
        if local.ip().is_unspecified() || config.smtp_url.is_some() {
            tracing::warn!(
                public_url = config.public_url.as_deref().unwrap_or_default(),
                "the links in mails point at the listening address; set --public-url to where users reach latchkey"
            );
        }
    }
    let shown = match config.database_url.is_some() {
        true => "PostgreSQL (DATABASE_URL)".to_owned(),
        false => format!("data directory {}", config.data_dir.display()),
    };
    let core = Latchkey::open(config)
        .await
        .with_context(|| format!("cannot start on {shown}"))?;
    tracing::info!(store = core.backend(), "store open");
    if let Some(origin) = core.passkey_origin() {
        tracing::info!(origin, "passkeys work on pages of this origin");
    }
    latchkey::run(listener, core, shutdown_signal()).await?;
    tracing::info!("latchkey stopped");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
