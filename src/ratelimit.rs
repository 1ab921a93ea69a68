//! Rate limits: GCRA limiters (the `governor` crate) keyed by sender, client
//! IP and recipient domain.
//!
//! Owns: the rules of `[rate_limit]` and their buckets. Callers ask one
//! question per event ([`RateLimits::connection`], [`RateLimits::message`],
//! [`RateLimits::recipient`], [`RateLimits::deliveries`]) and get either
//! `Ok` (the event was counted) or a [`Limited`] naming the rule and how long
//! to wait; what to answer is the caller's business (`smtp` replies 421, 450
//! or 452, `dispatch` reschedules the copy).
//!
//! Guarantees:
//! - Memory follows the active keys: a key whose bucket is full again is
//!   indistinguishable from a new one, and [`RateLimits::evict`] (run every
//!   `eviction_interval` by [`RateLimits::eviction_loop`]) drops such keys
//!   and gives the maps' memory back.
//! - Reload (SIGHUP): [`RateLimits::reload`] swaps the rules at once; a
//!   rule whose rate did not change keeps its buckets, so reloading never
//!   hands a flooding sender a fresh budget.
//! - Invariant 4: keys are addresses, login names, IPs and domains, never
//!   content; nothing here logs.
//!
//! Refuses: nothing by itself; with `enabled = false` every question is
//! answered `Ok` without counting.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

use crate::config::{Rate, RateLimitConfig};

/// Which rule refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    SenderMessages,
    SenderRecipients,
    IpConnections,
    IpMessages,
    DomainDeliveries,
}

impl Rule {
    /// The setting's name, also the `rule` label of the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Rule::SenderMessages => "sender_messages",
            Rule::SenderRecipients => "sender_recipients",
            Rule::IpConnections => "ip_connections",
            Rule::IpMessages => "ip_messages",
            Rule::DomainDeliveries => "domain_deliveries",
        }
    }

    pub const ALL: [Rule; 5] = [
        Rule::SenderMessages,
        Rule::SenderRecipients,
        Rule::IpConnections,
        Rule::IpMessages,
        Rule::DomainDeliveries,
    ];
}

/// An event over a limit: the rule and the wait until it would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub rule: Rule,
    pub retry_after: Duration,
}

impl Limited {
    /// The wait in whole seconds, at least 1 (for reply texts).
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

/// One rate's buckets, one per key.
struct Buckets<K: Hash + Eq + Clone> {
    rate: Rate,
    limiter: RateLimiter<K, DashMapStateStore<K>, DefaultClock>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(rate: Rate) -> Buckets<K> {
        let count = NonZeroU32::new(rate.count).unwrap_or(NonZeroU32::MIN);
        // `Rate::parse` refuses zero periods; the fallback only guards a
        // hand-built config.
        let per_cell = (rate.period / count.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(per_cell)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(count);
        Buckets {
            rate,
            limiter: RateLimiter::dashmap(quota),
        }
    }

    /// Counts `n` events for `key` (at most the burst: a batch larger than
    /// the bucket counts as a full bucket).
    fn check(&self, key: &K, n: u32, rule: Rule) -> Result<(), Limited> {
        let n = NonZeroU32::new(n.min(self.rate.count)).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_key_n(key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Limited {
                rule,
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            }),
            // Unreachable (n is capped at the burst); refuse for a period.
            Err(_) => Err(Limited {
                rule,
                retry_after: self.rate.period,
            }),
        }
    }

