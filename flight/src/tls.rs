//! TLS for the Flight SQL and HTTP servers (rustls: TLS 1.2 and 1.3 only), and mTLS: with a
//! client CA configured, a client must present a certificate that CA signed or the connection
//! is refused during the TLS handshake — before any request reaches a service.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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

    /// The certificate chain and key (PEM); `None` when TLS is off.
    fn identity_pem(&self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
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
        Ok(Some((
            read("tls.cert_file", &self.cert_file)?,
            read("tls.key_file", &self.key_file)?,
        )))
    }

    /// The tonic server configuration; `None` when TLS is off. Errors name the key.
    pub fn server_config(&self) -> Result<Option<ServerTlsConfig>> {
        let Some((cert, key)) = self.identity_pem()? else {
            return Ok(None);
        };
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

impl TlsConfig {
    /// The rustls configuration of the HTTP server (same certificate and client CA as Flight);
    /// `None` when TLS is off.
    pub fn http_config(&self) -> Result<Option<Arc<rustls::ServerConfig>>> {
        let Some((cert, key)) = self.identity_pem()? else {
            return Ok(None);
        };
        let chain = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("tls.cert_file: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(&key)
            .map_err(|e| Error::Config(format!("tls.key_file: {e}")))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("tls: {e}")))?;
        let builder = if self.mutual() {
            let ca = read("tls.client_ca_file", &self.client_ca_file)?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&ca) {
                let c = c.map_err(|e| Error::Config(format!("tls.client_ca_file: {e}")))?;
                roots
                    .add(c)
                    .map_err(|e| Error::Config(format!("tls.client_ca_file: {e}")))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| Error::Config(format!("tls.client_ca_file: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut cfg = builder
            .with_single_cert(chain, key)
            .map_err(|e| Error::Config(format!("tls.cert_file / tls.key_file: {e}")))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Arc::new(cfg)))
    }
}
