//! `ward report`: what went through Ward in a period, from the audit
//! trail alone (it works with Ward stopped, on a copy of the trail, and
//! sees what an auditor sees).
//!
//! Owns: reading the audit lines of a period (plus a baseline before it),
//! the tallies — volume per sender, findings per kind, policy decisions,
//! final outcomes, deliveries by TLS version, the portal fallback rate,
//! reports (bounces) sent — and the unusual-volume check: a sender whose
//! messages on one day of the period reach `factor` times their daily
//! median over the baseline days (days without mail count as 0) and at
//! least `min_messages`.
//!
//! Content-free by construction: the trail holds addresses, ids, sizes,
//! detector kinds and counts, codes and TLS facts only, and the report
//! repeats nothing else.
//!
//! Floor 1: imports nothing from Ward; `cli` hands it the audit files.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

const DAY_MS: u64 = 86_400_000;

/// What to report on.
#[derive(Debug, Clone)]
pub struct Options {
    /// The period, `[since_ms, until_ms)`.
    pub since_ms: u64,
    pub until_ms: u64,
    /// Days before `since_ms` whose volumes make a sender's usual.
    pub baseline_days: u32,
    /// A day at `factor` × the sender's daily median is unusual...
    pub factor: f64,
    /// ...when it is also at least this many messages.
    pub min_messages: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SenderVolume {
    pub sender: String,
    pub messages: u64,
    pub recipients: u64,
    pub bytes: u64,
    /// Messages refused in the session by policy (`reject`).
    pub rejected: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct KindCount {
    pub kind: String,
    /// Matches over all messages.
    pub findings: u64,
    /// Messages with at least one.
    pub messages: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct TlsCount {
    /// "TLSv1.3", "TLSv1.2", ... or "none" (plain SMTP).
    pub version: String,
    pub deliveries: u64,
    /// Of which with a verified certificate.
    pub verified: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unusual {
    pub sender: String,
    /// The day (UTC), YYYY-MM-DD.
    pub day: String,
    pub messages: u64,
    /// The sender's daily median over the baseline days.
    pub median: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub since: String,
    pub until: String,
    /// Audit lines read in the period.
    pub events: u64,
    pub messages_accepted: u64,
    pub bytes_accepted: u64,
    pub messages_rejected: u64,
    /// Per sender, most messages first.
    pub senders: Vec<SenderVolume>,
    /// Per detector kind, most findings first.
    pub findings: Vec<KindCount>,
    /// Policy decisions per recipient copy: action → copies.
    pub policy: BTreeMap<String, u64>,
    /// Final outcome per copy: delivered, portal, failed, expired.
    pub outcomes: BTreeMap<String, u64>,
    /// Attempts that ended deferred (temporary failures, TLS policy not
    /// met, rate limits).
    pub deferred_attempts: u64,
    /// Successful deliveries by TLS version.
    pub tls: Vec<TlsCount>,
    /// Portal copies / (delivered + portal copies); `None` without any.
    pub portal_fallback_rate: Option<f64>,
    /// Delivery status notifications sent: action (failed, delayed,
    /// delivered, relayed, postmaster) → count.
    pub reports_sent: BTreeMap<String, u64>,
    /// Failed and expired copies (the bounces).
    pub bounces: u64,
    pub unusual: Vec<Unusual>,
    /// Parameters of the unusual-volume check.
    pub baseline_days: u32,
    pub factor: f64,
    pub min_messages: u64,
}

/// Builds the report from the audit files (oldest first).
pub fn build(files: &[PathBuf], opts: &Options) -> std::io::Result<Report> {
    let baseline_start = opts
        .since_ms
        .saturating_sub(u64::from(opts.baseline_days) * DAY_MS);
    let mut t = Tally::default();
    for path in files {
        let f = std::fs::File::open(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        for line in BufReader::new(f).split(b'\n') {
            let line = line?;
            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let Some(ms) = v["ms"].as_u64() else {
                continue;
            };
            if ms >= opts.until_ms || ms < baseline_start {
                continue;
            }
            if ms < opts.since_ms {
                if v["event"] == "message_accepted" {
                    *t.baseline
                        .entry(sender_of(&v))
                        .or_default()
                        .entry(ms / DAY_MS)
                        .or_default() += 1;
                }
                continue;
            }
            t.event(&v, ms);
        }
    }
    Ok(t.finish(opts))
}

#[derive(Default)]
struct Tally {
    events: u64,
    accepted: u64,
    bytes: u64,
    rejected: u64,
    senders: HashMap<String, SenderVolume>,
    kinds: HashMap<String, KindCount>,
    policy: BTreeMap<String, u64>,
    outcomes: BTreeMap<String, u64>,
    deferred: u64,
    tls: BTreeMap<String, TlsCount>,
    reports: BTreeMap<String, u64>,
    /// sender → day number → messages, before the period.
    baseline: HashMap<String, HashMap<u64, u64>>,
    /// sender → day number → messages, in the period.
    period: HashMap<String, BTreeMap<u64, u64>>,
}

fn sender_of(v: &Value) -> String {
    match v["from"].as_str() {
        Some("") | None => "<>".to_string(),
        Some(s) => s.to_ascii_lowercase(),
    }
}

/// Kind → count of an audit line: the `kinds` object, or (lines written
/// before it existed) the `findings` summary "ssn:2 mrn:1 unscanned:1".
fn kinds_of(v: &Value) -> Vec<(String, u64)> {
    if let Some(m) = v["kinds"].as_object() {
        return m
            .iter()
            .filter_map(|(k, n)| Some((k.clone(), n.as_u64()?)))
            .collect();
    }
    v["findings"]
        .as_str()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|w| {
            let (k, n) = w.split_once(':')?;
            (k != "unscanned").then_some((k.to_string(), n.parse().ok()?))
        })
        .collect()
}

impl Tally {
    fn event(&mut self, v: &Value, ms: u64) {
        self.events += 1;
        match v["event"].as_str().unwrap_or("") {
            "message_accepted" => {
                let sender = sender_of(v);
                let size = v["size"].as_u64().unwrap_or(0);
                self.accepted += 1;
                self.bytes += size;
                let s = self.entry(&sender);
                s.messages += 1;
                s.recipients += v["recipients"].as_u64().unwrap_or(0);
                s.bytes += size;
                *self
                    .period
                    .entry(sender)
                    .or_default()
                    .entry(ms / DAY_MS)
                    .or_default() += 1;
                self.kinds_seen(v);
                for p in v["policy"].as_array().into_iter().flatten() {
                    if let Some(a) = p["action"].as_str() {
                        *self.policy.entry(a.to_string()).or_default() += 1;
                    }
                }
            }
            "message_rejected" => {
                self.rejected += 1;
                let sender = sender_of(v);
                self.entry(&sender).rejected += 1;
                self.kinds_seen(v);
            }
            "delivery_attempt" => {
                let outcome = v["outcome"].as_str().unwrap_or("unknown");
                if v["final"].as_bool() == Some(true) {
                    *self.outcomes.entry(outcome.to_string()).or_default() += 1;
                } else {
                    self.deferred += 1;
                }
                if outcome == "delivered" {
                    let version = v["tls_version"].as_str().unwrap_or("none").to_string();
                    let e = self.tls.entry(version.clone()).or_insert_with(|| TlsCount {
                        version,
                        ..Default::default()
                    });
                    e.deliveries += 1;
                    if v["tls_verified"].as_bool() == Some(true) {
                        e.verified += 1;
                    }
                }
            }
            "dsn_sent" => {
                let action = v["action"].as_str().unwrap_or("unknown");
                *self.reports.entry(action.to_string()).or_default() += 1;
            }
            _ => {}
        }
    }

    fn entry(&mut self, sender: &str) -> &mut SenderVolume {
        self.senders
            .entry(sender.to_string())
            .or_insert_with(|| SenderVolume {
                sender: sender.to_string(),
                ..Default::default()
            })
    }

    fn kinds_seen(&mut self, v: &Value) {
        for (kind, n) in kinds_of(v) {
            let e = self.kinds.entry(kind.clone()).or_insert_with(|| KindCount {
                kind,
                ..Default::default()
            });
            e.findings += n;
            e.messages += 1;
        }
    }

    fn finish(self, opts: &Options) -> Report {
        let mut senders: Vec<SenderVolume> = self.senders.into_values().collect();
        senders.sort_by(|a, b| b.messages.cmp(&a.messages).then_with(|| a.sender.cmp(&b.sender)));
        let mut findings: Vec<KindCount> = self.kinds.into_values().collect();
        findings.sort_by(|a, b| b.findings.cmp(&a.findings).then_with(|| a.kind.cmp(&b.kind)));
        let mut tls: Vec<TlsCount> = self.tls.into_values().collect();
        tls.sort_by(|a, b| {
            b.deliveries
                .cmp(&a.deliveries)
                .then_with(|| a.version.cmp(&b.version))
        });
        let delivered = self.outcomes.get("delivered").copied().unwrap_or(0);
        let portal = self.outcomes.get("portal").copied().unwrap_or(0);
        let portal_fallback_rate =
            (delivered + portal > 0).then(|| portal as f64 / (delivered + portal) as f64);
        let bounces = self.outcomes.get("failed").copied().unwrap_or(0)
            + self.outcomes.get("expired").copied().unwrap_or(0);
        let unusual = unusual(&self.baseline, &self.period, opts);
        Report {
            since: rfc3339(opts.since_ms),
            until: rfc3339(opts.until_ms),
            events: self.events,
            messages_accepted: self.accepted,
            bytes_accepted: self.bytes,
            messages_rejected: self.rejected,
            senders,
            findings,
            policy: self.policy,
            outcomes: self.outcomes,
            deferred_attempts: self.deferred,
            tls,
            portal_fallback_rate,
            reports_sent: self.reports,
            bounces,
            unusual,
            baseline_days: opts.baseline_days,
            factor: opts.factor,
            min_messages: opts.min_messages,
        }
    }
}

/// The median of `days` daily counts where the days not in `counts` had
/// none.
fn daily_median(counts: Option<&HashMap<u64, u64>>, days: u32) -> f64 {
    if days == 0 {
        return 0.0;
    }
    let mut v: Vec<u64> = counts.map(|c| c.values().copied().collect()).unwrap_or_default();
    v.resize(days as usize, 0);
    v.sort_unstable();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2] as f64
    } else {
        (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0
    }
}

fn unusual(
    baseline: &HashMap<String, HashMap<u64, u64>>,
    period: &HashMap<String, BTreeMap<u64, u64>>,
    opts: &Options,
) -> Vec<Unusual> {
    let mut out = Vec::new();
    for (sender, days) in period {
        let median = daily_median(baseline.get(sender), opts.baseline_days);
        for (&day, &n) in days {
            if n >= opts.min_messages && n as f64 >= opts.factor * median {
                out.push(Unusual {
                    sender: sender.clone(),
                    day: rfc3339(day * DAY_MS)[..10].to_string(),
                    messages: n,
                    median,
                });
            }
        }
    }
    out.sort_by(|a, b| {
        a.day
            .cmp(&b.day)
            .then_with(|| b.messages.cmp(&a.messages))
            .then_with(|| a.sender.cmp(&b.sender))
    });
    out
}

fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    /// The report as text for a terminal or an e-mail to compliance;
    /// `top` senders at most.
    pub fn text(&self, top: usize) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(o, "Ward report {} .. {}", self.since, self.until);
        let _ = writeln!(
            o,
            "Messages: {} accepted ({}), {} rejected by policy",
            self.messages_accepted,
            human_bytes(self.bytes_accepted),
            self.messages_rejected
        );
        let _ = writeln!(
            o,
            "\nVolume per sender (top {} of {}):",
            top.min(self.senders.len()),
            self.senders.len()
        );
        let _ = writeln!(
            o,
            "  {:>8} {:>10} {:>10} {:>8}  sender",
            "messages", "recipients", "bytes", "rejected"
        );
        for s in self.senders.iter().take(top) {
            let _ = writeln!(
                o,
                "  {:>8} {:>10} {:>10} {:>8}  {}",
                s.messages,
                s.recipients,
                human_bytes(s.bytes),
                s.rejected,
                s.sender
            );
        }
        let _ = writeln!(o, "\nFindings per kind:");
        if self.findings.is_empty() {
            let _ = writeln!(o, "  none");
        }
        for k in &self.findings {
            let _ = writeln!(o, "  {:<16} {:>8} in {} messages", k.kind, k.findings, k.messages);
        }
        let _ = writeln!(o, "\nPolicy per recipient copy: {}", counts(&self.policy));
        let _ = writeln!(
            o,
            "Final outcomes per copy: {}; {} attempts deferred",
            counts(&self.outcomes),
            self.deferred_attempts
        );
        let tls: Vec<String> = self
            .tls
            .iter()
            .map(|t| format!("{} {} ({} verified)", t.version, t.deliveries, t.verified))
            .collect();
        let _ = writeln!(
            o,
            "Deliveries by TLS version: {}",
            if tls.is_empty() {
                "none".into()
            } else {
                tls.join(", ")
            }
        );
        let delivered = self.outcomes.get("delivered").copied().unwrap_or(0);
        let portal = self.outcomes.get("portal").copied().unwrap_or(0);
        match self.portal_fallback_rate {
            Some(r) => {
                let _ = writeln!(
                    o,
                    "Portal fallback rate: {:.1}% ({portal} of {} copies delivered or sent to the portal)",
                    r * 100.0,
                    delivered + portal
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "Portal fallback rate: n/a (no copy delivered or sent to the portal)"
                );
            }
        }
        let _ = writeln!(
            o,
            "Bounces: {} copies failed or expired; reports sent: {}",
            self.bounces,
            counts(&self.reports_sent)
        );
        let _ = writeln!(
            o,
            "\nUnusual volume (a day at {}x a sender's daily median over the {} days before, and at least {} messages):",
            self.factor, self.baseline_days, self.min_messages
        );
        if self.unusual.is_empty() {
            let _ = writeln!(o, "  none");
        }
        for u in &self.unusual {
            let _ = writeln!(
                o,
                "  {}  {:>6} messages (median {})  {}",
                u.day, u.messages, u.median, u.sender
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const DAY0: u64 = 20_000 * DAY_MS; // 2024-10-04

    fn line(out: &mut Vec<u8>, ms: u64, fields: Value) {
        let mut v = fields;
        v["ms"] = ms.into();
        writeln!(out, "{v}").unwrap();
    }

    fn accepted(out: &mut Vec<u8>, ms: u64, from: &str, kinds: Value, actions: &[&str]) {
        let policy: Vec<Value> = actions
            .iter()
            .map(|a| serde_json::json!({"recipient": "r@x.example", "action": a, "reason": "t"}))
            .collect();
        line(
            out,
            ms,
            serde_json::json!({"event": "message_accepted", "from": from, "size": 1000,
                "recipients": actions.len(), "kinds": kinds, "policy": policy}),
        );
    }

    fn attempt(out: &mut Vec<u8>, ms: u64, outcome: &str, fin: bool, tls: Option<&str>, verified: bool) {
        line(
            out,
            ms,
            serde_json::json!({"event": "delivery_attempt", "outcome": outcome, "final": fin,
                "tls_version": tls, "tls_verified": verified}),
        );
    }

    fn options(days_in_period: u64) -> Options {
        Options {
            since_ms: DAY0 + 28 * DAY_MS,
            until_ms: DAY0 + (28 + days_in_period) * DAY_MS,
            baseline_days: 28,
            factor: 3.0,
            min_messages: 5,
        }
    }

    fn report(trail: &[u8], opts: &Options) -> Report {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-1.jsonl");
        std::fs::write(&path, trail).unwrap();
        build(&[path], opts).unwrap()
    }

    #[test]
    fn tallies_the_period_only() {
        let mut t = Vec::new();
        let p = DAY0 + 28 * DAY_MS + 1000;
        accepted(
            &mut t,
            p - 2000,
            "early@h.example",
            serde_json::json!({"ssn": 9}),
            &["deliver"],
        );
        accepted(
            &mut t,
            p,
            "a@h.example",
            serde_json::json!({"ssn": 2, "mrn": 1}),
            &["protect", "deliver"],
        );
        accepted(&mut t, p + 1, "A@h.example", serde_json::json!({}), &["deliver"]);
        // A line written before `kinds` existed.
        line(
            &mut t,
            p + 2,
            serde_json::json!({"event": "message_rejected", "from": "b@h.example", "findings": "ssn:1 unscanned:1"}),
        );
        attempt(&mut t, p + 3, "delivered", true, Some("TLSv1.3"), true);
        attempt(&mut t, p + 4, "delivered", true, Some("TLSv1.2"), false);
        attempt(&mut t, p + 5, "deferred", false, None, false);
        attempt(&mut t, p + 6, "portal", true, None, false);
        attempt(&mut t, p + 7, "failed", true, None, false);
        line(
            &mut t,
            p + 8,
            serde_json::json!({"event": "dsn_sent", "action": "failed"}),
        );
        accepted(
            &mut t,
            DAY0 + 29 * DAY_MS,
            "late@h.example",
            serde_json::json!({}),
            &["deliver"],
        );
        let r = report(&t, &options(1));
        assert_eq!(
            r.messages_accepted, 2,
            "the line before and the line after the period are out"
        );
        assert_eq!(r.bytes_accepted, 2000);
        assert_eq!(r.messages_rejected, 1);
        assert_eq!(r.events, 9);
        assert_eq!(
            r.senders[0].sender, "a@h.example",
            "addresses compare without case"
        );
        assert_eq!((r.senders[0].messages, r.senders[0].recipients), (2, 3));
        assert_eq!(r.senders[1].rejected, 1);
        let ssn = r.findings.iter().find(|k| k.kind == "ssn").unwrap();
        assert_eq!((ssn.findings, ssn.messages), (3, 2));
        assert!(r.findings.iter().all(|k| k.kind != "unscanned"));
        assert_eq!(r.policy.get("deliver"), Some(&2));
        assert_eq!(r.policy.get("protect"), Some(&1));
        assert_eq!(r.outcomes.get("delivered"), Some(&2));
        assert_eq!(r.deferred_attempts, 1);
        assert_eq!(r.tls.len(), 2);
        assert_eq!(r.tls.iter().map(|t| t.verified).sum::<u64>(), 1);
        assert_eq!(r.portal_fallback_rate, Some(1.0 / 3.0));
        assert_eq!(r.bounces, 1);
        assert_eq!(r.reports_sent.get("failed"), Some(&1));
        let text = r.text(10);
        assert!(text.contains("Portal fallback rate: 33.3% (1 of 3"), "{text}");
        assert!(text.contains("TLSv1.3 1 (1 verified)"), "{text}");
    }

    #[test]
    fn a_day_at_three_times_the_median_is_unusual() {
        let mut t = Vec::new();
        // Baseline: usual@ sends 4 a day on 20 of the 28 days (median 4);
        // new@ never sent before.
        for day in 0..20 {
            for i in 0..4 {
                accepted(
                    &mut t,
                    DAY0 + day * DAY_MS + i,
                    "usual@h.example",
                    Value::Null,
                    &["deliver"],
                );
            }
        }
        let p = DAY0 + 28 * DAY_MS;
        for i in 0..11 {
            accepted(&mut t, p + i, "usual@h.example", Value::Null, &["deliver"]);
        }
        for i in 0..12 {
            accepted(
                &mut t,
                p + DAY_MS + i,
                "usual@h.example",
                Value::Null,
                &["deliver"],
            );
        }
        for i in 0..4 {
            accepted(&mut t, p + i, "new@h.example", Value::Null, &["deliver"]);
        }
        for i in 0..5 {
            accepted(&mut t, p + DAY_MS + i, "new@h.example", Value::Null, &["deliver"]);
        }
        let r = report(&t, &options(2));
        let got: Vec<(String, u64, f64)> = r
            .unusual
            .iter()
            .map(|u| (u.sender.clone(), u.messages, u.median))
            .collect();
        assert_eq!(
            got,
            [
                // 11 < 3 x 4 on the first day; 12 on the second is unusual.
                ("usual@h.example".to_string(), 12, 4.0),
                // 4 is under min_messages; 5 is not, and the median is 0.
                ("new@h.example".to_string(), 5, 0.0),
            ]
        );
        assert_eq!(r.unusual[0].day, rfc3339(p + DAY_MS)[..10]);
        assert_eq!(daily_median(None, 0), 0.0);
        let even: HashMap<u64, u64> = [(1, 2), (2, 6)].into();
        assert_eq!(daily_median(Some(&even), 2), 4.0);
    }
}
