//! The pickup portal through the real `ward` process: protected copies whose
//! destination can't do verified TLS go to the portal at once, the
//! recipient's MX gets only a content-free notification, and the portal
//! serves the message to whoever has the link and the emailed code.

mod common;

use std::time::Duration;

use common::client::SmtpClient;
use common::process::Ward;
use common::*;

const LONG: Duration = Duration::from_secs(30);

/// Strings planted in the protected message; none may leave Ward except
/// through the portal after the code.
const SUBJECT: &str = "Biopsy results for Jane Roe";
const PLANTED: [&str; 5] = [
    "Biopsy results",
    "Jane Roe",
    "219-44-8213",
    "malignant neoplasm",
    "pathology-report.pdf",
];

/// An attachment whose bytes must come back identical (binary, with every
/// byte value).
fn attachment() -> Vec<u8> {
    let mut v: Vec<u8> = (0..=255u8).collect();
    v.extend_from_slice(b"%PDF-1.4 fake report, SSN 219-44-8213\n");
    v.extend((0..5000u32).map(|i| (i * 7 % 251) as u8));
    v
}

fn protected_message() -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(attachment());
    let mut att = String::new();
    for chunk in b64.as_bytes().chunks(76) {
        att.push_str(std::str::from_utf8(chunk).unwrap());
        att.push_str("\r\n");
    }
    format!(
        "From: Dr. Who <dr@hospital.example>\r\n\
         To: a@secure.test, b@plain.test\r\n\
         Subject: {SUBJECT}\r\n\
         Date: Tue, 3 Mar 2026 10:00:00 +0000\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
         \r\n\
         --b1\r\n\
         Content-Type: multipart/alternative; boundary=\"b2\"\r\n\
         \r\n\
         --b2\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Patient Jane Roe, SSN 219-44-8213, DOB: 04/17/1961.\r\n\
         Diagnosis: malignant neoplasm. Call me.\r\n\
         --b2\r\n\
         Content-Type: text/html; charset=utf-8\r\n\
         \r\n\
         <html><body><p>Patient <b>Jane Roe</b>, SSN 219-44-8213.</p>\
         <script>alert('x')</script><img src=\"https://tracker.example/p.gif\">\
         <p onclick=\"steal()\">malignant neoplasm</p></body></html>\r\n\
         --b2--\r\n\
         --b1\r\n\
         Content-Type: application/pdf\r\n\
         Content-Disposition: attachment; filename=\"pathology-report.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {att}\
         --b1--\r\n"
    )
    .into_bytes()
}

struct Setup {
    ward: Ward,
    secure: TestMx,
    plain: TestMx,
    _ca: TestCa,
    _dns: TestDns,
}

