//! Configuration: the TOML schema, its defaults, validation and the settings
//! reference.
//!
//! Owns: every named setting Ward has. Each one is declared once in the
//! structs below (with its default in the `Default` impl) and documented once
//! in [`SETTINGS`], from which `ward config-reference` and the README's
//! reference are generated; a unit test proves the table's defaults are the
//! real defaults and that every documented key exists.
//!
//! Guarantees: unknown keys are errors; every error names the file and the
//! line (`conf/ward.toml:12:5: ...`), so `ward check-config` can point at it.
//! Secrets (tenant header secrets, password hashes) are wrapped in [`Secret`],
//! whose `Debug` prints `[redacted]`.
//!
//! Refuses: a configuration that could make Ward an open relay without saying
//! so (for example a tenant header with no networks to accept it from), limits
//! of zero, TLS settings that name only half a key pair.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// A configuration error with the place it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the error is in (or `<embedded defaults>`).
    pub file: PathBuf,
    /// 1-based line and column, when the error can be tied to a place.
    pub position: Option<(usize, usize)>,
    /// What is wrong, in words an admin can act on.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A secret string from the configuration; never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub tls: TlsConfig,
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    pub smtp: SmtpConfig,
    pub relay: RelayConfig,
    pub queue: QueueConfig,
    pub dsn: DsnConfig,
    pub delivery: DeliveryConfig,
    pub dns: DnsConfig,
    pub scan: ScanConfig,
    pub policy: PolicyConfig,
    pub portal: PortalConfig,
    pub dkim: DkimConfig,
    pub rate_limit: RateLimitConfig,
    pub admin: AdminConfig,
    pub audit: AuditConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            log: LogConfig::default(),
            tls: TlsConfig::default(),
            listeners: vec![ListenerConfig {
                name: "smtp".into(),
                address: SocketAddr::from(([127, 0, 0, 1], 2525)),
                tls: ListenerTls::Starttls,
                require_tls: false,
            }],
            smtp: SmtpConfig::default(),
            relay: RelayConfig::default(),
            queue: QueueConfig::default(),
            dsn: DsnConfig::default(),
            delivery: DeliveryConfig::default(),
            dns: DnsConfig::default(),
            scan: ScanConfig::default(),
            policy: PolicyConfig::default(),
            portal: PortalConfig::default(),
            dkim: DkimConfig::default(),
            rate_limit: RateLimitConfig::default(),
            admin: AdminConfig::default(),
            audit: AuditConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Host name used in the greeting, in EHLO when delivering, and in
    /// Received headers. Empty means the machine's host name.
    pub hostname: String,
    /// Directory for the queue, keys and generated certificates.
    pub data_dir: PathBuf,
    /// Master key file (32 random bytes, hex). Empty means
    /// `<data_dir>/master.key`, created with mode 0600 on first start.
    pub master_key_file: PathBuf,
    /// How long SIGTERM waits for sessions and deliveries in progress.
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: String::new(),
            data_dir: PathBuf::from("./var"),
            master_key_file: PathBuf::new(),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerConfig {
    /// The host name to announce: the configured one or the machine's.
    pub fn effective_hostname(&self) -> String {
        if !self.hostname.is_empty() {
            return self.hostname.clone();
        }
        machine_hostname().unwrap_or_else(|| "localhost".to_string())
    }

    /// The master key path: the configured one or `<data_dir>/master.key`.
    pub fn master_key_path(&self) -> PathBuf {
        if self.master_key_file.as_os_str().is_empty() {
            self.data_dir.join("master.key")
        } else {
            self.master_key_file.clone()
        }
    }
}

fn machine_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim().to_string();
    (!name.is_empty()).then_some(name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Log filter (tracing EnvFilter syntax: `info`, `ward=debug`, ...).
    /// The environment variable RUST_LOG overrides it.
    pub level: String,
    /// `text` for people and journald, `json` for a SIEM.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain for the SMTP listeners. Empty: a self-signed
    /// certificate is generated into `<data_dir>/tls/` on first start (with a
    /// warning); fine for trying Ward, not for production.
    pub cert_file: PathBuf,
    /// PEM private key matching `cert_file`.
    pub key_file: PathBuf,
    /// Lowest TLS version accepted from clients: "1.2" or "1.3".
    pub min_version: TlsVersion,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            min_version: TlsVersion::Tls12,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerTls {
    /// Plain SMTP that offers STARTTLS (RFC 3207).
    Starttls,
    /// TLS from the first byte (RFC 8314, usually port 465).
    Implicit,
    /// Plain SMTP without TLS (loopback testing only).
    None,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Name used in logs.
    pub name: String,
    /// Address and port to listen on.
    pub address: SocketAddr,
    /// `starttls`, `implicit` or `none`.
    #[serde(default = "default_listener_tls")]
    pub tls: ListenerTls,
    /// Refuse MAIL before STARTTLS with 530 5.7.0.
    #[serde(default)]
    pub require_tls: bool,
}

fn default_listener_tls() -> ListenerTls {
    ListenerTls::Starttls
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Connections open at once, all clients together; more get 421 4.7.0.
    pub max_connections: usize,
    /// Connections open at once from one client IP; more get 421 4.7.0.
    pub max_connections_per_ip: usize,
    /// Longest command line in octets, CRLF included. Longer: 500 5.5.2.
    pub max_command_line_length: usize,
    /// Longest line inside DATA/BDAT in octets, CRLF excluded (RFC 5322: 998).
    /// Longer: 550 5.6.0 at the end of DATA.
    pub max_data_line_length: usize,
    /// Largest message in octets (advertised with SIZE). Larger: 552 5.3.4.
    #[serde(deserialize_with = "de_size")]
    pub max_message_size: u64,
    /// Recipients per message. More: 452 4.5.3.
    pub max_recipients: usize,
    /// Received headers a message may already carry. More: 554 5.4.6 (loop).
    pub max_received_headers: usize,
    /// Wait for the next command (RFC 5321 4.5.3.2.7: at least 5 minutes).
    #[serde(deserialize_with = "de_duration")]
    pub command_timeout: Duration,
    /// Wait for the next block of message data (RFC 5321 4.5.3.2.5).
    #[serde(deserialize_with = "de_duration")]
    pub data_timeout: Duration,
    /// Pause before the greeting; a client that talks during it gets 554 5.5.1
    /// (like Postfix's postscreen_greet_wait). 0s sends the greeting at once,
    /// and only a client whose bytes are already waiting is refused.
    #[serde(deserialize_with = "de_duration")]
    pub greeting_delay: Duration,
    /// Errors (bad commands, refused recipients) a session may make before
    /// it is closed with 421 4.7.0.
    pub max_errors: usize,
    /// Failed AUTH attempts a session may make before it is closed.
    pub max_auth_failures: usize,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            max_connections: 500,
            max_connections_per_ip: 50,
            max_command_line_length: 2048,
            max_data_line_length: 998,
            max_message_size: 35 * 1024 * 1024,
            max_recipients: 1000,
            max_received_headers: 50,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            greeting_delay: Duration::ZERO,
            max_errors: 20,
            max_auth_failures: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Client networks that may relay on their IP address alone.
    pub networks: Vec<IpNet>,
    /// If not empty, only these networks may connect at all; others get 554
    /// 5.7.1 at connect.
    pub connect_networks: Vec<IpNet>,
    /// Networks refused at connect with 554 5.7.1 (checked first).
    pub deny_networks: Vec<IpNet>,
    /// SMTP AUTH (PLAIN, LOGIN; only after TLS) users.
    #[serde(rename = "user")]
    pub users: Vec<RelayUser>,
    /// TLS client certificates that may relay.
    #[serde(rename = "client_certificate")]
    pub client_certificates: Vec<RelayClientCertificate>,
    /// Per-tenant secret header (for provider networks shared by all tenants).
    pub tenant_header: Option<TenantHeaderConfig>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            networks: vec![
                "127.0.0.0/8".parse().expect("literal"),
                "::1/128".parse().expect("literal"),
            ],
            connect_networks: Vec::new(),
            deny_networks: Vec::new(),
            users: Vec::new(),
            client_certificates: Vec::new(),
            tenant_header: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayUser {
    /// Login name.
    pub name: String,
    /// Argon2 PHC string (`ward hash-password` makes one).
    pub password_hash: Secret,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayClientCertificate {
    /// Name used in logs and the Received header.
    pub name: String,
    /// SHA-256 fingerprint of the DER certificate, hex, colons allowed.
    #[serde(deserialize_with = "de_fingerprint")]
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantHeaderConfig {
    /// Header field name the tenant's mail-flow rule stamps.
    #[serde(default = "default_tenant_header")]
    pub header: String,
    /// Client networks allowed to authenticate by header (for example the
    /// provider's published egress ranges). Required.
    pub networks: Vec<IpNet>,
    /// The tenants and their secrets.
    #[serde(rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
}

fn default_tenant_header() -> String {
    "X-Ward-Tenant".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Tenant name used in logs.
    pub name: String,
    /// The header value; at least 24 characters.
    pub secret: Secret,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Memory sled may use for its page cache.
    #[serde(deserialize_with = "de_size")]
    pub cache_size: u64,
    /// Delay before each retry after a temporary failure; the last entry
    /// repeats until `max_lifetime`.
    #[serde(deserialize_with = "de_duration_list")]
    pub retry_schedule: Vec<Duration>,
    /// How long a message may stay queued before its undelivered copies fail.
    #[serde(deserialize_with = "de_duration")]
    pub max_lifetime: Duration,
    /// How often the queue is searched for copies whose retry time has come.
    #[serde(deserialize_with = "de_duration")]
    pub scan_interval: Duration,
    /// How long the final status of each recipient copy (delivered, failed)
    /// is kept after the message leaves the queue.
    #[serde(deserialize_with = "de_duration")]
    pub status_retention: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            cache_size: 64 * 1024 * 1024,
            retry_schedule: [120, 300, 600, 900, 1800, 3600, 7200, 14400]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            max_lifetime: Duration::from_secs(5 * 86400),
            scan_interval: Duration::from_secs(1),
            status_retention: Duration::from_secs(30 * 86400),
        }
    }
}

/// Delivery status notifications (RFC 3464): bounces, delay notices and
/// success notices to the envelope sender. They never hold content.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DsnConfig {
    /// A copy still undelivered this long after arrival gets one delay
    /// notice, when its RCPT asked for NOTIFY=DELAY.
    #[serde(deserialize_with = "de_duration")]
    pub delay_after: Duration,
    /// Where a bounce that itself could not be delivered is reported
    /// (without any detail of the message); empty: `postmaster@<hostname>`.
    pub postmaster: String,
    /// Longest remote diagnostic text kept in a report, in characters.
    pub diagnostic_max_length: usize,
}

impl Default for DsnConfig {
    fn default() -> Self {
        DsnConfig {
            delay_after: Duration::from_secs(4 * 3600),
            postmaster: String::new(),
            diagnostic_max_length: 200,
        }
    }
}

impl DsnConfig {
    /// The postmaster address bounces of bounces go to.
    pub fn effective_postmaster(&self, server: &ServerConfig) -> String {
        if self.postmaster.is_empty() {
            format!("postmaster@{}", server.effective_hostname())
        } else {
            self.postmaster.clone()
        }
    }
}

/// The audit trail (`audit.rs`): hash-chained JSON lines under
/// `<data_dir>/audit/`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub enabled: bool,
    /// A file is removed once its newest line is older than this.
    #[serde(deserialize_with = "de_duration")]
    pub retention: Duration,
    /// A new file is started past this size.
    #[serde(deserialize_with = "de_size")]
    pub max_file_size: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            // humantime's year: 365.25 days.
            retention: Duration::from_secs(6 * 31_557_600),
            max_file_size: 64 * 1024 * 1024,
        }
    }
}

/// TLS policy for a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    /// STARTTLS required, TLS 1.2+, certificate chain trusted and name matching.
    Verify,
    /// STARTTLS required, TLS 1.2+, certificate not checked.
    Encrypt,
    /// STARTTLS when offered; plaintext otherwise.
    May,
}

