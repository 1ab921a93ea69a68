//! TLS configurations: the server side (STARTTLS and implicit TLS on the
//! listeners) and the client side (delivery), all on rustls with the ring
//! provider.
//!
//! Owns: TLS 1.2 as the floor everywhere (rustls has nothing older), the
//! certificate Ward presents (configured, or self-signed and generated once
//! into `<data_dir>/tls/`), optional client-certificate requests for relay
//! authorization by fingerprint, and the two client configurations delivery
//! chooses between: one that verifies chain and name (policy `verify`) and one
//! that only encrypts (`encrypt`, `may`). Both record what was negotiated so
//! evidence is kept for every delivery attempt.
//!
//! Carries invariant 3 in part: the verifying client config never accepts a
//! certificate that fails chain or name checks; policy decisions live in
//! `delivery` and `dispatch`.

use std::fmt;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

use crate::config::{Config, DeliveryConfig, TlsVersion};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("generating the self-signed certificate: {0}")]
    Generate(String),
    #[error("no trusted CA certificates: system roots are off and no ca_file is set")]
    NoRoots,
}

/// The ring provider, shared by every config.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

static TLS12_UP: [&rustls::SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];
static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

fn versions(min: TlsVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match min {
        TlsVersion::Tls12 => &TLS12_UP,
        TlsVersion::Tls13 => &TLS13_ONLY,
    }
}

/// A certificate chain and its key, as loaded or generated.
pub struct CertifiedKey {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// True when the pair was generated (self-signed) by this call.
    pub generated: bool,
    /// True when the pair is Ward's own self-signed one.
    pub self_signed: bool,
}

/// Loads the configured certificate, or the self-signed one from
/// `<data_dir>/tls/`, generating it on first use.
pub fn server_certificate(config: &Config) -> Result<CertifiedKey, TlsError> {
    if !config.tls.cert_file.as_os_str().is_empty() {
        let chain = load_certs(&config.tls.cert_file)?;
        let key = load_key(&config.tls.key_file)?;
        return Ok(CertifiedKey {
            chain,
            key,
            generated: false,
            self_signed: false,
        });
    }
    let dir = config.server.data_dir.join("tls");
    let cert_path = dir.join("selfsigned.crt");
    let key_path = dir.join("selfsigned.key");
    if cert_path.exists() && key_path.exists() {
        let chain = load_certs(&cert_path)?;
        let key = load_key(&key_path)?;
        return Ok(CertifiedKey {
            chain,
            key,
            generated: false,
            self_signed: true,
        });
    }
    let hostname = config.server.effective_hostname();
    let mut names = vec![hostname.clone()];
    if hostname != "localhost" {
        names.push("localhost".into());
    }
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Ward self-signed");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(825);
    let key_pair = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    let file_err = |path: &Path, e: std::io::Error| TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
    write_private(&key_path, key_pair.serialize_pem().as_bytes()).map_err(|e| file_err(&key_path, e))?;
    std::fs::write(&cert_path, cert.pem()).map_err(|e| file_err(&cert_path, e))?;
    let chain = vec![cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(key_pair.serialize_der().into());
    Ok(CertifiedKey {
        chain,
        key,
        generated: true,
        self_signed: true,
    })
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::File {
        path: path.to_path_buf(),
        reason,
    };
    let f = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(f))
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(err("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let err = |reason: String| TlsError::File {
        path: path.to_path_buf(),
        reason,
    };
    let f = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    rustls_pemfile::private_key(&mut BufReader::new(f))
        .map_err(|e| err(format!("not a PEM key file: {e}")))?
        .ok_or_else(|| err("holds no private key".into()))
}

/// Builds the listeners' server config. When `request_client_certs` is set,
/// clients are asked for a certificate (optional; any certificate is accepted
/// at the TLS layer and matched by fingerprint by relay authorization).
pub fn server_config(
    config: &Config,
    cert: &CertifiedKey,
    request_client_certs: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(config.tls.min_version))?;
    let builder = if request_client_certs {
        builder.with_client_cert_verifier(Arc::new(FingerprintClientCerts {
            algorithms: provider.signature_verification_algorithms,
        }))
    } else {
        builder.with_no_client_auth()
    };
    let mut sc = builder.with_single_cert(cert.chain.clone(), cert.key.clone_key())?;
    sc.alpn_protocols.clear();
    Ok(Arc::new(sc))
}

