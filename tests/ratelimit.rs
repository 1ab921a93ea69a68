//! Rate limits against the real `ward` process over loopback: messages and
//! recipients per sender, connections per client IP, outbound deliveries per
//! recipient domain, and a SIGHUP that changes a limit.

mod common;

use std::time::Duration;

use common::client::{SmtpClient, SmtpReply};
use common::mx::TestMx;
use common::process::Ward;

/// Deliveries go nowhere (port 1 on loopback refuses), so these tests only
/// see the inbound side.
const NOWHERE: &str = "[delivery]\nsmart_host = \"[127.0.0.1]:1\"\ntls_policy = \"may\"\n";

const MSG: &[u8] = b"Subject: t\r\n\r\nhello\r\n";

/// The wait a rate-limit reply asks for ("... try again in 3 seconds").
fn retry_after(r: &SmtpReply) -> Duration {
    let text = r.text();
    let secs = text
        .split("try again in ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no retry hint in {r:?}"));
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eleventh_message_waits_and_other_senders_do_not() {
    // 10 per 30 s: a bucket of 10 that gains one message every 3 s, so ten
    // messages sent at once all fit and the eleventh does not.
    let w = Ward::start(&format!("{NOWHERE}[rate_limit]\nsender_messages = \"10/30s\"\n"));
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    for i in 0..10 {
        let r = c
            .send_message("alice@hospital.example", &["bob@clinic.example"], MSG)
            .await;
        assert_eq!(r.code, 250, "message {}: {r:?}", i + 1);
    }
    let refused = c.cmd("MAIL FROM:<alice@hospital.example>").await;
    refused.assert_is("450 4.7.0");
    let wait = retry_after(&refused);
    assert!(
        wait >= Duration::from_secs(1) && wait <= Duration::from_secs(3),
        "{refused:?}"
    );
    // The case of the address does not make a new sender.
    c.cmd("MAIL FROM:<Alice@Hospital.EXAMPLE>")
        .await
        .assert_is("450 4.7.0");

    // Another sender, same session and IP: unaffected.
    c.send_message("carol@hospital.example", &["bob@clinic.example"], MSG)
        .await
        .assert_is("250 2.0.0");

    // After the wait the reply named, alice's next message goes through.
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    c.send_message("alice@hospital.example", &["bob@clinic.example"], MSG)
        .await
        .assert_is("250 2.0.0");
    c.quit().await;
    let line = w
        .log()
        .lines()
        .find(|l| l.contains("message refused: rate limit"))
        .map(str::to_string);
    let line = line.expect("the refusal is logged");
    assert!(line.contains("rule=sender_messages"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_over_the_rate_get_452_and_the_message_keeps_the_others() {
    let w = Ward::start(&format!("{NOWHERE}[rate_limit]\nsender_recipients = \"3/1h\"\n"));
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    c.cmd("MAIL FROM:<alice@hospital.example>")
        .await
        .assert_is("250 2.1.0");
    for r in ["a@x.example", "b@x.example", "c@x.example"] {
        c.cmd(&format!("RCPT TO:<{r}>")).await.assert_is("250 2.1.5");
    }
    // A repeated recipient is not counted again.
    c.cmd("RCPT TO:<a@x.example>").await.assert_is("250 2.1.5");
    let refused = c.cmd("RCPT TO:<d@x.example>").await;
    refused.assert_is("452 4.5.3");
    assert!(retry_after(&refused) > Duration::from_secs(1000), "{refused:?}");
    c.cmd("DATA").await.assert_is("354");
    c.send_raw(b"Subject: t\r\n\r\nhello\r\n.\r\n").await;
    c.read_reply().await.assert_is("250 2.0.0");
    // Another sender still has its own budget.
    c.cmd("MAIL FROM:<dave@hospital.example>")
        .await
        .assert_is("250 2.1.0");
    c.cmd("RCPT TO:<d@x.example>").await.assert_is("250 2.1.5");
    c.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_ip_over_the_rate_get_421() {
    let w = Ward::start(&format!("{NOWHERE}[rate_limit]\nip_connections = \"2/1h\"\n"));
    let a = SmtpClient::connect(w.smtp()).await;
    let b = SmtpClient::connect(w.smtp()).await;
    let mut c = SmtpClient::connect_raw(w.smtp()).await;
    let r = c.read_reply().await;
    r.assert_is("421 4.7.0");
    assert!(retry_after(&r) > Duration::from_secs(1000), "{r:?}");
    assert!(c.is_closed(Duration::from_secs(2)).await);
    a.quit().await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_the_limits() {
    let w = Ward::start(&format!("{NOWHERE}[rate_limit]\nsender_messages = \"1/1h\"\n"));
    let original = std::fs::read_to_string(&w.config_path).unwrap();
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    c.send_message("alice@hospital.example", &["bob@clinic.example"], MSG)
        .await
        .assert_is("250 2.0.0");
    c.cmd("MAIL FROM:<alice@hospital.example>")
        .await
        .assert_is("450 4.7.0");

    // An override for alice: in force at once, for the session already open.
    w.rewrite_config(&format!(
        "{original}\n[[rate_limit.sender]]\nsender = \"@hospital.example\"\nmessages = \"off\"\n"
    ));
    unsafe { libc::kill(w.pid() as i32, libc::SIGHUP) };
    w.line(&["configuration reloaded"], Duration::from_secs(10)).await;
    for _ in 0..3 {
        c.send_message("alice@hospital.example", &["bob@clinic.example"], MSG)
            .await
            .assert_is("250 2.0.0");
    }
    // Others keep the global rule, and its buckets survived the reload.
    c.send_message("eve@elsewhere.example", &["bob@clinic.example"], MSG)
        .await
        .assert_is("250 2.0.0");
    c.cmd("MAIL FROM:<eve@elsewhere.example>")
        .await
        .assert_is("450 4.7.0");
    c.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_copies_over_the_domain_rate_are_rescheduled_not_failed() {
    let mx = TestMx::plain().await;
    // One delivery per 3 s to a domain.
    let w = Ward::start(&format!(
        "[delivery]\nsmart_host = \"[127.0.0.1]:{}\"\ntls_policy = \"may\"\n\
         [rate_limit]\ndomain_deliveries = \"1/3s\"\n",
        mx.port()
    ));
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    for _ in 0..2 {
        c.send_message("alice@hospital.example", &["bob@clinic.example"], MSG)
            .await
            .assert_is("250 2.0.0");
    }
    c.quit().await;
    let deferred = w
        .line(
            &["delivery deferred", "outcome=rate-limited"],
            Duration::from_secs(10),
        )
        .await;
    assert!(deferred.contains("attempts=0"), "{deferred}");
    // The second copy goes out once the bucket allows it (about 3 s after
    // the first), as its first attempt.
    let got = mx.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while w.log_count(": delivered ") < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = w.log();
    let delivered: Vec<&str> = log.lines().filter(|l| l.contains(": delivered ")).collect();
    assert_eq!(delivered.len(), 2, "{log}");
    assert!(
        delivered.iter().all(|l| l.contains("attempts=1")),
        "{delivered:?}"
    );
    assert_eq!(w.log_count("delivery failed permanently"), 0, "{log}");
}