    fn evict(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.limiter.len()
    }
}

/// A rule slot: no limit, or buckets shared with the previous configuration
/// when the rate is unchanged.
type Slot<K> = Option<Arc<Buckets<K>>>;

/// What an override says for one rule.
#[derive(Clone)]
enum Choice {
    /// Not set: the global rule applies.
    Inherit,
    /// Its own rate ("off" is `Own(None)`).
    Own(Slot<String>),
}

struct SenderOverride {
    pattern: String,
    messages: Choice,
    recipients: Choice,
}

struct DomainOverride {
    pattern: String,
    deliveries: Slot<String>,
}

/// The compiled rules of one configuration.
struct Rules {
    enabled: bool,
    sender_messages: Slot<String>,
    sender_recipients: Slot<String>,
    ip_connections: Slot<IpAddr>,
    ip_messages: Slot<IpAddr>,
    domain_deliveries: Slot<String>,
    senders: Vec<SenderOverride>,
    domains: Vec<DomainOverride>,
}

/// Buckets of the previous rules by slot name, for reuse on reload.
#[derive(Default)]
struct Previous {
    strings: HashMap<String, Arc<Buckets<String>>>,
    ips: HashMap<String, Arc<Buckets<IpAddr>>>,
}

impl Previous {
    fn of(rules: &Rules) -> Previous {
        let mut p = Previous::default();
        let mut s = |name: String, slot: &Slot<String>| {
            if let Some(b) = slot {
                p.strings.insert(name, b.clone());
            }
        };
        s("sender_messages".into(), &rules.sender_messages);
        s("sender_recipients".into(), &rules.sender_recipients);
        s("domain_deliveries".into(), &rules.domain_deliveries);
        for o in &rules.senders {
            if let Choice::Own(slot) = &o.messages {
                s(format!("sender:{}:messages", o.pattern), slot);
            }
            if let Choice::Own(slot) = &o.recipients {
                s(format!("sender:{}:recipients", o.pattern), slot);
            }
        }
        for o in &rules.domains {
            s(format!("domain:{}", o.pattern), &o.deliveries);
        }
        for (name, slot) in [
            ("ip_connections", &rules.ip_connections),
            ("ip_messages", &rules.ip_messages),
        ] {
            if let Some(b) = slot {
                p.ips.insert(name.into(), b.clone());
            }
        }
        p
    }

    fn string(&self, name: &str, rate: Option<Rate>) -> Slot<String> {
        let rate = rate?;
        match self.strings.get(name) {
            Some(b) if b.rate == rate => Some(b.clone()),
            _ => Some(Arc::new(Buckets::new(rate))),
        }
    }

    fn ip(&self, name: &str, rate: Option<Rate>) -> Slot<IpAddr> {
        let rate = rate?;
        match self.ips.get(name) {
            Some(b) if b.rate == rate => Some(b.clone()),
            _ => Some(Arc::new(Buckets::new(rate))),
        }
    }
}

impl Rules {
    fn build(c: &RateLimitConfig, prev: &Previous) -> Rules {
        let choice = |name: String, v: Option<Option<Rate>>| match v {
            None => Choice::Inherit,
            Some(rate) => Choice::Own(prev.string(&name, rate)),
        };
        Rules {
            enabled: c.enabled,
            sender_messages: prev.string("sender_messages", c.sender_messages),
            sender_recipients: prev.string("sender_recipients", c.sender_recipients),
            ip_connections: prev.ip("ip_connections", c.ip_connections),
            ip_messages: prev.ip("ip_messages", c.ip_messages),
            domain_deliveries: prev.string("domain_deliveries", c.domain_deliveries),
            senders: c
                .senders
                .iter()
                .map(|o| {
                    let pattern = o.sender.trim().to_ascii_lowercase();
                    SenderOverride {
                        messages: choice(format!("sender:{pattern}:messages"), o.messages),
                        recipients: choice(format!("sender:{pattern}:recipients"), o.recipients),
                        pattern,
                    }
                })
                .collect(),
            domains: c
                .domains
                .iter()
                .map(|o| {
                    let pattern = o.domain.trim().to_ascii_lowercase();
                    DomainOverride {
                        deliveries: prev.string(&format!("domain:{pattern}"), o.deliveries),
                        pattern,
                    }
                })
                .collect(),
        }
    }

