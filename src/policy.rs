//! Policy: a scan verdict, the envelope and the configured rules become one
//! action per recipient copy.
//!
//! Owns: the decision `deliver`, `protect`, `quarantine` or `reject` for each
//! recipient, and the reason for it in content-free terms (a detector id, a
//! rule number, "trigger word", ...). It is the one place those decisions
//! are made; `smtp` asks it before answering DATA, `dispatch` carries the
//! decision out.
//!
//! Guarantees:
//! - Strictest wins: content findings, subject trigger words, unscanned
//!   parts, a scan that overran its time budget, sender/recipient rules and
//!   portal domains each propose an action; the copy gets the strictest.
//!   Rules never relax what content asked for, so a typo in a rule can't
//!   send PHI in the clear.
//! - A scan that overran its budget is never `deliver` (config validation
//!   refuses `timeout_action = "deliver"`).
//! - Reasons never hold content: kinds, counts, rule numbers only.
//!
//! Refuses: nothing at run time; configuration errors are caught by
//! `config` validation (unknown detector ids, empty rules).

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::config::PolicyAction as Action;
use crate::config::{DETECTOR_IDS, PolicyConfig};
use crate::scan::{Kind, Verdict};

/// Why an action was chosen (content-free).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by", content = "detail")]
pub enum Reason {
    /// Nothing asked for more than delivery.
    Clean,
    /// A detector's rule (its id).
    Detector(Kind),
    /// A trigger word in the Subject.
    TriggerWord,
    /// A part could not be scanned.
    Unscanned,
    /// The scan overran its time budget.
    ScanTimeout,
    /// `[[policy.rule]]` number n (1-based).
    Rule(usize),
    /// The recipient's domain is in `portal_domains`.
    PortalDomain,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Clean => f.write_str("clean"),
            Reason::Detector(k) => write!(f, "detector {k}"),
            Reason::TriggerWord => f.write_str("trigger word"),
            Reason::Unscanned => f.write_str("unscanned part"),
            Reason::ScanTimeout => f.write_str("scan time budget"),
            Reason::Rule(n) => write!(f, "rule {n}"),
            Reason::PortalDomain => f.write_str("portal domain"),
        }
    }
}

/// What policy decided for one recipient copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub action: Action,
    pub reason: Reason,
    /// A protected copy goes straight to the portal (portal domain).
    #[serde(default)]
    pub portal_only: bool,
    /// The destination is a partner known to do verified TLS: a protected
    /// copy waits for verified TLS and never goes to the portal.
    #[serde(default)]
    pub verified_partner: bool,
}

impl Default for Decision {
    fn default() -> Self {
        Decision {
            action: Action::Deliver,
            reason: Reason::Clean,
            portal_only: false,
            verified_partner: false,
        }
    }
}

/// The content part of a decision: the same for every recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentDecision {
    pub action: Action,
    pub reason: Reason,
}

struct CompiledRule {
    kind: Kind,
    action: Action,
    min_count: u32,
    with_any: Vec<Kind>,
}

/// The compiled policy.
pub struct Policy {
    detectors: Vec<CompiledRule>,
    trigger_words: Vec<String>,
    strip_trigger_words: bool,
    unscanned_action: Action,
    timeout_action: Action,
    verified_tls_domains: Vec<String>,
    portal_domains: Vec<String>,
    blocked_domains: Vec<String>,
    rules: Vec<(Option<String>, Option<String>, Action)>,
}

impl Policy {
    pub fn new(cfg: &PolicyConfig) -> Policy {
        let detectors = DETECTOR_IDS
            .iter()
            .filter_map(|id| {
                let kind = Kind::parse(id)?;
                let rule = cfg.detector_rule(id);
                Some(CompiledRule {
                    kind,
                    action: rule.action,
                    min_count: rule.min_count.max(1),
                    with_any: rule.with_any.iter().filter_map(|w| Kind::parse(w)).collect(),
                })
            })
            .collect();
        let lower = |v: &Vec<String>| v.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
        Policy {
            detectors,
            trigger_words: cfg.trigger_words.iter().map(|w| w.to_lowercase()).collect(),
            strip_trigger_words: cfg.strip_trigger_words,
            unscanned_action: cfg.unscanned_action,
            timeout_action: cfg.timeout_action,
            verified_tls_domains: lower(&cfg.verified_tls_domains),
            portal_domains: lower(&cfg.portal_domains),
            blocked_domains: lower(&cfg.blocked_domains),
            rules: cfg
                .rules
                .iter()
                .map(|r| {
                    (
                        r.sender.as_ref().map(|s| s.to_lowercase()),
                        r.recipient.as_ref().map(|s| s.to_lowercase()),
                        r.action,
                    )
                })
                .collect(),
        }
    }

