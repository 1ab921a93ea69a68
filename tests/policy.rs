//! Scanning and policy through the real `ward` process: what happens to a
//! message with PHI, per recipient, before and after the 250.

mod common;

use std::time::Duration;

use common::client::SmtpClient;
use common::process::{Ward, ward_cli};
use common::*;

const LONG: Duration = Duration::from_secs(20);
/// A valid SSN with context, and a date of birth: PHI by the built-in rules.
const PHI_BODY: &str = "Subject: follow-up\r\n\r\nPatient SSN 219-44-8213, DOB: 04/17/1961.\r\n";
const CLEAN_BODY: &str = "Subject: lunch\r\n\r\nThe cafeteria menu changes on Monday.\r\n";

/// Ward with two test MXs: `secure.test` does verified TLS, `plain.test`
/// has no STARTTLS and is configured `may`.
async fn setup(extra: &str) -> (Ward, TestMx, TestMx, TestCa) {
    let ca = TestCa::new();
    let secure = TestMx::start(MxOptions::new().starttls(ca.issue(&["mx.secure.test"]))).await;
    let plain = TestMx::plain().await;
    let dns = TestDns::start().await;
    dns.a("mx.secure.test", std::net::Ipv4Addr::LOCALHOST);
    let config = format!(
        "[delivery]\ntls_policy = \"may\"\nca_file = \"{ca}\"\nsystem_roots = false\nconnection_cache_time = \"200ms\"\n\
         [[delivery.destination]]\ndomain = \"secure.test\"\nroute = \"[mx.secure.test]:{sp}\"\ntls_policy = \"verify\"\n\
         [[delivery.destination]]\ndomain = \"plain.test\"\nroute = \"[127.0.0.1]:{pp}\"\ntls_policy = \"may\"\n\
         [dns]\nnameservers = [\"{dns}\"]\n\
         [queue]\nretry_schedule = [\"1s\"]\nscan_interval = \"200ms\"\n{extra}",
        ca = ca.ca_file().display(),
        sp = secure.port(),
        pp = plain.port(),
        dns = dns.addr(),
    );
    let w = Ward::start(&config);
    // The DNS server must outlive the test body.
    std::mem::forget(dns);
    (w, secure, plain, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phi_goes_out_only_over_verified_tls_per_recipient() {
    let (w, secure, plain, _ca) = setup("").await;
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    c.send_message(
        "dr@hospital.example",
        &["a@secure.test", "b@plain.test"],
        PHI_BODY.as_bytes(),
    )
    .await
    .assert_is("250 2.0.0");
    // The verified destination gets it; the plaintext one does not, and
    // its copy waits (TLS policy not met under protect).
    let got = secure.wait_for(1, LONG).await;
    assert!(got[0].tls.is_some());
    let line = w.line(&["delivery deferred", "to=b@plain.test"], LONG).await;
    assert!(
        line.contains("outcome=tls-policy") && line.contains("policy=protect"),
        "{line}"
    );
    assert!(
        plain.received().is_empty(),
        "protected mail went out in plaintext"
    );
    let queued = w.line(&["message queued"], LONG).await;
    assert!(
        queued.contains("action=protect") && queued.contains("ssn:1") && queued.contains("dob:1"),
        "{queued}"
    );
    // Clean mail to the same plaintext destination is delivered as configured.
    c.send_message("dr@hospital.example", &["b@plain.test"], CLEAN_BODY.as_bytes())
        .await
        .assert_is("250 2.0.0");
    let got = plain.wait_for(1, LONG).await;
    assert!(String::from_utf8_lossy(&got[0].data).contains("cafeteria"));
    assert!(!w.log().contains("219-44-8213"), "the SSN reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_quarantine_and_blocked_domains() {
    let (w, secure, plain, _ca) = setup(
        "[policy]\nblocked_domains = [\"blocked.test\"]\n\
         [policy.detectors.credit_card]\naction = \"reject\"\n\
         [[policy.rule]]\nsender = \"@billing.example\"\naction = \"quarantine\"\n",
    )
    .await;
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    // Blocked domain: refused at RCPT.
    c.cmd("MAIL FROM:<dr@hospital.example>").await.assert_is("250");
    c.cmd("RCPT TO:<x@blocked.test>").await.assert_is("550 5.7.1");
    c.cmd("RSET").await.assert_is("250");
    // A card number: refused in-session, content-free reason.
    let r = c
        .send_message(
            "dr@hospital.example",
            &["a@secure.test"],
            b"Subject: payment\r\n\r\nCard 4111 1111 1111 1111 exp 12/29\r\n",
        )
        .await;
    r.assert_is("550 5.7.1");
    assert!(!r.text().contains("4111"), "{r:?}");
    // Quarantine by sender rule: accepted, never delivered.
    c.send_message("clerk@billing.example", &["a@plain.test"], CLEAN_BODY.as_bytes())
        .await
        .assert_is("250 2.0.0");
    let queued = w
        .line(&["message queued", "from=clerk@billing.example"], LONG)
        .await;
    assert!(queued.contains("action=quarantine"), "{queued}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(plain.received().is_empty() && secure.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_words_protect_and_can_be_stripped() {
    let (w, secure, plain, _ca) = setup("[policy]\nstrip_trigger_words = true\n").await;
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    let msg = b"Subject: [SECURE] budget figures\r\n\r\nNothing sensitive in here.\r\n";
    c.send_message("cfo@hospital.example", &["a@secure.test", "b@plain.test"], msg)
        .await
        .assert_is("250 2.0.0");
    let got = secure.wait_for(1, LONG).await;
    let text = String::from_utf8_lossy(&got[0].data).into_owned();
    assert!(
        text.contains("Subject: budget figures\r\n"),
        "trigger word not stripped"
    );
    let line = w.line(&["delivery deferred", "to=b@plain.test"], LONG).await;
    assert!(line.contains("policy=protect"), "{line}");
    assert!(plain.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_over_its_budget_is_protected() {
    // A budget so small every scan overruns it.
    let (w, _secure, plain, _ca) = setup("[scan]\ntime_budget = \"10ms\"\n").await;
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    let mut body = String::from("Subject: big\r\n\r\n");
    for i in 0..400_000 {
        body.push_str(&format!(
            "line {i} of an ordinary report with numbers 1234 5678\r\n"
        ));
    }
    c.send_message("a@hospital.example", &["b@plain.test"], body.as_bytes())
        .await
        .assert_is("250 2.0.0");
    let queued = w.line(&["message queued"], LONG).await;
    assert!(queued.contains("action=protect"), "{queued}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        plain.received().is_empty(),
        "an unscanned message went out in plaintext"
    );
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn ward_scan_reports_json_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let clean = write(dir.path(), "clean.eml", CLEAN_BODY);
    let phi = write(dir.path(), "phi.eml", PHI_BODY);
    let (status, out, _) = ward_cli(&["scan", "--json", &clean]);
    assert_eq!(status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["file"], clean.as_str());
    assert_eq!(v["phi"], false);
    assert_eq!(v["action"], "deliver");

    let (status, out, _) = ward_cli(&["scan", "--json", &clean, &phi]);
    assert_eq!(status.code(), Some(1));
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["phi"], true);
    assert_eq!(lines[1]["action"], "protect");
    let kinds: Vec<&str> = lines[1]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"ssn") && kinds.contains(&"dob"), "{kinds:?}");
    assert_eq!(lines[1]["findings"][0]["part"], "body");
    assert!(!out.contains("219-44-8213"), "a value in the JSON output");

    let (status, out, _) = ward_cli(&["scan", "--explain", &phi]);
    assert_eq!(status.code(), Some(1));
    assert!(out.contains("***-**-8213"), "{out}");
    assert!(!out.contains("219-44-8213"), "explain must mask");

    let (status, _, err) = ward_cli(&["scan", "/nonexistent.eml"]);
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("cannot read"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_policy_and_refuses_a_broken_file() {
    let (w, _secure, plain, _ca) = setup("").await;
    let original = std::fs::read_to_string(&w.config_path).unwrap();
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    let msg = b"Subject: [classified] plans\r\n\r\nNothing here.\r\n";
    c.send_message("a@hospital.example", &["b@plain.test"], msg)
        .await
        .assert_is("250 2.0.0");
    plain.wait_for(1, LONG).await;

    // A broken file is refused; the running policy stays.
    w.rewrite_config(&format!(
        "{original}\n[policy]\ntrigger_words = [\"[classified]\"]\nbogus = 1\n"
    ));
    unsafe { libc::kill(w.pid() as i32, libc::SIGHUP) };
    let refused = w.line(&["configuration reload refused"], LONG).await;
    assert!(refused.contains("unknown field"), "{refused}");

    // A good one takes effect for the next message.
    w.rewrite_config(&format!(
        "{original}\n[policy]\ntrigger_words = [\"[classified]\"]\n"
    ));
    unsafe { libc::kill(w.pid() as i32, libc::SIGHUP) };
    w.line(&["configuration reloaded"], LONG).await;
    c.send_message("a@hospital.example", &["b@plain.test"], msg)
        .await
        .assert_is("250 2.0.0");
    let line = w.line(&["delivery deferred", "policy=protect"], LONG).await;
    assert!(line.contains("to=b@plain.test"), "{line}");
    assert_eq!(
        plain.received().len(),
        1,
        "the protected copy went out in plaintext"
    );
}