    fn sender_override(&self, sender: &str) -> Option<&SenderOverride> {
        self.senders.iter().find(|o| sender_matches(sender, &o.pattern))
    }

    fn sender_slot(
        &self,
        sender: &str,
        pick: fn(&SenderOverride) -> &Choice,
        global: &Slot<String>,
    ) -> Slot<String> {
        match self.sender_override(sender).map(pick) {
            Some(Choice::Own(slot)) => slot.clone(),
            Some(Choice::Inherit) | None => global.clone(),
        }
    }

    fn domain_slot(&self, domain: &str) -> Slot<String> {
        if let Some(o) = self.domains.iter().find(|o| o.pattern == domain) {
            return o.deliveries.clone();
        }
        let best = self
            .domains
            .iter()
            .filter(|o| {
                o.pattern.starts_with('.') && domain.len() > o.pattern.len() && domain.ends_with(&o.pattern)
            })
            .max_by_key(|o| o.pattern.len());
        match best {
            Some(o) => o.deliveries.clone(),
            None => self.domain_deliveries.clone(),
        }
    }

    fn all_string_buckets(&self) -> Vec<Arc<Buckets<String>>> {
        let mut out: Vec<Arc<Buckets<String>>> = [
            &self.sender_messages,
            &self.sender_recipients,
            &self.domain_deliveries,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        for o in &self.senders {
            for c in [&o.messages, &o.recipients] {
                if let Choice::Own(Some(b)) = c {
                    out.push(b.clone());
                }
            }
        }
        out.extend(self.domains.iter().filter_map(|o| o.deliveries.clone()));
        out
    }

    fn all_ip_buckets(&self) -> Vec<Arc<Buckets<IpAddr>>> {
        [&self.ip_connections, &self.ip_messages]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// `pattern`: `user@example.org` or a login name (exact), `@example.org`
/// (the domain), `.example.org` (the domain's subdomains). Both lowercase.
fn sender_matches(sender: &str, pattern: &str) -> bool {
    let domain = sender.rsplit_once('@').map(|(_, d)| d);
    if let Some(d) = pattern.strip_prefix('@') {
        return domain == Some(d);
    }
    if pattern.starts_with('.') {
        return domain.is_some_and(|d| d.len() > pattern.len() && d.ends_with(pattern));
    }
    sender == pattern
}

/// The limits in force, shared by the SMTP sessions and dispatch.
pub struct RateLimits {
    rules: RwLock<Arc<Rules>>,
    eviction_interval: RwLock<Duration>,
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> RateLimits {
        RateLimits {
            rules: RwLock::new(Arc::new(Rules::build(config, &Previous::default()))),
            eviction_interval: RwLock::new(config.eviction_interval),
        }
    }

    /// Puts a new (validated) configuration in force. Rules whose rate is
    /// unchanged keep their buckets.
    pub fn reload(&self, config: &RateLimitConfig) {
        let new = Arc::new(Rules::build(config, &Previous::of(&self.rules())));
        match self.rules.write() {
            Ok(mut g) => *g = new,
            Err(p) => *p.into_inner() = new,
        }
        match self.eviction_interval.write() {
            Ok(mut g) => *g = config.eviction_interval,
            Err(p) => *p.into_inner() = config.eviction_interval,
        }
    }

    fn rules(&self) -> Arc<Rules> {
        self.rules
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// A new connection from `ip`.
    pub fn connection(&self, ip: IpAddr) -> Result<(), Limited> {
        let r = self.rules();
        if !r.enabled {
            return Ok(());
        }
        check(&r.ip_connections, &ip, 1, Rule::IpConnections)
    }

    /// A new message (MAIL) from `ip` by `sender`: the authenticated login
    /// name, or else the envelope sender. The sender's rule is asked first,
    /// so a refused sender does not use up its IP's budget.
    pub fn message(&self, ip: IpAddr, sender: &str) -> Result<(), Limited> {
        let r = self.rules();
        if !r.enabled {
            return Ok(());
        }
        let key = sender.to_ascii_lowercase();
        let slot = r.sender_slot(&key, |o| &o.messages, &r.sender_messages);
        check(&slot, &key, 1, Rule::SenderMessages)?;
        check(&r.ip_messages, &ip, 1, Rule::IpMessages)
    }

    /// One more recipient (RCPT) for `sender` (as for [`RateLimits::message`]).
    pub fn recipient(&self, sender: &str) -> Result<(), Limited> {
        let r = self.rules();
        if !r.enabled {
            return Ok(());
        }
        let key = sender.to_ascii_lowercase();
        let slot = r.sender_slot(&key, |o| &o.recipients, &r.sender_recipients);
        check(&slot, &key, 1, Rule::SenderRecipients)
    }

    /// `copies` outbound deliveries to recipient `domain`, counted together
    /// (one transaction).
    pub fn deliveries(&self, domain: &str, copies: u32) -> Result<(), Limited> {
        let r = self.rules();
        if !r.enabled {
            return Ok(());
        }
        let key = domain.trim_end_matches('.').to_ascii_lowercase();
        check(&r.domain_slot(&key), &key, copies, Rule::DomainDeliveries)
    }

    /// Drops every key whose bucket is full again and returns the maps'
    /// spare memory.
    pub fn evict(&self) {
        let r = self.rules();
        for b in r.all_string_buckets() {
            b.evict();
        }
        for b in r.all_ip_buckets() {
            b.evict();
        }
    }

    /// Keys held now, all rules together.
    pub fn keys(&self) -> usize {
        let r = self.rules();
        r.all_string_buckets().iter().map(|b| b.len()).sum::<usize>()
            + r.all_ip_buckets().iter().map(|b| b.len()).sum::<usize>()
    }

    /// Evicts idle keys every `eviction_interval` until shutdown.
    pub async fn eviction_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let every = self
                .eviction_interval
                .read()
                .map(|g| *g)
                .unwrap_or(Duration::from_secs(60));
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            self.evict();
        }
    }
}

fn check<K: Hash + Eq + Clone>(slot: &Slot<K>, key: &K, n: u32, rule: Rule) -> Result<(), Limited> {
    match slot {
        Some(b) => b.check(key, n, rule),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DomainRateOverride, SenderRateOverride};

    fn rate(s: &str) -> Option<Rate> {
        Rate::parse(s).unwrap()
    }

    fn config() -> RateLimitConfig {
        RateLimitConfig {
            sender_messages: rate("3/1h"),
            sender_recipients: rate("5/1h"),
            ip_connections: rate("2/1h"),
            ip_messages: rate("4/1h"),
            domain_deliveries: rate("10/1h"),
            ..RateLimitConfig::default()
        }
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn sender_messages_run_out_and_others_are_unaffected() {
        let l = RateLimits::new(&config());
        for _ in 0..3 {
            l.message(IP, "alice@hospital.example").unwrap();
        }
        let e = l.message(IP, "Alice@Hospital.example").unwrap_err();
        assert_eq!(e.rule, Rule::SenderMessages);
        // 3 per hour: the next one is about 20 minutes away.
        assert!(e.retry_after > Duration::from_secs(1100) && e.retry_after <= Duration::from_secs(1200));
        assert!((e.retry_after.as_secs()..=1200).contains(&e.retry_after_secs()));
        // Bob has his own bucket, but the IP's runs out after 4 messages.
        l.message(IP, "bob@hospital.example").unwrap();
        assert_eq!(
            l.message(IP, "bob@hospital.example").unwrap_err().rule,
            Rule::IpMessages
        );
    }

    #[test]
    fn connections_recipients_and_deliveries() {
        let l = RateLimits::new(&config());
        l.connection(IP).unwrap();
        l.connection(IP).unwrap();
        assert_eq!(l.connection(IP).unwrap_err().rule, Rule::IpConnections);
        l.connection("::1".parse().unwrap()).unwrap();
        for _ in 0..5 {
            l.recipient("a@x.example").unwrap();
        }
        assert_eq!(
            l.recipient("a@x.example").unwrap_err().rule,
            Rule::SenderRecipients
        );
        // A batch larger than the bucket counts as a full bucket.
        l.deliveries("big.example", 50).unwrap();
        assert_eq!(
            l.deliveries("BIG.example.", 1).unwrap_err().rule,
            Rule::DomainDeliveries
        );
        l.deliveries("small.example", 9).unwrap();
        l.deliveries("small.example", 1).unwrap();
        assert!(l.deliveries("small.example", 1).is_err());
    }

    #[test]
    fn overrides_by_sender_and_domain() {
        let mut c = config();
        c.senders = vec![
            SenderRateOverride {
                sender: "results@lab.example".into(),
                messages: Some(None),
                recipients: None,
            },
            SenderRateOverride {
                sender: ".hospital.example".into(),
                messages: Some(rate("1/1h")),
                recipients: None,
            },
        ];
        c.domains = vec![
            DomainRateOverride {
                domain: "partner.example".into(),
                deliveries: rate("1/1h"),
            },
            DomainRateOverride {
                domain: ".partner.example".into(),
                deliveries: None,
            },
        ];
        c.ip_messages = None;
        let l = RateLimits::new(&c);
        for _ in 0..20 {
            l.message(IP, "results@lab.example").unwrap();
        }
        // Recipients are inherited from the global rule.
        for _ in 0..5 {
            l.recipient("results@lab.example").unwrap();
        }
        assert!(l.recipient("results@lab.example").is_err());
        l.message(IP, "a@ward.hospital.example").unwrap();
        assert!(l.message(IP, "a@ward.hospital.example").is_err());
        // Each matching sender has its own bucket; the bare domain is not a
        // subdomain of itself.
        l.message(IP, "b@ward.hospital.example").unwrap();
        for _ in 0..3 {
            l.message(IP, "c@hospital.example").unwrap();
        }
        l.deliveries("partner.example", 1).unwrap();
        assert!(l.deliveries("partner.example", 1).is_err());
        for _ in 0..50 {
            l.deliveries("mx.partner.example", 5).unwrap();
        }
    }

    #[test]
    fn reload_keeps_unchanged_buckets_and_applies_new_rates() {
        let mut c = config();
        let l = RateLimits::new(&c);
        for _ in 0..3 {
            l.message(IP, "a@x.example").unwrap();
        }
        for _ in 0..5 {
            l.recipient("a@x.example").unwrap();
        }
        // Messages unchanged: still exhausted. Recipients raised: new buckets.
        c.sender_recipients = rate("6/1h");
        l.reload(&c);
        assert!(l.message(IP, "a@x.example").is_err());
        for _ in 0..6 {
            l.recipient("a@x.example").unwrap();
        }
        c.enabled = false;
        l.reload(&c);
        l.message(IP, "a@x.example").unwrap();
        c.enabled = true;
        c.sender_messages = None;
        l.reload(&c);
        l.message(IP, "a@x.example").unwrap();
    }

    #[test]
    fn idle_keys_are_evicted() {
        let mut c = config();
        c.sender_messages = rate("2/50ms");
        c.ip_messages = rate("1000/1h");
        let l = RateLimits::new(&c);
        for i in 0..100 {
            l.message(IP, &format!("s{i}@x.example")).unwrap();
        }
        l.connection(IP).unwrap();
        // 100 senders, the IP's messages and its connections.
        assert_eq!(l.keys(), 102);
        std::thread::sleep(Duration::from_millis(120));
        l.evict();
        // The IP's hour-long buckets are not full again yet; the senders' are.
        assert_eq!(l.keys(), 2);
    }
}
