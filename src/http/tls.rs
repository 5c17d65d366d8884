//! HTTPS: reads `--tls-cert` / `--tls-key` and checks them before serving.
//!
//! poem's rustls acceptor only logs a bad certificate and then fails every
//! connection, so the files are parsed and matched here first (with rustls
//! itself): a wrong path, an empty file or a key that does not belong to
//! the certificate stops latchkey at startup with a clear message.

use std::io;
use std::path::Path;
use std::sync::Arc;

use poem::listener::{RustlsCertificate, RustlsConfig};
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
