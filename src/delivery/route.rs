//! Routes: from a recipient domain to the ordered list of addresses to try.
//!
//! Owns: the DNS side of delivery (hickory-resolver with the configured
//! nameservers over UDP and TCP, or the system's), the route precedence
//! (destination route > `delivery.smart_host` > address literal > MX lookup),
//! MX ordering (RFC 5321 5.1: by preference, equal preferences shuffled),
//! null MX (RFC 7505), implicit MX (the domain's own A/AAAA records) and the
//! name each host's certificate must carry under `verify`.
//!
//! Guarantees: at most `delivery.max_mx_addresses` addresses per attempt.
//! A DNS answer that proves the domain can't receive mail is `Permanent`
//! (null MX: 5.1.10; NXDOMAIN or no address at all: 5.1.2); a failure to get
//! an answer (SERVFAIL, timeouts) is `Temporary` (4.4.3), so a DNS outage
//! never bounces mail. Lookups for a configured next hop (destination route
//! or smart host) are always `Temporary` when they fail: a configuration
//! mistake must not bounce mail either.
//!
//! The certificate name (`tls_name`) is, in order: the destination's
//! `tls_name` when set; the MX host name (trailing dot removed) for MX
//! routes, implicit MX included; the host for `[host]` routes; the recipient
//! domain for `[ip]` routes and address literals.
//!
//! Refuses: names that are not valid DNS names (Permanent 5.1.2 for a
//! recipient domain) and address literals other than IPv4 and `IPv6:`.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData};

use super::{AttemptError, Delivery, DeliveryError, RemoteHost};
use crate::config::{DnsConfig, NextHop};

/// One address to try, with the name its certificate must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub host: RemoteHost,
    pub tls_name: String,
}

/// The DNS resolver delivery uses.
#[derive(Clone)]
pub(crate) struct Resolver {
    inner: TokioResolver,
}

/// Why a lookup found nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LookupFailure {
    /// NXDOMAIN: the name does not exist.
    NoSuchName,
    /// The name exists but has no records of the type asked for.
    NoRecords,
    /// No answer (SERVFAIL, REFUSED, timeout, network): try again later.
    Temporary(String),
}

impl From<NetError> for LookupFailure {
    fn from(e: NetError) -> LookupFailure {
        match &e {
            NetError::Dns(DnsError::NoRecordsFound(no)) if no.response_code == ResponseCode::NXDomain => {
                LookupFailure::NoSuchName
            }
            NetError::Dns(DnsError::NoRecordsFound(_)) => LookupFailure::NoRecords,
            _ => LookupFailure::Temporary(e.to_string()),
        }
    }
}

/// An MX record as delivery uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mx {
    preference: u16,
    /// The exchange; the root name for a null MX.
    exchange: Name,
}

impl Resolver {
    pub fn new(dns: &DnsConfig) -> Result<Resolver, DeliveryError> {
        let resolver_err = |e: NetError| DeliveryError::Resolver(e.to_string());
        let mut builder = if dns.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(resolver_err)?
        } else {
            let servers = dns
                .nameservers
                .iter()
                .map(|server| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = server.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = server.port();
                    NameServerConfig::new(server.ip(), true, vec![udp, tcp])
                })
                .collect();
            let mut builder = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            );
            // Configured nameservers are the whole truth: no /etc/hosts.
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            builder
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = dns.timeout;
        opts.attempts = dns.attempts.max(1);
        // Mail servers are more often reachable (and have matching PTR
        // records) over IPv4; both families are still tried.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.try_tcp_on_error = true;
        let inner = builder.build().map_err(resolver_err)?;
        Ok(Resolver { inner })
    }

    async fn mx(&self, name: &Name) -> Result<Vec<Mx>, LookupFailure> {
        let lookup = self.inner.mx_lookup(name.clone()).await?;
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some(Mx {
                    preference: mx.preference,
                    exchange: mx.exchange.clone(),
                }),
                _ => None,
            })
            .collect())
    }

    async fn addresses(&self, name: &Name) -> Result<Vec<IpAddr>, LookupFailure> {
        let lookup = self.inner.lookup_ip(name.clone()).await?;
        let mut out: Vec<IpAddr> = Vec::new();
        for ip in lookup.iter() {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        if out.is_empty() {
            return Err(LookupFailure::NoRecords);
        }
        Ok(out)
    }
}