impl fmt::Display for TlsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsPolicy::Verify => "verify",
            TlsPolicy::Encrypt => "encrypt",
            TlsPolicy::May => "may",
        })
    }
}

/// A next hop: `host`, `host:port` (MX lookup on host), `[host]` or
/// `[host]:port` (no MX lookup, like Postfix's transport syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub host: String,
    pub port: Option<u16>,
    /// True for `[host]`: use the host's addresses, no MX lookup.
    pub no_mx: bool,
}

impl NextHop {
    pub fn parse(s: &str) -> Result<NextHop, String> {
        let s = s.trim();
        let (host, rest, no_mx) = if let Some(inner) = s.strip_prefix('[') {
            let end = inner.find(']').ok_or_else(|| format!("`{s}`: missing `]`"))?;
            (&inner[..end], &inner[end + 1..], true)
        } else {
            match s.rfind(':') {
                Some(i) if !s[..i].contains(':') => (&s[..i], &s[i..], false),
                _ => (s, "", false),
            }
        };
        let port = if rest.is_empty() {
            None
        } else {
            let p = rest
                .strip_prefix(':')
                .ok_or_else(|| format!("`{s}`: expected `:port` after the host"))?;
            Some(p.parse::<u16>().map_err(|_| format!("`{s}`: bad port `{p}`"))?)
        };
        if host.is_empty() {
            return Err(format!("`{s}`: empty host"));
        }
        let is_ip = host.parse::<IpAddr>().is_ok();
        if !is_ip && !is_hostname(host) {
            return Err(format!(
                "`{s}`: `{host}` is neither a host name nor an IP address"
            ));
        }
        if is_ip && !no_mx {
            return Err(format!("`{s}`: write an IP address in brackets, as `[{host}]`"));
        }
        Ok(NextHop {
            host: host.to_string(),
            port,
            no_mx,
        })
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.no_mx {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for NextHop {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NextHop::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The domain of a mailbox (`local@domain`), lower-cased, without a
/// trailing dot; empty if none. (Here, on the lowest floor, because both
/// `queue` and `policy` need it.)
pub fn domain_of(address: &str) -> String {
    match address.rfind('@') {
        Some(i) => address[i + 1..].trim_end_matches('.').to_lowercase(),
        None => String::new(),
    }
}

/// True if `s` is a syntactically valid DNS host name (LDH labels).
pub fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Recipient domain this entry applies to; `.example.org` also matches
    /// every subdomain.
    pub domain: String,
    /// Where to send instead of the domain's MX hosts.
    #[serde(default)]
    pub route: Option<NextHop>,
    /// TLS policy for this destination (overrides `delivery.tls_policy`).
    #[serde(default)]
    pub tls_policy: Option<TlsPolicy>,
    /// Certificate name to require under `verify` when the route is an IP
    /// address (default: the recipient domain).
    #[serde(default)]
    pub tls_name: Option<String>,
}

// --- sandbox mode (delivery.mode) ---

/// Whether outbound mail leaves the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// Deliver to the network (MX hosts, routes, the smart host).
    #[default]
    Live,
    /// Nothing leaves the machine: no DNS lookups, no outbound connections;
    /// every outbound copy is kept, encrypted, in `<data_dir>/sandbox/`
    /// (`ward sandbox list|show|clear`).
    Sandbox,
}

impl fmt::Display for DeliveryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeliveryMode::Live => "live",
            DeliveryMode::Sandbox => "sandbox",
        })
    }
}

// --- end sandbox mode ---

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// `live` (deliver) or `sandbox` (keep every outbound copy, encrypted,
    /// in the local outbox; nothing leaves the machine).
    pub mode: DeliveryMode,
    /// Name sent in EHLO. Empty means `server.hostname`.
    pub helo_name: String,
    /// Default TLS policy: `verify`, `encrypt` or `may`.
    pub tls_policy: TlsPolicy,
    /// Extra trusted CA certificates (PEM) for `verify`, besides the system's.
    pub ca_file: PathBuf,
    /// Trust the system's root certificates for `verify`.
    pub system_roots: bool,
    /// Send everything through this next hop instead of MX lookups
    /// (destination routes still win). Empty: none.
    pub smart_host: Option<NextHop>,
    /// TCP port for MX hosts and next hops given without a port.
    pub smtp_port: u16,
    /// Connections open at once to one destination.
    pub destination_concurrency: usize,
    /// Most MX host addresses tried per delivery attempt.
    pub max_mx_addresses: usize,
    /// Messages sent over one connection before it is closed.
    pub max_messages_per_connection: usize,
    /// How long an idle delivery connection is kept for the next message to
    /// the same destination.
    #[serde(deserialize_with = "de_duration")]
    pub connection_cache_time: Duration,
    /// TCP connect timeout.
    #[serde(deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// Wait for the 220 greeting (RFC 5321 4.5.3.2.1: 5 minutes).
    #[serde(deserialize_with = "de_duration")]
    pub greeting_timeout: Duration,
    /// Wait for replies to EHLO, STARTTLS, RSET and QUIT, and for the TLS
    /// handshake.
    #[serde(deserialize_with = "de_duration")]
    pub command_timeout: Duration,
    /// Wait for the reply to MAIL (RFC 5321 4.5.3.2.2: 5 minutes).
    #[serde(deserialize_with = "de_duration")]
    pub mail_timeout: Duration,
    /// Wait for the reply to each RCPT (RFC 5321 4.5.3.2.3: 5 minutes).
    #[serde(deserialize_with = "de_duration")]
    pub rcpt_timeout: Duration,
    /// Wait for the 354 after DATA (RFC 5321 4.5.3.2.4: 2 minutes).
    #[serde(deserialize_with = "de_duration")]
    pub data_init_timeout: Duration,
    /// Longest a write of message data may block (RFC 5321 4.5.3.2.5: 3 minutes).
    #[serde(deserialize_with = "de_duration")]
    pub data_block_timeout: Duration,
    /// Wait for the reply after the final dot (RFC 5321 4.5.3.2.6: 10 minutes).
    #[serde(deserialize_with = "de_duration")]
    pub data_end_timeout: Duration,
    /// Per-destination routes and TLS policies.
    #[serde(rename = "destination")]
    pub destinations: Vec<DestinationConfig>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            mode: DeliveryMode::Live,
            helo_name: String::new(),
            tls_policy: TlsPolicy::Verify,
            ca_file: PathBuf::new(),
            system_roots: true,
            smart_host: None,
            smtp_port: 25,
            destination_concurrency: 20,
            max_mx_addresses: 5,
            max_messages_per_connection: 100,
            connection_cache_time: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(30),
            greeting_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(300),
            mail_timeout: Duration::from_secs(300),
            rcpt_timeout: Duration::from_secs(300),
            data_init_timeout: Duration::from_secs(120),
            data_block_timeout: Duration::from_secs(180),
            data_end_timeout: Duration::from_secs(600),
            destinations: Vec::new(),
        }
    }
}

impl DeliveryConfig {
    /// The destination entry for a recipient domain: an exact match wins over
    /// the longest `.suffix` match.
    pub fn destination_for(&self, domain: &str) -> Option<&DestinationConfig> {
        let domain = domain.trim_end_matches('.');
        let mut best: Option<&DestinationConfig> = None;
        for d in &self.destinations {
            if d.domain.eq_ignore_ascii_case(domain) {
                return Some(d);
            }
            if d.domain.starts_with('.') {
                let suffix = &d.domain;
                let matches = domain.len() > suffix.len()
                    && domain[domain.len() - suffix.len()..].eq_ignore_ascii_case(suffix);
                if matches && best.is_none_or(|b| b.domain.len() < d.domain.len()) {
                    best = Some(d);
                }
            }
        }
        best
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Nameservers (`ip:port`) for MX and address lookups. Empty means the
    /// system's (/etc/resolv.conf).
    pub nameservers: Vec<SocketAddr>,
    /// Timeout of one DNS query.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Attempts per query before a lookup fails temporarily.
    pub attempts: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanConfig {
    /// Characters around a match searched for a context keyword.
    pub context_window: usize,
    /// Longest one message's scan may take before the 250; on overrun the
    /// decision is `policy.timeout_action` (never deliver).
    #[serde(deserialize_with = "de_duration")]
    pub time_budget: Duration,
    /// Deepest nesting of multiparts, attached messages and archives.
    pub max_depth: usize,
    /// Largest single decoded part that is scanned; larger ones are unscanned.
    #[serde(deserialize_with = "de_size")]
    pub max_part_size: u64,
    /// Most text extracted from one message.
    #[serde(deserialize_with = "de_size")]
    pub max_total_text: u64,
    /// Most members read from one archive (docx, xlsx, pptx are zip files).
    pub max_archive_entries: usize,
    /// Most bytes decompressed from one archive or PDF.
    #[serde(deserialize_with = "de_size")]
    pub max_decompressed: u64,
    /// Highest decompressed-to-compressed ratio of one archive member.
    pub max_compression_ratio: u64,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            context_window: 300,
            time_budget: Duration::from_secs(5),
            max_depth: 10,
            max_part_size: 25 * 1024 * 1024,
            max_total_text: 50 * 1024 * 1024,
            max_archive_entries: 2000,
            max_decompressed: 100 * 1024 * 1024,
            max_compression_ratio: 200,
        }
    }
}

/// What policy does with a recipient's copy, from least to most strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyAction {
    /// Deliver under the destination's TLS policy.
    Deliver,
    /// Deliver only over TLS meeting `verify`, otherwise through the pickup
    /// portal (with `portal.enabled` off, the copy waits).
    Protect,
    /// Hold for an administrator.
    Quarantine,
    /// Refuse with 550 5.7.1 (content-free reason).
    Reject,
}

impl fmt::Display for PolicyAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyAction::Deliver => "deliver",
            PolicyAction::Protect => "protect",
            PolicyAction::Quarantine => "quarantine",
            PolicyAction::Reject => "reject",
        })
    }
}

/// The detector ids policy may name (the scanner's `Kind` ids; a unit test
/// in `scan` keeps the two lists equal).
pub const DETECTOR_IDS: [&str; 12] = [
    "ssn",
    "mbi",
    "npi",
    "dea",
    "icd10",
    "mrn",
    "dob",
    "health_plan_id",
    "credit_card",
    "phone",
    "email_address",
    "health_terms",
];

/// What one detector's findings mean for policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorRule {
    /// Action when the detector fires.
    pub action: PolicyAction,
    /// Matches (all parts together) needed before it counts.
    #[serde(default = "one")]
    pub min_count: u32,
    /// If not empty, the rule applies only when one of these detectors also
    /// fired in the message (e.g. a phone number is PHI next to a diagnosis).
    #[serde(default)]
    pub with_any: Vec<String>,
}

fn one() -> u32 {
    1
}

