//! `ward::delivery` against real servers on loopback: a test DNS server for
//! the resolver path and test MXs with and without STARTTLS, good and bad
//! certificates, and scripted replies.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use ward::config::{Config, DestinationConfig, NextHop, TlsPolicy};
use ward::delivery::{AttemptErrorKind, Delivery, OutboundMessage, RecipientOutcome};
use ward::queue::{BodyType, Envelope, Notify, Recipient, Ret};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test IP")
}

fn envelope() -> Envelope {
    Envelope {
        sender: "sender@ward.test".into(),
        ..Envelope::default()
    }
}

fn recipients(addresses: &[&str]) -> Vec<Recipient> {
    addresses.iter().map(|a| Recipient::new(*a)).collect()
}

const SIMPLE: &[u8] = b"From: sender@ward.test\r\nTo: rcpt@example.test\r\nSubject: test\r\n\r\nHello.\r\n";

fn message<'a>(
    envelope: &'a Envelope,
    recipients: &'a [Recipient],
    content: &'a [u8],
) -> OutboundMessage<'a> {
    OutboundMessage {
        envelope,
        recipients,
        content,
    }
}

/// A CA, a DNS server, and `example.test` pointing at `mx.example.test` on
/// 127.0.0.1.
async fn setup() -> (TestCa, TestDns) {
    init_tracing();
    let ca = TestCa::new();
    let dns = TestDns::start().await;
    dns.mx("example.test", 10, "mx.example.test");
    dns.a("mx.example.test", Ipv4Addr::LOCALHOST);
    (ca, dns)
}

fn delivery(config: &Config) -> Delivery {
    Delivery::new(config).expect("delivery")
}

/// Sends one simple message to `rcpt@example.test` and returns the outcomes.
async fn send_simple(d: &Delivery) -> Vec<RecipientOutcome> {
    let env = envelope();
    let rcpts = recipients(&["rcpt@example.test"]);
    let mut conn = d.connect("example.test").await.expect("connect");
    let out = conn.send(&message(&env, &rcpts, SIMPLE)).await.expect("send");
    conn.quit().await;
    out
}

fn assert_delivered(outcomes: &[RecipientOutcome]) {
    for o in outcomes {
        assert!(
            matches!(o, RecipientOutcome::Delivered(r) if r.code == 250),
            "{outcomes:?}"
        );
    }
}

#[tokio::test]
async fn verify_delivers_over_trusted_certificate_byte_for_byte() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(MxOptions::new().starttls(ca.issue(&["mx.example.test"]))).await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::Verify));

    let content: &[u8] = b"From: sender@ward.test\r\nTo: rcpt@example.test\r\nSubject: dots\r\n\r\n\
        .a line starting with a dot\r\n\
        ..two dots\r\n\
        .\r\n\
        a dot . in the middle\r\n\
        . \r\n\
        ...\r\n\
        last line\r\n";
    let env = envelope();
    let rcpts = recipients(&["rcpt@example.test"]);
    let mut conn = d.connect("example.test").await.expect("connect");
    let ev = conn.evidence().clone();
    assert_eq!(ev.policy, TlsPolicy::Verify);
    assert!(ev.verified);
    assert_eq!(ev.version.as_deref(), Some("TLSv1.3"));
    assert!(ev.cipher.is_some());
    assert_eq!(ev.peer_name, "mx.example.test");
    assert_eq!(conn.remote().mx, "mx.example.test");
    assert_eq!(conn.remote().addr, mx.addr());

    let out = conn.send(&message(&env, &rcpts, content)).await.expect("send");
    assert_delivered(&out);
    assert_eq!(out[0].reply().status.as_deref(), Some("2.0.0"));
    assert_eq!(conn.messages_sent(), 1);
    assert!(conn.is_reusable());
    conn.quit().await;

    let got = mx.wait_for(1, WAIT).await;
    assert_eq!(got[0].data, content, "the MX got exactly the message");
    assert_eq!(got[0].mail_from, "sender@ward.test");
    assert_eq!(got[0].rcpt_to, ["rcpt@example.test"]);
    assert_eq!(got[0].helo, "ward.test");
    assert_eq!(got[0].sni.as_deref(), Some("mx.example.test"));
    assert_eq!(got[0].tls.as_ref().map(|t| t.0.as_str()), Some("TLSv1.3"));
}

