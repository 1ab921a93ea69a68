//! Metrics: the Prometheus registry every module counts into, and its text
//! exposition (served at `/metrics` by `admin`).
//!
//! Owns: the names, help texts and label sets of every metric Ward exports,
//! in one place ([`Metrics`]), so the operator's dashboard and alert rules
//! (`conf/`) have one list to follow. Names follow Prometheus conventions:
//! the `ward_` prefix, `_total` for counters, `_seconds` and `_bytes` for
//! units.
//!
//! Guarantees (invariant 4): labels take only values from closed sets
//! (listener names from the configuration, reply classes, reasons,
//! actions, detector kinds, outcomes, TLS versions, rule names); never an
//! address, a domain, a subject or anything from a message. Label values
//! a caller passes are checked against the closed set where the set is
//! known here ([`Metrics::delivery`] maps unknown TLS versions to
//! `other`).
//!
//! The registry is process-wide ([`metrics`]), like the counters of the
//! kernel: every part of Ward counts without being handed a handle.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric Ward exports.
pub struct Metrics {
    registry: Registry,
    /// Connections open now, by listener.
    pub connections_open: IntGaugeVec,
    /// Connections by listener and result (`accepted`, `denied`,
    /// `too_many`, `rate_limited`).
    pub connections: IntCounterVec,
    /// SMTP replies sent, by class (`2xx`, `3xx`, `4xx`, `5xx`).
    pub smtp_replies: IntCounterVec,
    /// Messages accepted (queued, 250 sent).
    pub messages_accepted: IntCounter,
    /// Messages refused, by reason.
    pub messages_rejected: IntCounterVec,
    /// Message bytes received (accepted messages, as queued).
    pub received_bytes: IntCounter,
    /// Time to scan one message.
    pub scan_duration: Histogram,
    /// Findings by detector kind (matches, not messages).
    pub findings: IntCounterVec,
    /// Policy decisions per recipient copy, by action.
    pub policy_decisions: IntCounterVec,
    /// Messages in the queue.
    pub queue_messages: IntGauge,
    /// Recipient copies not yet finished.
    pub queue_copies: IntGauge,
    /// Age of the oldest message in the queue (0 when empty).
    pub queue_oldest_age: IntGauge,
    /// Free bytes (for unprivileged users) on the data directory's file system.
    pub data_disk_free: IntGauge,
    /// Size of the data directory's file system.
    pub data_disk_size: IntGauge,
    /// Delivery results per recipient copy, by outcome and TLS version.
    pub deliveries: IntCounterVec,
    /// From acceptance to delivery (to the recipient's server or the portal).
    pub delivery_latency: Histogram,
    /// Pickups by event (`created`, `opened`, `expired`).
    pub pickups: IntCounterVec,
    /// Wrong one-time codes entered at the portal.
    pub code_failures: IntCounter,
    /// Events refused by a rate limit, by rule.
    pub rate_limited: IntCounterVec,
    /// Delivery status notifications queued, by kind.
    pub dsn_sent: IntCounterVec,
}

/// Kinds of delivery status notification (the `kind` label): the DSN
/// actions, and `postmaster` for the report of a bounce that bounced.
pub const DSN_KINDS: &[&str] = &["failed", "delayed", "delivered", "relayed", "postmaster"];

/// Reasons a message is refused (the `reason` label).
pub const REJECT_REASONS: &[&str] = &[
    "too_big",
    "bare_line_ending",
    "line_too_long",
    "mail_loop",
    "tenant_header",
    "policy",
    "storage",
    "rate_limited",
];

/// Delivery outcomes (the `outcome` label).
pub const DELIVERY_OUTCOMES: &[&str] = &[
    "delivered",
    "deferred",
    "failed",
    "expired",
    "portal",
    "tls_policy",
    "rate_limited",
    "sandbox",
];

