//! DKIM signing (RFC 6376, RFC 8463) of the mail Ward writes itself: pickup
//! notifications, one-time codes, opened notices and portal replies. They
//! come From `portal.notify_from`, and a receiver that checks DMARC for the
//! organization's domain would otherwise junk exactly the mail that tells a
//! recipient a secure message is waiting.
//!
//! [`DkimSigner::load`] reads `[dkim] key_file` once at start (PEM: RSA as
//! PKCS#8 or PKCS#1, signing rsa-sha256; Ed25519 as PKCS#8, signing
//! ed25519-sha256) and refuses a key it can't use, so a broken key stops
//! Ward at start instead of silently sending unsigned mail. Signing uses
//! mail-auth with relaxed/relaxed canonicalization over the header fields
//! Ward writes; the signature goes on top of the message.
//!
//! Errors name the key file, never the key or a message.
//!
//! Floor 2: imports `config` only.

use std::path::Path;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner as Signer, Done};
use rustls_pemfile::Item;

use crate::config::DkimConfig;

/// The header fields signed (those Ward writes; a field a message lacks is
/// still signed as absent, so it can't be added later).
const SIGNED_HEADERS: [&str; 12] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Auto-Submitted",
];

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("DKIM key file {0}: {1}")]
    Key(String, String),
    #[error("DKIM signing failed: {0}")]
    Sign(String),
}

enum Key {
    Rsa(Box<Signer<RsaKey<Sha256>, Done>>),
    Ed25519(Box<Signer<Ed25519Key, Done>>),
}

/// A loaded signing key with its domain and selector.
pub struct DkimSigner {
    key: Key,
    domain: String,
    selector: String,
}

impl std::fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimSigner")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

impl DkimSigner {
    /// The signer `[dkim]` configures; None when signing is off.
    pub fn load(config: &DkimConfig) -> Result<Option<DkimSigner>, DkimError> {
        if config.domain.is_empty() {
            return Ok(None);
        }
        let pem = std::fs::read(&config.key_file).map_err(|e| key_error(&config.key_file, e.to_string()))?;
        DkimSigner::from_pem(&pem, &config.domain, &config.selector)
            .map(Some)
            .map_err(|e| key_error(&config.key_file, e))
    }

    /// A signer from a PEM private key. Err says what is wrong with it.
    pub fn from_pem(pem: &[u8], domain: &str, selector: &str) -> Result<DkimSigner, String> {
        let mut reader = std::io::BufReader::new(pem);
        let item = loop {
            match rustls_pemfile::read_one(&mut reader) {
                Ok(Some(i @ (Item::Pkcs8Key(_) | Item::Pkcs1Key(_)))) => break i,
                Ok(Some(_)) => continue,
                Ok(None) => {
                    return Err("no PKCS#8 or PKCS#1 private key in it".into());
                }
                Err(e) => return Err(format!("not PEM: {e:?}")),
            }
        };
        let build_rsa = |k: RsaKey<Sha256>| Key::Rsa(Box::new(signer(k, domain, selector)));
        let key = match item {
            Item::Pkcs1Key(der) => RsaKey::<Sha256>::from_key_der(der.into())
                .map(build_rsa)
                .map_err(|e| format!("not a usable RSA key: {e}"))?,
            Item::Pkcs8Key(der) => {
                let bytes = der.secret_pkcs8_der().to_vec();
                match RsaKey::<Sha256>::from_key_der(der.into()) {
                    Ok(k) => build_rsa(k),
                    Err(_) => Ed25519Key::from_pkcs8_maybe_unchecked_der(&bytes)
                        .map(|k| Key::Ed25519(Box::new(signer(k, domain, selector))))
                        .map_err(|_| "neither an RSA (2048 bits or more) nor an Ed25519 key".to_string())?,
                }
            }
            _ => return Err("no private key".into()),
        };
        Ok(DkimSigner {
            key,
            domain: domain.to_string(),
            selector: selector.to_string(),
        })
    }

