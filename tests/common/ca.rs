//! A throwaway certificate authority for tests (rcgen).
//!
//! `TestCa::new()` makes a CA certificate and writes it to a temporary
//! directory (`ca.ca_file()`, for `delivery.ca_file`). Leaves:
//!
//! - `ca.issue(&["mx.example.test"])`: signed by the CA, valid now;
//! - `ca.expired(&[..])`: signed by the CA, validity ended yesterday;
//! - `ca.wrong_name()`: signed by the CA for `wrong-name.invalid`;
//! - `ca.self_signed(&[..])`: signed by nobody the CA knows.
//!
//! Each returns a [`CertPair`] with the PEM texts and the files they were
//! written to, ready for a [`super::TestMx`] or a Ward listener.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use tempfile::TempDir;
use time::{Duration, OffsetDateTime};

/// A certificate (chain: the leaf only) and its private key.
#[derive(Debug, Clone)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The certificate's SubjectPublicKeyInfo (DER): what a browser's
    /// `--ignore-certificate-errors-spki-list` pins.
    pub spki_der: Vec<u8>,
}

/// A CA that lives as long as the value (its directory is removed on drop).
pub struct TestCa {
    dir: TempDir,
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_file: PathBuf,
    serial: AtomicUsize,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("ward-test-ca-")
            .tempdir()
            .expect("temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Ward Test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(2);
        params.not_after = now + Duration::days(365);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let cert_pem = cert.pem();
        let cert_file = dir.path().join("ca.crt");
        std::fs::write(&cert_file, &cert_pem).expect("write CA certificate");
        TestCa {
            issuer: Issuer::new(params, key),
            dir,
            cert_pem,
            cert_file,
            serial: AtomicUsize::new(0),
        }
    }

    /// The CA certificate (PEM file): what `delivery.ca_file` should name.
    pub fn ca_file(&self) -> &Path {
        &self.cert_file
    }

    /// The CA certificate as PEM text.
    pub fn ca_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The temporary directory the files are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A leaf for `names` (DNS names or IP addresses), signed by the CA,
    /// valid from yesterday for a year.
    pub fn issue(&self, names: &[&str]) -> CertPair {
        let now = OffsetDateTime::now_utc();
        self.leaf(names, now - Duration::days(1), now + Duration::days(365), true)
    }

    /// A leaf signed by the CA whose validity ended yesterday.
    pub fn expired(&self, names: &[&str]) -> CertPair {
        let now = OffsetDateTime::now_utc();
        self.leaf(names, now - Duration::days(30), now - Duration::days(1), true)
    }

    /// A leaf signed by the CA for a name no test MX uses.
    pub fn wrong_name(&self) -> CertPair {
        self.issue(&["wrong-name.invalid"])
    }

    /// A self-signed leaf for `names`: valid dates and names, untrusted.
    pub fn self_signed(&self, names: &[&str]) -> CertPair {
        let now = OffsetDateTime::now_utc();
        self.leaf(names, now - Duration::days(1), now + Duration::days(365), false)
    }

    fn leaf(
        &self,
        names: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        signed_by_ca: bool,
    ) -> CertPair {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first.as_str());
        }
        params.not_before = not_before;
        params.not_after = not_after;
        params.use_authority_key_identifier_extension = signed_by_ca;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("leaf key");
        let cert = if signed_by_ca {
            params.signed_by(&key, &self.issuer).expect("sign leaf")
        } else {
            params.self_signed(&key).expect("self-sign leaf")
        };
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        let stem = format!("leaf{n}");
        let cert_file = self.dir.path().join(format!("{stem}.crt"));
        let key_file = self.dir.path().join(format!("{stem}.key"));
        let pair = CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_file,
            key_file,
            spki_der: key.subject_public_key_info(),
        };
        std::fs::write(&pair.cert_file, &pair.cert_pem).expect("write leaf certificate");
        std::fs::write(&pair.key_file, &pair.key_pem).expect("write leaf key");
        pair
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}
