//! HTTPS: reads `--tls-cert` / `--tls-key`, checks them before serving, and
//! builds the rustls acceptor (ALPN `h2` and `http/1.1`). A wrong path, an
//! empty file or a key that does not belong to the certificate stops
//! latchkey at startup with a clear message.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;

/// The TLS acceptor to serve with, or `None` to serve plain HTTP.
///
/// # Errors
/// An I/O error naming the file and what is wrong with it.
pub(super) fn acceptor(config: &Config) -> io::Result<Option<tokio_rustls::TlsAcceptor>> {
    let (Some(cert_path), Some(key_path)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let cert = read(cert_path, "--tls-cert")?;
    let key = read(key_path, "--tls-key")?;
    let server = server_config(&cert, &key).map_err(|problem| {
        io::Error::other(format!(
            "TLS certificate {} with key {}: {problem}",
            cert_path.display(),
            key_path.display()
        ))
    })?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}

fn read(path: &Path, flag: &str) -> io::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|err| io::Error::other(format!("cannot read {flag} {}: {err}", path.display())))
}

/// Parses both PEM files into a rustls server config, which fails when the
/// key does not match the certificate.
fn server_config(cert: &[u8], key: &[u8]) -> Result<rustls::ServerConfig, String> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("the certificate is not PEM: {err}"))?;
    if chain.is_empty() {
        return Err("the certificate file holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|err| format!("the key is not a PEM private key: {err}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|err| format!("unusable: {err}"))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matching_pair_offers_h2_and_http_1_1() {
        let generated =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("certificate");
        let server = server_config(
            generated.cert.pem().as_bytes(),
            generated.signing_key.serialize_pem().as_bytes(),
        )
        .expect("a matching pair");
        assert_eq!(
            server.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let one = rcgen::generate_simple_self_signed(vec!["a.example".into()]).expect("one");
        let other = rcgen::generate_simple_self_signed(vec!["b.example".into()]).expect("other");
        let problem = server_config(
            one.cert.pem().as_bytes(),
            other.signing_key.serialize_pem().as_bytes(),
        )
        .expect_err("mismatch");
        assert!(problem.contains("unusable"), "{problem}");
        assert!(server_config(b"", one.signing_key.serialize_pem().as_bytes()).is_err());
    }
}
