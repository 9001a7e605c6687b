//! Test support: a CA and a server certificate generated per test, and a TLS
//! handshake in memory against a server that presents that certificate, to
//! check what a client configuration accepts.

use std::{path::PathBuf, sync::Arc};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::{
    ClientConfig, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};

/// A CA of its own and a server certificate it signed.
pub(crate) struct Pki {
    pub(crate) ca_pem: String,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl Pki {
    /// A new CA, and a certificate for `names` (host names or IP addresses).
    pub(crate) fn new(names: &[&str]) -> Self {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: another test CA must be unknown, not a namesake.
        let name = format!("wm test CA {}", uuid::Uuid::new_v4());
        ca.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        Self {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes the CA certificate to a file of its own; returns its path.
    pub(crate) fn ca_file(&self) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wm-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }

    fn server_config(&self) -> Arc<ServerConfig> {
        let chain = vec![CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        let config = ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }

    /// A TLS handshake, in memory, of `client` connecting to `host` with a
    /// server that presents this certificate; the client's error if it fails.
    pub(crate) async fn handshake(
        &self,
        client: Arc<ClientConfig>,
        host: &str,
    ) -> Result<(), String> {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server_config());
        let server = tokio::spawn(async move { acceptor.accept(server_io).await.map(drop) });
        let name = ServerName::try_from(host.to_owned()).unwrap();
        let result = tokio_rustls::TlsConnector::from(client)
            .connect(name, client_io)
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        let _ = server.await;
        result
    }
}