/// Under `verify`, `mx` must get nothing and the attempt must fail with
/// TlsPolicyNotMet carrying evidence; returns the error detail.
async fn assert_verify_refuses(options: MxOptions) -> String {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(options).await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::Verify));
    let err = d.connect("example.test").await.expect_err("must not connect");
    assert_eq!(err.kind, AttemptErrorKind::TlsPolicyNotMet, "{err}");
    assert_eq!(err.status, "4.7.5");
    let ev = err.evidence.clone().expect("evidence");
    assert_eq!(ev.policy, TlsPolicy::Verify);
    assert_eq!(ev.version, None);
    assert!(!ev.verified);
    assert_eq!(ev.peer_name, "mx.example.test");
    assert_eq!(err.remote, Some(format!("mx.example.test[{}]", mx.addr())));
    assert!(mx.received().is_empty());
    assert!(!mx.saw_command("MAIL"), "{:?}", mx.commands());
    err.detail
}

#[tokio::test]
async fn verify_refuses_mx_without_starttls() {
    let detail = assert_verify_refuses(MxOptions::new()).await;
    assert!(detail.contains("STARTTLS not offered"), "{detail}");
}

#[tokio::test]
async fn verify_refuses_self_signed_certificate() {
    let other = TestCa::new();
    let detail =
        assert_verify_refuses(MxOptions::new().starttls(other.self_signed(&["mx.example.test"]))).await;
    assert!(detail.contains("certificate"), "{detail}");
}

#[tokio::test]
async fn verify_refuses_certificate_from_unknown_ca() {
    let other = TestCa::new();
    let detail = assert_verify_refuses(MxOptions::new().starttls(other.issue(&["mx.example.test"]))).await;
    assert!(detail.contains("certificate"), "{detail}");
}

#[tokio::test]
async fn verify_refuses_wrong_name_certificate() {
    // Signed by the trusted CA, for another name.
    let (ca, dns) = setup().await;
    let mx = TestMx::start(MxOptions::new().starttls(ca.wrong_name())).await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::Verify));
    let err = d.connect("example.test").await.expect_err("must not connect");
    assert_eq!(err.kind, AttemptErrorKind::TlsPolicyNotMet, "{err}");
    assert!(err.detail.contains("certificate"), "{}", err.detail);
    let ev = err.evidence.expect("evidence");
    assert!(!ev.verified && ev.version.is_none());
    assert!(mx.received().is_empty() && !mx.saw_command("MAIL"));
    assert_eq!(mx.tls_handshakes(), 0);
}

#[tokio::test]
async fn verify_refuses_expired_certificate() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(MxOptions::new().starttls(ca.expired(&["mx.example.test"]))).await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::Verify));
    let err = d.connect("example.test").await.expect_err("must not connect");
    assert_eq!(err.kind, AttemptErrorKind::TlsPolicyNotMet, "{err}");
    assert!(err.detail.to_lowercase().contains("expired"), "{}", err.detail);
    assert!(err.evidence.is_some());
    assert!(mx.received().is_empty() && !mx.saw_command("MAIL"));
}

#[tokio::test]
async fn verify_accepts_tls12_only_server() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(
        MxOptions::new()
            .starttls(ca.issue(&["mx.example.test"]))
            .tls12_only(),
    )
    .await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::Verify));
    let conn = d.connect("example.test").await.expect("connect");
    assert_eq!(conn.evidence().version.as_deref(), Some("TLSv1.2"));
    assert!(conn.evidence().verified);
    conn.quit().await;
}

#[tokio::test]
async fn encrypt_delivers_to_self_signed_mx_and_records_unverified() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(MxOptions::new().starttls(ca.self_signed(&["mx.example.test"]))).await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::Encrypt));
    let env = envelope();
    let rcpts = recipients(&["rcpt@example.test"]);
    let mut conn = d.connect("example.test").await.expect("connect");
    let ev = conn.evidence().clone();
    assert_eq!(ev.policy, TlsPolicy::Encrypt);
    assert!(ev.version.is_some());
    assert!(!ev.verified, "a self-signed certificate would not have verified");
    assert_delivered(&conn.send(&message(&env, &rcpts, SIMPLE)).await.expect("send"));
    conn.quit().await;
    let got = mx.wait_for(1, WAIT).await;
    assert!(got[0].tls.is_some());
}

#[tokio::test]
async fn encrypt_records_verified_when_the_certificate_would_verify() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(MxOptions::new().starttls(ca.issue(&["mx.example.test"]))).await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::Encrypt));
    let conn = d.connect("example.test").await.expect("connect");
    assert!(conn.evidence().verified);
    conn.quit().await;
}