    /// Ward must never deliver to this recipient (550 5.7.1 at RCPT).
    pub fn is_blocked(&self, recipient: &str) -> bool {
        let domain = crate::config::domain_of(recipient);
        self.blocked_domains.iter().any(|d| domain_matches(&domain, d))
    }

    /// Does the Subject carry a trigger word?
    pub fn subject_triggers(&self, subject: &str) -> bool {
        let s = subject.to_lowercase();
        self.trigger_words.iter().any(|w| s.contains(w.as_str()))
    }

    /// Whether trigger words are removed before delivery.
    pub fn strips_trigger_words(&self) -> bool {
        self.strip_trigger_words
    }

    /// The trigger words (lower case), for stripping.
    pub fn trigger_words(&self) -> &[String] {
        &self.trigger_words
    }

    /// What the content asks for: the strictest of the detector rules,
    /// trigger words, unscanned parts and an overrun.
    pub fn content(&self, verdict: &Verdict, subject_triggers: bool) -> ContentDecision {
        let mut best = ContentDecision {
            action: Action::Deliver,
            reason: Reason::Clean,
        };
        let mut raise = |action: Action, reason: Reason| {
            if action > best.action {
                best = ContentDecision { action, reason };
            }
        };
        for r in &self.detectors {
            let count = verdict.count(r.kind);
            if count >= r.min_count
                && (r.with_any.is_empty() || r.with_any.iter().any(|k| verdict.count(*k) > 0))
            {
                raise(r.action, Reason::Detector(r.kind));
            }
        }
        if subject_triggers {
            raise(Action::Protect, Reason::TriggerWord);
        }
        if verdict
            .unscanned
            .iter()
            .any(|u| u.reason != crate::scan::UnscannedReason::TimeLimit)
        {
            raise(self.unscanned_action, Reason::Unscanned);
        }
        if verdict.timed_out {
            raise(self.timeout_action, Reason::ScanTimeout);
        }
        best
    }

    /// The decision for one recipient copy.
    pub fn decide(&self, content: ContentDecision, sender: &str, recipient: &str) -> Decision {
        let mut d = Decision {
            action: content.action,
            reason: content.reason,
            ..Decision::default()
        };
        let domain = crate::config::domain_of(recipient);
        for (i, (s, r, action)) in self.rules.iter().enumerate() {
            let sender_ok = s.as_deref().is_none_or(|p| address_matches(sender, p));
            let rcpt_ok = r.as_deref().is_none_or(|p| address_matches(recipient, p));
            if sender_ok && rcpt_ok && *action > d.action {
                d.action = *action;
                d.reason = Reason::Rule(i + 1);
            }
        }
        if self.portal_domains.iter().any(|p| domain_matches(&domain, p)) {
            d.portal_only = true;
            if Action::Protect > d.action {
                d.action = Action::Protect;
                d.reason = Reason::PortalDomain;
            }
        }
        d.verified_partner = !d.portal_only
            && self
                .verified_tls_domains
                .iter()
                .any(|p| domain_matches(&domain, p));
        d
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(&PolicyConfig::default())
    }
}

/// Would Ward's built-in detector rules protect this content? (Findings
/// only: no trigger words, unscanned parts or rules.) The labelled corpus's
/// message-level ground truth follows the same rule.
pub fn content_is_phi(verdict: &Verdict) -> bool {
    let mut v = verdict.clone();
    v.unscanned.clear();
    v.timed_out = false;
    Policy::default().content(&v, false).action >= Action::Protect
}

/// `domain` is `pattern` (exact) or, for `.example.org`, any subdomain of it.
fn domain_matches(domain: &str, pattern: &str) -> bool {
    match pattern.strip_prefix('.') {
        Some(suffix) => domain.len() > suffix.len() + 1 && domain.ends_with(pattern),
        None => domain == pattern,
    }
}

