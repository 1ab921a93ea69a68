//! Delivery status notifications through the real `ward` process: a 5xx
//! (at RCPT or after DATA) and an expired lifetime bounce to the envelope
//! sender's MX as RFC 3464 multipart/report, parsed by mail-parser and by
//! Python's `email` package; a delay notice when NOTIFY asks; none for
//! NOTIFY=NEVER or the null sender; a bounce that bounces reaches the
//! postmaster without detail. No planted PHI or subject in any report or
//! in the log. The last test follows the same message's life through the
//! audit trail and `ward audit verify`.

mod common;

use std::time::Duration;

use common::client::{SmtpClient, dot_stuff};
use common::process::Ward;
use common::*;
use mail_parser::MimeHeaders;

const LONG: Duration = Duration::from_secs(40);

const SUBJECT: &str = "Biopsy results for Jane Roe";
/// Strings in the message that no report may hold.
const PLANTED: [&str; 6] = [
    "Biopsy results",
    "Jane Roe",
    "219-44-8213",
    "malignant neoplasm",
    "pathology-report.pdf",
    "Dr. Who",
];

fn message() -> Vec<u8> {
    format!(
        "From: Dr. Who <dr@hospital.example>\r\n\
         To: Jane Roe <a@secure.test>\r\n\
         Subject: {SUBJECT}\r\n\
         Message-ID: <orig-1@hospital.example>\r\n\
         Date: Tue, 3 Mar 2026 10:00:00 +0000\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
         \r\n\
         --b1\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Patient Jane Roe, SSN 219-44-8213, DOB: 04/17/1961.\r\n\
         Diagnosis: malignant neoplasm. Call me.\r\n\
         --b1\r\n\
         Content-Type: application/pdf\r\n\
         Content-Disposition: attachment; filename=\"pathology-report.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         JVBERi0xLjQgZmFrZQ==\r\n\
         --b1--\r\n"
    )
    .into_bytes()
}

struct Setup {
    ward: Ward,
    /// secure.test and hospital.example (the sender's domain): verified TLS.
    secure: TestMx,
    /// plain.test and bounce.test: no STARTTLS.
    plain: TestMx,
    _ca: TestCa,
    _dns: TestDns,
}

async fn setup(secure: MxOptions, plain: MxOptions, extra: &str) -> Setup {
    let ca = TestCa::new();
    let secure = TestMx::start(secure.starttls(ca.issue(&["mx.secure.test"]))).await;
    let plain = TestMx::start(plain).await;
    let dns = TestDns::start().await;
    dns.a("mx.secure.test", std::net::Ipv4Addr::LOCALHOST);
    let config = format!(
        "[delivery]\ntls_policy = \"verify\"\nca_file = \"{ca}\"\nsystem_roots = false\nconnection_cache_time = \"200ms\"\n\
         [[delivery.destination]]\ndomain = \"secure.test\"\nroute = \"[mx.secure.test]:{sp}\"\n\
         [[delivery.destination]]\ndomain = \"hospital.example\"\nroute = \"[mx.secure.test]:{sp}\"\n\
         [[delivery.destination]]\ndomain = \"plain.test\"\nroute = \"[127.0.0.1]:{pp}\"\n\
         [[delivery.destination]]\ndomain = \"bounce.test\"\nroute = \"[127.0.0.1]:{pp}\"\n\
         [dns]\nnameservers = [\"{dns}\"]\n{extra}",
        ca = ca.ca_file().display(),
        sp = secure.port(),
        pp = plain.port(),
        dns = dns.addr(),
    );
    let ward = Ward::start(&config);
    Setup {
        ward,
        secure,
        plain,
        _ca: ca,
        _dns: dns,
    }
}

/// The secure MX refuses a@secure.test at RCPT; retries are fast.
async fn setup_refusing_a() -> Setup {
    setup(
        MxOptions::new().reply(Stage::Rcpt("a@secure.test".into()), "550 5.1.1 no such user"),
        MxOptions::new(),
        FAST_RETRY,
    )
    .await
}

const FAST_RETRY: &str = "[queue]\nretry_schedule = [\"1s\"]\nscan_interval = \"200ms\"\n";