#[tokio::test]
async fn encrypt_refuses_mx_without_starttls() {
    let (ca, dns) = setup().await;
    let mx = TestMx::plain().await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::Encrypt));
    let err = d.connect("example.test").await.expect_err("must not connect");
    assert_eq!(err.kind, AttemptErrorKind::TlsPolicyNotMet);
    assert!(!mx.saw_command("MAIL"));
}

#[tokio::test]
async fn may_delivers_in_plaintext_without_starttls() {
    let (ca, dns) = setup().await;
    let mx = TestMx::plain().await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::May));
    let env = envelope();
    let rcpts = recipients(&["rcpt@example.test"]);
    let mut conn = d.connect("example.test").await.expect("connect");
    let ev = conn.evidence().clone();
    assert_eq!(ev.policy, TlsPolicy::May);
    assert_eq!(ev.version, None);
    assert!(!ev.verified);
    assert_eq!(ev.peer_name, "mx.example.test");
    assert_delivered(&conn.send(&message(&env, &rcpts, SIMPLE)).await.expect("send"));
    conn.quit().await;
    let got = mx.wait_for(1, WAIT).await;
    assert!(got[0].tls.is_none());
}

#[tokio::test]
async fn may_uses_starttls_when_offered() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(MxOptions::new().starttls(ca.self_signed(&["mx.example.test"]))).await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::May));
    assert_delivered(&send_simple(&d).await);
    let got = mx.wait_for(1, WAIT).await;
    assert!(got[0].tls.is_some());
}

#[tokio::test]
async fn may_reconnects_in_plaintext_after_a_failed_handshake() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(
        MxOptions::new()
            .starttls(ca.issue(&["mx.example.test"]))
            .reply_times(Stage::StartTls, "220 2.0.0 go ahead (then hang up)", 1),
    )
    .await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::May));
    let env = envelope();
    let rcpts = recipients(&["rcpt@example.test"]);
    let mut conn = d.connect("example.test").await.expect("connect");
    assert_eq!(conn.evidence().version, None);
    assert_delivered(&conn.send(&message(&env, &rcpts, SIMPLE)).await.expect("send"));
    conn.quit().await;
    let got = mx.wait_for(1, WAIT).await;
    assert_eq!(mx.connections(), 2);
    assert_eq!(got[0].connection, 2);
    assert!(got[0].tls.is_none());
}

#[tokio::test]
async fn verify_never_falls_back_after_a_failed_handshake() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(
        MxOptions::new()
            .starttls(ca.issue(&["mx.example.test"]))
            .reply_times(Stage::StartTls, "220 2.0.0 go ahead (then hang up)", 1),
    )
    .await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::Verify));
    let err = d.connect("example.test").await.expect_err("must not connect");
    assert_eq!(err.kind, AttemptErrorKind::TlsPolicyNotMet);
    assert_eq!(mx.connections(), 1);
    assert!(!mx.saw_command("MAIL"));
}

#[tokio::test]
async fn may_falls_back_to_helo_when_ehlo_is_refused() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(MxOptions::new().reply(Stage::Ehlo, "502 5.5.1 EHLO not implemented")).await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::May));
    assert_delivered(&send_simple(&d).await);
    assert!(mx.saw_command("HELO ward.test"));
    let got = mx.wait_for(1, WAIT).await;
    // No extensions after HELO: a plain MAIL command.
    assert_eq!(got[0].mail_line, "MAIL FROM:<sender@ward.test>");
}

#[tokio::test]
async fn mx_preference_order_is_followed() {
    let (ca, dns) = setup().await;
    let first = TestMx::start(MxOptions::new().bind(IpAddr::V4(ip("127.0.0.2")))).await;
    let second = TestMx::start(
        MxOptions::new()
            .bind(IpAddr::V4(ip("127.0.0.3")))
            .port(first.port()),
    )
    .await;
    dns.mx("pref.test", 20, "mx-b.pref.test");
    dns.mx("pref.test", 10, "mx-a.pref.test");
    dns.a("mx-a.pref.test", ip("127.0.0.2"));
    dns.a("mx-b.pref.test", ip("127.0.0.3"));
    let d = delivery(&delivery_config(&dns, &ca, first.port(), TlsPolicy::May));
    for _ in 0..3 {
        let conn = d.connect("pref.test").await.expect("connect");
        assert_eq!(conn.remote().mx, "mx-a.pref.test");
        conn.quit().await;
    }
    assert_eq!(first.connections(), 3);
    assert_eq!(second.connections(), 0);
}

