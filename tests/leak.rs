//! The leak test: one PHI-bearing message through every path a copy can
//! take — delivered over verified TLS, the pickup portal (notification,
//! code, opened), a 5xx bounce, a delay notice and expiry, quarantine —
//! and the same message refused by policy in the session, with every log
//! at debug level. None of the planted values or the subject may appear
//! in the log, the audit trail, any report (DSN), the notification or
//! code mail, /metrics, the admin API's answers (by queue id and by
//! Message-ID), `ward status`, `ward report` or `ward audit export`.
//!
//! The checks are not vacuous: the copy delivered over verified TLS does
//! hold the planted strings, and each path is seen to happen (audit
//! events, report figures, the status of each recipient).

mod common;
#[path = "common/portal.rs"]
mod portal;

use std::time::{Duration, Instant};

use common::client::{SmtpClient, dot_stuff};
use common::process::{Ward, ward_cli};
use common::*;
use portal::*;

const TOKEN: &str = "fedcba9876543210fedcba9876543210";
/// Planted beyond `portal::PLANTED` and the subject.
const MORE: [&str; 3] = ["04/17/1961", "219448213", "Dr. Who"];

fn assert_clean(what: &str, data: &[u8]) {
    assert_no_planted(what, data);
    let text = String::from_utf8_lossy(data);
    for p in MORE.iter().chain([&SUBJECT]) {
        assert!(!text.contains(p), "{what} contains planted content");
    }
}

/// Sends the protected message with raw MAIL/RCPT lines; returns the
/// final reply.
async fn send(ward: &Ward, rcpts: &[&str]) -> common::client::SmtpReply {
    let mut c = SmtpClient::connect(ward.smtp()).await;
    c.ehlo("client.test").await;
    c.cmd("MAIL FROM:<dr@hospital.example>").await.assert_is("250");
    for r in rcpts {
        c.cmd(r).await.assert_is("250");
    }
    c.cmd("DATA").await.assert_is("354");
    c.send_raw(&dot_stuff(&protected_message())).await;
    c.send_raw(b".\r\n").await;
    let reply = c.read_reply().await;
    c.quit().await;
    reply
}

async fn admin_get(ward: &Ward, path: &str) -> (String, String) {
    let (status, _, body) = common::metrics::get_as(ward.listener("admin"), path, Some(TOKEN)).await;
    (status, body)
}

