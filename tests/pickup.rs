//! The pickup portal through the real `ward` process: protected copies whose
//! destination can't do verified TLS go to the portal at once, the
//! recipient's MX gets only a content-free notification, and the portal
//! serves the message to whoever has the link and the emailed code.

mod common;

use std::time::Duration;

use common::client::SmtpClient;
use common::process::{Ward, ward_cli};
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
    http: reqwest::Client,
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
    // Ward's certificate (SMTP and portal) from the test CA, so the HTTP
    // client can verify the portal.
    let cert = ca.issue(&["portal.ward.test", "ward.test"]);
    let config = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.cert_file.display(),
        cert.key_file.display()
    ) + &format!(
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
    let http = http_client(&ca, ward.listener("portal"));
    Setup {
        ward,
        http,
        secure,
        plain,
        _ca: ca,
        _dns: dns,
    }
}

/// An HTTPS client that trusts only the test CA and finds
/// portal.ward.test at the portal's loopback address, with a cookie jar.
fn http_client(ca: &TestCa, portal: std::net::SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem().as_bytes()).unwrap())
        .resolve("portal.ward.test", portal)
        .cookie_store(true)
        .https_only(true)
        .build()
        .unwrap()
}

impl Setup {
    /// The link from a notification, with the portal's test port.
    fn url(&self, link: &str) -> String {
        let port = self.ward.listener("portal").port();
        link.replace(
            "https://portal.ward.test/",
            &format!("https://portal.ward.test:{port}/"),
        )
    }

    /// Sends the protected message to b@plain.test and returns the link
    /// from its notification (with the test port).
    async fn send_and_get_link(&self) -> String {
        let mut c = SmtpClient::connect(self.ward.smtp()).await;
        c.ehlo("client.test").await;
        c.send_message("dr@hospital.example", &["b@plain.test"], &protected_message())
            .await
            .assert_is("250 2.0.0");
        let got = self.plain.wait_for(1, LONG).await;
        self.url(&link_in(&got[0].data))
    }