impl DetectorRule {
    fn new(action: PolicyAction, with_any: &[&str]) -> DetectorRule {
        DetectorRule {
            action,
            min_count: 1,
            with_any: with_any.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The built-in rule for each detector; `[policy.detectors.<id>]` replaces it.
pub fn default_detector_rule(id: &str) -> DetectorRule {
    use PolicyAction::*;
    match id {
        // Provider identifiers and health words alone are not patient PHI.
        "npi" | "dea" | "health_terms" => DetectorRule::new(Deliver, &[]),
        // Contact details are PHI next to health information.
        "phone" | "email_address" => DetectorRule::new(Protect, &["health_terms"]),
        _ => DetectorRule::new(Protect, &[]),
    }
}

/// A sender or recipient rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// Envelope sender to match: `user@example.org`, `@example.org` (the
    /// domain), `.example.org` (its subdomains too) or `*`.
    #[serde(default)]
    pub sender: Option<String>,
    /// Recipient to match, same forms.
    #[serde(default)]
    pub recipient: Option<String>,
    /// The action for matching copies. Rules only make a decision stricter:
    /// the strictest of content and rules wins.
    pub action: PolicyAction,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Subject words that make a message `protect` whatever it contains
    /// (case-insensitive).
    pub trigger_words: Vec<String>,
    /// Remove trigger words from the Subject before delivery.
    pub strip_trigger_words: bool,
    /// Action when a part could not be scanned (encrypted, too large, ...).
    pub unscanned_action: PolicyAction,
    /// Action when scanning overran `scan.time_budget` (never `deliver`).
    pub timeout_action: PolicyAction,
    /// Per-detector rules replacing the built-in ones, by detector id.
    pub detectors: std::collections::BTreeMap<String, DetectorRule>,
    /// Partner domains known to do verified TLS: protected copies go to them
    /// over `verify` TLS and never to the portal.
    pub verified_tls_domains: Vec<String>,
    /// Domains whose every copy is protected and goes to the pickup portal.
    pub portal_domains: Vec<String>,
    /// Domains Ward never delivers to: 550 5.7.1 at RCPT.
    pub blocked_domains: Vec<String>,
    /// Sender and recipient rules.
    #[serde(rename = "rule")]
    pub rules: Vec<PolicyRule>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            trigger_words: vec!["[secure]".into(), "[encrypt]".into()],
            strip_trigger_words: false,
            unscanned_action: PolicyAction::Protect,
            timeout_action: PolicyAction::Protect,
            detectors: Default::default(),
            verified_tls_domains: Vec::new(),
            portal_domains: Vec::new(),
            blocked_domains: Vec::new(),
            rules: Vec::new(),
        }
    }
}

impl PolicyConfig {
    /// The rule in force for a detector: configured or built in.
    pub fn detector_rule(&self, id: &str) -> DetectorRule {
        self.detectors
            .get(id)
            .cloned()
            .unwrap_or_else(|| default_detector_rule(id))
    }
}

/// The pickup portal: where protected copies go when their destination
/// can't do verified TLS (or policy says so), and the HTTPS site where the
/// recipient reads them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortalConfig {
    /// Run the portal. Off: protected copies that can't go over verified
    /// TLS wait and retry, as if there were no portal.
    pub enabled: bool,
    /// Address and port the HTTPS portal listens on.
    pub address: SocketAddr,
    /// Host (and `:port` if not 443) put in pickup links,
    /// `https://<public_host>/m/<token>`. Empty means `server.hostname`.
    pub public_host: String,
    /// Organization name shown on the portal and in notifications.
    pub organization: String,
    /// PNG or SVG logo shown on the portal pages. Empty: none.
    pub logo_file: PathBuf,
    /// From address of notifications and code mails (also their envelope
    /// sender). Empty means `noreply@<server.hostname>`.
    pub notify_from: String,
    /// Subject of the notification; `{organization}` is replaced.
    pub notify_subject: String,
    /// How long a pickup link works; then the message is destroyed.
    #[serde(deserialize_with = "de_duration")]
    pub link_lifetime: Duration,
    /// How long a one-time code is valid.
    #[serde(deserialize_with = "de_duration")]
    pub code_lifetime: Duration,
    /// Wrong codes allowed before the link locks.
    pub max_code_attempts: u32,
    /// How long a link stays locked after too many wrong codes.
    #[serde(deserialize_with = "de_duration")]
    pub lockout: Duration,
    /// Codes that may be mailed for one link per hour.
    pub max_codes_per_hour: u32,
    /// A portal session ends after this long without a request.
    #[serde(deserialize_with = "de_duration")]
    pub session_idle_timeout: Duration,
    /// Requests per minute from one client IP.
    pub requests_per_minute_per_ip: u32,
    /// Requests per minute for one link.
    pub requests_per_minute_per_link: u32,
    /// Largest reply (octets of text) a recipient may write on the portal
    /// to the original sender; 0 turns replies off.
    #[serde(deserialize_with = "de_size")]
    pub max_reply_size: u64,
    /// Replies that may be sent from one pickup link in all.
    pub max_replies_per_link: u32,
    /// Send the original sender a content-free notice when the recipient
    /// first opens the message.
    pub opened_notice: bool,
}

impl Default for PortalConfig {
    fn default() -> Self {
        PortalConfig {
            enabled: false,
            address: SocketAddr::from(([127, 0, 0, 1], 8443)),
            public_host: String::new(),
            organization: "Ward".into(),
            logo_file: PathBuf::new(),
            notify_from: String::new(),
            notify_subject: "You have a secure message from {organization}".into(),
            link_lifetime: Duration::from_secs(30 * 86400),
            code_lifetime: Duration::from_secs(600),
            max_code_attempts: 5,
            lockout: Duration::from_secs(1800),
            max_codes_per_hour: 5,
            session_idle_timeout: Duration::from_secs(900),
            requests_per_minute_per_ip: 120,
            requests_per_minute_per_link: 30,
            max_reply_size: 32 * 1024,
            max_replies_per_link: 10,
            opened_notice: false,
        }
    }
}

impl PortalConfig {
    /// The host put in pickup links.
    pub fn effective_public_host(&self, server: &ServerConfig) -> String {
        if self.public_host.is_empty() {
            server.effective_hostname()
        } else {
            self.public_host.clone()
        }
    }

    /// The From address of notifications and code mails.
    pub fn effective_notify_from(&self, server: &ServerConfig) -> String {
        if self.notify_from.is_empty() {
            format!("noreply@{}", server.effective_hostname())
        } else {
            self.notify_from.clone()
        }
    }
}

/// DKIM signing (RFC 6376) of the mail Ward writes itself: pickup
/// notifications, one-time codes, opened notices and portal replies (all
/// From `portal.notify_from`). Off while `domain` is empty.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DkimConfig {
    /// Signing domain (`d=`); the From domain or its parent, for DMARC.
    pub domain: String,
    /// Selector (`s=`): the key is published at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// Private key, PEM: RSA (PKCS#8 or PKCS#1, rsa-sha256) or Ed25519
    /// (PKCS#8, ed25519-sha256).
    pub key_file: PathBuf,
}

/// A rate: `count` events per `period`, written `"10/1m"`; `"off"` is no
/// limit. Enforced as GCRA (a token bucket of `count` that refills evenly
/// over `period`), so a burst of `count` is allowed after a quiet period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
}

impl Rate {
    /// Parses `"10/2s"`, `"1000/1h"`; None for `"off"`.
    pub fn parse(s: &str) -> Result<Option<Rate>, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let (n, period) = t
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a rate; write it like \"100/1m\" or \"off\""))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: `{n}` is not a whole number"))?;
        let period = parse_duration(period)?;
        if count == 0 || period.is_zero() {
            return Err(format!(
                "`{s}`: count and period must be greater than zero (write \"off\" for no limit)"
            ));
        }
        Ok(Some(Rate { count, period }))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, humantime::format_duration(self.period))
    }
}

fn de_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Rate>, D::Error> {
    let s = String::deserialize(d)?;
    Rate::parse(&s).map_err(serde::de::Error::custom)
}

fn de_opt_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Rate>>, D::Error> {
    de_rate(d).map(Some)
}

/// Rate limits (GCRA, per key): a compromised mailbox can't send thousands
/// of messages in minutes, a client IP can't flood the listener, and one
/// recipient domain can't be flooded from Ward's address. Over a limit:
/// 450 4.7.0 at MAIL, 452 4.5.3 at RCPT, 421 4.7.0 at connect, and outbound
/// copies are rescheduled (never failed).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Enforce the limits below.
    pub enabled: bool,
    /// Messages per sender: the authenticated user, or else the envelope
    /// sender. Counted at MAIL.
    #[serde(deserialize_with = "de_rate")]
    pub sender_messages: Option<Rate>,
    /// Recipients per sender, counted at RCPT.
    #[serde(deserialize_with = "de_rate")]
    pub sender_recipients: Option<Rate>,
    /// New connections per client IP.
    #[serde(deserialize_with = "de_rate")]
    pub ip_connections: Option<Rate>,
    /// Messages per client IP, counted at MAIL.
    #[serde(deserialize_with = "de_rate")]
    pub ip_messages: Option<Rate>,
    /// Outbound deliveries (recipient copies) per recipient domain.
    #[serde(deserialize_with = "de_rate")]
    pub domain_deliveries: Option<Rate>,
    /// How often idle keys (whose bucket is full again) are dropped.
    #[serde(deserialize_with = "de_duration")]
    pub eviction_interval: Duration,
    /// Per-sender overrides.
    #[serde(rename = "sender")]
    pub senders: Vec<SenderRateOverride>,
    /// Per-recipient-domain overrides of `domain_deliveries`.
    #[serde(rename = "domain")]
    pub domains: Vec<DomainRateOverride>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let rate = |count, secs| {
            Some(Rate {
                count,
                period: Duration::from_secs(secs),
            })
        };
        RateLimitConfig {
            enabled: true,
            sender_messages: rate(1000, 3600),
            sender_recipients: rate(5000, 3600),
            ip_connections: rate(3000, 60),
            ip_messages: rate(50_000, 3600),
            domain_deliveries: rate(1200, 60),
            eviction_interval: Duration::from_secs(60),
            senders: Vec::new(),
            domains: Vec::new(),
        }
    }
}

/// Limits for the senders a pattern matches, instead of the global ones.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderRateOverride {
    /// `user@example.org` (an envelope sender, or an authenticated user's
    /// login name), `@example.org` (senders of the domain) or `.example.org`
    /// (its subdomains too). Each matching sender still has its own bucket.
    pub sender: String,
    /// Messages per matching sender; absent: `sender_messages`.
    #[serde(default, deserialize_with = "de_opt_rate")]
    pub messages: Option<Option<Rate>>,
    /// Recipients per matching sender; absent: `sender_recipients`.
    #[serde(default, deserialize_with = "de_opt_rate")]
    pub recipients: Option<Option<Rate>>,
}

/// Outbound limit for a recipient domain, instead of `domain_deliveries`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainRateOverride {
    /// `example.org`, or `.example.org` for every subdomain (each its own
    /// bucket).
    pub domain: String,
    /// Deliveries per period to that domain.
    #[serde(deserialize_with = "de_rate")]
    pub deliveries: Option<Rate>,
}

/// The admin listener: plain HTTP with `/metrics` (Prometheus).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Run the admin listener.
    pub enabled: bool,
    /// Address and port; loopback by default (/metrics has no
    /// authentication).
    pub address: SocketAddr,
    /// Bearer token of the status API (`/api/`); empty: the API is off.
    pub token: Secret,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            address: SocketAddr::from(([127, 0, 0, 1], 9465)),
            token: Secret::default(),
        }
    }
}

// ---------------------------------------------------------------------------
// Value parsers shared by the schema.

/// Parses `250ms`, `30s`, `5m`, `2h`, `5d` (and combinations humantime takes).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); write it like \"30s\", \"5m\", \"2h\", \"5d\""))
}

/// Parses a size: a number of bytes, or a number with KB, MB, GB (powers of
/// 1000) or KiB, MiB, GiB (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size; write it like 10485760, \"10MB\" or \"10MiB\""))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "kib" => 1024,
        "mib" => 1024 * 1024,
        "gib" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "`{s}`: unknown size unit `{other}` (use B, KB, MB, GB, KiB, MiB, GiB)"
            ));
        }
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{s}` is too large"))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn de_duration_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter()
        .map(|s| parse_duration(s).map_err(serde::de::Error::custom))
        .collect()
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Str(String),
    }
    match Raw::deserialize(d).map_err(|_| {
        serde::de::Error::custom("expected a size: a number of bytes or a string like \"10MiB\"")
    })? {
        Raw::Int(n) => Ok(n),
        Raw::Str(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

fn de_fingerprint<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    let s = String::deserialize(d)?;
    let clean: String = s.chars().filter(|c| *c != ':' && !c.is_whitespace()).collect();
    let bytes = hex::decode(&clean)
        .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a hex SHA-256 fingerprint")))?;
    bytes.try_into().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{s}`: a SHA-256 fingerprint has 32 bytes (64 hex digits)"
        ))
    })
}

