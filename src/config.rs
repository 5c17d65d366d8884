//! Every setting latchkey has, with its default, readable from flags and the
//! environment (clap). The library takes a [`Config`]; the binary parses a
//! [`Cli`]. Depends only on `model` (for the redacting [`Secret`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::model::Secret;

/// Default access-token lifetime.
pub const DEFAULT_ACCESS_TTL: &str = "15m";
/// Default refresh-token (session) lifetime.
pub const DEFAULT_REFRESH_TTL: &str = "7d";
/// Default pause between two sweeps of expired refresh tokens.
pub const DEFAULT_SWEEP_INTERVAL: &str = "10m";
/// Default `iss` claim.
pub const DEFAULT_ISSUER: &str = "latchkey";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./data";

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
    pub command: Option<Command>,
    /// `serve` flags, also accepted without the `serve` word.
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl Cli {
    /// The command to run, `serve` with the top-level flags when none was named.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
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
    /// Core settings.
    #[command(flatten)]
    pub config: Config,
}

/// The settings the latchkey core runs with.
///
/// `Config::default()` is what `latchkey serve` uses with no flags and no
/// environment: data in `./data`, 15-minute access tokens, 7-day refresh
/// tokens, a sweep every 10 minutes, no `Secure` cookie attribute, secrets
/// generated on first start and kept in the data directory.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Directory of the database and generated secrets.
    #[arg(long, env = "LATCHKEY_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Access-token lifetime (humantime: 30s, 15m, 1h).
    #[arg(long, env = "LATCHKEY_ACCESS_TTL", default_value = DEFAULT_ACCESS_TTL, value_parser = humantime::parse_duration)]
    pub access_ttl: Duration,
    /// Refresh-token lifetime, the longest a session lives without a login (humantime: 12h, 7d).
    #[arg(long, env = "LATCHKEY_REFRESH_TTL", default_value = DEFAULT_REFRESH_TTL, value_parser = humantime::parse_duration)]
    pub refresh_ttl: Duration,
    /// Pause between two sweeps of expired refresh tokens (humantime).
    #[arg(long, env = "LATCHKEY_SWEEP_INTERVAL", default_value = DEFAULT_SWEEP_INTERVAL, value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,
    /// Mark cookies `Secure` (always on when latchkey serves TLS itself).
    #[arg(long, env = "LATCHKEY_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// The `iss` claim of every token latchkey issues; tokens with another issuer are refused.
    #[arg(long, env = "LATCHKEY_ISSUER", default_value = DEFAULT_ISSUER)]
    pub issuer: String,
    /// The `aud` claim of access tokens; when set, access tokens for another audience are refused.
    #[arg(long, env = "LATCHKEY_AUDIENCE")]
    pub audience: Option<String>,
    /// How many password hashes may run at once (default: one less than the
    /// number of cores, at least one, so token checks keep a core).
    #[arg(long, env = "LATCHKEY_HASH_CONCURRENCY", value_parser = clap::value_parser!(u16).range(1..))]
    pub hash_concurrency: Option<u16>,
    /// HMAC secret of access tokens; from `JWT_SECRET`, else generated and kept in the data dir.
    #[arg(skip)]
    pub jwt_secret: Option<Secret>,
    /// HMAC secret of refresh tokens; from `REFRESH_TOKEN_SECRET`, else generated and kept in the data dir.
    #[arg(skip)]
    pub refresh_secret: Option<Secret>,
}

impl Config {
    /// Reads `JWT_SECRET` and `REFRESH_TOKEN_SECRET` from the environment
    /// (after a `.env` file, if the binary loaded one). Secrets are never flags:
    /// a flag would show in `ps`.
    pub fn with_secrets_from_env(mut self) -> Self {
        let read = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        self.jwt_secret = read("JWT_SECRET").map(Secret::new);
        self.refresh_secret = read("REFRESH_TOKEN_SECRET").map(Secret::new);
        self
    }

    /// The default settings with another data directory.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            ..Config::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let duration = |text: &str| {
            humantime::parse_duration(text).expect("invariant: default durations parse")
        };
        Config {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            access_ttl: duration(DEFAULT_ACCESS_TTL),
            refresh_ttl: duration(DEFAULT_REFRESH_TTL),
            sweep_interval: duration(DEFAULT_SWEEP_INTERVAL),
            secure_cookies: false,
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: None,
            hash_concurrency: None,
            jwt_secret: None,
            refresh_secret: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_defaults_match_config_default() {
        let cli = Cli::try_parse_from(["latchkey"]).expect("parses");
        let parsed = cli.serve.config;
        let default = Config::default();
        assert_eq!(parsed.data_dir, default.data_dir);
        assert_eq!(parsed.access_ttl, default.access_ttl);
        assert_eq!(parsed.refresh_ttl, default.refresh_ttl);
        assert_eq!(parsed.sweep_interval, default.sweep_interval);
        assert_eq!(parsed.secure_cookies, default.secure_cookies);
        assert_eq!(parsed.issuer, default.issuer);
        assert_eq!(parsed.audience, default.audience);
    }

    #[test]
    fn serve_flags_work_with_and_without_the_subcommand() {
        let bare = Cli::try_parse_from(["latchkey", "--access-ttl", "2s"]).expect("parses");
        let Command::Serve(args) = bare.into_command() else {
            panic!("expected serve");
        };
        assert_eq!(args.config.access_ttl, Duration::from_secs(2));
        let named =
            Cli::try_parse_from(["latchkey", "serve", "--refresh-ttl", "1d"]).expect("parses");
        let Command::Serve(args) = named.into_command() else {
            panic!("expected serve");
        };
        assert_eq!(args.config.refresh_ttl, Duration::from_secs(86_400));
    }
}
