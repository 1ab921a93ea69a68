//! Relay authorization: who may send mail through Ward.
//!
//! Ward has no local mailboxes, so every recipient is a relay recipient and
//! this module decides every RCPT. A session may relay when one of these
//! holds (DESIGN.md; issue "who may relay"):
//!
//! 1. the client IP is in `relay.networks`;
//! 2. it authenticated with SMTP AUTH (PLAIN or LOGIN, only offered after
//!    TLS) against an argon2 hash in `[[relay.user]]`;
//! 3. it presented a TLS client certificate whose SHA-256 fingerprint is in
//!    `[[relay.client_certificate]]`;
//! 4. it connects from `relay.tenant_header.networks` and the message carries
//!    the tenant's secret header: RCPT is accepted provisionally and the
//!    header is checked at the end of DATA, where a missing or wrong header
//!    gets 550 5.7.1. The header is removed before the message is queued.
//!
//! Provider egress ranges (Microsoft 365, Google Workspace) are shared by all
//! their tenants, which is why (4) exists: IP alone would let any tenant of
//! the provider relay. Anything else gets 550 5.7.1 at RCPT; networks in
//! `deny_networks` (or outside a non-empty `connect_networks`) get 554 5.7.1
//! at connect.
//!
//! Secrets are compared in constant time; password checks run argon2 even
//! for unknown users so timing does not reveal which names exist. Passwords
//! and secrets are never logged.

use std::collections::HashMap;
use std::net::IpAddr;

use argon2::{PasswordHash, PasswordVerifier};
use ipnet::IpNet;
use subtle::ConstantTimeEq;

use crate::config::RelayConfig;

/// A fixed hash checked when the user name is unknown, so a miss costs the
/// same time as a wrong password. (Hash of a random string nobody knows.)
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$tbhcvdxjz6Pyo2mD7zWrrn+G1Y9RZWs6/qKUdXYAwJQ";

/// Why a session may relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorized {
    Network,
    User(String),
    Certificate(String),
    Tenant(String),
}

impl std::fmt::Display for Authorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authorized::Network => f.write_str("network"),
            Authorized::User(u) => write!(f, "user {u}"),
            Authorized::Certificate(c) => write!(f, "certificate {c}"),
            Authorized::Tenant(t) => write!(f, "tenant {t}"),
        }
    }
}

/// The relay rules, compiled from `[relay]`.
pub struct RelayPolicy {
    networks: Vec<IpNet>,
    connect_networks: Vec<IpNet>,
    deny_networks: Vec<IpNet>,
    users: HashMap<String, String>,
    certificates: Vec<([u8; 32], String)>,
    tenant: Option<TenantHeader>,
}

struct TenantHeader {
    header: String,
    networks: Vec<IpNet>,
    tenants: Vec<(String, Vec<u8>)>,
}

fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d from a dual-stack socket) are
/// matched as the IPv4 address they are.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl RelayPolicy {
    pub fn new(c: &RelayConfig) -> RelayPolicy {
        RelayPolicy {
            networks: c.networks.clone(),
            connect_networks: c.connect_networks.clone(),
            deny_networks: c.deny_networks.clone(),
            users: c
                .users
                .iter()
                .map(|u| (u.name.clone(), u.password_hash.0.clone()))
                .collect(),
            certificates: c
                .client_certificates
                .iter()
                .map(|x| (x.sha256, x.name.clone()))
                .collect(),
            tenant: c.tenant_header.as_ref().map(|t| TenantHeader {
                header: t.header.clone(),
                networks: t.networks.clone(),
                tenants: t
                    .tenants
                    .iter()
                    .map(|x| (x.name.clone(), x.secret.0.as_bytes().to_vec()))
                    .collect(),
            }),
        }
    }

    /// May this client connect at all?
    pub fn may_connect(&self, ip: IpAddr) -> bool {
        if contains(&self.deny_networks, ip) {
            return false;
        }
        self.connect_networks.is_empty() || contains(&self.connect_networks, ip)
    }

    /// Relay by client address alone.
    pub fn network_allows(&self, ip: IpAddr) -> bool {
        contains(&self.networks, ip)
    }

    /// Relay by TLS client certificate fingerprint.
    pub fn certificate_allows(&self, fingerprint: &[u8; 32]) -> Option<String> {
        // Constant-time per entry; the list is small.
        let mut found = None;
        for (fp, name) in &self.certificates {
            if bool::from(fp.ct_eq(fingerprint)) {
                found = Some(name.clone());
            }
        }
        found
    }

    /// Are AUTH mechanisms worth offering?
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// Do TLS handshakes need to ask for client certificates?
    pub fn wants_client_certificates(&self) -> bool {
        !self.certificates.is_empty()
    }

    /// Checks a user name and password (argon2; blocking: call from
    /// `spawn_blocking`).
    pub fn check_password(&self, user: &str, password: &[u8]) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.as_str(), true),
            None => (DUMMY_HASH, false),
        };
        let ok = PasswordHash::new(hash)
            .map(|h| argon2::Argon2::default().verify_password(password, &h).is_ok())
            .unwrap_or(false);
        ok && known
    }

    /// The tenant header name, when tenant authentication applies to `ip`.
    pub fn tenant_header_for(&self, ip: IpAddr) -> Option<&str> {
        self.tenant
            .as_ref()
            .filter(|t| contains(&t.networks, ip))
            .map(|t| t.header.as_str())
    }

    /// The header name to strip from every message, if tenant headers are
    /// configured (stripped whoever sent the message, so a secret never
    /// travels on).
    pub fn tenant_header_name(&self) -> Option<&str> {
        self.tenant.as_ref().map(|t| t.header.as_str())
    }

    /// Which tenant, if any, the header values authenticate. Every secret is
    /// compared in constant time against every value.
    pub fn tenant_for(&self, values: &[Vec<u8>]) -> Option<String> {
        let t = self.tenant.as_ref()?;
        let mut found = None;
        for v in values {
            for (name, secret) in &t.tenants {
                if v.len() == secret.len() && bool::from(v.as_slice().ct_eq(secret.as_slice())) {
                    found = Some(name.clone());
                }
            }
        }
        found
    }
}

/// Hashes a password for `[[relay.user]] password_hash` (argon2id, default
/// parameters, random salt).
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    use argon2::PasswordHasher;
    use argon2::password_hash::SaltString;
    let mut salt_bytes = [0u8; 16];
    crate::crypto::fill_random(&mut salt_bytes);
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RelayUser, Secret, TenantConfig, TenantHeaderConfig};
    use std::path::Path;

    fn policy() -> RelayPolicy {
        let mut c = Config::default().relay;
        c.networks = vec!["10.1.0.0/16".parse().unwrap()];
        c.deny_networks = vec!["10.9.0.0/16".parse().unwrap()];
        c.users = vec![RelayUser {
            name: "scanner".into(),
            password_hash: Secret(hash_password(b"pw-1").unwrap()),
        }];
        c.tenant_header = Some(TenantHeaderConfig {
            header: "X-Ward-Tenant".into(),
            networks: vec!["40.92.0.0/15".parse().unwrap()],
            tenants: vec![TenantConfig {
                name: "contoso".into(),
                secret: Secret("s".repeat(32)),
            }],
        });
        RelayPolicy::new(&c)
    }

    #[test]
    fn networks_and_connect_rules() {
        let p = policy();
        assert!(p.network_allows("10.1.2.3".parse().unwrap()));
        assert!(p.network_allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!p.network_allows("10.2.0.1".parse().unwrap()));
        assert!(!p.may_connect("10.9.0.1".parse().unwrap()));
        assert!(p.may_connect("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn passwords() {
        let p = policy();
        assert!(p.check_password("scanner", b"pw-1"));
        assert!(!p.check_password("scanner", b"pw-2"));
        assert!(!p.check_password("nobody", b"pw-1"));
    }

    #[test]
    fn tenant_header() {
        let p = policy();
        assert_eq!(
            p.tenant_header_for("40.93.1.1".parse().unwrap()),
            Some("X-Ward-Tenant")
        );
        assert_eq!(p.tenant_header_for("10.1.1.1".parse().unwrap()), None);
        assert_eq!(p.tenant_for(&[b"s".repeat(32)]).as_deref(), Some("contoso"));
        assert_eq!(p.tenant_for(&[b"s".repeat(31)]), None);
        assert_eq!(p.tenant_for(&[]), None);
    }

    #[test]
    fn dummy_hash_parses() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        let _ = Path::new("");
    }
}