// ---------------------------------------------------------------------------
// Loading and validation.

/// A problem found after parsing, with the key path it belongs to so it can be
/// tied to a line.
struct Invalid {
    path: Vec<PathSeg>,
    message: String,
}

#[derive(Debug, Clone)]
enum PathSeg {
    Key(&'static str),
    Index(usize),
}

use PathSeg::{Index as I, Key as K};

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            position: None,
            message: format!("cannot read the configuration file: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates configuration text; `file` is used in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            position: e.span().map(|s| line_col(text, s.start)),
            message: e.message().trim().to_string(),
        })?;
        if let Some(bad) = config.validate().into_iter().next() {
            return Err(ConfigError {
                file: file.to_path_buf(),
                position: locate(text, &bad.path).map(|s| line_col(text, s.start)),
                message: bad.message,
            });
        }
        Ok(config)
    }

    /// The embedded defaults (what `ward serve` runs without `--config`).
    pub fn embedded() -> Config {
        Config::default()
    }

    fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        let mut bad = |path: Vec<PathSeg>, message: String| out.push(Invalid { path, message });

        if !self.server.hostname.is_empty() && !is_hostname(&self.server.hostname) {
            bad(
                vec![K("server"), K("hostname")],
                format!("`{}` is not a valid host name", self.server.hostname),
            );
        }
        if !self.delivery.helo_name.is_empty() && !is_hostname(&self.delivery.helo_name) {
            bad(
                vec![K("delivery"), K("helo_name")],
                format!("`{}` is not a valid host name", self.delivery.helo_name),
            );
        }
        if self.server.data_dir.as_os_str().is_empty() {
            bad(
                vec![K("server"), K("data_dir")],
                "data_dir must not be empty".into(),
            );
        }
        let cert = !self.tls.cert_file.as_os_str().is_empty();
        let key = !self.tls.key_file.as_os_str().is_empty();
        if cert != key {
            let which = if cert { "key_file" } else { "cert_file" };
            bad(
                vec![K("tls")],
                format!("[tls] sets only half of the key pair: {which} is missing"),
            );
        }
        if self.listeners.is_empty() {
            bad(vec![], "at least one [[listener]] is needed".into());
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.name.trim().is_empty() {
                bad(
                    vec![K("listener"), I(i), K("name")],
                    "listener name must not be empty".into(),
                );
            }
            for (j, other) in self.listeners.iter().enumerate().take(i) {
                if other.address == l.address && l.address.port() != 0 {
                    bad(
                        vec![K("listener"), I(i), K("address")],
                        format!("address {} is also used by listener {}", l.address, j + 1),
                    );
                }
                if other.name == l.name {
                    bad(
                        vec![K("listener"), I(i), K("name")],
                        format!("listener name `{}` is used twice", l.name),
                    );
                }
            }
            if l.require_tls && l.tls == ListenerTls::None {
                bad(
                    vec![K("listener"), I(i), K("require_tls")],
                    "require_tls needs tls = \"starttls\" or \"implicit\"".into(),
                );
            }
        }
        let s = &self.smtp;
        for (name, v) in [
            ("max_connections", s.max_connections),
            ("max_connections_per_ip", s.max_connections_per_ip),
            ("max_recipients", s.max_recipients),
            ("max_received_headers", s.max_received_headers),
            ("max_errors", s.max_errors),
            ("max_auth_failures", s.max_auth_failures),
        ] {
            if v == 0 {
                bad(vec![K("smtp"), K(name)], format!("{name} must be at least 1"));
            }
        }
        if s.max_command_line_length < 512 {
            bad(
                vec![K("smtp"), K("max_command_line_length")],
                "max_command_line_length must be at least 512 (RFC 5321 4.5.3.1.4)".into(),
            );
        }
        if s.max_data_line_length < 998 {
            bad(
                vec![K("smtp"), K("max_data_line_length")],
                "max_data_line_length must be at least 998 (RFC 5322 2.1.1)".into(),
            );
        }
        if s.max_message_size < 1024 {
            bad(
                vec![K("smtp"), K("max_message_size")],
                "max_message_size must be at least 1KiB".into(),
            );
        }
        if s.command_timeout < Duration::from_secs(1) {
            bad(
                vec![K("smtp"), K("command_timeout")],
                "command_timeout must be at least 1s".into(),
            );
        }
        if s.data_timeout < Duration::from_secs(1) {
            bad(
                vec![K("smtp"), K("data_timeout")],
                "data_timeout must be at least 1s".into(),
            );
        }
        let r = &self.relay;
        for (i, u) in r.users.iter().enumerate() {
            if u.name.is_empty() || u.name.contains(char::is_whitespace) {
                bad(
                    vec![K("relay"), K("user"), I(i), K("name")],
                    "user name must be non-empty without spaces".into(),
                );
            }
            if let Err(e) = argon2::PasswordHash::new(&u.password_hash.0) {
                bad(
                    vec![K("relay"), K("user"), I(i), K("password_hash")],
                    format!(
                        "password_hash is not an argon2 PHC string ({e}); make one with `ward hash-password`"
                    ),
                );
            }
        }
        let token = &self.admin.token.0;
        if !token.is_empty() && (token.len() < 24 || !token.bytes().all(|b| b.is_ascii_graphic())) {
            bad(
                vec![K("admin"), K("token")],
                "token must be at least 24 printable ASCII characters without spaces".into(),
            );
        }
        if let Some(t) = &r.tenant_header {
            if t.networks.is_empty() {
                bad(
                    vec![K("relay"), K("tenant_header"), K("networks")],
                    "tenant_header.networks must list the networks the tenant's mail comes from".into(),
                );
            }
            if t.tenants.is_empty() {
                bad(
                    vec![K("relay"), K("tenant_header")],
                    "tenant_header needs at least one [[relay.tenant_header.tenant]]".into(),
                );
            }
            if !is_header_name(&t.header) {
                bad(
                    vec![K("relay"), K("tenant_header"), K("header")],
                    format!("`{}` is not a valid header field name", t.header),
                );
            }
            for (i, tenant) in t.tenants.iter().enumerate() {
                let s = &tenant.secret.0;
                if s.len() < 24 || !s.bytes().all(|b| b.is_ascii_graphic()) {
                    bad(
                        vec![K("relay"), K("tenant_header"), K("tenant"), I(i), K("secret")],
                        "secret must be at least 24 printable ASCII characters without spaces".into(),
                    );
                } else if s.to_ascii_uppercase().starts_with("REPLACE") {
                    bad(
                        vec![K("relay"), K("tenant_header"), K("tenant"), I(i), K("secret")],
                        "secret is still the example's placeholder: put the output of `openssl rand -hex 24` here (and the same value in the provider's header rule)".into(),
                    );
                }
            }
        }
        let q = &self.queue;
        if q.retry_schedule.is_empty() {
            bad(
                vec![K("queue"), K("retry_schedule")],
                "retry_schedule needs at least one delay".into(),
            );
        }
        if q.retry_schedule.iter().any(|d| d.is_zero()) {
            bad(
                vec![K("queue"), K("retry_schedule")],
                "retry delays must be greater than zero".into(),
            );
        }
        if q.max_lifetime.is_zero() {
            bad(
                vec![K("queue"), K("max_lifetime")],
                "max_lifetime must be greater than zero".into(),
            );
        }
        if q.scan_interval.is_zero() {
            bad(
                vec![K("queue"), K("scan_interval")],
                "scan_interval must be greater than zero".into(),
            );
        }
        let d = &self.delivery;
        for (name, v) in [
            ("destination_concurrency", d.destination_concurrency),
            ("max_mx_addresses", d.max_mx_addresses),
            ("max_messages_per_connection", d.max_messages_per_connection),
        ] {
            if v == 0 {
                bad(vec![K("delivery"), K(name)], format!("{name} must be at least 1"));
            }
        }
        if d.smtp_port == 0 {
            bad(
                vec![K("delivery"), K("smtp_port")],
                "smtp_port must not be 0".into(),
            );
        }
        if !d.system_roots && d.ca_file.as_os_str().is_empty() {
            let uses_verify = d.tls_policy == TlsPolicy::Verify
                || d.destinations
                    .iter()
                    .any(|x| x.tls_policy == Some(TlsPolicy::Verify));
            if uses_verify {
                bad(
                    vec![K("delivery"), K("system_roots")],
                    "with system_roots = false, `verify` needs a ca_file".into(),
                );
            }
        }
        for (i, dest) in d.destinations.iter().enumerate() {
            let name = dest.domain.strip_prefix('.').unwrap_or(&dest.domain);
            if !is_hostname(name) {
                bad(
                    vec![K("delivery"), K("destination"), I(i), K("domain")],
                    format!("`{}` is not a domain", dest.domain),
                );
            }
            for (j, other) in d.destinations.iter().enumerate().take(i) {
                if other.domain.eq_ignore_ascii_case(&dest.domain) {
                    bad(
                        vec![K("delivery"), K("destination"), I(i), K("domain")],
                        format!(
                            "domain `{}` is also configured in destination {}",
                            dest.domain,
                            j + 1
                        ),
                    );
                }
            }
            if let Some(n) = &dest.tls_name
                && !is_hostname(n)
            {
                bad(
                    vec![K("delivery"), K("destination"), I(i), K("tls_name")],
                    format!("`{n}` is not a host name"),
                );
            }
        }
        let sc = &self.scan;
        for (name, v) in [
            ("context_window", sc.context_window as u64),
            ("max_depth", sc.max_depth as u64),
            ("max_part_size", sc.max_part_size),
            ("max_total_text", sc.max_total_text),
            ("max_archive_entries", sc.max_archive_entries as u64),
            ("max_decompressed", sc.max_decompressed),
            ("max_compression_ratio", sc.max_compression_ratio),
        ] {
            if v == 0 {
                bad(vec![K("scan"), K(name)], format!("{name} must be at least 1"));
            }
        }
        if sc.time_budget < Duration::from_millis(10) {
            bad(
                vec![K("scan"), K("time_budget")],
                "time_budget must be at least 10ms".into(),
            );
        }
        let pc = &self.policy;
        if pc.timeout_action == PolicyAction::Deliver {
            bad(
                vec![K("policy"), K("timeout_action")],
                "timeout_action can't be \"deliver\": a message that was not fully scanned is never delivered unprotected".into(),
            );
        }
        for (id, rule) in &pc.detectors {
            if !DETECTOR_IDS.contains(&id.as_str()) {
                bad(
                    vec![K("policy"), K("detectors")],
                    format!(
                        "unknown detector `{id}`; detectors are {}",
                        DETECTOR_IDS.join(", ")
                    ),
                );
            }
            for other in &rule.with_any {
                if !DETECTOR_IDS.contains(&other.as_str()) {
                    bad(
                        vec![K("policy"), K("detectors")],
                        format!("detector `{id}`: with_any names unknown detector `{other}`"),
                    );
                }
            }
        }
        for (i, w) in pc.trigger_words.iter().enumerate() {
            if w.trim().is_empty() {
                bad(
                    vec![K("policy"), K("trigger_words")],
                    format!("trigger word {} is empty", i + 1),
                );
            }
        }
        for (key, list) in [
            ("verified_tls_domains", &pc.verified_tls_domains),
            ("portal_domains", &pc.portal_domains),
            ("blocked_domains", &pc.blocked_domains),
        ] {
            for d in list {
                if !is_hostname(d.strip_prefix('.').unwrap_or(d)) {
                    bad(vec![K("policy"), K(key)], format!("`{d}` is not a domain"));
                }
            }
        }
        for (i, r) in pc.rules.iter().enumerate() {
            if r.sender.is_none() && r.recipient.is_none() {
                bad(
                    vec![K("policy"), K("rule"), I(i)],
                    "a rule needs `sender` or `recipient`".into(),
                );
            }
        }
        let pt = &self.portal;
        for (name, v) in [
            ("max_code_attempts", pt.max_code_attempts),
            ("max_codes_per_hour", pt.max_codes_per_hour),
            ("requests_per_minute_per_ip", pt.requests_per_minute_per_ip),
            ("requests_per_minute_per_link", pt.requests_per_minute_per_link),
            ("max_replies_per_link", pt.max_replies_per_link),
        ] {
            if v == 0 {
                bad(vec![K("portal"), K(name)], format!("{name} must be at least 1"));
            }
        }
        for (name, v, min) in [
            ("link_lifetime", pt.link_lifetime, Duration::from_secs(1)),
            ("code_lifetime", pt.code_lifetime, Duration::from_secs(30)),
            ("lockout", pt.lockout, Duration::from_secs(1)),
            (
                "session_idle_timeout",
                pt.session_idle_timeout,
                Duration::from_secs(30),
            ),
        ] {
            if v < min {
                bad(
                    vec![K("portal"), K(name)],
                    format!("{name} must be at least {}", humantime::format_duration(min)),
                );
            }
        }
        if pt.max_reply_size > 1024 * 1024 {
            bad(
                vec![K("portal"), K("max_reply_size")],
                "max_reply_size must be at most 1MiB (a reply is typed text)".into(),
            );
        }
        if pt.organization.trim().is_empty() || pt.organization.chars().any(char::is_control) {
            bad(
                vec![K("portal"), K("organization")],
                "organization must be a non-empty name without control characters".into(),
            );
        }
        if pt.notify_subject.trim().is_empty() || pt.notify_subject.chars().any(char::is_control) {
            bad(
                vec![K("portal"), K("notify_subject")],
                "notify_subject must be non-empty, on one line".into(),
            );
        }
        if !pt.public_host.is_empty() {
            let (host, port) = match pt.public_host.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (pt.public_host.as_str(), None),
            };
            if !is_hostname(host) || port.is_some_and(|p| p.parse::<u16>().is_err()) {
                bad(
                    vec![K("portal"), K("public_host")],
                    format!("`{}` is not a host name with an optional :port", pt.public_host),
                );
            }
        }
        if !pt.notify_from.is_empty() && !is_simple_mailbox(&pt.notify_from) {
            bad(
                vec![K("portal"), K("notify_from")],
                format!(
                    "`{}` is not a mailbox like noreply@hospital.example",
                    pt.notify_from
                ),
            );
        }
        let dk = &self.dkim;
        let set = [
            !dk.domain.is_empty(),
            !dk.selector.is_empty(),
            !dk.key_file.as_os_str().is_empty(),
        ];
        if set.contains(&true) && set.contains(&false) {
            bad(
                vec![K("dkim")],
                "DKIM signing needs all of domain, selector and key_file (or none)".into(),
            );
        }
        if !dk.domain.is_empty() && !is_hostname(&dk.domain) {
            bad(
                vec![K("dkim"), K("domain")],
                format!("`{}` is not a domain name", dk.domain),
            );
        }
        if !dk.selector.is_empty() && !is_hostname(&dk.selector) {
            bad(
                vec![K("dkim"), K("selector")],
                format!("`{}` is not a selector (DNS labels)", dk.selector),
            );
        }
        let rl = &self.rate_limit;
        if rl.eviction_interval < Duration::from_secs(1) {
            bad(
                vec![K("rate_limit"), K("eviction_interval")],
                "eviction_interval must be at least 1s".into(),
            );
        }
        for (i, o) in rl.senders.iter().enumerate() {
            let p = o.sender.trim();
            let domain = p
                .strip_prefix('@')
                .or_else(|| p.strip_prefix('.'))
                .or_else(|| p.rsplit_once('@').map(|(_, d)| d));
            let ok = match domain {
                Some(d) => is_hostname(d),
                // A login name.
                None => !p.is_empty() && !p.contains(char::is_whitespace),
            };
            if !ok {
                bad(
                    vec![K("rate_limit"), K("sender"), I(i), K("sender")],
                    format!(
                        "`{}` is not user@domain, @domain, .domain or a login name",
                        o.sender
                    ),
                );
            }
            if o.messages.is_none() && o.recipients.is_none() {
                bad(
                    vec![K("rate_limit"), K("sender"), I(i)],
                    "an override needs `messages` or `recipients`".into(),
                );
            }
        }
        for (i, o) in rl.domains.iter().enumerate() {
            if !is_hostname(o.domain.strip_prefix('.').unwrap_or(&o.domain)) {
                bad(
                    vec![K("rate_limit"), K("domain"), I(i), K("domain")],
                    format!("`{}` is not a domain", o.domain),
                );
            }
        }
        if self.dns.attempts == 0 {
            bad(
                vec![K("dns"), K("attempts")],
                "attempts must be at least 1".into(),
            );
        }
        if self.dns.timeout.is_zero() {
            bad(
                vec![K("dns"), K("timeout")],
                "timeout must be greater than zero".into(),
            );
        }
        out
    }
}