fn audit_text(ward: &Ward) -> String {
    let mut files: Vec<_> = std::fs::read_dir(ward.dir.join("data/audit"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_planted_value_leaves_by_any_path() {
    let ca = TestCa::new();
    // secure.test does verified TLS; it refuses gone@ for good and late@
    // for now, each reply echoing the SSN (and a diagnosis) as some servers
    // echo content.
    let secure = TestMx::start(
        MxOptions::new()
            .starttls(ca.issue(&["mx.secure.test"]))
            .reply(
                Stage::Rcpt("gone@secure.test".into()),
                "550 5.1.1 <gone@secure.test>: no such user (ref 219-44-8213, malignant neoplasm)",
            )
            .reply(
                Stage::Rcpt("late@secure.test".into()),
                "451 4.2.0 mailbox busy (ref 219448213)",
            ),
    )
    .await;
    let plain = TestMx::plain().await;
    let dns = TestDns::start().await;
    dns.a("mx.secure.test", std::net::Ipv4Addr::LOCALHOST);
    let cert = ca.issue(&["portal.ward.test", "ward.test"]);
    let tmp = tempfile::tempdir().unwrap();
    let base = common::process::base_config(tmp.path())
        .replace("level = \"info,ward=debug\"", "level = \"debug\"")
        .replace("[admin]\n", &format!("[admin]\ntoken = \"{TOKEN}\"\n"));
    assert!(base.contains("level = \"debug\"") && base.contains(TOKEN));
    let config = format!(
        "{base}[tls]\ncert_file = \"{cf}\"\nkey_file = \"{kf}\"\n\
         [delivery]\ntls_policy = \"verify\"\nca_file = \"{ca}\"\nsystem_roots = false\nconnection_cache_time = \"200ms\"\n\
         [[delivery.destination]]\ndomain = \"secure.test\"\nroute = \"[mx.secure.test]:{sp}\"\n\
         [[delivery.destination]]\ndomain = \"hospital.example\"\nroute = \"[mx.secure.test]:{sp}\"\n\
         [[delivery.destination]]\ndomain = \"plain.test\"\nroute = \"[127.0.0.1]:{pp}\"\n\
         [dns]\nnameservers = [\"{dns}\"]\n\
         [queue]\nretry_schedule = [\"1s\"]\nscan_interval = \"200ms\"\nmax_lifetime = \"6s\"\n\
         [dsn]\ndelay_after = \"1s\"\n\
         [portal]\nenabled = true\naddress = \"127.0.0.1:0\"\npublic_host = \"portal.ward.test\"\n\
         organization = \"St. Example Hospital\"\nnotify_from = \"noreply@hospital.example\"\n\
         [[policy.rule]]\nrecipient = \"@hold.test\"\naction = \"quarantine\"\n\
         [[policy.rule]]\nrecipient = \"@refuse.test\"\naction = \"reject\"\n",
        cf = cert.cert_file.display(),
        kf = cert.key_file.display(),
        ca = ca.ca_file().display(),
        sp = secure.port(),
        pp = plain.port(),
        dns = dns.addr(),
    );
    let s = Setup::new(Ward::start_in(tmp.path(), &config), secure, plain, ca, cert, dns);

    // Reject: refused in the session, and the reply says nothing of why
    // beyond policy.
    let refused = send(&s.ward, &["RCPT TO:<x@refuse.test>"]).await;
    refused.assert_is("550 5.7.1");
    assert_clean("the 550 reply", refused.text().as_bytes());

    // Every other path, one message.
    let reply = send(
        &s.ward,
        &[
            "RCPT TO:<a@secure.test>",
            "RCPT TO:<b@plain.test>",
            "RCPT TO:<gone@secure.test>",
            "RCPT TO:<late@secure.test> NOTIFY=DELAY,FAILURE",
            "RCPT TO:<q@hold.test>",
        ],
    )
    .await;
    reply.assert_is("250 2.0.0");
    let qid = reply.queue_id();

    // The portal: notification, code, the message opened.
    let notification = s.plain.wait_for(1, LONG).await;
    let url = s.url(&link_in(&notification[0].data));
    let code = s.request_code(&url, 2).await;
    let page = s.verify(&url, &code).await;
    assert_eq!(page.status(), 200);
    assert!(
        page.text().await.unwrap().contains("Jane Roe"),
        "the portal shows the message"
    );

    // secure.test: a@'s copy, the bounce for gone@, the delay notice and
    // the expiry report for late@.
    let got = s.secure.wait_for(4, LONG).await;
    let (copies, reports): (Vec<_>, Vec<_>) = got.iter().partition(|m| !m.mail_from.is_empty());
    assert_eq!(copies.len(), 1, "one copy delivered");
    assert_eq!(copies[0].rcpt_to, ["a@secure.test"]);
    assert!(copies[0].tls.is_some());
    let delivered = String::from_utf8_lossy(&copies[0].data);
    assert!(
        delivered.contains("Jane Roe") && delivered.contains("219-44-8213"),
        "the planted values were in the message"
    );
    assert_eq!(reports.len(), 3, "bounce, delay notice, expiry report");
    for r in &reports {
        assert_clean("a delivery status notification", &r.data);
    }
    let all_reports: String = reports.iter().map(|r| String::from_utf8_lossy(&r.data)).collect();
    assert!(all_reports.contains("Action: failed\r\n") && all_reports.contains("Action: delayed\r\n"));
    for m in s.plain.received() {
        assert_clean("a mail to the portal recipient", &m.data);
    }

    // Each recipient's state, by queue id and by Message-ID.
    let deadline = Instant::now() + LONG;
    let by_id = loop {
        let (st, body) = admin_get(&s.ward, &format!("/api/status/{qid}")).await;
        assert!(st.contains(" 200 "), "{st}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let states: Vec<String> = v["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{}={}",
                    r["recipient"].as_str().unwrap(),
                    r["state"].as_str().unwrap()
                )
            })
            .collect();
        if states
            == [
                "a@secure.test=delivered",
                "b@plain.test=portal",
                "gone@secure.test=failed",
                "late@secure.test=expired",
                "q@hold.test=quarantined",
            ]
        {
            break body;
        }
        assert!(Instant::now() < deadline, "{states:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_clean("the status API", by_id.as_bytes());
    let v: serde_json::Value = serde_json::from_str(&by_id).unwrap();
    assert_eq!(v["message_id"], "orig-1@hospital.example");
    let b = &v["recipients"][1];
    assert!(b["opened"]["at_ms"].as_u64().is_some(), "the read receipt: {b}");
    let (st, by_mid) = admin_get(&s.ward, "/api/status/%3Corig-1%40hospital.example%3E").await;
    assert!(st.contains(" 200 "), "{st}");
    assert_clean("the status API by Message-ID", by_mid.as_bytes());
    let v: serde_json::Value = serde_json::from_str(&by_mid).unwrap();
    assert_eq!(v["message_id"], "orig-1@hospital.example");
    let found: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["queue_id"].as_str().unwrap())
        .collect();
    assert_eq!(found, [qid.as_str()], "the refused message was never queued");
    let (st, _) = admin_get(&s.ward, "/api/status/no-such-id@hospital.example").await;
    assert!(st.contains(" 404 "), "{st}");

    let cfg = s.ward.config_path.to_str().unwrap().to_string();
    let admin = s.ward.listener("admin").to_string();
    let (status, out, err) = ward_cli(&[
        "status",
        "orig-1@hospital.example",
        "--admin",
        &admin,
        "--config",
        &cfg,
    ]);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(out.contains(&qid), "{out}");
    assert_clean("ward status", out.as_bytes());
    assert_clean("ward status (errors)", err.as_bytes());
    let (status, _, err) = ward_cli(&["status", "not an id", "--admin", &admin, "--config", &cfg]);
    assert_eq!(status.code(), Some(2));
    assert!(
        err.contains("neither a queue id (32 hex digits) nor a Message-ID"),
        "{err}"
    );

    let metrics = common::metrics::scrape(&s.ward).await;
    assert!(metrics.contains("ward_messages_accepted_total 1"), "{metrics}");
    assert_clean("/metrics", metrics.as_bytes());

    // The audit trail has each path's events, and none of the content.
    let deadline = Instant::now() + LONG;
    let audit = loop {
        let audit = audit_text(&s.ward);
        let has = |event: &str, extra: &str| {
            audit
                .lines()
                .any(|l| l.contains(&format!("\"event\":\"{event}\"")) && l.contains(extra))
        };
        if has("message_rejected", "")
            && has("message_accepted", "\"message_id\":\"orig-1@hospital.example\"")
            && has("delivery_attempt", "\"outcome\":\"delivered\"")
            && has("delivery_attempt", "\"outcome\":\"portal\"")
            && has("delivery_attempt", "\"outcome\":\"failed\"")
            && has("delivery_attempt", "\"outcome\":\"expired\"")
            && has("dsn_sent", "\"action\":\"delayed\"")
            && has("pickup_created", "")
            && has("pickup_code_sent", "")
            && has("pickup_opened", "")
            && has("admin_status_query", "orig-1@hospital.example")
        {
            break audit;
        }
        assert!(Instant::now() < deadline, "{audit}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_clean("the audit trail", audit.as_bytes());

    // The compliance commands on the same trail.
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let (status, json, err) = ward_cli(&["report", "--since", &today, "--json", "--config", &cfg]);
    assert_eq!(status.code(), Some(0), "{err}");
    assert_clean("ward report --json", json.as_bytes());
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(r["messages_accepted"], 1);
    assert_eq!(r["messages_rejected"], 1);
    assert_eq!(r["senders"][0]["sender"], "dr@hospital.example");
    assert_eq!(r["senders"][0]["recipients"], 5);
    assert_eq!(r["senders"][0]["rejected"], 1);
    assert_eq!(r["outcomes"]["portal"], 1);
    assert_eq!(r["outcomes"]["failed"], 1);
    assert_eq!(r["outcomes"]["expired"], 1);
    assert_eq!(r["bounces"], 2);
    assert_eq!(r["policy"]["quarantine"], 1);
    assert!(
        r["portal_fallback_rate"]
            .as_f64()
            .is_some_and(|x| x > 0.0 && x < 1.0),
        "{r}"
    );
    assert!(
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kind"] == "ssn"),
        "{r}"
    );
    assert!(
        r["tls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["verified"].as_u64() >= Some(1)),
        "{r}"
    );
    let (status, text, _) = ward_cli(&["report", "--since", &today, "--config", &cfg]);
    assert_eq!(status.code(), Some(0));
    assert!(text.contains("dr@hospital.example"), "{text}");
    assert_clean("ward report", text.as_bytes());
    let (status, export, _) = ward_cli(&["audit", "export", "--since", &today, "--config", &cfg]);
    assert_eq!(status.code(), Some(0));
    assert!(export.contains("\"event\":\"pickup_opened\""));
    assert_clean("ward audit export", export.as_bytes());

    // Last, the log at debug level (it is written to the end of the test).
    let log = s.ward.log();
    assert!(log.contains("DEBUG"), "debug level is on");
    assert_clean("the log", log.as_bytes());
}