/// Sends `message()` with raw MAIL and RCPT lines (DSN parameters).
async fn send(ward: &Ward, mail: &str, rcpts: &[&str]) {
    let mut c = SmtpClient::connect(ward.smtp()).await;
    c.ehlo("client.test").await;
    c.cmd(mail).await.assert_is("250");
    for r in rcpts {
        c.cmd(r).await.assert_is("250");
    }
    c.cmd("DATA").await.assert_is("354");
    c.send_raw(&dot_stuff(&message())).await;
    c.send_raw(b".\r\n").await;
    c.read_reply().await.assert_is("250 2.0.0");
    c.quit().await;
}

fn assert_no_planted(what: &str, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for p in PLANTED.iter().chain([&SUBJECT]) {
        assert!(!text.contains(p), "{what} holds a planted string");
    }
    assert!(!text.contains("Subject: Biopsy"), "{what} holds the subject");
}

/// The three parts of a report, checked with mail-parser: the structure,
/// and the text of each part.
fn parts(data: &[u8]) -> (String, String, String) {
    let msg = mail_parser::MessageParser::default()
        .parse(data)
        .expect("the report parses");
    let ct = msg.content_type().expect("content type");
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("report"));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let text = |i: usize| -> String {
        let part = msg
            .part(msg.parts[0].sub_parts().expect("multipart")[i])
            .expect("part");
        String::from_utf8_lossy(part.contents()).into_owned()
    };
    let subs = msg.parts[0].sub_parts().expect("multipart");
    assert_eq!(subs.len(), 3, "three parts");
    let types: Vec<String> = subs
        .iter()
        .map(|&i| {
            let ct = msg.part(i).unwrap().content_type().unwrap();
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
        })
        .collect();
    assert_eq!(
        types,
        ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    );
    (text(0), text(1), text(2))
}

