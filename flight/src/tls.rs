//! TLS for the Flight SQL server (rustls: TLS 1.2 and 1.3 only), and mTLS: with a client CA
//! configured, a client must present a certificate that CA signed or the connection is refused
//! during the TLS handshake — before any request reaches the service.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::{Error, Result};

/// `[tls]`: the server's certificate, and the CA of client certificates for mTLS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of this server (leaf first). Empty: plaintext.
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file`.
    pub key_file: PathBuf,
    /// PEM CA certificate(s). Set: every client must present a certificate signed by one of
    /// them (mTLS).
    pub client_ca_file: PathBuf,
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Config(format!("{key}: cannot read {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(Error::Config(format!(
            "{key}: {} is not PEM",
            path.display()
        )));
    }
    Ok(bytes)
}

impl TlsConfig {
    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }

    /// Whether clients must present certificates.
    pub fn mutual(&self) -> bool {
        !self.client_ca_file.as_os_str().is_empty()
    }

    /// The tonic server configuration; `None` when TLS is off. Errors name the key.
    pub fn server_config(&self) -> Result<Option<ServerTlsConfig>> {
        if !self.enabled() {
            if self.key_file.as_os_str().is_empty() && !self.mutual() {
                return Ok(None);
            }
            return Err(Error::Config(
                "tls.cert_file: required when tls.key_file or tls.client_ca_file is set".into(),
            ));
        }
        if self.key_file.as_os_str().is_empty() {
            return Err(Error::Config(
                "tls.key_file: required with tls.cert_file".into(),
            ));
        }
        let cert = read("tls.cert_file", &self.cert_file)?;
        let key = read("tls.key_file", &self.key_file)?;
        let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if self.mutual() {
            let ca = read("tls.client_ca_file", &self.client_ca_file)?;
            cfg = cfg
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(false);
        }
        Ok(Some(cfg))
    }
}