    /// "rsa-sha256" or "ed25519-sha256".
    pub fn algorithm(&self) -> &'static str {
        match self.key {
            Key::Rsa(_) => "rsa-sha256",
            Key::Ed25519(_) => "ed25519-sha256",
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The message with a DKIM-Signature field on top.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, DkimError> {
        let sig = match &self.key {
            Key::Rsa(s) => s.sign(message),
            Key::Ed25519(s) => s.sign(message),
        }
        .map_err(|e| DkimError::Sign(e.to_string()))?;
        let header = sig.to_header();
        let mut out = Vec::with_capacity(header.len() + message.len());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(message);
        Ok(out)
    }
}

fn signer<T: mail_auth::common::crypto::SigningKey<Hasher = Sha256>>(
    key: T,
    domain: &str,
    selector: &str,
) -> Signer<T, Done> {
    Signer::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_HEADERS)
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

fn key_error(path: &Path, reason: String) -> DkimError {
    DkimError::Key(path.display().to_string(), reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::common::parse::TxtRecordParser;
    use mail_auth::common::verify::DomainKey;
    use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt};
    use std::borrow::Borrow;
    use std::hash::Hash;
    use std::sync::{Arc, Mutex};

    /// The one DKIM key record the verifier may find (no DNS).
    struct OneKey(Mutex<Vec<(Box<str>, Txt)>>);

    impl ResolverCache<Box<str>, Txt> for OneKey {
        fn get<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            let v = self.0.lock().unwrap();
            v.iter().find(|(k, _)| k.borrow() == name).map(|(_, t)| t.clone())
        }
        fn remove<Q>(&self, _: &Q) -> Option<Txt>
        where
            Box<str>: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            None
        }
        fn insert(&self, _: Box<str>, _: Txt, _: std::time::Instant) {}
    }

    fn data(name: &str) -> Vec<u8> {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/dkim")
                .join(name),
        )
        .unwrap()
    }

    const MAIL: &[u8] = b"Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nFrom: \"Org\" <noreply@hospital.example>\r\nTo: <pat@clinic.example>\r\nSubject: You have a secure message\r\nMessage-ID: <1@ward.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nOpen the link.\r\n";

    /// Signs MAIL and verifies it with mail-auth against `record`; returns
    /// the results for the untouched and for a tampered copy.
    async fn sign_and_verify(pem: &[u8], record: &str) -> (Vec<DkimResult>, Vec<DkimResult>, Vec<u8>) {
        let signer = DkimSigner::from_pem(pem, "hospital.example", "ward").unwrap();
        let signed = signer.sign(MAIL).unwrap();
        let key = Arc::new(DomainKey::parse(record.as_bytes()).unwrap());
        let name = "ward._domainkey.hospital.example";
        let cache = OneKey(Mutex::new(vec![
            (name.into(), Txt::DomainKey(key.clone())),
            (format!("{name}.").into(), Txt::DomainKey(key)),
        ]));
        // No query leaves the machine: every name is in the cache, and the
        // resolver only knows a closed loopback port.
        use mail_auth::hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
        let mut udp = ConnectionConfig::udp();
        udp.port = 1;
        let mut builder = mail_auth::hickory_resolver::TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![NameServerConfig::new(
                std::net::Ipv4Addr::LOCALHOST.into(),
                true,
                vec![udp],
            )]),
            mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
        );
        builder.options_mut().attempts = 1;
        let auth = MessageAuthenticator(builder.build().unwrap());
        let mut results = Vec::new();
        let tampered = String::from_utf8(signed.clone())
            .unwrap()
            .replace("Open the link.", "Open this link.")
            .into_bytes();
        for m in [&signed, &tampered] {
            let msg = AuthenticatedMessage::parse(m).unwrap();
            let out = auth
                .verify_dkim(Parameters::new(&msg).with_txt_cache(&cache))
                .await;
            results.push(out.iter().map(|o| o.result().clone()).collect());
        }
        let tampered_results = results.pop().unwrap();
        (results.pop().unwrap(), tampered_results, signed)
    }

    #[tokio::test]
    async fn rsa_signatures_verify_and_break_when_the_body_changes() {
        let p = String::from_utf8(data("test-rsa.p")).unwrap();
        let (good, bad, signed) =
            sign_and_verify(&data("test-rsa.pem"), &format!("v=DKIM1; k=rsa; p={}", p.trim())).await;
        assert_eq!(good, vec![DkimResult::Pass]);
        assert!(
            matches!(bad.as_slice(), [DkimResult::Fail(_) | DkimResult::Neutral(_)]),
            "{bad:?}"
        );
        let text = String::from_utf8(signed).unwrap();
        assert!(text.starts_with("DKIM-Signature: "), "on top");
        assert!(
            text.contains("a=rsa-sha256") && text.contains("d=hospital.example") && text.contains("s=ward")
        );
    }

    #[tokio::test]
    async fn ed25519_signatures_verify() {
        let p = String::from_utf8(data("test-ed25519.p")).unwrap();
        let (good, bad, signed) = sign_and_verify(
            &data("test-ed25519.pem"),
            &format!("v=DKIM1; k=ed25519; p={}", p.trim()),
        )
        .await;
        assert_eq!(good, vec![DkimResult::Pass]);
        assert!(
            matches!(bad.as_slice(), [DkimResult::Fail(_) | DkimResult::Neutral(_)]),
            "{bad:?}"
        );
        assert!(String::from_utf8(signed).unwrap().contains("a=ed25519-sha256"));
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        let e = DkimSigner::from_pem(b"not a key", "d.example", "s").unwrap_err();
        assert!(e.contains("no PKCS#8 or PKCS#1 private key"), "{e}");
        let cert = rcgen::generate_simple_self_signed(vec!["x.example".into()]).unwrap();
        let e = DkimSigner::from_pem(cert.cert.pem().as_bytes(), "d.example", "s").unwrap_err();
        assert!(e.contains("no PKCS#8"), "{e}");
        // An ECDSA key is neither RSA nor Ed25519.
        let e =
            DkimSigner::from_pem(cert.signing_key.serialize_pem().as_bytes(), "d.example", "s").unwrap_err();
        assert!(e.contains("neither an RSA"), "{e}");
        let cfg = DkimConfig {
            domain: "d.example".into(),
            selector: "s".into(),
            key_file: "/nonexistent/key.pem".into(),
        };
        let e = DkimSigner::load(&cfg).unwrap_err().to_string();
        assert!(e.starts_with("DKIM key file /nonexistent/key.pem:"), "{e}");
        assert!(DkimSigner::load(&DkimConfig::default()).unwrap().is_none());
    }
}
