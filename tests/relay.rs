//! End to end through the real `ward` process: a client submits over SMTP,
//! Ward queues and delivers to test MXs found through a test DNS server,
//! under the TLS policies. Only loopback addresses are used.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use common::client::SmtpClient;
use common::process::Ward;
use common::*;

const LONG: Duration = Duration::from_secs(20);

/// Delivery settings for Ward: DNS from `dns`, trust only `ca`, MX port
/// `port`, quick retries, plus `extra` (more [delivery]-level lines).
fn delivery_toml(dns: &TestDns, ca: &TestCa, port: u16, policy: &str, extra: &str) -> String {
    format!(
        "[delivery]\ntls_policy = \"{policy}\"\nca_file = \"{ca}\"\nsystem_roots = false\nsmtp_port = {port}\n\
         connect_timeout = \"5s\"\ngreeting_timeout = \"5s\"\ncommand_timeout = \"5s\"\nconnection_cache_time = \"200ms\"\n{extra}\n\
         [dns]\nnameservers = [\"{dns}\"]\ntimeout = \"2s\"\nattempts = 1\n\n\
         [queue]\nretry_schedule = [\"1s\"]\nscan_interval = \"200ms\"\n",
        ca = ca.ca_file().display(),
        dns = dns.addr(),
    )
}

/// A `[[delivery.destination]]` entry routing `domain` to `[host]:port`.
fn route(domain: &str, host: &str, port: u16, policy: &str) -> String {
    format!(
        "\n[[delivery.destination]]\ndomain = \"{domain}\"\nroute = \"[{host}]:{port}\"\ntls_policy = \"{policy}\"\n"
    )
}

/// Content exercising transparency and 8-bit data: lines starting with
/// dots, a lone dot line, a 998-octet line, empty lines, UTF-8.
fn tricky_content() -> Vec<u8> {
    let mut m = b"From: Alice <alice@hospital.example>\r\nTo: bob@example.test\r\nSubject: Lab results\r\n\
Message-ID: <t1@hospital.example>\r\n\r\n.starts with a dot\r\n..two dots\r\n.\r\n\r\n"
        .to_vec();
    m.extend_from_slice("Grüße, ünïcödé body\r\n".as_bytes());
    m.extend_from_slice(&[b'L'; 998]);
    m.extend_from_slice(b"\r\nend\r\n");
    m
}

async fn setup() -> (TestCa, TestDns) {
    let ca = TestCa::new();
    let dns = TestDns::start().await;
    (ca, dns)
}