/// Ward with the portal on; `secure.test` does verified TLS, `plain.test`
/// has no STARTTLS; the default TLS policy is `verify` (so the
/// notification's `may` is what lets it reach `plain.test`).
async fn setup(extra: &str) -> Setup {
    let ca = TestCa::new();
    let secure = TestMx::start(MxOptions::new().starttls(ca.issue(&["mx.secure.test"]))).await;
    let plain = TestMx::plain().await;
    let dns = TestDns::start().await;
    dns.a("mx.secure.test", std::net::Ipv4Addr::LOCALHOST);
    let config = format!(
        "[delivery]\ntls_policy = \"verify\"\nca_file = \"{ca}\"\nsystem_roots = false\nconnection_cache_time = \"200ms\"\n\
         [[delivery.destination]]\ndomain = \"secure.test\"\nroute = \"[mx.secure.test]:{sp}\"\n\
         [[delivery.destination]]\ndomain = \"plain.test\"\nroute = \"[127.0.0.1]:{pp}\"\n\
         [dns]\nnameservers = [\"{dns}\"]\n\
         [queue]\nretry_schedule = [\"1s\"]\nscan_interval = \"200ms\"\n\
         [portal]\nenabled = true\naddress = \"127.0.0.1:0\"\npublic_host = \"portal.ward.test\"\n\
         organization = \"St. Example Hospital\"\nnotify_from = \"noreply@hospital.example\"\n{extra}",
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

/// The link in a notification.
fn link_in(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let start = text.find("https://portal.ward.test/m/").expect("a pickup link");
    text[start..].split_whitespace().next().expect("link").to_string()
}

fn assert_no_planted(what: &str, data: &[u8]) {
    let text = String::from_utf8_lossy(data).to_lowercase();
    for p in PLANTED {
        assert!(
            !text.contains(&p.to_lowercase()),
            "{what} contains planted content"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_recipient_gets_tls_and_the_other_gets_the_portal() {
    let s = setup("").await;
    let mut c = SmtpClient::connect(s.ward.smtp()).await;
    c.ehlo("client.test").await;
    c.send_message(
        "dr@hospital.example",
        &["a@secure.test", "b@plain.test"],
        &protected_message(),
    )
    .await
    .assert_is("250 2.0.0");

    // The verified destination gets the message itself, over TLS.
    let got = s.secure.wait_for(1, LONG).await;
    assert!(got[0].tls.is_some());
    assert!(String::from_utf8_lossy(&got[0].data).contains("Jane Roe"));

    // The other recipient's copy went to the portal at once (no retry
    // wait), with the reason recorded.
    let line = s
        .ward
        .line(&["delivered to the pickup portal", "to=b@plain.test"], LONG)
        .await;
    assert!(line.contains("verified TLS not possible"), "{line}");
    assert!(line.contains("attempts=1"), "{line}");
    assert!(
        !s.ward
            .log()
            .lines()
            .any(|l| l.contains("delivery deferred") && l.contains("to=b@plain.test")),
        "the portal copy waited for a retry"
    );

    // Its MX gets only the notification: from the notifier, the
    // configured subject, a link, none of the planted strings.
    let got = s.plain.wait_for(1, LONG).await;
    assert_eq!(got.len(), 1);
    let n = &got[0];
    assert_eq!(n.mail_from, "noreply@hospital.example");
    assert_eq!(n.rcpt_to, vec!["b@plain.test".to_string()]);
    assert_no_planted("the notification", &n.data);
    let text = String::from_utf8_lossy(&n.data);
    assert!(
        text.contains("Subject: You have a secure message from St. Example Hospital\r\n"),
        "{text}"
    );
    let link = link_in(&n.data);
    let token = link.rsplit('/').next().unwrap();
    assert!(token.len() >= 22, "at least 128 bits");
    assert!(!s.ward.log().contains(token), "the token reached the log");
    assert_no_planted("the log", s.ward.log().as_bytes());
    // Nothing readable under the data directory.
    assert!(!grep_dir(&s.ward.dir, b"Jane Roe"), "plaintext on disk");
    assert!(!grep_dir(&s.ward.dir, token.as_bytes()), "token on disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_domains_go_to_the_portal_without_trying_tls() {
    let s = setup("[policy]\nportal_domains = [\"secure.test\"]\n").await;
    let mut c = SmtpClient::connect(s.ward.smtp()).await;
    c.ehlo("client.test").await;
    c.send_message(
        "dr@hospital.example",
        &["a@secure.test"],
        b"Subject: lunch\r\n\r\nNothing sensitive.\r\n",
    )
    .await
    .assert_is("250 2.0.0");
    let line = s
        .ward
        .line(&["delivered to the pickup portal", "to=a@secure.test"], LONG)
        .await;
    assert!(line.contains("portal domain"), "{line}");
    // The notification goes to the same MX (over TLS, as `may` takes it
    // when offered); the message itself never does.
    let got = s.secure.wait_for(1, LONG).await;
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(text.contains("You have a secure message"), "{text}");
    assert!(!text.contains("Nothing sensitive"));
    assert!(s.plain.received().is_empty());
}

fn grep_dir(dir: &std::path::Path, needle: &[u8]) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if grep_dir(&p, needle) {
                return true;
            }
        } else if let Ok(data) = std::fs::read(&p)
            && data.windows(needle.len()).any(|w| w == needle)
        {
            return true;
        }
    }
    false
}