/// TLS versions (the `tls_version` label).
pub const TLS_VERSIONS: &[&str] = &["TLSv1.3", "TLSv1.2", "none", "other"];

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let m = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let counter = |name: &str, help: &str| {
            let m = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let gauge = |name: &str, help: &str| {
            let m = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let m =
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric");
            registry.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        let connections_open = IntGaugeVec::new(
            Opts::new("ward_connections_open", "SMTP connections open now."),
            &["listener"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(connections_open.clone()))
            .expect("unique metric");
        let m = Metrics {
            connections_open,
            connections: counter_vec(
                "ward_connections_total",
                "SMTP connections by listener and result (accepted, denied, too_many, rate_limited).",
                &["listener", "result"],
            ),
            smtp_replies: counter_vec(
                "ward_smtp_replies_total",
                "SMTP replies sent, by class.",
                &["class"],
            ),
            messages_accepted: counter(
                "ward_messages_accepted_total",
                "Messages accepted: queued durably and answered 250.",
            ),
            messages_rejected: counter_vec(
                "ward_messages_rejected_total",
                "Messages refused, by reason.",
                &["reason"],
            ),
            received_bytes: counter(
                "ward_received_bytes_total",
                "Bytes of accepted messages, as queued.",
            ),
            scan_duration: histogram(
                "ward_scan_duration_seconds",
                "Time to scan one message for PHI.",
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            findings: counter_vec(
                "ward_findings_total",
                "Detector matches, by detector kind.",
                &["kind"],
            ),
            policy_decisions: counter_vec(
                "ward_policy_decisions_total",
                "Policy decisions per recipient copy, by action.",
                &["action"],
            ),
            queue_messages: gauge("ward_queue_messages", "Messages in the queue."),
            queue_copies: gauge(
                "ward_queue_copies",
                "Recipient copies in the queue not yet delivered, failed or in the portal.",
            ),
            queue_oldest_age: gauge(
                "ward_queue_oldest_message_age_seconds",
                "Age of the oldest message in the queue; 0 when it is empty.",
            ),
            data_disk_free: gauge(
                "ward_data_disk_free_bytes",
                "Free bytes on the file system of server.data_dir (queue, pickup store).",
            ),
            data_disk_size: gauge(
                "ward_data_disk_size_bytes",
                "Size of the file system of server.data_dir.",
            ),
            deliveries: counter_vec(
                "ward_deliveries_total",
                "Delivery results per recipient copy, by outcome and TLS version.",
                &["outcome", "tls_version"],
            ),
            delivery_latency: histogram(
                "ward_delivery_latency_seconds",
                "From acceptance to delivery (to the recipient's server or the pickup portal).",
                vec![
                    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
                ],
            ),
            pickups: counter_vec(
                "ward_pickups_total",
                "Pickup portal events: created, opened (first view), expired.",
                &["event"],
            ),
            code_failures: counter(
                "ward_pickup_code_failures_total",
                "Wrong one-time codes entered at the pickup portal.",
            ),
            rate_limited: counter_vec(
                "ward_rate_limited_total",
                "Events refused by a rate limit, by rule.",
                &["rule"],
            ),
            dsn_sent: counter_vec(
                "ward_dsn_sent_total",
                "Delivery status notifications queued (to the sender, or the postmaster for a bounce that bounced), by kind.",
                &["kind"],
            ),
            registry,
        };
        m.touch_known_labels();
        m
    }

    /// Creates the series of the closed label sets at zero, so a rate()
    /// over them works from the first scrape and absent means broken.
    fn touch_known_labels(&self) {
        for class in ["2xx", "3xx", "4xx", "5xx"] {
            self.smtp_replies.with_label_values(&[class]);
        }
        for r in REJECT_REASONS {
            self.messages_rejected.with_label_values(&[r]);
        }
        for o in DELIVERY_OUTCOMES {
            for v in TLS_VERSIONS {
                self.deliveries.with_label_values(&[o, v]);
            }
        }
        for e in ["created", "opened", "expired"] {
            self.pickups.with_label_values(&[e]);
        }
        for k in DSN_KINDS {
            self.dsn_sent.with_label_values(&[k]);
        }
        for a in ["deliver", "protect", "quarantine", "reject"] {
            self.policy_decisions.with_label_values(&[a]);
        }
        for rule in [
            "sender_messages",
            "sender_recipients",
            "ip_connections",
            "ip_messages",
            "domain_deliveries",
        ] {
            self.rate_limited.with_label_values(&[rule]);
        }
    }

    /// Counts one SMTP reply by its class.
    pub fn reply(&self, code: u16) {
        let class = match code {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.smtp_replies.with_label_values(&[class]).inc();
    }

    /// Counts one refused message.
    pub fn rejected(&self, reason: &'static str) {
        self.messages_rejected.with_label_values(&[reason]).inc();
    }

    /// Counts one delivery result; `tls_version` as rustls names it
    /// ("TLSv1_3"/"TLSv1.3"), anything unknown counts as `other`.
    pub fn delivery(&self, outcome: &'static str, tls_version: Option<&str>) {
        let v = match tls_version {
            // Sandbox mode: nothing went over a wire.
            None | Some("sandbox") => "none",
            Some(v) if v.contains("1_3") || v.contains("1.3") => "TLSv1.3",
            Some(v) if v.contains("1_2") || v.contains("1.2") => "TLSv1.2",
            Some(_) => "other",
        };
        self.deliveries.with_label_values(&[outcome, v]).inc();
    }

    /// Counts one pickup event (`created`, `opened`, `expired`).
    pub fn pickup(&self, event: &'static str, n: u64) {
        self.pickups.with_label_values(&[event]).inc_by(n);
    }

    /// Counts one queued delivery status notification of `kind` (one of
    /// [`DSN_KINDS`]).
    pub fn dsn(&self, kind: &'static str) {
        self.dsn_sent.with_label_values(&[kind]).inc();
    }

    /// Counts one event refused by the rate limit `rule`.
    pub fn rate_limit_hit(&self, rule: &'static str) {
        self.rate_limited.with_label_values(&[rule]).inc();
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions_and_series_exist_at_zero() {
        let m = Metrics::new();
        m.reply(250);
        m.reply(450);
        m.delivery("delivered", Some("TLSv1_3"));
        m.delivery("delivered", Some("SSLv3"));
        let text = m.render();
        assert!(
            text.contains("ward_smtp_replies_total{class=\"2xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ward_smtp_replies_total{class=\"4xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ward_smtp_replies_total{class=\"5xx\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("ward_deliveries_total{outcome=\"delivered\",tls_version=\"TLSv1.3\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ward_deliveries_total{outcome=\"delivered\",tls_version=\"other\"} 1"),
            "{text}"
        );
        for family in m.registry.gather() {
            let name = family.name();
            assert!(name.starts_with("ward_"), "{name}");
            let counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
            assert_eq!(counter, name.ends_with("_total"), "{name}");
        }
    }
}