/// A DNS name for `host`, fully qualified so no search domain is appended.
fn dns_name(host: &str) -> Option<Name> {
    let mut name = Name::from_utf8(host).ok()?;
    if name.is_root() {
        return None;
    }
    name.set_fqdn(true);
    Some(name)
}

/// A name as the certificate must carry it: A-labels, no trailing dot.
fn host_name(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// Parses an address literal domain (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
/// `None` when `domain` is not bracketed; `Some(None)` when it is but holds
/// no usable address.
fn address_literal(domain: &str) -> Option<Option<IpAddr>> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let ip = if inner.len() > 5 && inner[..5].eq_ignore_ascii_case("ipv6:") {
        inner[5..].parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        inner.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
    };
    Some(ip)
}

/// Sorts MX records by preference, shuffling equal preferences (RFC 5321
/// 5.1) so load spreads over equal hosts.
fn order_mx(mut records: Vec<Mx>) -> Vec<Mx> {
    let mut noise = vec![0u8; records.len() * 4];
    crate::crypto::fill_random(&mut noise);
    let mut keyed: Vec<(u16, u32, Mx)> = records
        .drain(..)
        .zip(noise.chunks_exact(4))
        .map(|(mx, n)| (mx.preference, u32::from_le_bytes([n[0], n[1], n[2], n[3]]), mx))
        .collect();
    keyed.sort_by_key(|(pref, noise, _)| (*pref, *noise));
    keyed.into_iter().map(|(_, _, mx)| mx).collect()
}

/// Where a failed lookup leaves the attempt: for a recipient domain the DNS
/// answer decides, for a configured next hop it is always temporary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    RecipientDomain,
    ConfiguredHop,
}

/// Resolves the addresses to try for `domain` (lower-case, no trailing dot),
/// in order, at most `max_mx_addresses` of them.
pub(crate) async fn resolve(delivery: &Delivery, domain: &str) -> Result<Vec<Target>, AttemptError> {
    let config = &delivery.config;
    let destination = config.destination_for(domain);
    let tls_override = destination.and_then(|d| d.tls_name.clone());
    let limit = config.max_mx_addresses.max(1);
    let hop: Option<&NextHop> = destination
        .and_then(|d| d.route.as_ref())
        .or(config.smart_host.as_ref());

    if let Some(hop) = hop {
        let port = hop.port.unwrap_or(config.smtp_port);
        if hop.no_mx {
            if let Ok(ip) = hop.host.parse::<IpAddr>() {
                return Ok(vec![Target {
                    host: RemoteHost {
                        mx: ip.to_string(),
                        addr: SocketAddr::new(ip, port),
                    },
                    tls_name: tls_override.unwrap_or_else(|| domain.to_string()),
                }]);
            }
            let name = dns_name(&hop.host)
                .ok_or_else(|| AttemptError::temporary("4.4.3", format!("next hop {hop}: not a DNS name")))?;
            let targets = host_targets(
                delivery,
                &name,
                port,
                tls_override.as_deref(),
                limit,
                Origin::ConfiguredHop,
            )
            .await
            .map_err(|e| e.with_context(&format!("next hop {hop}")))?;
            return Ok(targets);
        }
        let name = dns_name(&hop.host)
            .ok_or_else(|| AttemptError::temporary("4.4.3", format!("next hop {hop}: not a DNS name")))?;
        return mx_targets(
            delivery,
            &name,
            port,
            tls_override.as_deref(),
            limit,
            Origin::ConfiguredHop,
        )
        .await
        .map_err(|e| e.with_context(&format!("next hop {hop}")));
    }

    if let Some(literal) = address_literal(domain) {
        let ip = literal
            .ok_or_else(|| AttemptError::permanent("5.1.2", format!("{domain}: unusable address literal")))?;
        return Ok(vec![Target {
            host: RemoteHost {
                mx: ip.to_string(),
                addr: SocketAddr::new(ip, config.smtp_port),
            },
            tls_name: tls_override.unwrap_or_else(|| ip.to_string()),
        }]);
    }

    let name = dns_name(domain)
        .ok_or_else(|| AttemptError::permanent("5.1.2", format!("{domain}: not a valid domain name")))?;
    mx_targets(
        delivery,
        &name,
        config.smtp_port,
        tls_override.as_deref(),
        limit,
        Origin::RecipientDomain,
    )
    .await
}