#[tokio::test]
async fn falls_back_to_the_second_mx_when_the_first_refuses_connections() {
    let (ca, dns) = setup().await;
    let second = TestMx::start(MxOptions::new().bind(IpAddr::V4(ip("127.0.0.3")))).await;
    dns.mx("fallback.test", 10, "dead.fallback.test");
    dns.mx("fallback.test", 20, "alive.fallback.test");
    // Nothing listens on 127.0.0.4: connection refused.
    dns.a("dead.fallback.test", ip("127.0.0.4"));
    dns.a("alive.fallback.test", ip("127.0.0.3"));
    let d = delivery(&delivery_config(&dns, &ca, second.port(), TlsPolicy::May));
    let env = envelope();
    let rcpts = recipients(&["rcpt@fallback.test"]);
    let mut conn = d.connect("fallback.test").await.expect("connect");
    assert_eq!(conn.remote().mx, "alive.fallback.test");
    assert_delivered(&conn.send(&message(&env, &rcpts, SIMPLE)).await.expect("send"));
    conn.quit().await;
    second.wait_for(1, WAIT).await;
}

#[tokio::test]
async fn verify_tries_the_next_mx_after_a_tls_failure() {
    let (ca, dns) = setup().await;
    let bad = TestMx::start(MxOptions::new().bind(IpAddr::V4(ip("127.0.0.2")))).await;
    let good = TestMx::start(
        MxOptions::new()
            .bind(IpAddr::V4(ip("127.0.0.3")))
            .port(bad.port())
            .starttls(ca.issue(&["good.tlsnext.test"])),
    )
    .await;
    dns.mx("tlsnext.test", 10, "bad.tlsnext.test");
    dns.mx("tlsnext.test", 20, "good.tlsnext.test");
    dns.a("bad.tlsnext.test", ip("127.0.0.2"));
    dns.a("good.tlsnext.test", ip("127.0.0.3"));
    let d = delivery(&delivery_config(&dns, &ca, bad.port(), TlsPolicy::Verify));
    let conn = d.connect("tlsnext.test").await.expect("connect");
    assert_eq!(conn.remote().mx, "good.tlsnext.test");
    assert!(conn.evidence().verified);
    conn.quit().await;
    assert!(!bad.saw_command("MAIL"));
    assert_eq!(good.tls_handshakes(), 1);
}

#[tokio::test]
async fn null_mx_is_permanent_5_1_10() {
    let (ca, dns) = setup().await;
    dns.null_mx("nomail.test");
    let d = delivery(&delivery_config(&dns, &ca, 25, TlsPolicy::Verify));
    let err = d.connect("nomail.test").await.expect_err("null MX");
    assert_eq!(err.kind, AttemptErrorKind::Permanent);
    assert_eq!(err.status, "5.1.10");
}

#[tokio::test]
async fn nxdomain_is_permanent() {
    let (ca, dns) = setup().await;
    let d = delivery(&delivery_config(&dns, &ca, 25, TlsPolicy::Verify));
    let err = d.connect("does-not-exist.test").await.expect_err("NXDOMAIN");
    assert_eq!(err.kind, AttemptErrorKind::Permanent);
    assert_eq!(err.status, "5.1.2");
    assert!(dns.queries().iter().any(|(n, _)| n == "does-not-exist.test"));
}

#[tokio::test]
async fn servfail_is_temporary() {
    let (ca, dns) = setup().await;
    dns.servfail("broken.test");
    let d = delivery(&delivery_config(&dns, &ca, 25, TlsPolicy::Verify));
    let err = d.connect("broken.test").await.expect_err("SERVFAIL");
    assert_eq!(err.kind, AttemptErrorKind::Temporary);
    assert_eq!(err.status, "4.4.3");
}

#[tokio::test]
async fn domain_without_mx_or_address_is_permanent() {
    let (ca, dns) = setup().await;
    dns.exists("empty.test");
    let d = delivery(&delivery_config(&dns, &ca, 25, TlsPolicy::Verify));
    let err = d.connect("empty.test").await.expect_err("no addresses");
    assert_eq!(err.kind, AttemptErrorKind::Permanent);
    assert_eq!(err.status, "5.1.2");
}

#[tokio::test]
async fn implicit_mx_uses_the_domains_own_address() {
    let (ca, dns) = setup().await;
    dns.a("implicit.test", Ipv4Addr::LOCALHOST);
    let mx = TestMx::start(MxOptions::new().starttls(ca.issue(&["implicit.test"]))).await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::Verify));
    let env = envelope();
    let rcpts = recipients(&["someone@implicit.test"]);
    let mut conn = d.connect("implicit.test").await.expect("connect");
    assert_eq!(conn.remote().mx, "implicit.test");
    assert!(conn.evidence().verified);
    assert_delivered(&conn.send(&message(&env, &rcpts, SIMPLE)).await.expect("send"));
    conn.quit().await;
    mx.wait_for(1, WAIT).await;
}

