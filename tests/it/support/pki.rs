//! Certificates for the TLS tests: a CA of the test's own and a server
//! certificate it signed, written to files that servers and settings name.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use uuid::Uuid;

/// A CA of the test's own and a server certificate it signed, as files
/// (removed when it is dropped: keep it while a server or setting uses them).
pub(crate) struct Pki {
    pub(crate) dir: PathBuf,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl Pki {
    pub(crate) fn new(names: &[&str]) -> Self {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: another test CA must be unknown, not a namesake.
        let name = format!("wm test CA {}", Uuid::new_v4());
        ca.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let dir = std::env::temp_dir().join(format!("wm-pki-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Self {
            dir,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        std::fs::write(pki.ca(), ca.pem()).unwrap();
        std::fs::write(pki.dir.join("server.crt"), &pki.cert_pem).unwrap();
        std::fs::write(pki.dir.join("server.key"), &pki.key_pem).unwrap();
        pki
    }

    /// The CA certificate's file.
    pub(crate) fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub(crate) fn ca_str(&self) -> String {
        self.ca().display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