impl AttemptError {
    fn with_context(mut self, context: &str) -> AttemptError {
        self.detail = format!("{context}: {}", self.detail);
        self
    }
}

fn lookup_error(origin: Origin, failure: &LookupFailure, name: &Name, what: &str) -> AttemptError {
    let name = host_name(name);
    match (origin, failure) {
        (_, LookupFailure::Temporary(e)) => {
            AttemptError::temporary("4.4.3", format!("{what} lookup for {name} failed: {e}"))
        }
        (Origin::ConfiguredHop, LookupFailure::NoSuchName) => {
            AttemptError::temporary("4.4.3", format!("{name} does not exist (NXDOMAIN)"))
        }
        (Origin::ConfiguredHop, LookupFailure::NoRecords) => {
            AttemptError::temporary("4.4.3", format!("{name} has no {what} records"))
        }
        (Origin::RecipientDomain, LookupFailure::NoSuchName) => {
            AttemptError::permanent("5.1.2", format!("{name} does not exist (NXDOMAIN)"))
        }
        (Origin::RecipientDomain, LookupFailure::NoRecords) => {
            AttemptError::permanent("5.1.2", format!("{name} has no {what} records"))
        }
    }
}

/// MX lookup on `name`, then the addresses of each exchange in order.
async fn mx_targets(
    delivery: &Delivery,
    name: &Name,
    port: u16,
    tls_override: Option<&str>,
    limit: usize,
    origin: Origin,
) -> Result<Vec<Target>, AttemptError> {
    let exchanges: Vec<Name> = match delivery.resolver.mx(name).await {
        Ok(records) if records.iter().any(|mx| mx.exchange.is_root()) => {
            // RFC 7505: a null MX says the domain accepts no mail. Any "."
            // exchange counts, even beside other records (section 3 says
            // there must be no others; a mixed answer is a broken domain).
            let err = format!("{} publishes a null MX: it accepts no mail", host_name(name));
            return Err(match origin {
                Origin::RecipientDomain => AttemptError::permanent("5.1.10", err),
                Origin::ConfiguredHop => AttemptError::temporary("4.4.3", err),
            });
        }
        Ok(records) if !records.is_empty() => order_mx(records).into_iter().map(|mx| mx.exchange).collect(),
        // RFC 5321 5.1: no MX records, the domain itself is the implicit MX.
        Ok(_) | Err(LookupFailure::NoRecords) => vec![name.clone()],
        Err(failure) => return Err(lookup_error(origin, &failure, name, "MX")),
    };

    let mut targets = Vec::new();
    let mut last_failure: Option<(LookupFailure, Name)> = None;
    let mut any_temporary = false;
    for exchange in exchanges {
        if targets.len() >= limit {
            break;
        }
        let tls_name = tls_override
            .map(str::to_string)
            .unwrap_or_else(|| host_name(&exchange));
        match address_targets(delivery, &exchange, port, &tls_name, limit).await {
            Ok(found) => {
                // Two MX names for one address: try it once, at its best
                // preference.
                for t in found {
                    if targets.len() < limit && !targets.iter().any(|o: &Target| o.host.addr == t.host.addr) {
                        targets.push(t);
                    }
                }
            }
            Err(failure) => {
                tracing::debug!(mx = %host_name(&exchange), ?failure, "MX host has no usable address");
                any_temporary |= matches!(failure, LookupFailure::Temporary(_));
                last_failure = Some((failure, exchange));
            }
        }
    }
    if !targets.is_empty() {
        return Ok(targets);
    }
    match last_failure {
        // A temporary failure anywhere may hide a good host: don't bounce.
        Some((failure, exchange)) => {
            let failure = if any_temporary && !matches!(failure, LookupFailure::Temporary(_)) {
                LookupFailure::Temporary("an MX host lookup failed".into())
            } else {
                failure
            };
            Err(lookup_error(origin, &failure, &exchange, "address"))
        }
        None => Err(AttemptError::temporary(
            "4.4.3",
            format!("{}: no MX host to try", host_name(name)),
        )),
    }
}