/// A plain `local@domain` mailbox (ASCII, no quoting, no spaces).
pub fn is_simple_mailbox(s: &str) -> bool {
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && local.len() <= 64
                && local
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b))
                && is_hostname(domain)
        }
        None => false,
    }
}

/// RFC 5322 field name: printable ASCII except colon.
pub fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = offset - before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
    (line, col)
}

impl ConfigError {
    /// An error about the value of a setting (`keys`, e.g. `["tls",
    /// "cert_file"]`) found after the file parsed, such as a certificate file
    /// that can't be read: placed at the setting's line in `file`.
    pub fn at_setting(file: &Path, keys: &[&'static str], message: String) -> ConfigError {
        let path: Vec<PathSeg> = keys.iter().map(|k| K(k)).collect();
        let position = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| locate(&text, &path).map(|s| line_col(&text, s.start)));
        ConfigError {
            file: file.to_path_buf(),
            position,
            message: format!("{}: {message}", keys.join(".")),
        }
    }
}

// ---------------------------------------------------------------------------
// Reload (SIGHUP).

/// A value a reload can replace while it is in use: readers take the
/// snapshot in force (an `Arc`) and keep it for as long as they need a
/// consistent view; a replacement affects only later readers.
pub struct Live<T>(std::sync::RwLock<std::sync::Arc<T>>);

impl<T> Live<T> {
    pub fn new(value: T) -> Live<T> {
        Live(std::sync::RwLock::new(std::sync::Arc::new(value)))
    }

    /// The snapshot in force now.
    pub fn get(&self) -> std::sync::Arc<T> {
        // The lock only guards an Arc swap; a poisoned one still holds a
        // whole value.
        self.0
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Replaces the value for every later reader.
    pub fn set(&self, value: T) {
        let value = std::sync::Arc::new(value);
        match self.0.write() {
            Ok(mut g) => *g = value,
            Err(p) => *p.into_inner() = value,
        }
    }
}

/// The settings a running Ward can't change: what binds sockets, opens
/// stores or names files held open, and what is built into the parts made
/// once at start (the portal, reports, DKIM, the admin listener, the audit
/// writer, the log format), and `delivery.mode` (switching between sandbox
/// and live is a deliberate restart, not a side effect of a reload). A reload keeps the running value of each one
/// that changed in `new` and returns their names, for the "takes effect at
/// restart" warning.
pub fn keep_restart_only(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($name:literal, $($field:tt)+) => {
            if running.$($field)+ != new.$($field)+ {
                new.$($field)+ = running.$($field)+.clone();
                changed.push($name);
            }
        };
    }
    keep!("[[listener]]", listeners);
    keep!("server.data_dir", server.data_dir);
    keep!("server.master_key_file", server.master_key_file);
    keep!("server.hostname", server.hostname);
    keep!("log.format", log.format);
    keep!("queue.cache_size", queue.cache_size);
    keep!("delivery.mode", delivery.mode);
    keep!("[dsn]", dsn);
    keep!("[portal]", portal);
    keep!("[dkim]", dkim);
    keep!("[admin]", admin);
    keep!("[audit]", audit);
    changed
}

/// Finds the span of a key path in the TOML text: the deepest part of the path
/// that exists (a missing key is reported at its table).
fn locate(text: &str, path: &[PathSeg]) -> Option<Range<usize>> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut span: Option<Range<usize>> = None;
    let mut table: Option<&DeTable> = Some(root.get_ref());
    let mut array: Option<&toml::de::DeArray> = None;
    for seg in path {
        let value: &toml::Spanned<DeValue> = match (seg, table, array) {
            (K(k), Some(t), _) => {
                let (key, v) = t.iter().find(|(key, _)| key.get_ref().as_ref() == *k)?;
                span = Some(key.span());
                v
            }
            (I(i), _, Some(a)) => {
                let v = a.get(*i)?;
                span = Some(v.span());
                v
            }
            _ => break,
        };
        table = value.get_ref().as_table();
        array = value.get_ref().as_array();
    }
    span
}

// ---------------------------------------------------------------------------
// The settings reference: one entry per setting, in file order. The README's
// reference section and `ward config-reference` are generated from it.

/// One documented setting.
pub struct SettingDoc {
    /// Dotted key (`smtp.max_message_size`); `listener[]` and `[]` mark
    /// entries of arrays of tables.
    pub key: &'static str,
    /// The default as TOML, or a description in parentheses when the default
    /// is computed or the setting is optional.
    pub default: &'static str,
    /// What it means.
    pub doc: &'static str,
}