/// Splits Ward's Received header off a delivered message.
fn split_received(data: &[u8]) -> (String, &[u8]) {
    assert!(data.starts_with(b"Received: from "), "no Received header first");
    // The header ends at the first CRLF not followed by a folding tab.
    let mut i = 0;
    while let Some(p) = data[i..].windows(2).position(|w| w == b"\r\n") {
        let end = i + p + 2;
        if data.get(end) != Some(&b'\t') {
            return (String::from_utf8_lossy(&data[..end]).into_owned(), &data[end..]);
        }
        i = end;
    }
    panic!("unterminated Received header");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_over_verified_tls_with_the_body_byte_identical() {
    let (ca, dns) = setup().await;
    dns.mx("example.test", 10, "mx.example.test");
    dns.a("mx.example.test", Ipv4Addr::LOCALHOST);
    let mx = TestMx::start(MxOptions::new().starttls(ca.issue(&["mx.example.test"]))).await;
    let w = Ward::start(&delivery_toml(&dns, &ca, mx.port(), "verify", ""));

    let c = SmtpClient::connect(w.smtp()).await;
    let mut c = c.starttls(None).await;
    let content = tricky_content();
    c.cmd("MAIL FROM:<alice@hospital.example> BODY=8BITMIME")
        .await
        .assert_is("250");
    c.cmd("RCPT TO:<bob@example.test>").await.assert_is("250");
    c.cmd("DATA").await.assert_is("354");
    c.send_raw(&common::client::dot_stuff(&content)).await;
    c.send_raw(b".\r\n").await;
    c.read_reply().await.assert_is("250 2.0.0");
    c.quit().await;

    let got = mx.wait_for(1, LONG).await;
    let m = &got[0];
    let (received, body) = split_received(&m.data);
    assert_eq!(body, &content[..], "the body must arrive byte-identical");
    assert!(received.contains("from client.test ([127.0.0.1])"), "{received}");
    assert!(
        received.contains("by ward.test (Ward) with ESMTPS id "),
        "{received}"
    );
    assert!(received.contains("for <bob@example.test>"), "{received}");
    assert_eq!(m.mail_from, "alice@hospital.example");
    assert!(m.mail_line.contains("BODY=8BITMIME"), "{}", m.mail_line);
    assert_eq!(m.rcpt_to, vec!["bob@example.test"]);
    let (version, _) = m.tls.clone().expect("delivered over TLS");
    assert!(version.contains("1.3") || version.contains("1.2"), "{version}");
    assert_eq!(m.sni.as_deref(), Some("mx.example.test"));
    let line = w.line(&[" delivered ", "to=bob@example.test"], LONG).await;
    assert!(
        line.contains("verified=true") && line.contains("tls=TLSv1."),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_sends_nothing_to_an_mx_below_policy() {
    let (ca, dns) = setup().await;
    let plain = TestMx::plain().await;
    let self_signed = TestMx::start(MxOptions::new().starttls(ca.self_signed(&["mx.selfsigned.test"]))).await;
    let wrong_name = TestMx::start(MxOptions::new().starttls(ca.wrong_name())).await;
    let expired = TestMx::start(MxOptions::new().starttls(ca.expired(&["mx.expired.test"]))).await;
    for (name, mx) in [
        ("plain", &plain),
        ("selfsigned", &self_signed),
        ("wrongname", &wrong_name),
        ("expired", &expired),
    ] {
        dns.a(&format!("mx.{name}.test"), Ipv4Addr::LOCALHOST);
        let _ = mx;
    }
    let mut routes = String::new();
    for (name, mx) in [
        ("plain", &plain),
        ("selfsigned", &self_signed),
        ("wrongname", &wrong_name),
        ("expired", &expired),
    ] {
        routes.push_str(&format!(
            "\n[[delivery.destination]]\ndomain = \"{name}.test\"\nroute = \"[mx.{name}.test]:{}\"\n",
            mx.port()
        ));
    }
    let w = Ward::start(&delivery_toml(&dns, &ca, 25, "verify", &routes));
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    let rcpts = [
        "a@plain.test",
        "b@selfsigned.test",
        "c@wrongname.test",
        "d@expired.test",
    ];
    c.send_message(
        "alice@hospital.example",
        &rcpts,
        b"Subject: secret\r\n\r\nPHI here\r\n",
    )
    .await
    .assert_is("250 2.0.0");

    // Wait for an attempt on every destination (retries every second).
    let deadline = std::time::Instant::now() + LONG;
    while w.log_count("outcome=tls-policy") < 8 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(w.log_count("outcome=tls-policy") >= 8, "{}", w.log());
    for mx in [&plain, &self_signed, &wrong_name, &expired] {
        assert!(mx.received().is_empty(), "a message reached an MX below policy");
        assert!(!mx.saw_command("MAIL"), "MAIL was sent to an MX below policy");
    }
    assert!(!w.log().contains(" delivered"), "{}", w.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypt_and_may_policies_per_destination() {
    let (ca, dns) = setup().await;
    let self_signed = TestMx::start(MxOptions::new().starttls(ca.self_signed(&["mx.lab.test"]))).await;
    let plain = TestMx::plain().await;
    let routes = format!(
        "{}{}",
        route("lab.test", "127.0.0.1", self_signed.port(), "encrypt"),
        route("oldclinic.test", "127.0.0.1", plain.port(), "may")
    );
    let w = Ward::start(&delivery_toml(&dns, &ca, 25, "verify", &routes));
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    c.send_message(
        "alice@hospital.example",
        &["x@lab.test", "y@oldclinic.test"],
        b"Subject: s\r\n\r\nx\r\n",
    )
    .await
    .assert_is("250 2.0.0");
    let got = self_signed.wait_for(1, LONG).await;
    assert!(got[0].tls.is_some(), "encrypt must use TLS");
    let got = plain.wait_for(1, LONG).await;
    assert!(got[0].tls.is_none());
    let lab = w.line(&[" delivered ", "to=x@lab.test"], LONG).await;
    assert!(
        lab.contains("verified=false") && lab.contains("tls=TLSv1."),
        "{lab}"
    );
    let old = w.line(&[" delivered ", "to=y@oldclinic.test"], LONG).await;
    assert!(old.contains("tls=none"), "{old}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_failures_are_retried_and_permanent_ones_recorded() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(
        MxOptions::new()
            .reply(Stage::Rcpt("gone@partner.test".into()), "550 5.1.1 no such user")
            .reply_times(Stage::DataEnd, "451 4.3.0 try again later", 1),
    )
    .await;
    let w = Ward::start(&delivery_toml(
        &dns,
        &ca,
        25,
        "may",
        &route("partner.test", "127.0.0.1", mx.port(), "may"),
    ));
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    c.send_message(
        "alice@hospital.example",
        &["ok@partner.test", "gone@partner.test"],
        b"Subject: r\r\n\r\nx\r\n",
    )
    .await
    .assert_is("250 2.0.0");
    let got = mx.wait_for(1, LONG).await;
    assert_eq!(got[0].rcpt_to, vec!["ok@partner.test"]);
    w.wait_log("delivery failed permanently", LONG);
    let log = w.log();
    let deferred = log
        .lines()
        .find(|l| l.contains("delivery deferred"))
        .expect("a deferral");
    assert!(deferred.contains("code=451"), "{deferred}");
    let failed = log
        .lines()
        .find(|l| l.contains("delivery failed permanently"))
        .unwrap();
    assert!(
        failed.contains("to=gone@partner.test") && failed.contains("status=5.1.1"),
        "{failed}"
    );
    // The retry delivered it: the second attempt.
    let delivered = w.line(&[" delivered ", "to=ok@partner.test"], LONG).await;
    assert!(delivered.contains("attempts=2"), "{delivered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_mx_and_nxdomain_fail_permanently() {
    let (ca, dns) = setup().await;
    dns.null_mx("nomail.test");
    let w = Ward::start(&delivery_toml(&dns, &ca, 25, "verify", ""));
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    c.send_message(
        "alice@hospital.example",
        &["a@nomail.test", "b@nonexistent.test"],
        b"Subject: n\r\n\r\nx\r\n",
    )
    .await
    .assert_is("250 2.0.0");
    let deadline = std::time::Instant::now() + LONG;
    while w.log_count("delivery failed permanently") < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = w.log();
    let nomail = log
        .lines()
        .find(|l| l.contains("to=a@nomail.test") && l.contains("permanently"))
        .expect("null MX");
    assert!(nomail.contains("status=5.1.10"), "{nomail}");
    let nx = log
        .lines()
        .find(|l| l.contains("to=b@nonexistent.test") && l.contains("permanently"))
        .expect("NXDOMAIN");
    assert!(nx.contains("status=5.1.2"), "{nx}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsn_parameters_travel_with_the_message_and_tenant_header_does_not() {
    let (ca, dns) = setup().await;
    let mx = TestMx::plain().await;
    let secret = "tenant-secret-abcdefghijklmnopqrstuvwxyz";
    let extra = format!(
        "{}\n[relay]\nnetworks = []\n[relay.tenant_header]\nnetworks = [\"127.0.0.0/8\"]\n\
         [[relay.tenant_header.tenant]]\nname = \"contoso\"\nsecret = \"{secret}\"\n",
        route("partner.test", "127.0.0.1", mx.port(), "may")
    );
    let w = Ward::start(&delivery_toml(&dns, &ca, 25, "may", &extra));
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    c.cmd("MAIL FROM:<alice@contoso.example> RET=HDRS ENVID=ID+2B42")
        .await
        .assert_is("250");
    c.cmd("RCPT TO:<bob@partner.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;bob@partner.test")
        .await
        .assert_is("250");
    c.cmd("DATA").await.assert_is("354");
    c.send_raw(format!("X-Ward-Tenant: {secret}\r\nSubject: d\r\n\r\nbody\r\n.\r\n").as_bytes())
        .await;
    c.read_reply().await.assert_is("250 2.0.0");
    let got = mx.wait_for(1, LONG).await;
    let m = &got[0];
    assert!(
        m.mail_line.contains("RET=HDRS") && m.mail_line.contains("ENVID=ID+2B42"),
        "{}",
        m.mail_line
    );
    let rcpt = &m.rcpt_lines[0];
    assert!(
        rcpt.contains("NOTIFY=FAILURE,DELAY") && rcpt.contains("ORCPT=rfc822;bob@partner.test"),
        "{rcpt}"
    );
    let text = String::from_utf8_lossy(&m.data);
    assert!(
        !text.contains(secret) && !text.to_ascii_lowercase().contains("x-ward-tenant"),
        "tenant header leaked"
    );
    assert!(text.contains("Subject: d\r\n\r\nbody\r\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_messages_share_connections() {
    let (ca, dns) = setup().await;
    let mx = TestMx::plain().await;
    let w = Ward::start(&delivery_toml(
        &dns,
        &ca,
        25,
        "may",
        &route("partner.test", "127.0.0.1", mx.port(), "may"),
    ));
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    for i in 0..30 {
        c.send_message(
            "alice@hospital.example",
            &["bob@partner.test"],
            format!("Subject: m{i}\r\n\r\nx\r\n").as_bytes(),
        )
        .await
        .assert_is("250 2.0.0");
    }
    let got = mx.wait_for(30, LONG).await;
    assert_eq!(got.len(), 30);
    assert!(
        mx.connections() < 30,
        "each message opened its own connection ({})",
        mx.connections()
    );
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_mail_is_encrypted_at_rest_and_resumes_after_restart() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(MxOptions::new().reply_times(Stage::DataEnd, "451 4.3.0 not yet", 1)).await;
    let extra = route("partner.test", "127.0.0.1", mx.port(), "may");
    let toml = delivery_toml(&dns, &ca, 25, "may", &extra)
        .replace("retry_schedule = [\"1s\"]", "retry_schedule = [\"3s\"]");
    let mut w = Ward::start(&toml);
    let marker = "PLAINTEXT-MARKER-078-05-1120-rest";
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    c.send_message(
        "alice@hospital.example",
        &["bob@partner.test"],
        format!("Subject: {marker}\r\n\r\n{marker}\r\n").as_bytes(),
    )
    .await
    .assert_is("250 2.0.0");
    w.wait_log("delivery deferred", LONG);
    // Stop before the retry: the message is queued on disk.
    assert!(w.terminate().success());
    let mut hits = Vec::new();
    for f in files_under(&w.dir) {
        let data = std::fs::read(&f).unwrap();
        if data.windows(marker.len()).any(|x| x == marker.as_bytes()) {
            hits.push(f);
        }
    }
    assert!(hits.is_empty(), "plaintext found at rest in {hits:?}");
    w.restart();
    let got = mx.wait_for(1, LONG).await;
    assert!(String::from_utf8_lossy(&got[0].data).contains(marker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_message_in_progress_then_exits_zero() {
    let (ca, dns) = setup().await;
    let mx = TestMx::plain().await;
    let mut w = Ward::start(&delivery_toml(
        &dns,
        &ca,
        25,
        "may",
        &route("partner.test", "127.0.0.1", mx.port(), "may"),
    ));
    let mut busy = SmtpClient::connect(w.smtp()).await;
    busy.ehlo("client.test").await;
    busy.cmd("MAIL FROM:<alice@hospital.example>")
        .await
        .assert_is("250");
    busy.cmd("RCPT TO:<bob@partner.test>").await.assert_is("250");
    busy.cmd("DATA").await.assert_is("354");
    busy.send_raw(b"Subject: in flight\r\n\r\nfirst half\r\n").await;
    let mut idle = SmtpClient::connect(w.smtp()).await;
    idle.ehlo("idle.test").await;

    unsafe {
        libc::kill(w.pid() as i32, libc::SIGTERM);
    }
    // The idle session is told to go away at once.
    idle.read_reply().await.assert_is("421 4.3.2");
    // The session in DATA completes its message.
    busy.send_raw(b"second half\r\n.\r\n").await;
    busy.read_reply().await.assert_is("250 2.0.0");
    busy.cmd("NOOP").await.assert_is("421 4.3.2");
    let status = w.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(w.log().contains("ward stopped"));
    // It was queued durably; a restart delivers it.
    w.restart();
    mx.wait_for(1, LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_smtplib_relays_through_ward() {
    let (ca, dns) = setup().await;
    let mx = TestMx::plain().await;
    let w = Ward::start(&delivery_toml(
        &dns,
        &ca,
        25,
        "may",
        &route("partner.test", "127.0.0.1", mx.port(), "may"),
    ));
    let script = format!(
        r#"
import smtplib, ssl
from email.message import EmailMessage
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
msg = EmailMessage()
msg["From"] = "alice@hospital.example"
msg["To"] = "bob@partner.test"
msg["Subject"] = "from smtplib"
msg.set_content("Hello from Python's smtplib.\n.leading dot line\n")
with smtplib.SMTP("127.0.0.1", {port}, timeout=20) as s:
    s.ehlo("python.test")
    assert s.has_extn("starttls"), s.esmtp_features
    s.starttls(context=ctx)
    s.ehlo("python.test")
    assert s.has_extn("pipelining") and s.has_extn("size") and s.has_extn("smtputf8")
    refused = s.send_message(msg)
    assert refused == {{}}, refused
print("sent")
"#,
        port = w.smtp().port()
    );
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "smtplib failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = mx.wait_for(1, LONG).await;
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(text.contains("Subject: from smtplib"));
    assert!(
        text.contains("\r\n.leading dot line\r\n"),
        "dot transparency through both hops"
    );
    assert!(text.contains("with ESMTPS"), "Received header records TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_expire_after_max_lifetime() {
    let (ca, dns) = setup().await;
    let mx = TestMx::start(MxOptions::new().reply(Stage::AnyRcpt, "451 4.2.1 mailbox busy")).await;
    let toml = delivery_toml(
        &dns,
        &ca,
        25,
        "may",
        &route("partner.test", "127.0.0.1", mx.port(), "may"),
    )
    .replace(
        "scan_interval = \"200ms\"",
        "scan_interval = \"200ms\"\nmax_lifetime = \"3s\"",
    );
    let w = Ward::start(&toml);
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    c.send_message(
        "alice@hospital.example",
        &["busy@partner.test"],
        b"Subject: e\r\n\r\nx\r\n",
    )
    .await
    .assert_is("250 2.0.0");
    w.wait_log("delivery failed permanently", LONG);
    let log = w.log();
    let line = log
        .lines()
        .find(|l| l.contains("delivery failed permanently"))
        .unwrap();
    assert!(
        line.contains("state=Expired") && line.contains("code=451"),
        "{line}"
    );
    assert!(
        log_count_at_least(&w, "delivery deferred", 2),
        "retried before expiring:\n{log}"
    );
    assert!(mx.received().is_empty());
}

fn log_count_at_least(w: &Ward, needle: &str, n: usize) -> bool {
    w.log_count(needle) >= n
}