/// Patterns: `*`, `user@example.org` (exact, case-insensitive), `@example.org`
/// (the domain), `.example.org` (subdomains).
fn address_matches(address: &str, pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let address = address.to_lowercase();
    if let Some(domain) = pattern.strip_prefix('@') {
        return crate::config::domain_of(&address) == domain;
    }
    if pattern.starts_with('.') {
        return domain_matches(&crate::config::domain_of(&address), pattern);
    }
    address == pattern
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DetectorRule, PolicyRule};
    use crate::scan::{Confidence, Finding, Part, Unscanned, UnscannedReason};

    fn verdict(kinds: &[(Kind, u32)]) -> Verdict {
        Verdict {
            findings: kinds
                .iter()
                .map(|(k, n)| Finding {
                    kind: *k,
                    count: *n,
                    part: Part::Body,
                    confidence: Confidence::High,
                })
                .collect(),
            ..Verdict::default()
        }
    }

    #[test]
    fn built_in_rules() {
        let p = Policy::default();
        assert_eq!(p.content(&verdict(&[]), false).action, Action::Deliver);
        assert_eq!(
            p.content(&verdict(&[(Kind::Ssn, 1)]), false).action,
            Action::Protect
        );
        assert_eq!(
            p.content(&verdict(&[(Kind::Ssn, 1)]), false).reason,
            Reason::Detector(Kind::Ssn)
        );
        assert_eq!(
            p.content(&verdict(&[(Kind::Phone, 3)]), false).action,
            Action::Deliver
        );
        assert_eq!(
            p.content(&verdict(&[(Kind::HealthTerms, 2)]), false).action,
            Action::Deliver
        );
        assert_eq!(
            p.content(&verdict(&[(Kind::Phone, 1), (Kind::HealthTerms, 1)]), false)
                .action,
            Action::Protect
        );
        assert_eq!(
            p.content(&verdict(&[(Kind::Npi, 1), (Kind::Dea, 1)]), false)
                .action,
            Action::Deliver
        );
        assert_eq!(p.content(&verdict(&[]), true).reason, Reason::TriggerWord);
        assert!(content_is_phi(&verdict(&[(Kind::Dob, 1)])));
        assert!(!content_is_phi(&verdict(&[(Kind::EmailAddress, 1)])));
    }

    #[test]
    fn unscanned_and_timeouts_never_deliver() {
        let p = Policy::default();
        let mut v = verdict(&[]);
        v.unscanned.push(Unscanned {
            part: Part::Attachment(1),
            reason: UnscannedReason::Encrypted,
        });
        assert_eq!(p.content(&v, false).action, Action::Protect);
        let mut v = verdict(&[]);
        v.timed_out = true;
        v.unscanned.push(Unscanned {
            part: Part::Body,
            reason: UnscannedReason::TimeLimit,
        });
        let c = p.content(&v, false);
        assert_eq!((c.action, c.reason), (Action::Protect, Reason::ScanTimeout));
    }

    #[test]
    fn configured_rules_and_domains() {
        let mut cfg = PolicyConfig::default();
        cfg.detectors.insert(
            "credit_card".into(),
            DetectorRule {
                action: Action::Reject,
                min_count: 2,
                with_any: vec![],
            },
        );
        cfg.rules.push(PolicyRule {
            sender: Some("@billing.example".into()),
            recipient: None,
            action: Action::Quarantine,
        });
        cfg.rules.push(PolicyRule {
            sender: None,
            recipient: Some(".lab.example".into()),
            action: Action::Deliver,
        });
        cfg.portal_domains.push("gmail.example".into());
        cfg.verified_tls_domains.push("partner.example".into());
        cfg.blocked_domains.push(".bad.example".into());
        let p = Policy::new(&cfg);
        assert_eq!(
            p.content(&verdict(&[(Kind::CreditCard, 1)]), false).action,
            Action::Deliver
        );
        assert_eq!(
            p.content(&verdict(&[(Kind::CreditCard, 2)]), false).action,
            Action::Reject
        );
        let clean = p.content(&verdict(&[]), false);
        let d = p.decide(clean, "clerk@billing.example", "x@other.example");
        assert_eq!((d.action, d.reason), (Action::Quarantine, Reason::Rule(1)));
        // Rules never relax content.
        let phi = p.content(&verdict(&[(Kind::Ssn, 1)]), false);
        assert_eq!(
            p.decide(phi, "a@h.example", "x@east.lab.example").action,
            Action::Protect
        );
        let d = p.decide(clean, "a@h.example", "someone@gmail.example");
        assert!(d.portal_only && d.action == Action::Protect);
        let d = p.decide(phi, "a@h.example", "doc@partner.example");
        assert!(d.verified_partner && !d.portal_only);
        assert!(p.is_blocked("x@mx.bad.example"));
        assert!(!p.is_blocked("x@bad.example"));
    }

    #[test]
    fn trigger_words_are_case_insensitive() {
        let p = Policy::default();
        assert!(p.subject_triggers("Results [SECURE] for review"));
        assert!(!p.subject_triggers("Results for review"));
    }
}
