//! HTTPS: reads `--tls-cert` / `--tls-key` and checks them before serving.
//!
//! poem's rustls acceptor only logs a bad certificate and then fails every
//! connection, so the files are parsed and matched here first (with rustls
//! itself): a wrong path, an empty file or a key that does not belong to
//! the certificate stops latchkey at startup with a clear message.
//!
//! poem's acceptor also races loading its config against the first accept
//! (a `select!` in random order): a client that connects at startup could
//! find no config and be dropped. [`ConfigFirst`] makes the first accept
//! yield once, so the ready config always wins that race.

use std::io;
use std::path::Path;
use std::sync::Arc;

use poem::http::uri::Scheme;
use poem::listener::{Acceptor, RustlsCertificate, RustlsConfig};
use poem::web::{LocalAddr, RemoteAddr};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;

/// The TLS settings to serve with, or `None` to serve plain HTTP.
///
/// # Errors
/// An I/O error naming the file and what is wrong with it.
pub(crate) fn config(config: &Config) -> io::Result<Option<RustlsConfig>> {
    let (Some(cert_path), Some(key_path)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let cert = read(cert_path, "--tls-cert")?;
    let key = read(key_path, "--tls-key")?;
    check(&cert, &key).map_err(|problem| {
        io::Error::other(format!(
            "TLS certificate {} with key {}: {problem}",
            cert_path.display(),
            key_path.display()
        ))
    })?;
    Ok(Some(
        RustlsConfig::new().fallback(RustlsCertificate::new().cert(cert).key(key)),
    ))
}

fn read(path: &Path, flag: &str) -> io::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|err| io::Error::other(format!("cannot read {flag} {}: {err}", path.display())))
}

/// Parses both PEM files and builds a rustls server config from them, which
/// fails when the key does not match the certificate.
fn check(cert: &[u8], key: &[u8]) -> Result<(), String> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("the certificate is not PEM: {err}"))?;
    if chain.is_empty() {
        return Err("the certificate file holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|err| format!("the key is not a PEM private key: {err}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|err| format!("unusable: {err}"))?;
    Ok(())
}

/// An acceptor whose first `accept` yields to the runtime once before
/// accepting (see the module docs).
pub(crate) struct ConfigFirst<A> {
    inner: A,
    yielded: bool,
}

impl<A> ConfigFirst<A> {
    pub(crate) fn new(inner: A) -> Self {
        ConfigFirst {
            inner,
            yielded: false,
        }
    }
}

impl<A: Acceptor> Acceptor for ConfigFirst<A> {
    type Io = A::Io;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        if !self.yielded {
            self.yielded = true;
            tokio::task::yield_now().await;
        }
        self.inner.accept().await
    }
}

#[cfg(test)]
mod tests {
    use poem::Addr;
    use poem::listener::AcceptorExt;
    use tokio::io::DuplexStream;

    use super::*;

    /// An acceptor with a connection always waiting: the worst case for the
    /// startup race.
    struct AlwaysReady;

    impl Acceptor for AlwaysReady {
        type Io = DuplexStream;

        fn local_addr(&self) -> Vec<LocalAddr> {
            Vec::new()
        }

        async fn accept(&mut self) -> io::Result<(DuplexStream, LocalAddr, RemoteAddr, Scheme)> {
            let (server_side, _client_side) = tokio::io::duplex(64);
            let addr = || Addr::Custom("test", "waiting client".into());
            Ok((
                server_side,
                LocalAddr(addr()),
                RemoteAddr(addr()),
                Scheme::HTTP,
            ))
        }
    }

    fn pem_pair() -> (Vec<u8>, Vec<u8>) {
        let generated =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("certificate");
        let cert = generated.cert.pem().into_bytes();
        let key = generated.signing_key.serialize_pem().into_bytes();
        check(&cert, &key).expect("a matching pair");
        (cert, key)
    }

    fn tls_config((cert, key): &(Vec<u8>, Vec<u8>)) -> RustlsConfig {
        RustlsConfig::new().fallback(RustlsCertificate::new().cert(cert.clone()).key(key.clone()))
    }

    #[tokio::test]
    async fn the_first_waiting_connection_always_finds_the_config_loaded() {
        let pair = pem_pair();
        for round in 0..64 {
            let mut acceptor = ConfigFirst::new(AlwaysReady)
                .rustls(futures_util::stream::iter([tls_config(&pair)]));
            assert!(acceptor.accept().await.is_ok(), "round {round}");
        }
    }

    #[tokio::test]
    async fn without_the_yield_poem_drops_some_first_connections() {
        // Pins the upstream race the wrapper exists for: if poem fixes it,
        // this test fails and the wrapper can go.
        let pair = pem_pair();
        let mut dropped = 0;
        for _ in 0..64 {
            let mut acceptor = AlwaysReady.rustls(futures_util::stream::iter([tls_config(&pair)]));
            if acceptor.accept().await.is_err() {
                dropped += 1;
            }
        }
        assert!(dropped > 0);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let one = rcgen::generate_simple_self_signed(vec!["a.example".into()]).expect("one");
        let other = rcgen::generate_simple_self_signed(vec!["b.example".into()]).expect("other");
        let problem = check(
            one.cert.pem().as_bytes(),
            other.signing_key.serialize_pem().as_bytes(),
        )
        .expect_err("mismatch");
        assert!(problem.contains("unusable"), "{problem}");
        assert!(check(b"", one.signing_key.serialize_pem().as_bytes()).is_err());
    }
}