#[tokio::test]
async fn address_literal_goes_to_that_address() {
    let (ca, dns) = setup().await;
    let mx = TestMx::plain().await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::May));
    let conn = d.connect("[127.0.0.1]").await.expect("connect");
    assert_eq!(conn.remote().addr, mx.addr());
    conn.quit().await;
    assert!(dns.queries().is_empty(), "no DNS for an address literal");
}

#[tokio::test]
async fn destination_route_to_an_ip_checks_tls_name() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(MxOptions::new().starttls(ca.issue(&["relay.partner.test"]))).await;
    let mut config = delivery_config(&dns, &ca, 25, TlsPolicy::Verify);
    config.delivery.destinations.push(DestinationConfig {
        domain: "partner.test".into(),
        route: Some(NextHop::parse(&format!("[127.0.0.1]:{}", mx.port())).expect("next hop")),
        tls_policy: None,
        tls_name: Some("relay.partner.test".into()),
    });
    let d = delivery(&config);
    let conn = d.connect("partner.test").await.expect("connect");
    assert_eq!(conn.evidence().peer_name, "relay.partner.test");
    assert!(conn.evidence().verified);
    conn.quit().await;
    assert!(dns.queries().is_empty(), "no DNS for an [ip] route");

    // Without tls_name the recipient domain is the name: the certificate
    // doesn't carry it.
    config.delivery.destinations[0].tls_name = None;
    let err = delivery(&config)
        .connect("partner.test")
        .await
        .expect_err("wrong name");
    assert_eq!(err.kind, AttemptErrorKind::TlsPolicyNotMet);
    assert_eq!(err.evidence.map(|e| e.peer_name).as_deref(), Some("partner.test"));
}

#[tokio::test]
async fn smart_host_with_mx_lookup_and_destination_policy() {
    let (ca, dns) = setup().await;
    let mx = TestMx::plain().await;
    dns.mx("relay.test", 10, "smtp.relay.test");
    dns.a("smtp.relay.test", Ipv4Addr::LOCALHOST);
    let mut config = delivery_config(&dns, &ca, mx.port(), TlsPolicy::Verify);
    config.delivery.smart_host = Some(NextHop::parse("relay.test").expect("next hop"));
    config.delivery.destinations.push(DestinationConfig {
        domain: ".lab.test".into(),
        route: None,
        tls_policy: Some(TlsPolicy::May),
        tls_name: None,
    });
    let d = delivery(&config);
    // verify (the default) can't be met by the plaintext relay...
    let err = d.connect("anything.test").await.expect_err("verify");
    assert_eq!(err.kind, AttemptErrorKind::TlsPolicyNotMet);
    // ...but a destination under `may` goes through it.
    let conn = d.connect("x.lab.test").await.expect("connect");
    assert_eq!(conn.remote().mx, "smtp.relay.test");
    conn.quit().await;
}

async fn per_recipient_outcomes(options: MxOptions) -> TestMx {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(
        options
            .reply(
                Stage::Rcpt("unknown@example.test".into()),
                "550 5.1.1 no such user",
            )
            .reply(Stage::Rcpt("busy@example.test".into()), "451 4.2.1 mailbox busy"),
    )
    .await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::May));
    let env = envelope();
    let rcpts = recipients(&["unknown@example.test", "ok@example.test", "busy@example.test"]);
    let mut conn = d.connect("example.test").await.expect("connect");
    let out = conn.send(&message(&env, &rcpts, SIMPLE)).await.expect("send");
    assert_eq!(out.len(), 3);
    match &out[0] {
        RecipientOutcome::Failed(r) => {
            assert_eq!(r.code, 550);
            assert_eq!(r.status.as_deref(), Some("5.1.1"));
            assert_eq!(r.text, "no such user");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&out[1], RecipientOutcome::Delivered(r) if r.code == 250),
        "{out:?}"
    );
    assert!(
        matches!(&out[2], RecipientOutcome::Deferred(r) if r.code == 451),
        "{out:?}"
    );
    assert!(conn.is_reusable());
    conn.quit().await;
    let got = mx.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, ["ok@example.test"]);
    assert_eq!(got[0].data, SIMPLE);
    mx
}

#[tokio::test]
async fn per_recipient_outcomes_pipelined() {
    let mx = per_recipient_outcomes(MxOptions::new()).await;
    // MAIL, three RCPT and DATA came in one write.
    assert!(mx.pipelined_commands() >= 4, "{}", mx.pipelined_commands());
}