/// The addresses of one host (a `[host]` route).
async fn host_targets(
    delivery: &Delivery,
    name: &Name,
    port: u16,
    tls_override: Option<&str>,
    limit: usize,
    origin: Origin,
) -> Result<Vec<Target>, AttemptError> {
    let tls_name = tls_override
        .map(str::to_string)
        .unwrap_or_else(|| host_name(name));
    address_targets(delivery, name, port, &tls_name, limit)
        .await
        .map_err(|failure| lookup_error(origin, &failure, name, "address"))
}

async fn address_targets(
    delivery: &Delivery,
    name: &Name,
    port: u16,
    tls_name: &str,
    limit: usize,
) -> Result<Vec<Target>, LookupFailure> {
    let mx = host_name(name);
    let addresses = delivery.resolver.addresses(name).await?;
    Ok(addresses
        .into_iter()
        .take(limit)
        .map(|ip| Target {
            host: RemoteHost {
                mx: mx.clone(),
                addr: SocketAddr::new(ip, port),
            },
            tls_name: tls_name.to_string(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mx(pref: u16, host: &str) -> Mx {
        Mx {
            preference: pref,
            exchange: Name::from_ascii(host).unwrap(),
        }
    }

    #[test]
    fn mx_sorted_by_preference_and_equal_ones_shuffled() {
        let records = vec![mx(20, "c."), mx(10, "a."), mx(30, "d."), mx(10, "b.")];
        let mut seen_b_first = false;
        let mut seen_a_first = false;
        for _ in 0..200 {
            let ordered = order_mx(records.clone());
            let prefs: Vec<u16> = ordered.iter().map(|m| m.preference).collect();
            assert_eq!(prefs, [10, 10, 20, 30]);
            match host_name(&ordered[0].exchange).as_str() {
                "a" => seen_a_first = true,
                "b" => seen_b_first = true,
                other => panic!("{other}"),
            }
        }
        assert!(seen_a_first && seen_b_first, "equal preferences are shuffled");
    }

    #[test]
    fn address_literals() {
        assert_eq!(address_literal("example.org"), None);
        assert_eq!(
            address_literal("[192.0.2.1]"),
            Some(Some("192.0.2.1".parse().unwrap()))
        );
        assert_eq!(
            address_literal("[ipv6:2001:db8::1]"),
            Some(Some("2001:db8::1".parse().unwrap()))
        );
        assert_eq!(address_literal("[IPv6:::1]"), Some(Some("::1".parse().unwrap())));
        assert_eq!(address_literal("[2001:db8::1]"), Some(None));
        assert_eq!(address_literal("[x-tag:foo]"), Some(None));
    }

    #[test]
    fn names_are_fully_qualified_a_labels() {
        let n = dns_name("Mail.Example.org").unwrap();
        assert!(n.is_fqdn());
        assert_eq!(host_name(&n), "mail.example.org");
        assert_eq!(
            host_name(&dns_name("bücher.example").unwrap()),
            "xn--bcher-kva.example"
        );
        assert!(dns_name(".").is_none());
    }
}
