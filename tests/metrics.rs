//! The admin listener's /metrics against the real `ward` process over
//! loopback: values move as mail is accepted, delivered, held and
//! rate-limited; no label carries an address; and, where `promtool` is
//! installed (always in CI), `promtool check metrics` accepts the output.

mod common;

use std::time::{Duration, Instant};

use common::client::SmtpClient;
use common::metrics::{get, scrape, value};
use common::mx::TestMx;
use common::process::Ward;

/// A valid SSN with context, and a date of birth: PHI by the built-in rules.
const PHI_BODY: &[u8] = b"Subject: follow-up\r\n\r\nPatient SSN 219-44-8213, DOB: 04/17/1961.\r\n";
const CLEAN_BODY: &[u8] = b"Subject: lunch\r\n\r\nSee you at noon.\r\n";

/// Scrapes until `series` reaches `want` (metrics of deliveries move after
/// the MX has the message).
async fn wait_value(w: &Ward, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = scrape(w).await;
        if value(&body, series) >= want {
            return body;
        }
        if Instant::now() > deadline {
            panic!("{series} never reached {want}:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_mail_is_accepted_delivered_held_and_rate_limited() {
    let mx = TestMx::plain().await;
    let w = Ward::start(&format!(
        "[delivery]\nsmart_host = \"[127.0.0.1]:{}\"\ntls_policy = \"may\"\n\
         [rate_limit]\nsender_messages = \"3/1h\"\n",
        mx.port()
    ));
    let before = scrape(&w).await;
    assert_eq!(value(&before, "ward_messages_accepted_total"), 0.0);
    assert_eq!(
        value(&before, "ward_rate_limited_total{rule=\"sender_messages\"}"),
        0.0
    );
    assert!(
        before.contains("ward_rate_limited_total{rule=\"sender_messages\"} 0"),
        "{before}"
    );

    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    for _ in 0..2 {
        c.send_message("alice@hospital.example", &["bob@clinic.example"], CLEAN_BODY)
            .await
            .assert_is("250 2.0.0");
    }
    // PHI to a server without TLS and no portal: protected, it waits.
    c.send_message("alice@hospital.example", &["carol@clinic.example"], PHI_BODY)
        .await
        .assert_is("250 2.0.0");
    c.cmd("MAIL FROM:<alice@hospital.example>")
        .await
        .assert_is("450 4.7.0");
    c.quit().await;
    mx.wait_for(2, Duration::from_secs(10)).await;

    wait_value(
        &w,
        "ward_deliveries_total{outcome=\"delivered\",tls_version=\"none\"}",
        2.0,
    )
    .await;
    // The protected copy could not get verified TLS: it waits for a retry.
    let m = wait_value(
        &w,
        "ward_deliveries_total{outcome=\"tls_policy\",tls_version=\"none\"}",
        1.0,
    )
    .await;
    assert_eq!(value(&m, "ward_messages_accepted_total"), 3.0, "{m}");
    assert!(value(&m, "ward_received_bytes_total") > (2 * CLEAN_BODY.len() + PHI_BODY.len()) as f64);
    assert_eq!(
        value(&m, "ward_messages_rejected_total{reason=\"rate_limited\"}"),
        1.0
    );
    assert_eq!(
        value(&m, "ward_rate_limited_total{rule=\"sender_messages\"}"),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "ward_connections_total{listener=\"smtp\",result=\"accepted\"}"
        ),
        1.0
    );
    assert!(value(&m, "ward_smtp_replies_total{class=\"2xx\"}") >= 12.0, "{m}");
    assert_eq!(value(&m, "ward_smtp_replies_total{class=\"4xx\"}"), 1.0, "{m}");
    assert_eq!(value(&m, "ward_scan_duration_seconds_count"), 3.0, "{m}");
    assert_eq!(value(&m, "ward_findings_total{kind=\"ssn\"}"), 1.0, "{m}");
    assert_eq!(value(&m, "ward_findings_total{kind=\"dob\"}"), 1.0, "{m}");
    assert_eq!(value(&m, "ward_policy_decisions_total{action=\"deliver\"}"), 2.0);
    assert_eq!(value(&m, "ward_policy_decisions_total{action=\"protect\"}"), 1.0);
    assert_eq!(value(&m, "ward_delivery_latency_seconds_count"), 2.0, "{m}");
    // The held PHI message is the queue.
    assert_eq!(value(&m, "ward_queue_messages"), 1.0, "{m}");
    assert_eq!(value(&m, "ward_queue_copies"), 1.0, "{m}");
    assert!(value(&m, "ward_queue_oldest_message_age_seconds") < 60.0, "{m}");

    // Nothing that names a person, a domain or content.
    for needle in ["@", "hospital.example", "clinic.example", "219-44", "follow-up"] {
        assert!(!m.contains(needle), "{needle:?} in /metrics:\n{m}");
    }

    let (status, _, _) = get(w.listener("admin"), "/queue").await;
    assert!(status.contains(" 404 "), "{status}");

    promtool_check(&m);
}

/// `promtool check metrics` on the exposition. Where promtool is missing it
/// says so and passes, except under CI, where .ci/run installs it and a
/// missing promtool is a failure.
fn promtool_check(body: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is not installed, and under CI it must be (.ci/run installs the Debian package prometheus)"
            );
            eprintln!(
                "promtool not installed: `promtool check metrics` skipped (apt-get install prometheus)"
            );
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check metrics failed:\n{said}");
    // promtool exits 0 with lint warnings on stdout; there must be none.
    assert!(said.trim().is_empty(), "promtool check metrics:\n{said}");
}