/// Every setting, its default and its meaning.
pub const SETTINGS: &[SettingDoc] = &[
    SettingDoc {
        key: "server.hostname",
        default: "\"\"",
        doc: "Host name used in the greeting, in EHLO when delivering and in Received headers. Empty means the machine's host name.",
    },
    SettingDoc {
        key: "server.data_dir",
        default: "\"./var\"",
        doc: "Directory for the queue, the master key and generated certificates. Relative paths are relative to the working directory.",
    },
    SettingDoc {
        key: "server.master_key_file",
        default: "\"\"",
        doc: "Master key file (32 random bytes, hex). Empty means <data_dir>/master.key, created with mode 0600 on first start. Losing it loses the queue.",
    },
    SettingDoc {
        key: "server.shutdown_timeout",
        default: "\"30s\"",
        doc: "On SIGTERM, how long sessions and deliveries in progress may take to finish.",
    },
    SettingDoc {
        key: "log.level",
        default: "\"info\"",
        doc: "Log filter (tracing EnvFilter syntax, e.g. \"info\" or \"ward=debug\"); RUST_LOG overrides it. Other crates log at info at most and the content parsers (html5ever, lopdf, ...) not at all, so no level ever logs message content.",
    },
    SettingDoc {
        key: "log.format",
        default: "\"text\"",
        doc: "\"text\" for people and journald (under systemd, where JOURNAL_STREAM is set, lines leave the time to the journal), \"json\" (one object per line) for a SIEM. `ward serve --log-format` (or WARD_LOG_FORMAT) overrides it.",
    },
    SettingDoc {
        key: "tls.cert_file",
        default: "\"\"",
        doc: "PEM certificate chain for the SMTP listeners and the portal. Empty: a self-signed certificate is generated into <data_dir>/tls/ on first start, with a warning. Re-read on reload (SIGHUP): renew the files in place and reload; new handshakes get the new certificate.",
    },
    SettingDoc {
        key: "tls.key_file",
        default: "\"\"",
        doc: "PEM private key (PKCS#8, PKCS#1 or SEC1) for cert_file.",
    },
    SettingDoc {
        key: "tls.min_version",
        default: "\"1.2\"",
        doc: "Lowest TLS version accepted from clients: \"1.2\" or \"1.3\". Older versions are never offered.",
    },
    SettingDoc {
        key: "listener[].name",
        default: "\"smtp\"",
        doc: "Name of the listener, used in logs.",
    },
    SettingDoc {
        key: "listener[].address",
        default: "\"127.0.0.1:2525\"",
        doc: "Address and port to listen on. Listing any [[listener]] replaces the default one.",
    },
    SettingDoc {
        key: "listener[].tls",
        default: "\"starttls\"",
        doc: "\"starttls\" (plain SMTP offering STARTTLS), \"implicit\" (TLS from the first byte, RFC 8314) or \"none\".",
    },
    SettingDoc {
        key: "listener[].require_tls",
        default: "false",
        doc: "Refuse MAIL before STARTTLS with 530 5.7.0.",
    },
    SettingDoc {
        key: "smtp.max_connections",
        default: "500",
        doc: "Connections open at once, all clients together; more get 421 4.7.0. With max_message_size this bounds memory.",
    },
    SettingDoc {
        key: "smtp.max_connections_per_ip",
        default: "50",
        doc: "Connections open at once from one client IP; more get 421 4.7.0.",
    },
    SettingDoc {
        key: "smtp.max_command_line_length",
        default: "2048",
        doc: "Longest command line in octets, CRLF included (RFC 5321's 512 plus room for extension parameters). Longer lines are drained and get 500 5.5.2.",
    },
    SettingDoc {
        key: "smtp.max_data_line_length",
        default: "998",
        doc: "Longest line of message data in octets, CRLF excluded (RFC 5322 2.1.1). Longer: 550 5.6.0 at the end of DATA.",
    },
    SettingDoc {
        key: "smtp.max_message_size",
        default: "36700160",
        doc: "Largest message in octets (35 MiB; sizes like \"35MiB\" work too), advertised with SIZE. Larger: 552 5.3.4, after draining.",
    },
    SettingDoc {
        key: "smtp.max_recipients",
        default: "1000",
        doc: "Recipients per message; more get 452 4.5.3.",
    },
    SettingDoc {
        key: "smtp.max_received_headers",
        default: "50",
        doc: "Received headers a message may carry; more means a mail loop: 554 5.4.6.",
    },
    SettingDoc {
        key: "smtp.command_timeout",
        default: "\"5m\"",
        doc: "Wait for the next command (RFC 5321 4.5.3.2.7: at least 5 minutes); then 421 4.4.2.",
    },
    SettingDoc {
        key: "smtp.data_timeout",
        default: "\"3m\"",
        doc: "Wait for the next block of message data (RFC 5321 4.5.3.2.5); then 421 4.4.2.",
    },
    SettingDoc {
        key: "smtp.greeting_delay",
        default: "\"0s\"",
        doc: "Pause before the 220 greeting; a client that sends anything during it gets 554 5.5.1 (like postscreen_greet_wait). With 0s only bytes already waiting at connect are caught.",
    },
    SettingDoc {
        key: "smtp.max_errors",
        default: "20",
        doc: "Errors (bad commands, refused recipients) a session may make before it is closed with 421 4.7.0.",
    },
    SettingDoc {
        key: "smtp.max_auth_failures",
        default: "3",
        doc: "Failed AUTH attempts a session may make before it is closed with 421 4.7.0.",
    },
    SettingDoc {
        key: "relay.networks",
        default: "[\"127.0.0.0/8\", \"::1/128\"]",
        doc: "Client networks (CIDR) that may relay on their IP address alone. Do not list a provider's shared egress ranges here: use tenant_header.",
    },
    SettingDoc {
        key: "relay.connect_networks",
        default: "[]",
        doc: "If not empty, only these networks may connect; others get 554 5.7.1 at connect.",
    },
    SettingDoc {
        key: "relay.deny_networks",
        default: "[]",
        doc: "Networks refused at connect with 554 5.7.1 (checked before everything else).",
    },
    SettingDoc {
        key: "relay.user[].name",
        default: "(none)",
        doc: "SMTP AUTH user name (AUTH PLAIN and LOGIN are offered only after TLS).",
    },
    SettingDoc {
        key: "relay.user[].password_hash",
        default: "(none)",
        doc: "Argon2 PHC hash of the password; `ward hash-password` makes one.",
    },
    SettingDoc {
        key: "relay.client_certificate[].name",
        default: "(none)",
        doc: "Name of a TLS client certificate that may relay, used in logs.",
    },
    SettingDoc {
        key: "relay.client_certificate[].sha256",
        default: "(none)",
        doc: "SHA-256 fingerprint of that certificate (DER), hex, colons allowed.",
    },
    SettingDoc {
        key: "relay.tenant_header.header",
        default: "\"X-Ward-Tenant\"",
        doc: "Header field the tenant's mail-flow rule stamps with its secret; checked in constant time at the end of DATA and removed before delivery.",
    },
    SettingDoc {
        key: "relay.tenant_header.networks",
        default: "(required)",
        doc: "Client networks allowed to authenticate by header, e.g. the provider's published egress ranges. Clients there get 550 5.7.1 at the end of DATA without a valid header.",
    },
    SettingDoc {
        key: "relay.tenant_header.tenant[].name",
        default: "(none)",
        doc: "Tenant name used in logs and the Received header.",
    },
    SettingDoc {
        key: "relay.tenant_header.tenant[].secret",
        default: "(none)",
        doc: "The tenant's header value: at least 24 printable characters (e.g. `openssl rand -hex 24`).",
    },
    SettingDoc {
        key: "queue.cache_size",
        default: "67108864",
        doc: "Memory the queue database may use for its page cache (64 MiB).",
    },
    SettingDoc {
        key: "queue.retry_schedule",
        default: "[\"2m\", \"5m\", \"10m\", \"15m\", \"30m\", \"1h\", \"2h\", \"4h\"]",
        doc: "Delay before each retry after a temporary failure; the last one repeats.",
    },
    SettingDoc {
        key: "queue.max_lifetime",
        default: "\"5d\"",
        doc: "How long a message may wait; then its undelivered copies fail permanently (expired).",
    },
    SettingDoc {
        key: "queue.scan_interval",
        default: "\"1s\"",
        doc: "How often the queue is searched for copies whose retry time has come.",
    },
    SettingDoc {
        key: "queue.status_retention",
        default: "\"30d\"",
        doc: "How long the final status of each recipient copy is kept after its message left the queue.",
    },
    SettingDoc {
        key: "dsn.delay_after",
        default: "\"4h\"",
        doc: "A recipient copy still undelivered this long after arrival gets one delay notice, when its RCPT TO asked for NOTIFY=DELAY. Failure notices (5xx or queue.max_lifetime) go unless NOTIFY=NEVER; success notices only on NOTIFY=SUCCESS; never to the null sender. Reports hold no subject, body or attachment name, whatever RET asks.",
    },
    SettingDoc {
        key: "dsn.postmaster",
        default: "\"\"",
        doc: "Where a bounce that itself could not be delivered is reported, with no detail of the message. Empty means postmaster@server.hostname.",
    },
    SettingDoc {
        key: "dsn.diagnostic_max_length",
        default: "200",
        doc: "Longest remote diagnostic text kept in a report, in characters. The text also loses every run of 4 or more digits and every address other than the recipient's own.",
    },
    SettingDoc {
        key: "delivery.mode",
        default: "\"live\"",
        doc: "\"live\" delivers to the network. \"sandbox\" sends nothing anywhere (no DNS lookups, no connections): every outbound copy (messages, portal notifications and codes, bounces) is kept encrypted in <data_dir>/sandbox/ and recorded as delivered to the sandbox; protected copies go to the portal (when portal.enabled) as if no destination could do verified TLS, except policy.verified_tls_domains. `ward sandbox list` / `show ID` / `clear`; `ward serve --sandbox` turns it on with the portal on loopback.",
    },
    SettingDoc {
        key: "delivery.helo_name",
        default: "\"\"",
        doc: "Name sent in EHLO; empty means server.hostname.",
    },
    SettingDoc {
        key: "delivery.tls_policy",
        default: "\"verify\"",
        doc: "Default TLS policy: \"verify\" (STARTTLS, TLS 1.2+, trusted chain, name matching the MX host), \"encrypt\" (STARTTLS, TLS 1.2+, certificate unchecked) or \"may\" (opportunistic).",
    },
    SettingDoc {
        key: "delivery.ca_file",
        default: "\"\"",
        doc: "Extra trusted CA certificates (PEM) for verify.",
    },
    SettingDoc {
        key: "delivery.system_roots",
        default: "true",
        doc: "Trust the system's root certificates for verify.",
    },
    SettingDoc {
        key: "delivery.smart_host",
        default: "(none)",
        doc: "Send everything through this next hop: \"host\" or \"host:port\" (MX lookup), \"[host]\" or \"[host]:port\" (no MX lookup). Destination routes win.",
    },
    SettingDoc {
        key: "delivery.smtp_port",
        default: "25",
        doc: "Port for MX hosts and for next hops written without a port.",
    },
    SettingDoc {
        key: "delivery.destination_concurrency",
        default: "20",
        doc: "Connections open at once to one destination domain.",
    },
    SettingDoc {
        key: "delivery.max_mx_addresses",
        default: "5",
        doc: "Most MX host addresses tried in one delivery attempt.",
    },
    SettingDoc {
        key: "delivery.max_messages_per_connection",
        default: "100",
        doc: "Messages sent over one connection before it is closed.",
    },
    SettingDoc {
        key: "delivery.connection_cache_time",
        default: "\"2s\"",
        doc: "How long an idle delivery connection is kept open for the next message to the same destination.",
    },
    SettingDoc {
        key: "delivery.connect_timeout",
        default: "\"30s\"",
        doc: "TCP connect timeout.",
    },
    SettingDoc {
        key: "delivery.greeting_timeout",
        default: "\"5m\"",
        doc: "Wait for the 220 greeting (RFC 5321 4.5.3.2.1).",
    },
    SettingDoc {
        key: "delivery.command_timeout",
        default: "\"5m\"",
        doc: "Wait for replies to EHLO, STARTTLS, RSET and QUIT, and for the TLS handshake.",
    },
    SettingDoc {
        key: "delivery.mail_timeout",
        default: "\"5m\"",
        doc: "Wait for the reply to MAIL (RFC 5321 4.5.3.2.2).",
    },
    SettingDoc {
        key: "delivery.rcpt_timeout",
        default: "\"5m\"",
        doc: "Wait for the reply to each RCPT (RFC 5321 4.5.3.2.3).",
    },
    SettingDoc {
        key: "delivery.data_init_timeout",
        default: "\"2m\"",
        doc: "Wait for the 354 after DATA (RFC 5321 4.5.3.2.4).",
    },
    SettingDoc {
        key: "delivery.data_block_timeout",
        default: "\"3m\"",
        doc: "Longest one write of message data may block (RFC 5321 4.5.3.2.5).",
    },
    SettingDoc {
        key: "delivery.data_end_timeout",
        default: "\"10m\"",
        doc: "Wait for the reply after the final dot (RFC 5321 4.5.3.2.6).",
    },
    SettingDoc {
        key: "delivery.destination[].domain",
        default: "(none)",
        doc: "Recipient domain; \".example.org\" also matches its subdomains (an exact entry wins).",
    },
    SettingDoc {
        key: "delivery.destination[].route",
        default: "(MX lookup)",
        doc: "Next hop for this domain, in smart_host syntax.",
    },
    SettingDoc {
        key: "delivery.destination[].tls_policy",
        default: "(delivery.tls_policy)",
        doc: "TLS policy for this domain.",
    },
    SettingDoc {
        key: "delivery.destination[].tls_name",
        default: "(the route's host name, or the domain)",
        doc: "Certificate name required under verify, e.g. when the route is an IP address.",
    },
    SettingDoc {
        key: "dns.nameservers",
        default: "[]",
        doc: "Nameservers (\"ip:port\") for MX and address lookups; empty means /etc/resolv.conf.",
    },
    SettingDoc {
        key: "dns.timeout",
        default: "\"5s\"",
        doc: "Timeout of one DNS query.",
    },
    SettingDoc {
        key: "dns.attempts",
        default: "2",
        doc: "Attempts per DNS query before the lookup fails temporarily.",
    },
    SettingDoc {
        key: "scan.context_window",
        default: "300",
        doc: "Characters around a match searched for a context keyword (\"SSN\", \"DOB\", \"MRN\", ...).",
    },
    SettingDoc {
        key: "scan.time_budget",
        default: "\"5s\"",
        doc: "Longest one message's scan may take before the 250; on overrun the decision is policy.timeout_action, never deliver.",
    },
    SettingDoc {
        key: "scan.max_depth",
        default: "10",
        doc: "Deepest nesting of multiparts, attached messages and archives; deeper parts are unscanned.",
    },
    SettingDoc {
        key: "scan.max_part_size",
        default: "26214400",
        doc: "Largest decoded part that is scanned (25 MiB); larger parts are unscanned.",
    },
    SettingDoc {
        key: "scan.max_total_text",
        default: "52428800",
        doc: "Most text extracted from one message (50 MiB); the rest is unscanned.",
    },
    SettingDoc {
        key: "scan.max_archive_entries",
        default: "2000",
        doc: "Most members read from one archive (docx, xlsx and pptx are zip files).",
    },
    SettingDoc {
        key: "scan.max_decompressed",
        default: "104857600",
        doc: "Most bytes decompressed from one archive or PDF (100 MiB): zip-bomb guard.",
    },
    SettingDoc {
        key: "scan.max_compression_ratio",
        default: "200",
        doc: "Highest decompressed-to-compressed ratio of one archive member: zip-bomb guard.",
    },
    SettingDoc {
        key: "policy.trigger_words",
        default: "[\"[secure]\", \"[encrypt]\"]",
        doc: "Subject words (case-insensitive) that make a message protect whatever it contains.",
    },
    SettingDoc {
        key: "policy.strip_trigger_words",
        default: "false",
        doc: "Remove trigger words from the Subject before delivery (only where they appear unencoded).",
    },
    SettingDoc {
        key: "policy.unscanned_action",
        default: "\"protect\"",
        doc: "Action when a part can't be scanned (encrypted, too large, unknown binary): deliver, protect, quarantine or reject.",
    },
    SettingDoc {
        key: "policy.timeout_action",
        default: "\"protect\"",
        doc: "Action when scanning overruns scan.time_budget: protect, quarantine or reject (never deliver).",
    },
    SettingDoc {
        key: "policy.detectors.<id>.action",
        default: "(see meaning)",
        doc: "Action when detector <id> fires. Built in: ssn, mbi, icd10, mrn, dob, health_plan_id and credit_card protect; phone and email_address protect only with health_terms; npi, dea and health_terms alone deliver.",
    },
    SettingDoc {
        key: "policy.detectors.<id>.min_count",
        default: "1",
        doc: "Matches of <id> (all parts together) needed before its rule applies.",
    },
    SettingDoc {
        key: "policy.detectors.<id>.with_any",
        default: "[]",
        doc: "If not empty, the rule applies only when one of these detectors fired too.",
    },
    SettingDoc {
        key: "policy.verified_tls_domains",
        default: "[]",
        doc: "Partner domains known to do verified TLS: protected copies go to them over verify TLS and never to the portal. A leading dot covers subdomains.",
    },
    SettingDoc {
        key: "policy.portal_domains",
        default: "[]",
        doc: "Domains whose every copy is protected and goes to the pickup portal (with portal.enabled off, such copies wait).",
    },
    SettingDoc {
        key: "policy.blocked_domains",
        default: "[]",
        doc: "Domains Ward never delivers to: 550 5.7.1 at RCPT.",
    },
    SettingDoc {
        key: "policy.rule[].sender",
        default: "(none)",
        doc: "Envelope sender a rule matches: user@example.org, @example.org, .example.org (subdomains too) or *.",
    },
    SettingDoc {
        key: "policy.rule[].recipient",
        default: "(none)",
        doc: "Recipient a rule matches, same forms. A rule with both needs both to match.",
    },
    SettingDoc {
        key: "policy.rule[].action",
        default: "(required)",
        doc: "Action for matching copies. Rules only make a decision stricter: the strictest of content and rules wins.",
    },
    SettingDoc {
        key: "portal.enabled",
        default: "false",
        doc: "Run the pickup portal. Off: protected copies whose destination can't do verified TLS wait and retry until queue.max_lifetime.",
    },
    SettingDoc {
        key: "portal.address",
        default: "\"127.0.0.1:8443\"",
        doc: "Address and port of the HTTPS portal (same certificate as the SMTP listeners, tls.cert_file).",
    },
    SettingDoc {
        key: "portal.public_host",
        default: "\"\"",
        doc: "Host (and :port if not 443) in pickup links, https://<public_host>/m/<token>. Empty means server.hostname.",
    },
    SettingDoc {
        key: "portal.organization",
        default: "\"Ward\"",
        doc: "Organization name shown on portal pages and in notifications.",
    },
    SettingDoc {
        key: "portal.logo_file",
        default: "\"\"",
        doc: "PNG or SVG logo shown on portal pages. Empty: none.",
    },
    SettingDoc {
        key: "portal.notify_from",
        default: "\"\"",
        doc: "From address (and envelope sender) of notifications and code mails. Empty means noreply@<server.hostname>.",
    },
    SettingDoc {
        key: "portal.notify_subject",
        default: "\"You have a secure message from {organization}\"",
        doc: "Subject of the notification; {organization} is replaced. Notifications never carry the original subject, body or attachment names.",
    },
    SettingDoc {
        key: "portal.link_lifetime",
        default: "\"30d\"",
        doc: "How long a pickup link works. Then the message's key is destroyed, then its data; the link answers 410.",
    },
    SettingDoc {
        key: "portal.code_lifetime",
        default: "\"10m\"",
        doc: "How long an emailed one-time code (8 digits, stored only hashed) is valid.",
    },
    SettingDoc {
        key: "portal.max_code_attempts",
        default: "5",
        doc: "Wrong codes allowed for a link; then it locks for portal.lockout and every code, even the right one, is refused.",
    },
    SettingDoc {
        key: "portal.lockout",
        default: "\"30m\"",
        doc: "How long a link stays locked after max_code_attempts wrong codes.",
    },
    SettingDoc {
        key: "portal.max_codes_per_hour",
        default: "5",
        doc: "One-time codes that may be mailed for one link per hour.",
    },
    SettingDoc {
        key: "portal.session_idle_timeout",
        default: "\"15m\"",
        doc: "A portal session (cookie: HttpOnly, Secure, SameSite=Strict) ends after this long without a request.",
    },
    SettingDoc {
        key: "portal.requests_per_minute_per_ip",
        default: "120",
        doc: "Portal requests per minute from one client IP; more get 429.",
    },
    SettingDoc {
        key: "portal.requests_per_minute_per_link",
        default: "30",
        doc: "Portal requests per minute for one link; more get 429.",
    },
    SettingDoc {
        key: "portal.max_reply_size",
        default: "32768",
        doc: "Largest reply (octets of text, at most 1MiB) a recipient may write on the message page; it goes to the original sender through the queue as protected mail, From portal.notify_from with Reply-To the recipient. Larger: 413. 0 turns replies off.",
    },
    SettingDoc {
        key: "portal.max_replies_per_link",
        default: "10",
        doc: "Replies that may be sent from one pickup link in all; more get 429.",
    },
    SettingDoc {
        key: "portal.opened_notice",
        default: "false",
        doc: "When the recipient first opens a message, send its original sender a notice (recipient, time; no subject or content) from portal.notify_from.",
    },
    SettingDoc {
        key: "dkim.domain",
        default: "\"\"",
        doc: "DKIM signing domain (d=) for the mail Ward writes itself: pickup notifications, codes, opened notices, portal replies and delivery status notifications. Use the domain of portal.notify_from (or its parent) so DMARC aligns. Empty: no signing.",
    },
    SettingDoc {
        key: "dkim.selector",
        default: "\"\"",
        doc: "DKIM selector (s=): publish the public key as a TXT record at <selector>._domainkey.<domain>.",
    },
    SettingDoc {
        key: "dkim.key_file",
        default: "\"\"",
        doc: "DKIM private key, PEM: RSA (PKCS#8 or PKCS#1; signs rsa-sha256, 2048 bits or more advised) or Ed25519 (PKCS#8; signs ed25519-sha256). Read at start; a bad key stops Ward with the reason.",
    },
    SettingDoc {
        key: "rate_limit.enabled",
        default: "true",
        doc: "Enforce the rate limits below (GCRA: a bucket of N that refills evenly over the period). Each rate is \"N/period\" or \"off\". Counters live in memory: a restart starts them afresh; a reload (SIGHUP) keeps the counters of rules whose rate did not change.",
    },
    SettingDoc {
        key: "rate_limit.sender_messages",
        default: "\"1000/1h\"",
        doc: "Messages per sender (the authenticated user, otherwise the envelope sender), counted at MAIL. Over it: 450 4.7.0 with the wait in the text.",
    },
    SettingDoc {
        key: "rate_limit.sender_recipients",
        default: "\"5000/1h\"",
        doc: "Recipients per sender, counted at RCPT. Over it: 452 4.5.3 with the wait in the text.",
    },
    SettingDoc {
        key: "rate_limit.ip_connections",
        default: "\"3000/1m\"",
        doc: "New connections per client IP. Over it: 421 4.7.0 at connect. Generous because a tenant's provider sends from few addresses.",
    },
    SettingDoc {
        key: "rate_limit.ip_messages",
        default: "\"50000/1h\"",
        doc: "Messages per client IP, counted at MAIL. Over it: 450 4.7.0.",
    },
    SettingDoc {
        key: "rate_limit.domain_deliveries",
        default: "\"1200/1m\"",
        doc: "Outbound deliveries (recipient copies) per recipient domain, to keep the sending address's reputation. Over it the copy is rescheduled for when the bucket allows it (no attempt is counted, nothing fails).",
    },
    SettingDoc {
        key: "rate_limit.eviction_interval",
        default: "\"1m\"",
        doc: "How often keys whose bucket is full again are dropped from memory, so memory follows the active senders, not all senders ever seen.",
    },
    SettingDoc {
        key: "rate_limit.sender[].sender",
        default: "(required)",
        doc: "Senders an override applies to: user@example.org (envelope sender or authenticated login name), @example.org or .example.org (subdomains too). Each matching sender has its own bucket. The first matching override wins.",
    },
    SettingDoc {
        key: "rate_limit.sender[].messages",
        default: "(sender_messages)",
        doc: "Messages per matching sender (\"N/period\" or \"off\").",
    },
    SettingDoc {
        key: "rate_limit.sender[].recipients",
        default: "(sender_recipients)",
        doc: "Recipients per matching sender (\"N/period\" or \"off\").",
    },
    SettingDoc {
        key: "rate_limit.domain[].domain",
        default: "(required)",
        doc: "Recipient domain an outbound override applies to; .example.org covers its subdomains (each its own bucket). An exact domain wins over the longest suffix.",
    },
    SettingDoc {
        key: "rate_limit.domain[].deliveries",
        default: "(required)",
        doc: "Deliveries per period to that domain (\"N/period\" or \"off\").",
    },
    SettingDoc {
        key: "admin.enabled",
        default: "true",
        doc: "Run the admin listener: plain HTTP serving GET /metrics (Prometheus text format; metric names, closed label values and numbers only, never an address or content).",
    },
    SettingDoc {
        key: "admin.address",
        default: "\"127.0.0.1:9465\"",
        doc: "Address and port of the admin listener. /metrics has no authentication: keep it on loopback or an internal, firewalled address.",
    },
    SettingDoc {
        key: "admin.token",
        default: "\"\"",
        doc: "Bearer token of the status API on the admin listener (GET /api/status/<queue-id or Message-ID>: per-recipient delivery status as JSON; addresses, codes, TLS facts, never content), and of `ward status`. At least 24 characters (e.g. `openssl rand -hex 24`). Empty: the API answers 404.",
    },
    SettingDoc {
        key: "audit.enabled",
        default: "true",
        doc: "Keep the audit trail: one JSON line per security-relevant event (connections, authentication, messages accepted with size and finding kinds and counts, policy decisions, delivery attempts with TLS details, pickup events, reports sent, reloads) in <data_dir>/audit/, each line holding the SHA-256 of the previous one. Addresses, ids, sizes, kinds and codes only, never content. `ward audit verify` checks the chain; `ward audit export` prints a period.",
    },
    SettingDoc {
        key: "audit.retention",
        default: "\"6y\"",
        doc: "An audit file is removed once its newest line is older than this (HIPAA keeps documentation 6 years). The oldest remaining line anchors the chain.",
    },
    SettingDoc {
        key: "audit.max_file_size",
        default: "67108864",
        doc: "A new audit file is started past this size (64 MiB); its first line holds the hash of the last line of the previous file.",
    },
];