#[tokio::test]
async fn per_recipient_outcomes_without_pipelining() {
    let mx = per_recipient_outcomes(MxOptions::new().no_pipelining()).await;
    assert_eq!(mx.pipelined_commands(), 0);
}

#[tokio::test]
async fn mail_refusal_applies_to_every_recipient() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(MxOptions::new().reply(Stage::Mail, "550 5.7.1 sender rejected")).await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::May));
    let env = envelope();
    let rcpts = recipients(&["a@example.test", "b@example.test"]);
    let mut conn = d.connect("example.test").await.expect("connect");
    let out = conn.send(&message(&env, &rcpts, SIMPLE)).await.expect("send");
    assert!(
        out.iter()
            .all(|o| matches!(o, RecipientOutcome::Failed(r) if r.code == 550)),
        "{out:?}"
    );
    assert!(conn.is_reusable());
    conn.quit().await;
    assert!(mx.received().is_empty());
}

#[tokio::test]
async fn data_end_refusal_and_first_n_failures() {
    let (ca, dns) = setup().await;
    let mx =
        TestMx::start(MxOptions::new().reply_times(Stage::DataEnd, "451 4.3.0 try again later", 1)).await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::May));
    let env = envelope();
    let rcpts = recipients(&["a@example.test", "b@example.test"]);
    let mut conn = d.connect("example.test").await.expect("connect");
    let first = conn.send(&message(&env, &rcpts, SIMPLE)).await.expect("send");
    assert!(
        first
            .iter()
            .all(|o| matches!(o, RecipientOutcome::Deferred(r) if r.code == 451)),
        "{first:?}"
    );
    let second = conn.send(&message(&env, &rcpts, SIMPLE)).await.expect("send");
    assert_delivered(&second);
    conn.quit().await;
    assert_eq!(mx.wait_for(1, WAIT).await.len(), 1);
    assert_eq!(mx.connections(), 1);
}

#[tokio::test]
async fn a_421_mid_session_defers_the_rest_and_ends_reuse() {
    for options in [MxOptions::new(), MxOptions::new().no_pipelining()] {
        let (ca, dns) = setup().await;
        let mx = TestMx::start(
            options
                .reply(
                    Stage::Rcpt("refused@example.test".into()),
                    "550 5.1.1 no such user",
                )
                .reply(Stage::Rcpt("b@example.test".into()), "421 4.3.2 shutting down"),
        )
        .await;
        let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::May));
        let env = envelope();
        let rcpts = recipients(&[
            "refused@example.test",
            "a@example.test",
            "b@example.test",
            "c@example.test",
        ]);
        let mut conn = d.connect("example.test").await.expect("connect");
        let out = conn.send(&message(&env, &rcpts, SIMPLE)).await.expect("send");
        assert!(
            matches!(&out[0], RecipientOutcome::Failed(r) if r.code == 550),
            "{out:?}"
        );
        for o in &out[1..] {
            assert!(
                matches!(o, RecipientOutcome::Deferred(r) if r.code == 421),
                "{out:?}"
            );
        }
        assert!(!conn.is_reusable());
        let again = conn
            .send(&message(&env, &rcpts, SIMPLE))
            .await
            .expect_err("closed");
        assert_eq!(again.kind, AttemptErrorKind::Temporary);
        assert!(mx.received().is_empty());
        assert!(!mx.saw_command("DATA"), "{:?}", mx.commands());
    }
}

#[tokio::test]
async fn one_connection_carries_three_messages() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(MxOptions::new().starttls(ca.issue(&["mx.example.test"]))).await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::Verify));
    let env = envelope();
    let rcpts = recipients(&["rcpt@example.test"]);
    let mut conn = d.connect("example.test").await.expect("connect");
    for i in 0..3 {
        let content = format!("Subject: message {i}\r\n\r\nbody {i}\r\n");
        assert_delivered(
            &conn
                .send(&message(&env, &rcpts, content.as_bytes()))
                .await
                .expect("send"),
        );
    }
    assert_eq!(conn.messages_sent(), 3);
    assert!(conn.is_reusable());
    conn.quit().await;
    let got = mx.wait_for(3, WAIT).await;
    assert_eq!(mx.connections(), 1);
    assert!(got.iter().all(|r| r.connection == 1 && r.tls.is_some()));
    assert_eq!(got[2].data, b"Subject: message 2\r\n\r\nbody 2\r\n");
    assert!(!mx.saw_command("RSET"), "no RSET between clean transactions");
}