    /// Asks for a code and reads it from the MX (the `n`th mail there).
    async fn request_code(&self, url: &str, n: usize) -> String {
        let r = self.http.post(format!("{url}/code")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let got = self.plain.wait_for(n, LONG).await;
        let mail = &got[n - 1];
        assert_no_planted("the code mail", &mail.data);
        let text = String::from_utf8_lossy(&mail.data);
        text.lines()
            .map(str::trim)
            .find(|l| l.len() == 8 && l.bytes().all(|b| b.is_ascii_digit()))
            .expect("a code in the mail")
            .to_string()
    }

    async fn verify(&self, url: &str, code: &str) -> reqwest::Response {
        self.http
            .post(format!("{url}/verify"))
            .form(&[("code", code)])
            .send()
            .await
            .unwrap()
    }
}

fn assert_security_headers(r: &reqwest::Response) {
    let h = r.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert!(
        h["strict-transport-security"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "no-store");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipient_opens_the_message_with_the_link_and_the_emailed_code() {
    let s = setup("").await;
    let url = s.send_and_get_link().await;

    // The link page says nothing about the message.
    let r = s.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_security_headers(&r);
    let page = r.text().await.unwrap();
    assert_no_planted("the page before the code", page.as_bytes());
    assert!(page.contains("<title>Secure message"), "{page}");
    assert!(page.contains("Email me a code"));
    // Without a session the attachment is not served.
    let r = s.http.get(format!("{url}/a/0")).send().await.unwrap();
    assert_no_planted("an attachment without a session", &r.bytes().await.unwrap());

    let code = s.request_code(&url, 2).await;
    let r = s.verify(&url, &code).await;
    assert_eq!(r.status(), 200, "redirected to the message");
    assert_security_headers(&r);
    let page = r.text().await.unwrap();
    assert!(page.contains(SUBJECT), "subject shown after the code");
    assert!(page.contains("dr@hospital.example"));
    assert!(page.contains("Patient Jane Roe, SSN 219-44-8213"), "text body");
    assert!(page.contains("<b>Jane Roe</b>"), "sanitized HTML body");
    assert!(!page.contains("<script") && !page.contains("onclick") && !page.contains("tracker.example"));
    assert!(page.contains("pathology-report.pdf"));
    assert!(
        !page.contains("<title>Secure message · Biopsy"),
        "no subject in the title"
    );

    // The attachment, byte for byte, as a download.
    let r = s.http.get(format!("{url}/a/0")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_security_headers(&r);
    let cd = r.headers()["content-disposition"].to_str().unwrap().to_string();
    assert!(
        cd.starts_with("attachment;") && cd.contains("pathology-report.pdf"),
        "{cd}"
    );
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.bytes().await.unwrap().as_ref(), attachment().as_slice());

    // The first view is recorded with the client's address.
    let line = s.ward.line(&["pickup opened for the first time"], LONG).await;
    assert!(
        line.contains("client=127.0.0.1") && line.contains("to=b@plain.test"),
        "{line}"
    );
    // The portal's metrics moved.
    let m = common::metrics::scrape(&s.ward).await;
    let v = |series: &str| common::metrics::value(&m, series);
    assert_eq!(v("ward_pickups_total{event=\"created\"}"), 1.0, "{m}");
    assert_eq!(v("ward_pickups_total{event=\"opened\"}"), 1.0, "{m}");
    let portal = v("ward_deliveries_total{outcome=\"portal\",tls_version=\"none\"}");
    assert_eq!(portal, 1.0, "{m}");
    // The notification and the code mail went out as plain deliveries.
    let delivered = v("ward_deliveries_total{outcome=\"delivered\",tls_version=\"none\"}");
    assert_eq!(delivered, 2.0, "{m}");
    let latency = v("ward_delivery_latency_seconds_count");
    assert_eq!(latency, portal + delivered, "{m}");
    assert_no_planted("/metrics", m.as_bytes());
    // The code works once.
    let r = s.verify(&url, &code).await;
    assert_eq!(r.status(), 401);
    let log = s.ward.log();
    assert_no_planted("the log", log.as_bytes());
    assert!(!log.contains(&code), "the code reached the log");
    assert!(
        !log.contains("cannot record the read receipt"),
        "the read receipt did not reach the delivery status"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sixth_code_is_refused_even_when_right() {
    let s = setup("").await;
    let url = s.send_and_get_link().await;
    let code = s.request_code(&url, 2).await;
    let wrong = if code == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    for _ in 0..4 {
        assert_eq!(s.verify(&url, wrong).await.status(), 401);
    }
    assert_eq!(
        s.verify(&url, wrong).await.status(),
        403,
        "fifth wrong code locks"
    );
    let r = s.verify(&url, &code).await;
    assert_eq!(r.status(), 403, "the right code is refused while locked");
    let page = r.text().await.unwrap();
    assert_no_planted("the locked page", page.as_bytes());
    assert!(page.contains("locked"));
    // And no session was started: the link still shows the code page.
    let page = s.http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(!page.contains(SUBJECT));
    // Four wrong codes, then two refused at the lock.
    let m = common::metrics::scrape(&s.ward).await;
    let failures = common::metrics::value(&m, "ward_pickup_code_failures_total");
    assert_eq!(failures, 6.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_links_get_a_content_free_410() {
    let s = setup("link_lifetime = \"2s\"\n").await;
    let url = s.send_and_get_link().await;
    assert_eq!(s.http.get(&url).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = s.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 410);
    assert_security_headers(&r);
    let page = r.text().await.unwrap();
    assert_no_planted("the 410 page", page.as_bytes());
    assert!(page.contains("expired or was withdrawn"));
    assert_eq!(
        s.http.post(format!("{url}/code")).send().await.unwrap().status(),
        410
    );
    // An unknown token is a plain 404.
    let unknown = format!("{}{}", &url[..url.rfind('/').unwrap() + 1], "A".repeat(43));
    assert_eq!(s.http.get(unknown).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_links_get_410_and_the_cli_lists_without_content() {
    let s = setup("").await;
    let url = s.send_and_get_link().await;
    let code = s.request_code(&url, 2).await;
    assert_eq!(s.verify(&url, &code).await.status(), 200);
    let config = s.ward.config_path.to_str().unwrap().to_string();

    // `ward pickup list` (through the running Ward's control socket) shows
    // the pickup, its read receipt, and no content.
    let (status, out, err) = ward_cli(&["pickup", "list", "--json", "--config", &config]);
    assert!(status.success(), "{err}");
    assert_no_planted("pickup list", out.as_bytes());
    let line = out.lines().find(|l| l.contains("b@plain.test")).expect("listed");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["state"], "active");
    assert_eq!(v["first_view_ip"], "127.0.0.1");
    let id = v["id"].as_str().unwrap().to_string();
    let (status, out, _) = ward_cli(&["pickup", "list", "--config", &config]);
    assert!(status.success() && out.contains(&id));

    let (status, out, err) = ward_cli(&["pickup", "revoke", &id, "--config", &config]);
    assert!(status.success(), "{out}{err}");
    assert_eq!(out.trim(), format!("revoked {id}"));
    // Even with the session still open, the link and the attachment are gone.
    let r = s.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 410);
    assert_no_planted("the 410 page", &r.bytes().await.unwrap());
    let r = s.http.get(format!("{url}/a/0")).send().await.unwrap();
    assert_eq!(r.status(), 410);
    let (status, out, _) = ward_cli(&["pickup", "revoke", &id, "--config", &config]);
    assert!(!status.success());
    assert_eq!(out.trim(), format!("ended {id}"));
    s.ward.wait_log("pickup revoked by an administrator", LONG);
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
