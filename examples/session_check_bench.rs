//! What the `session_revoked` check costs: authenticating an access token on
//! latchkey's routes is a signature check plus two store reads (its session
//! and its user). This prints both, per algorithm, and the share the reads
//! add. The baseline verifies the same token the way another service
//! would: jsonwebtoken with the published public key (or the HS256 secret).
//!
//! ```text
//! cargo run --release --example session_check_bench [iterations]
//! ```
//!
//! Figures depend on the machine; read the ratio, not the absolutes.

use std::time::Instant;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use latchkey::config::{RateLimits, SigningAlg};
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
        "alg", "verify only (µs)", "verify + session (µs)", "reads add"
    );
    for alg in [SigningAlg::Hs256, SigningAlg::EdDsa, SigningAlg::Es256] {
        let dir = tempfile::tempdir()?;
        let config = Config {
            signing_alg: Some(alg),
            limits: RateLimits::off(),
            ..Config::with_data_dir(dir.path())
        };
        let core = Latchkey::open(config)?;
        core.register("bench", "bench@example.com", PASSWORD, Default::default())
            .await?;
        let pair = core
            .login("bench@example.com", PASSWORD, None, Default::default())
            .await?;
        let token = pair.access_token.expose().to_owned();

        // The same key, as another service holds it: the baseline.
        let (key, jose) = match alg {
            SigningAlg::Hs256 => {
                let secret = std::fs::read_to_string(dir.path().join("jwt_secret"))?;
                (
                    DecodingKey::from_secret(secret.trim().as_bytes()),
                    Algorithm::HS256,
                )
            }
            SigningAlg::EdDsa => {
                let jwk = core.public_keys().remove(0);
                (DecodingKey::from_ed_components(&jwk.x)?, Algorithm::EdDSA)
            }
            SigningAlg::Es256 => {
                let jwk = core.public_keys().remove(0);
                let y = jwk.y.ok_or("no y")?;
                (
                    DecodingKey::from_ec_components(&jwk.x, &y)?,
                    Algorithm::ES256,
                )
            }
        };
        let mut validation = Validation::new(jose);
        validation.validate_aud = false;

        let started = Instant::now();
        for _ in 0..iterations {
            let token = std::hint::black_box(&token);
            std::hint::black_box(jsonwebtoken::decode::<serde_json::Value>(
                token,
                &key,
                &validation,
            )?);
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