#[tokio::test]
async fn rset_after_a_transaction_left_open() {
    for options in [MxOptions::new(), MxOptions::new().no_pipelining()] {
        let (ca, dns) = setup().await;
        let mx =
            TestMx::start(options.reply(Stage::Rcpt("nobody@example.test".into()), "550 5.1.1 no")).await;
        let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::May));
        let env = envelope();
        let nobody = recipients(&["nobody@example.test"]);
        let somebody = recipients(&["somebody@example.test"]);
        let mut conn = d.connect("example.test").await.expect("connect");
        let out = conn.send(&message(&env, &nobody, SIMPLE)).await.expect("send");
        assert!(matches!(&out[0], RecipientOutcome::Failed(_)));
        assert_delivered(&conn.send(&message(&env, &somebody, SIMPLE)).await.expect("send"));
        conn.quit().await;
        let got = mx.wait_for(1, WAIT).await;
        assert_eq!(got[0].rcpt_to, ["somebody@example.test"]);
        assert_eq!(mx.connections(), 1);
        let commands = mx.commands();
        let rset = commands.iter().position(|c| c == "RSET").expect("RSET sent");
        let second_mail = commands
            .iter()
            .rposition(|c| c.starts_with("MAIL"))
            .expect("MAIL");
        assert!(rset < second_mail, "{commands:?}");
    }
}

#[tokio::test]
async fn smtputf8_to_a_server_without_it_is_permanent() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(MxOptions::new().no_smtputf8()).await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::May));
    let env = Envelope {
        sender: "jörg@ward.test".into(),
        smtputf8: true,
        ..Envelope::default()
    };
    let rcpts = recipients(&["rcpt@example.test"]);
    let mut conn = d.connect("example.test").await.expect("connect");
    let err = conn
        .send(&message(&env, &rcpts, SIMPLE))
        .await
        .expect_err("no SMTPUTF8");
    assert_eq!(err.kind, AttemptErrorKind::Permanent);
    assert_eq!(err.status, "5.6.7");
    assert!(err.evidence.is_some() && err.remote.is_some());
    assert!(conn.is_reusable(), "nothing was sent");
    conn.quit().await;
    assert!(!mx.saw_command("MAIL"));
}

#[tokio::test]
async fn eight_bit_content_to_a_server_without_8bitmime_is_permanent() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(MxOptions::new().no_8bitmime()).await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::May));
    let env = Envelope {
        sender: "sender@ward.test".into(),
        body: BodyType::EightBitMime,
        ..Envelope::default()
    };
    let rcpts = recipients(&["rcpt@example.test"]);
    let mut conn = d.connect("example.test").await.expect("connect");
    let err = conn
        .send(&message(
            &env,
            &rcpts,
            "Subject: x\r\n\r\ncaf\u{e9}\r\n".as_bytes(),
        ))
        .await
        .expect_err("8-bit");
    assert_eq!(err.kind, AttemptErrorKind::Permanent);
    assert_eq!(err.status, "5.6.3");
    // Marked 8BITMIME but actually 7-bit: sent, without BODY=.
    assert_delivered(&conn.send(&message(&env, &rcpts, SIMPLE)).await.expect("send"));
    conn.quit().await;
    let got = mx.wait_for(1, WAIT).await;
    assert!(!got[0].mail_line.contains("BODY="));
}

#[tokio::test]
async fn esmtp_parameters_are_passed_on() {
    let (ca, dns) = setup().await;
    let mx = TestMx::plain().await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::May));
    let env = Envelope {
        sender: "sender@ward.test".into(),
        body: BodyType::EightBitMime,
        smtputf8: true,
        ret: Some(Ret::Hdrs),
        envid: Some("QQ314159".into()),
        recipients: Vec::new(),
    };
    let mut rcpt = Recipient::new("rcpt@example.test");
    rcpt.notify = Some(Notify {
        never: false,
        success: false,
        failure: true,
        delay: true,
    });
    rcpt.orcpt = Some("rfc822;rcpt@example.test".into());
    let rcpts = vec![rcpt];
    let content = "Subject: x\r\n\r\ncaf\u{e9}\r\n".as_bytes();
    let mut conn = d.connect("example.test").await.expect("connect");
    assert_delivered(&conn.send(&message(&env, &rcpts, content)).await.expect("send"));
    conn.quit().await;
    let got = mx.wait_for(1, WAIT).await;
    assert_eq!(
        got[0].mail_line,
        format!(
            "MAIL FROM:<sender@ward.test> SIZE={} BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ314159",
            content.len()
        )
    );
    assert_eq!(
        got[0].rcpt_lines,
        ["RCPT TO:<rcpt@example.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;rcpt@example.test"]
    );
    assert_eq!(got[0].data, content);
}

