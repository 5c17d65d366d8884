//! What the `session_revoked` check costs: authenticating an access token on
//! latchkey's routes is a signature check plus one store read of its
//! session. This prints both, per algorithm, and the share the read adds.
//!
//! ```text
//! cargo run --release --example session_check_bench [iterations]
//! ```
//!
//! Figures depend on the machine; read the ratio, not the absolutes.

use std::time::Instant;

use latchkey::config::{RateLimits, SigningAlg};
use latchkey::model::Secret;
use latchkey::tokens::keys::KeyRing;
use latchkey::tokens::{AccessSigner, Tokens};
use latchkey::{Config, Latchkey};

const PASSWORD: &str = "correct horse battery staple";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: u32 = std::env::args()
        .nth(1)
        .map(|text| text.parse())
        .transpose()?
        .unwrap_or(100_000);
    println!("iterations per figure: {iterations}");
    println!(
        "{:<7} {:>16} {:>22} {:>12}",
        "alg", "verify only (µs)", "verify + session (µs)", "read adds"
    );
    for alg in [SigningAlg::Hs256, SigningAlg::EdDsa, SigningAlg::Es256] {
        let dir = tempfile::tempdir()?;
        let config = Config {
            signing_alg: Some(alg),
            limits: RateLimits::off(),
            ..Config::with_data_dir(dir.path())
        };
        let core = Latchkey::open(config.clone())?;
        core.register("bench", "bench@example.com", PASSWORD, Default::default())
            .await?;
        let pair = core
            .login("bench@example.com", PASSWORD, Default::default())
            .await?;
        let token = pair.access_token.expose().to_owned();

        // The same keys, without the store: the baseline.
        let access = match alg {
            SigningAlg::Hs256 => AccessSigner::Secret(Secret::new(
                std::fs::read_to_string(dir.path().join("jwt_secret"))?.trim(),
            )),
            _ => AccessSigner::Keys(KeyRing::load(dir.path())?.ok_or("no key ring")?),
        };
        let refresh =
            Secret::new(std::fs::read_to_string(dir.path().join("refresh_token_secret"))?.trim());
        let tokens = Tokens::new(&access, &refresh, &config)?;
        let now = core.clock().now();

        let started = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(tokens.verify_access(std::hint::black_box(&token), now)?);
        }
        let verify = started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);

        let started = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(core.authenticate(std::hint::black_box(&token))?);
        }
        let full = started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);

        println!(
            "{:<7} {verify:>16.2} {full:>22.2} {:>11.0}%",
            alg.as_str(),
            (full / verify - 1.0) * 100.0
        );
    }
    Ok(())
}
