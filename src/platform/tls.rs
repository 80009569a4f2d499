//! HTTPS: a rustls server configuration from PEM files, TLS 1.2 and 1.3 only.

use std::path::Path;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain; empty disables TLS.
    pub cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

impl TlsSettings {
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty() || !self.key.is_empty()
    }
}

/// Installs the process-wide crypto provider; harmless if one is already installed.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

pub fn server_config(settings: &TlsSettings) -> anyhow::Result<ServerConfig> {
    if settings.cert.is_empty() || settings.key.is_empty() {
        anyhow::bail!("tls.cert and tls.key must both be set to enable HTTPS");
    }
    install_crypto_provider();
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(Path::new(&settings.cert))
            .map_err(|e| anyhow::anyhow!("tls.cert: cannot read {}: {e}", settings.cert))?
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("tls.cert: {}: {e}", settings.cert))?;
    if certs.is_empty() {
        anyhow::bail!("tls.cert: {} holds no certificate", settings.cert);
    }
    let key = PrivateKeyDer::from_pem_file(Path::new(&settings.key)).map_err(|e| {
        anyhow::anyhow!(
            "tls.key: cannot read a private key from {}: {e}",
            settings.key
        )
    })?;
    ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| anyhow::anyhow!("tls: certificate and key do not fit together: {e}"))
}