#[tokio::test]
async fn message_larger_than_announced_size_is_permanent() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(MxOptions::new().size(Some(10))).await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::May));
    let env = envelope();
    let rcpts = recipients(&["rcpt@example.test"]);
    let mut conn = d.connect("example.test").await.expect("connect");
    let err = conn
        .send(&message(&env, &rcpts, SIMPLE))
        .await
        .expect_err("too big");
    assert_eq!(err.status, "5.3.4");
    conn.quit().await;
}

#[tokio::test]
async fn refused_greeting_fails_the_host_temporarily() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(MxOptions::new().reply(Stage::Greeting, "554 5.7.1 go away")).await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::May));
    let err = d.connect("example.test").await.expect_err("refused");
    assert_eq!(err.kind, AttemptErrorKind::Temporary);
    assert_eq!(err.status, "4.7.1");
    assert_eq!(err.reply.map(|r| r.code), Some(554));
}

#[tokio::test]
async fn plaintext_injected_after_starttls_is_refused() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (ca, dns) = setup().await;
    // A hand-written server that answers STARTTLS with a 220 and, in the
    // same packet, a reply meant to be read as if it came over TLS
    // (CVE-2011-0411). Then it waits.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 evil.test ESMTP\r\n").await.expect("greet");
        let mut commands = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            commands.push(line.clone());
            if line.starts_with("EHLO") {
                write
                    .write_all(b"250-evil.test\r\n250 STARTTLS\r\n")
                    .await
                    .expect("ehlo");
            } else if line == "STARTTLS" {
                write
                    .write_all(b"220 go ahead\r\n250-injected\r\n250 PIPELINING\r\n")
                    .await
                    .expect("starttls");
            }
        }
        commands
    });
    let config = delivery_config(&dns, &ca, port, TlsPolicy::Encrypt);
    let started = std::time::Instant::now();
    let err = delivery(&config)
        .connect("example.test")
        .await
        .expect_err("injection");
    assert_eq!(err.kind, AttemptErrorKind::TlsPolicyNotMet);
    assert!(err.detail.contains("after its STARTTLS reply"), "{}", err.detail);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "refused at once"
    );
    let commands = server.await.expect("server");
    assert!(!commands.iter().any(|c| c.starts_with("MAIL")), "{commands:?}");
}

#[tokio::test]
async fn a_silent_server_times_out_temporarily() {
    let (ca, dns) = setup().await;
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let mut config = delivery_config(&dns, &ca, port, TlsPolicy::May);
    config.delivery.greeting_timeout = std::time::Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = delivery(&config)
        .connect("example.test")
        .await
        .expect_err("timeout");
    assert_eq!(err.kind, AttemptErrorKind::Temporary);
    assert!(err.detail.contains("greeting: timed out"), "{}", err.detail);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    hold.abort();
}

#[tokio::test]
async fn large_message_with_many_dot_lines_arrives_intact() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(MxOptions::new().starttls(ca.issue(&["mx.example.test"]))).await;
    let d = delivery(&delivery_config(&dns, &ca, mx.port(), TlsPolicy::Verify));
    let mut content = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..100_000 {
        if i % 3 == 0 {
            content.extend_from_slice(b".");
        }
        content.extend_from_slice(format!("line {i} of a large message\r\n").as_bytes());
    }
    let env = envelope();
    let rcpts = recipients(&["rcpt@example.test"]);
    let mut conn = d.connect("example.test").await.expect("connect");
    assert_delivered(&conn.send(&message(&env, &rcpts, &content)).await.expect("send"));
    conn.quit().await;
    let got = mx.wait_for(1, WAIT).await;
    assert!(got[0].data == content, "large message differs");
}

#[test]
fn evidence_and_errors_serialize() {
    let ev = ward::delivery::TlsEvidence {
        policy: TlsPolicy::Verify,
        version: Some("TLSv1.3".into()),
        cipher: Some("TLS13_AES_256_GCM_SHA384".into()),
        verified: true,
        peer_name: "mx.example.test".into(),
    };
    let json = serde_json::to_string(&ev).expect("serialize");
    assert!(json.contains("\"policy\":\"verify\""), "{json}");
    let back: ward::delivery::TlsEvidence = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, ev);
    let kind = serde_json::to_string(&AttemptErrorKind::TlsPolicyNotMet).expect("serialize");
    assert_eq!(kind, "\"tls_policy_not_met\"");
}