/// The settings reference as Markdown (for the README and
/// `ward config-reference`).
pub fn reference_markdown() -> String {
    let mut out = String::from("| setting | default | meaning |\n|---|---|---|\n");
    for s in SETTINGS {
        out.push_str(&format!(
            "| `{}` | `{}` | {} |\n",
            s.key,
            s.default.replace('|', "\\|"),
            s.doc.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    /// A reload keeps what can't change live, names it, and takes the rest.
    #[test]
    fn a_reload_keeps_restart_only_settings_and_names_them() {
        let running = Config::default();
        let mut new = parse(
            "[server]\ndata_dir = \"/elsewhere\"\n[[listener]]\nname = \"smtp\"\naddress = \"127.0.0.1:2600\"\n\
             [policy]\nblocked_domains = [\"x.test\"]\n[smtp]\nmax_recipients = 7\n",
        )
        .unwrap();
        let kept = keep_restart_only(&running, &mut new);
        assert_eq!(kept, vec!["[[listener]]", "server.data_dir"]);
        assert_eq!(new.listeners, running.listeners);
        assert_eq!(new.server.data_dir, running.server.data_dir);
        assert_eq!(new.policy.blocked_domains, vec!["x.test".to_string()]);
        assert_eq!(new.smtp.max_recipients, 7);
        let mut same = running.clone();
        assert!(keep_restart_only(&running, &mut same).is_empty());
    }

    #[test]
    fn a_setting_error_is_placed_at_its_line() {
        let dir = std::env::temp_dir().join(format!("ward-config-at-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ward.toml");
        std::fs::write(
            &file,
            "[server]\nhostname = \"a.test\"\n\n[tls]\ncert_file = \"/x.crt\"\nkey_file = \"/x.key\"\n",
        )
        .unwrap();
        let e = ConfigError::at_setting(&file, &["tls", "key_file"], "cannot open".into());
        assert_eq!(
            e.to_string(),
            format!("{}:6:1: tls.key_file: cannot open", file.display())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Builds a TOML document from the documented defaults and checks it
    /// parses to exactly `Config::default()`: the reference can't drift.
    #[test]
    fn documented_defaults_are_the_real_defaults() {
        let mut doc = String::new();
        let mut tables: Vec<(String, Vec<String>)> = Vec::new();
        for s in SETTINGS {
            // Optional tables and arrays of tables have no defaults to compare.
            if s.default.starts_with('(')
                || s.key.contains("[]")
                || s.key.contains("<id>")
                || s.key.starts_with("relay.tenant_header.")
            {
                continue;
            }
            let (table, key) = s.key.rsplit_once('.').expect("dotted key");
            let line = format!("{key} = {}", s.default);
            match tables.iter_mut().find(|(t, _)| t == table) {
                Some((_, lines)) => lines.push(line),
                None => tables.push((table.to_string(), vec![line])),
            }
        }
        for (t, lines) in &tables {
            doc.push_str(&format!("[{t}]\n{}\n", lines.join("\n")));
        }
        doc.push_str("[[listener]]\nname = \"smtp\"\naddress = \"127.0.0.1:2525\"\ntls = \"starttls\"\nrequire_tls = false\n");
        let parsed = parse(&doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn every_documented_key_exists() {
        // Each documented key, set alone, must be accepted by the schema
        // (or fail for its value, not as an unknown field).
        for s in SETTINGS {
            let key = s.key.replace("<id>", "ssn");
            let parts: Vec<&str> = key.split('.').collect();
            let (last, tables) = parts.split_last().unwrap();
            let mut header = String::new();
            let mut is_array = false;
            for t in tables {
                if !header.is_empty() {
                    header.push('.');
                }
                if let Some(name) = t.strip_suffix("[]") {
                    header.push_str(name);
                    is_array = true;
                } else {
                    header.push_str(t);
                }
            }
            let doc = if is_array {
                format!("[[{header}]]\n{last} = 1\n")
            } else {
                format!("[{header}]\n{last} = 1\n")
            };
            if let Err(e) = parse(&doc) {
                assert!(!e.message.contains("unknown field"), "{}: {e}", s.key);
            }
        }
    }

    /// conf/ward.toml sets (or shows commented) every setting; each key it
    /// sets must be documented, so nothing can be added undocumented.
    #[test]
    fn every_setting_in_the_shipped_config_is_documented() {
        use toml::de::{DeTable, DeValue};
        fn walk(prefix: &str, t: &DeTable, out: &mut Vec<String>) {
            for (k, v) in t.iter() {
                let key = if prefix.is_empty() {
                    k.get_ref().to_string()
                } else {
                    format!("{prefix}.{}", k.get_ref())
                };
                match v.get_ref() {
                    DeValue::Table(inner) => walk(&key, inner, out),
                    DeValue::Array(items)
                        if items.iter().all(|i| i.get_ref().is_table()) && !items.is_empty() =>
                    {
                        for i in items.iter() {
                            if let Some(inner) = i.get_ref().as_table() {
                                walk(&format!("{key}[]"), inner, out);
                            }
                        }
                    }
                    _ => out.push(key),
                }
            }
        }
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/ward.toml")).unwrap();
        let root = DeTable::parse(&text).unwrap();
        let mut keys = Vec::new();
        walk("", root.get_ref(), &mut keys);
        assert!(keys.len() > 60, "conf/ward.toml should show every setting");
        for k in keys {
            let documented = SETTINGS
                .iter()
                .any(|s| s.key == k || s.key == k.replace("detectors.ssn", "detectors.<id>"));
            assert!(documented, "{k} is in conf/ward.toml but not in SETTINGS");
        }
    }

    #[test]
    fn reference_lists_every_setting_once() {
        let md = reference_markdown();
        for s in SETTINGS {
            assert_eq!(md.matches(&format!("| `{}` |", s.key)).count(), 1, "{}", s.key);
        }
    }

    #[test]
    fn a_short_admin_token_is_refused() {
        let e = parse("[admin]\ntoken = \"short\"\n").unwrap_err();
        assert!(e.message.contains("at least 24"), "{e}");
        assert!(parse("[admin]\ntoken = \"0123456789abcdef01234567\"\n").is_ok());
    }

    #[test]
    fn unknown_key_is_an_error_with_line() {
        let e = parse("[smtp]\nmax_connections = 10\nmax_conections_per_ip = 3\n").unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
        assert!(e.message.contains("unknown field"), "{e}");
        assert!(e.to_string().starts_with("test.toml:3:"), "{e}");
    }

    #[test]
    fn bad_values_point_at_their_line() {
        let e = parse("[queue]\n\nmax_lifetime = \"five days\"\n").unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
        let e = parse("[relay]\nnetworks = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(2), "{e}");
        let e = parse("[smtp]\nmax_message_size = \"12 parsecs\"\n").unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(2), "{e}");
        assert!(e.message.contains("parsecs"), "{e}");
    }

    #[test]
    fn semantic_errors_point_at_their_line() {
        let e = parse("[smtp]\nmax_recipients = 5\nmax_errors = 0\n").unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
        let text = "[[listener]]\nname = \"a\"\naddress = \"127.0.0.1:25\"\n[[listener]]\nname = \"b\"\naddress = \"127.0.0.1:25\"\n";
        let e = parse(text).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(6), "{e}");
        let e = parse("[tls]\ncert_file = \"a.pem\"\n").unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(1), "{e}");
        let e = parse("[relay.tenant_header]\nnetworks = []\n[[relay.tenant_header.tenant]]\nname = \"t\"\nsecret = \"short\"\n").unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(2), "{e}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let c = parse("[relay.tenant_header]\nnetworks = [\"10.0.0.0/8\"]\n[[relay.tenant_header.tenant]]\nname = \"t\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n").unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("0123456789abcdef"));
        assert!(dbg.contains("[redacted]"));
    }

    #[test]
    fn sizes_durations_and_next_hops() {
        assert_eq!(parse_size("10MiB").unwrap(), 10 * 1024 * 1024);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("MB").is_err());
        assert_eq!(parse_duration("5d").unwrap(), Duration::from_secs(432000));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        let h = NextHop::parse("[10.0.0.1]:2525").unwrap();
        assert_eq!((h.host.as_str(), h.port, h.no_mx), ("10.0.0.1", Some(2525), true));
        let h = NextHop::parse("relay.example.org").unwrap();
        assert_eq!(
            (h.host.as_str(), h.port, h.no_mx),
            ("relay.example.org", None, false)
        );
        let h = NextHop::parse("[::1]:25").unwrap();
        assert_eq!((h.host.as_str(), h.port), ("::1", Some(25)));
        assert!(NextHop::parse("10.0.0.1:25").is_err());
        assert!(NextHop::parse("[x").is_err());
        assert!(NextHop::parse("bad host").is_err());
    }

    #[test]
    fn rates_and_rate_overrides() {
        assert_eq!(
            Rate::parse("10/2s").unwrap(),
            Some(Rate {
                count: 10,
                period: Duration::from_secs(2)
            })
        );
        assert_eq!(Rate::parse("OFF").unwrap(), None);
        for bad in ["10", "0/1m", "10/0s", "x/1m", "10/soon"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
        let c = parse(
            "[rate_limit]\nsender_messages = \"off\"\n[[rate_limit.sender]]\nsender = \"@lab.example\"\nmessages = \"5/1m\"\n",
        )
        .unwrap();
        assert_eq!(c.rate_limit.sender_messages, None);
        assert_eq!(
            c.rate_limit.senders[0].messages,
            Some(Rate::parse("5/1m").unwrap())
        );
        assert_eq!(c.rate_limit.senders[0].recipients, None);
        let e = parse("[rate_limit]\n\nip_messages = \"lots\"\n").unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
        let e = parse("[[rate_limit.sender]]\nsender = \"a@b.example\"\n").unwrap_err();
        assert!(e.message.contains("needs `messages` or `recipients`"), "{e}");
        let e =
            parse("[[rate_limit.domain]]\ndomain = \"not a domain\"\ndeliveries = \"1/1s\"\n").unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(2), "{e}");
    }

    #[test]
    fn destination_matching() {
        let c = parse(
            "[[delivery.destination]]\ndomain = \".example.org\"\ntls_policy = \"may\"\n\
             [[delivery.destination]]\ndomain = \"lab.example.org\"\ntls_policy = \"encrypt\"\n",
        )
        .unwrap();
        let d = &c.delivery;
        assert_eq!(
            d.destination_for("lab.example.org").unwrap().tls_policy,
            Some(TlsPolicy::Encrypt)
        );
        assert_eq!(
            d.destination_for("x.Example.org").unwrap().tls_policy,
            Some(TlsPolicy::May)
        );
        assert!(d.destination_for("example.org").is_none());
        assert!(d.destination_for("other.net").is_none());
    }

    #[test]
    fn readme_reference_is_current() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
        let start = "<!-- config-reference:start -->\n";
        let section = readme
            .split(start)
            .nth(1)
            .and_then(|r| r.split("<!-- config-reference:end -->").next());
        assert_eq!(
            section,
            Some(reference_markdown().as_str()),
            "README's configuration reference is stale: run tools/update-readme-reference.sh"
        );
    }

    #[test]
    fn every_shipped_config_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 3);
    }

    #[test]
    fn shipped_config_is_the_embedded_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/ward.toml");
        let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c, Config::embedded());
    }
}