/// Python's `email` package on the report: its type, report-type, the
/// part types and the per-recipient fields it finds, as lines.
fn python_view(data: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.eml");
    std::fs::write(&path, data).unwrap();
    let script = r#"
import sys, email
from email import policy
m = email.message_from_bytes(open(sys.argv[1], 'rb').read(), policy=policy.default)
assert not m.defects, m.defects
print('type', m.get_content_type(), m.get_param('report-type'))
parts = list(m.iter_parts())
print('parts', ' '.join(p.get_content_type() for p in parts))
status = parts[1].get_payload()
print('blocks', len(status))
for k in ['Reporting-MTA', 'Arrival-Date']:
    print(k, status[0][k])
for k in ['Final-Recipient', 'Original-Recipient', 'Action', 'Status', 'Remote-MTA', 'Diagnostic-Code', 'Last-Attempt-Date', 'Will-Retry-Until']:
    print(k, status[1][k])
print('from', m['From'], '|', m['Auto-Submitted'])
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_550_at_rcpt_bounces_to_the_sender_without_content() {
    let s = setup(
        MxOptions::new().reply(
            Stage::Rcpt("a@secure.test".into()),
            "550 5.1.1 <a@secure.test>: no such user; ticket 4481234 from nurse@elsewhere.test",
        ),
        MxOptions::new(),
        FAST_RETRY,
    )
    .await;
    send(
        &s.ward,
        "MAIL FROM:<dr@hospital.example> RET=FULL ENVID=env+2B1",
        &["RCPT TO:<a@secure.test> NOTIFY=FAILURE ORCPT=rfc822;a@secure.test"],
    )
    .await;
    let got = s.secure.wait_for(1, LONG).await;
    let dsn = &got[0];
    assert_eq!(dsn.mail_from, "", "a report has the null sender");
    assert_eq!(dsn.rcpt_to, vec!["dr@hospital.example".to_string()]);
    assert_no_planted("the report", &dsn.data);
    let raw = String::from_utf8_lossy(&dsn.data);
    assert!(
        !raw.contains("4481234") && !raw.contains("nurse@elsewhere.test"),
        "{raw}"
    );
    assert!(raw.contains("Auto-Submitted: auto-replied\r\n"), "{raw}");
    assert!(
        raw.contains("From: Mail Delivery System <MAILER-DAEMON@ward.test>\r\n"),
        "{raw}"
    );

    let (human, status, headers) = parts(&dsn.data);
    assert!(human.contains("<a@secure.test>"), "{human}");
    for field in [
        "Reporting-MTA: dns; ward.test",
        "Original-Envelope-Id: env+1",
        "Arrival-Date: ",
        "Final-Recipient: rfc822; a@secure.test",
        "Original-Recipient: rfc822; a@secure.test",
        "Action: failed",
        "Status: 5.1.1",
        "Remote-MTA: dns; ",
        "Diagnostic-Code: smtp; 550 5.1.1 <a@secure.test>: no such user; ticket [digits] from [address]",
        "Last-Attempt-Date: ",
    ] {
        assert!(status.contains(field), "{field} missing:\n{status}");
    }
    assert_eq!(
        headers.trim_end(),
        "Message-ID: <orig-1@hospital.example>\r\n\
         Date: Tue, 3 Mar 2026 10:00:00 +0000\r\n\
         From: <dr@hospital.example>\r\n\
         To: <a@secure.test>"
    );

    let py = python_view(&dsn.data);
    assert!(py.contains("type multipart/report delivery-status\n"), "{py}");
    assert!(
        py.contains("parts text/plain message/delivery-status text/rfc822-headers\n"),
        "{py}"
    );
    assert!(py.contains("blocks 2\n"), "{py}");
    assert!(py.contains("Action failed\n"), "{py}");
    assert!(py.contains("Final-Recipient rfc822; a@secure.test\n"), "{py}");
    assert!(py.contains("Status 5.1.1\n"), "{py}");
    assert!(py.contains("| auto-replied"), "{py}");

    s.ward
        .line(&["delivery status notification queued", "action=failed"], LONG)
        .await;
    assert_no_planted("the log", s.ward.log().as_bytes());
    assert!(s.plain.received().is_empty());
    let m = common::metrics::scrape(&s.ward).await;
    assert_eq!(
        common::metrics::value(&m, "ward_dsn_sent_total{kind=\"failed\"}"),
        1.0
    );
    assert_eq!(
        common::metrics::value(&m, "ward_dsn_sent_total{kind=\"delayed\"}"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_550_after_data_bounces() {
    // The first DATA (the message) is refused; the report is taken.
    let s = setup(
        MxOptions::new().reply_times(Stage::DataEnd, "554 5.6.0 content refused, case 123456", 1),
        MxOptions::new(),
        FAST_RETRY,
    )
    .await;
    send(
        &s.ward,
        "MAIL FROM:<dr@hospital.example>",
        &["RCPT TO:<a@secure.test> NOTIFY=SUCCESS,FAILURE"],
    )
    .await;
    let got = s.secure.wait_for(1, LONG).await;
    assert_no_planted("the report", &got[0].data);
    let (_, status, _) = parts(&got[0].data);
    assert!(status.contains("Action: failed\r\n"), "{status}");
    assert!(status.contains("Status: 5.6.0\r\n"), "{status}");
    assert!(status.contains("case [digits]"), "{status}");
    assert!(!status.contains("123456"), "{status}");
    let py = python_view(&got[0].data);
    assert!(py.contains("Action failed\n"), "{py}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_is_reported_when_asked_and_the_server_does_not_do_dsn() {
    let s = setup(MxOptions::new().no_dsn(), MxOptions::new(), FAST_RETRY).await;
    send(
        &s.ward,
        "MAIL FROM:<dr@hospital.example>",
        &["RCPT TO:<a@secure.test> NOTIFY=SUCCESS"],
    )
    .await;
    let got = s.secure.wait_for(2, LONG).await;
    assert_eq!(got[0].rcpt_to, vec!["a@secure.test".to_string()], "the message");
    let report = &got[1];
    assert_eq!(report.rcpt_to, vec!["dr@hospital.example".to_string()]);
    assert_no_planted("the report", &report.data);
    let (_, status, _) = parts(&report.data);
    assert!(status.contains("Action: relayed\r\n"), "{status}");
    assert!(status.contains("Status: 2."), "{status}");
    let py = python_view(&report.data);
    assert!(py.contains("Action relayed\n"), "{py}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_sends_a_delay_notice_then_a_bounce() {
    // A protected copy to plain.test (no STARTTLS, portal off) can never
    // go: it waits, gets one delay notice after 1 s, and expires at 5 s.
    let s = setup(
        MxOptions::new(),
        MxOptions::new(),
        "[queue]\nretry_schedule = [\"1s\"]\nscan_interval = \"200ms\"\nmax_lifetime = \"5s\"\n\
         [dsn]\ndelay_after = \"1s\"\n",
    )
    .await;
    send(
        &s.ward,
        "MAIL FROM:<dr@hospital.example>",
        &["RCPT TO:<c@plain.test> NOTIFY=DELAY,FAILURE"],
    )
    .await;
    let got = s.secure.wait_for(2, LONG).await;
    assert_eq!(got.len(), 2, "one delay notice and one bounce");
    let (_, delay, _) = parts(&got[0].data);
    assert!(delay.contains("Action: delayed\r\n"), "{delay}");
    assert!(delay.contains("Will-Retry-Until: "), "{delay}");
    assert!(delay.contains("Final-Recipient: rfc822; c@plain.test"), "{delay}");
    let (_, failed, _) = parts(&got[1].data);
    assert!(failed.contains("Action: failed\r\n"), "{failed}");
    assert!(failed.contains("Status: 4.4.7\r\n"), "{failed}");
    for d in &got {
        assert_no_planted("a report", &d.data);
        assert_eq!(d.mail_from, "");
    }
    let py = python_view(&got[0].data);
    assert!(py.contains("Action delayed\n"), "{py}");
    assert!(!py.contains("Will-Retry-Until None"), "{py}");
    let py = python_view(&got[1].data);
    assert!(
        py.contains("Action failed\n") && py.contains("Status 4.4.7\n"),
        "{py}"
    );
    assert!(
        s.plain.received().is_empty(),
        "the protected copy left in plaintext"
    );
    assert_no_planted("the log", s.ward.log().as_bytes());
    let m = common::metrics::scrape(&s.ward).await;
    assert_eq!(
        common::metrics::value(&m, "ward_dsn_sent_total{kind=\"delayed\"}"),
        1.0
    );
    assert_eq!(
        common::metrics::value(&m, "ward_dsn_sent_total{kind=\"failed\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_never_and_the_null_sender_get_no_report() {
    let s = setup_refusing_a().await;
    send(
        &s.ward,
        "MAIL FROM:<dr@hospital.example>",
        &["RCPT TO:<a@secure.test> NOTIFY=NEVER"],
    )
    .await;
    send(&s.ward, "MAIL FROM:<>", &["RCPT TO:<a@secure.test>"]).await;
    let deadline = std::time::Instant::now() + LONG;
    while s.ward.log_count("delivery failed permanently") < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", s.ward.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.ward
        .line(&["no delivery status notification: null sender"], LONG)
        .await;
    // A control message with the default NOTIFY does get its report, and
    // it is the only mail the sender's MX sees.
    send(
        &s.ward,
        "MAIL FROM:<dr@hospital.example>",
        &["RCPT TO:<a@secure.test>"],
    )
    .await;
    s.secure.wait_for(1, LONG).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = s.secure.received();
    assert_eq!(got.len(), 1, "only the control message was reported");
    assert_eq!(s.ward.log_count("delivery status notification queued"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_that_bounces_reaches_the_postmaster_without_detail() {
    let s = setup(
        MxOptions::new().reply(Stage::Rcpt("a@secure.test".into()), "550 5.1.1 no such user"),
        MxOptions::new().reply(Stage::Rcpt("dr@bounce.test".into()), "550 5.1.1 sender gone"),
        &format!("{FAST_RETRY}[dsn]\npostmaster = \"pm@hospital.example\"\n"),
    )
    .await;
    send(
        &s.ward,
        "MAIL FROM:<dr@bounce.test>",
        &["RCPT TO:<a@secure.test>"],
    )
    .await;
    let got = s.secure.wait_for(1, LONG).await;
    let pm = &got[0];
    assert_eq!(pm.rcpt_to, vec!["pm@hospital.example".to_string()]);
    assert_eq!(pm.mail_from, "");
    let text = String::from_utf8_lossy(&pm.data);
    assert!(text.contains("could not be"), "{text}");
    assert_no_planted("the postmaster report", &pm.data);
    for detail in ["a@secure.test", "dr@bounce.test", "orig-1", "multipart/report"] {
        assert!(!text.contains(detail), "{detail} in the postmaster report");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.secure.received().len(), 1, "one postmaster report, no loop");
    assert!(s.plain.received().is_empty());
}

/// The audit trail of a message's life (accepted, one copy delivered, one
/// refused and bounced), with no planted string in it; `ward audit verify`
/// passes, then names the line after an edit, a deletion or a swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_life_is_in_the_audit_trail_and_tampering_is_named() {
    let mut s = setup_refusing_a().await;
    send(
        &s.ward,
        "MAIL FROM:<dr@hospital.example>",
        &["RCPT TO:<a@secure.test>", "RCPT TO:<d@secure.test>"],
    )
    .await;
    s.secure.wait_for(2, LONG).await;
    let dir = s.ward.dir.join("data/audit");
    let read_all = || -> String {
        let mut all = String::new();
        for f in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            all.push_str(&std::fs::read_to_string(f.path()).unwrap_or_default());
        }
        all
    };
    let deadline = std::time::Instant::now() + LONG;
    while !read_all().contains("\"event\":\"dsn_sent\"") {
        assert!(
            std::time::Instant::now() < deadline,
            "no dsn_sent event:\n{}",
            read_all()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.ward.terminate();
    let all = read_all();
    assert_no_planted("the audit trail", all.as_bytes());
    let events: Vec<serde_json::Value> = all.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let find = |name: &str, pred: &dyn Fn(&serde_json::Value) -> bool| {
        events
            .iter()
            .find(|e| e["event"] == name && pred(e))
            .unwrap_or_else(|| panic!("no {name} event in:\n{all}"))
            .clone()
    };
    find("connection_accepted", &|_| true);
    let accepted = find("message_accepted", &|_| true);
    assert!(accepted["size"].as_u64().unwrap() > 500);
    assert!(
        accepted["findings"].as_str().unwrap().contains("ssn"),
        "{accepted}"
    );
    assert_eq!(accepted["policy"][0]["action"], "protect", "{accepted}");
    let refused = find("delivery_attempt", &|e| e["recipient"] == "a@secure.test");
    assert_eq!(refused["code"], 550);
    assert_eq!(refused["tls_verified"], true);
    let delivered = find("delivery_attempt", &|e| e["recipient"] == "d@secure.test");
    assert_eq!(delivered["outcome"], "delivered");
    assert!(delivered["tls_version"].as_str().is_some(), "{delivered}");
    find("dsn_sent", &|e| e["recipient"] == "a@secure.test");

    let config = s.ward.config_path.to_str().unwrap().to_string();
    let verify = || common::process::ward_cli(&["audit", "verify", "--config", &config]);
    let (status, out, err) = verify();
    assert!(status.success(), "{out}{err}");
    let (status, out, _) =
        common::process::ward_cli(&["audit", "export", "--config", &config, "--since", "2000-01-01"]);
    assert!(status.success());
    assert_eq!(out.lines().count(), events.len());

    let file = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let orig: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert!(orig.len() >= 4, "{all}");
    let save = |l: &[String]| std::fs::write(&file, l.join("\n") + "\n").unwrap();
    let mut edited = orig.clone();
    edited[1] = edited[1].replacen("127.0.0.1", "127.0.0.2", 1);
    assert_ne!(edited[1], orig[1], "line 2 has an address to edit");
    save(&edited);
    let (status, out, _) = verify();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains(":2: edited"), "{out}");
    let mut deleted = orig.clone();
    deleted.remove(2);
    save(&deleted);
    let (status, out, _) = verify();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains(":3: deleted or reordered"), "{out}");
    let mut swapped = orig.clone();
    swapped.swap(1, 2);
    save(&swapped);
    let (status, out, _) = verify();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains(":2: deleted or reordered"), "{out}");
    save(&orig);
    assert!(verify().0.success());
}

/// The status API (bearer token) and `ward status` give each recipient's
/// state: one delivered over verified TLS, one failed with its codes; no
/// planted string in the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_api_and_ward_status_give_each_recipient() {
    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    let ca = TestCa::new();
    let secure = TestMx::start(
        MxOptions::new()
            .reply(Stage::Rcpt("a@secure.test".into()), "550 5.1.1 no such user")
            .starttls(ca.issue(&["mx.secure.test"])),
    )
    .await;
    let dns = TestDns::start().await;
    dns.a("mx.secure.test", std::net::Ipv4Addr::LOCALHOST);
    // The admin section comes from base_config; the token is added to it.
    let tmp = tempfile::tempdir().unwrap();
    let base = common::process::base_config(tmp.path())
        .replace("[admin]\n", &format!("[admin]\ntoken = \"{TOKEN}\"\n"));
    let config = format!(
        "{base}[delivery]\ntls_policy = \"verify\"\nca_file = \"{ca}\"\nsystem_roots = false\n\
         [[delivery.destination]]\ndomain = \"secure.test\"\nroute = \"[mx.secure.test]:{sp}\"\n\
         [[delivery.destination]]\ndomain = \"hospital.example\"\nroute = \"[mx.secure.test]:{sp}\"\n\
         [dns]\nnameservers = [\"{dns}\"]\n{FAST_RETRY}",
        ca = ca.ca_file().display(),
        sp = secure.port(),
        dns = dns.addr(),
    );
    let ward = Ward::start_in(tmp.path(), &config);
    let mut c = SmtpClient::connect(ward.smtp()).await;
    c.ehlo("client.test").await;
    let reply = c
        .send_message(
            "dr@hospital.example",
            &["a@secure.test", "d@secure.test"],
            &message(),
        )
        .await;
    reply.assert_is("250 2.0.0");
    let qid = reply.queue_id();
    secure.wait_for(2, LONG).await;

    let admin = ward.listener("admin");
    let path = format!("/api/status/{qid}");
    let (st, _, _) = common::metrics::get(admin, &path).await;
    assert!(st.contains(" 401 "), "{st}");

    let admin_s = admin.to_string();
    let cfg = ward.config_path.to_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + LONG;
    let out = loop {
        let (status, out, err) =
            common::process::ward_cli(&["status", &qid, "--admin", &admin_s, "--config", &cfg]);
        assert!(status.code() == Some(0), "{out}{err}");
        if out.matches("\"state\": \"delivered\"").count() == 1 && out.contains("\"state\": \"failed\"") {
            break out;
        }
        assert!(std::time::Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_no_planted("the status answer", out.as_bytes());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sender"], "dr@hospital.example");
    let r = v["recipients"].as_array().unwrap();
    let a = r.iter().find(|x| x["recipient"] == "a@secure.test").unwrap();
    assert_eq!(a["state"], "failed");
    assert_eq!(a["last"]["reply_code"], 550);
    let d = r.iter().find(|x| x["recipient"] == "d@secure.test").unwrap();
    assert_eq!(d["last"]["tls_verified"], true, "{d}");
    assert!(d["last"]["tls_version"].as_str().is_some(), "{d}");

    let (status, _, _) = common::process::ward_cli(&[
        "status",
        "00000000000000000000000000000000",
        "--admin",
        &admin_s,
        "--config",
        &cfg,
    ]);
    assert_eq!(status.code(), Some(1));

    // Both admin actions are in the audit trail.
    let audit_dir = tmp.path().join("data/audit");
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let all: String = std::fs::read_dir(&audit_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
            .collect();
        if all.contains("\"event\":\"admin_auth_failure\"")
            && all.lines().any(|l| {
                l.contains("\"event\":\"admin_status_query\"")
                    && l.contains(&format!("\"queue_id\":\"{qid}\""))
            })
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{all}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