/// The server configuration of the HTTPS pickup portal: the same
/// certificate and minimum version as the SMTP listeners, HTTP/1.1 by ALPN,
/// no client certificates.
pub fn https_server_config(config: &Config, cert: &CertifiedKey) -> Result<Arc<ServerConfig>, TlsError> {
    let mut sc = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(config.tls.min_version))?
        .with_no_client_auth()
        .with_single_cert(cert.chain.clone(), cert.key.clone_key())?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(sc))
}

/// SHA-256 of a DER certificate (what `relay.client_certificate.sha256` holds).
pub fn fingerprint(cert: &CertificateDer<'_>) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Asks for a client certificate, accepts any (the handshake still proves the
/// client holds its key); relay authorization compares fingerprints.
#[derive(Debug)]
struct FingerprintClientCerts {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for FingerprintClientCerts {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The client side: configs for `verify` and for `encrypt`/`may`, and a
/// verifier to tell, after an unverified handshake, whether the certificate
/// would have verified (recorded as evidence).
#[derive(Clone)]
pub struct ClientTls {
    /// Chain to a trusted root and name matching the expected host required.
    pub verifying: Arc<ClientConfig>,
    /// Any certificate accepted (handshake signatures still checked).
    pub unverified: Arc<ClientConfig>,
    verifier: Arc<WebPkiServerVerifier>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    pub fn new(delivery: &DeliveryConfig) -> Result<ClientTls, TlsError> {
        let mut roots = RootCertStore::empty();
        if delivery.system_roots {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A single unparsable system certificate must not stop Ward.
                let _ = roots.add(cert);
            }
        }
        if !delivery.ca_file.as_os_str().is_empty() {
            for cert in load_certs(&delivery.ca_file)? {
                roots.add(cert).map_err(|e| TlsError::File {
                    path: delivery.ca_file.clone(),
                    reason: format!("unusable CA certificate: {e}"),
                })?;
            }
        }
        let provider = provider();
        let verifier = if roots.is_empty() {
            // Nothing can verify; build a verifier over an empty store that
            // fails every chain, rather than refusing to start when no
            // destination uses `verify`.
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Generate(e.to_string()))?,
            )
        };
        let verifier: Arc<WebPkiServerVerifier> = match verifier {
            Some(v) => v,
            None => {
                // An empty store can't build a WebPkiServerVerifier; use a
                // throwaway self-signed root nobody has the key for.
                let kp = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
                let params = rcgen::CertificateParams::new(vec!["no-trust-anchor.invalid".into()])
                    .map_err(|e| TlsError::Generate(e.to_string()))?;
                let cert = params
                    .self_signed(&kp)
                    .map_err(|e| TlsError::Generate(e.to_string()))?;
                let mut store = RootCertStore::empty();
                store
                    .add(cert.der().clone())
                    .map_err(|e| TlsError::Generate(e.to_string()))?;
                WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Generate(e.to_string()))?
            }
        };
        let tls12_up = versions(TlsVersion::Tls12);
        let verifying = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(tls12_up)?
            .with_webpki_verifier(verifier.clone())
            .with_no_client_auth();
        let unverified = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(tls12_up)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth();
        Ok(ClientTls {
            verifying: Arc::new(verifying),
            unverified: Arc::new(unverified),
            verifier,
        })
    }

    /// Would this chain have passed `verify` for `name`? Used after an
    /// unverified handshake to record the truth in the evidence.
    pub fn would_verify(&self, chain: &[CertificateDer<'_>], name: &ServerName<'_>) -> bool {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return false;
        };
        self.verifier
            .verify_server_cert(end_entity, intermediates, name, &[], UnixTime::now())
            .is_ok()
    }
}

/// Accepts any server certificate but still checks the handshake signature,
/// so the session is at least bound to the key in the presented certificate.
#[derive(Debug)]
struct AnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyServerCert {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Protocol version as a short name ("TLSv1.3").
pub fn version_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        other => format!("{other:?}"),
    }
}

/// Cipher suite as its IANA name.
pub fn cipher_name(s: rustls::SupportedCipherSuite) -> String {
    s.suite()
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:?}", s.suite()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_generated_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("ward-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = Config::default();
        config.server.data_dir = dir.clone();
        config.server.hostname = "mail.example.test".into();
        let first = server_certificate(&config).unwrap();
        assert!(first.generated && first.self_signed);
        let second = server_certificate(&config).unwrap();
        assert!(!second.generated);
        assert_eq!(first.chain, second.chain);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("tls/selfsigned.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        server_config(&config, &second, true).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
