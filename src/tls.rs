//! The rustls client configurations of the three connections (Kafka,
//! PostgreSQL, Redis), in one place so that they trust and verify the same
//! way: roots from a PEM CA file when one is configured, else the system's,
//! and one of three levels of verification (libpq's `verify-full`,
//! `verify-ca` and `require`). Cryptography is ring's, the provider every
//! TLS-using dependency of the service is built with.

use std::{path::Path, sync::Arc};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Signed by a trusted root and issued for the host connected to.
    Full,
    /// Signed by a trusted root, whatever host it names.
    Chain,
    /// Nothing: the connection is encrypted, but the server is not
    /// authenticated (the handshake's signatures are still checked).
    Nothing,
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the CA file {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("the CA file {path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("the CA file {path} does not parse: {cause}")]
    Pem {
        path: String,
        cause: rustls::pki_types::pem::Error,
    },
    #[error("the CA file {path} holds a certificate that cannot be trusted: {cause}")]
    BadCertificate { path: String, cause: rustls::Error },
    #[error("no CA certificate found on the system; set a CA file")]
    NoSystemRoots,
    #[error("cannot set TLS up: {0}")]
    Setup(String),
}

/// The cryptography of every TLS connection of the service.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that verifies as `verify` says, trusting the
/// certificates of `ca_file` (PEM) or, without one, the system's roots.
pub fn client_config(
    verify: Verify,
    ca_file: Option<&Path>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let config = match verify {
        Verify::Full => builder
            .with_root_certificates(roots(ca_file)?)
            .with_no_client_auth(),
        Verify::Chain => {
            let full = WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(ca_file)?),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(full)))
                .with_no_client_auth()
        }
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The certificates of `ca_file`, or the system's when there is none.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    let Some(path) = ca_file else {
        let found = rustls_native_certs::load_native_certs();
        let (added, _ignored) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(TlsError::NoSystemRoots);
        }
        return Ok(store);
    };
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|cause| TlsError::Read {
        path: shown.clone(),
        cause,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|cause| TlsError::Pem {
            path: shown.clone(),
            cause,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: shown });
    }
    for cert in certs {
        store.add(cert).map_err(|cause| TlsError::BadCertificate {
            path: shown.clone(),
            cause,
        })?;
    }
    Ok(store)
}

/// `verify-ca`: the full check, with a certificate for another host accepted.
/// rustls checks the name last, once the chain is verified, so a name error
/// means the chain is good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require`: any certificate. The handshake's signatures are still checked,
/// so the session is encrypted with the key of the certificate presented.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::{testing::Pki, *};

    #[tokio::test]
    async fn full_verification_needs_the_ca_and_the_host_name() {
        let pki = Pki::new(&["db.test", "127.0.0.1"]);
        let trusting = client_config(Verify::Full, Some(&pki.ca_file())).unwrap();
        assert_eq!(
            pki.handshake(Arc::clone(&trusting), "db.test").await,
            Ok(())
        );
        assert_eq!(
            pki.handshake(Arc::clone(&trusting), "127.0.0.1").await,
            Ok(())
        );
        let err = pki.handshake(trusting, "other.test").await.unwrap_err();
        assert!(err.contains("not valid for name"), "{err}");
        let stranger = Pki::new(&["db.test"]);
        let other_ca = client_config(Verify::Full, Some(&stranger.ca_file())).unwrap();
        let err = pki.handshake(other_ca, "db.test").await.unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
    }

    #[tokio::test]
    async fn chain_verification_accepts_another_host_name_but_not_another_ca() {
        let pki = Pki::new(&["db.test"]);
        let trusting = client_config(Verify::Chain, Some(&pki.ca_file())).unwrap();
        assert_eq!(pki.handshake(trusting, "other.test").await, Ok(()));
        let stranger = Pki::new(&["db.test"]);
        let other_ca = client_config(Verify::Chain, Some(&stranger.ca_file())).unwrap();
        let err = pki.handshake(other_ca, "db.test").await.unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
    }

    #[tokio::test]
    async fn no_verification_accepts_any_certificate() {
        let pki = Pki::new(&["db.test"]);
        let config = client_config(Verify::Nothing, None).unwrap();
        assert_eq!(pki.handshake(config, "elsewhere.test").await, Ok(()));
    }

    #[test]
    fn a_bad_ca_file_is_named_in_the_error() {
        let missing = Path::new("/nonexistent/wm-ca.pem");
        let err = client_config(Verify::Full, Some(missing)).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/wm-ca.pem"), "{err}");

        let dir = std::env::temp_dir().join(format!("wm-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = client_config(Verify::Full, Some(&empty)).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = client_config(Verify::Full, Some(&broken)).unwrap_err();
        assert!(matches!(err, TlsError::BadCertificate { .. }), "{err}");
    }
}
