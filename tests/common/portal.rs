//! The pickup portal set up for a test: Ward with the portal on, a test
//! MX that does verified TLS (`secure.test`) and one without STARTTLS
//! (`plain.test`), a protected message with planted PHI and an
//! attachment, and helpers to follow a notification's link.
//!
//! Used by `tests/pickup.rs` (an HTTP client) and
//! `tests/pickup_browser.rs` (headless Chromium), next to `mod common;`
//! as `#[path = "common/portal.rs"] mod portal;` (not part of `common`, so
//! the other test binaries don't link reqwest).
#![allow(dead_code)]

use std::time::Duration;

use crate::common::client::SmtpClient;
use crate::common::process::Ward;
use crate::common::*;

pub const LONG: Duration = Duration::from_secs(30);

/// Strings planted in the protected message; none may leave Ward except
/// through the portal after the code.
pub const SUBJECT: &str = "Biopsy results for Jane Roe";
pub const PLANTED: [&str; 5] = [
    "Biopsy results",
    "Jane Roe",
    "219-44-8213",
    "malignant neoplasm",
    "pathology-report.pdf",
];

/// An attachment whose bytes must come back identical (binary, with every
/// byte value).
pub fn attachment() -> Vec<u8> {
    let mut v: Vec<u8> = (0..=255u8).collect();
    v.extend_from_slice(b"%PDF-1.4 fake report, SSN 219-44-8213\n");
    v.extend((0..5000u32).map(|i| (i * 7 % 251) as u8));
    v
}

pub fn protected_message() -> Vec<u8> {
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
         Message-ID: <orig-1@hospital.example>\r\n\
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

pub struct Setup {
    pub ward: Ward,
    pub http: reqwest::Client,
    pub secure: TestMx,
    pub plain: TestMx,
    pub ca: TestCa,
    /// Ward's certificate (SMTP and portal).
    pub cert: CertPair,
    pub dns: TestDns,
}

/// Ward with the portal on; `secure.test` does verified TLS (and takes
/// mail for the original sender's domain, `hospital.example`), `plain.test`
/// has no STARTTLS; the default TLS policy is `verify` (so the
/// notification's `may` is what lets it reach `plain.test`).
pub async fn setup(extra: &str) -> Setup {
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
         [[delivery.destination]]\ndomain = \"hospital.example\"\nroute = \"[mx.secure.test]:{sp}\"\n\
         [dns]\nnameservers = [\"{dns}\"]\n\
         [queue]\nretry_schedule = [\"1s\"]\nscan_interval = \"200ms\"\n\
         [portal]\nenabled = true\naddress = \"127.0.0.1:0\"\npublic_host = \"portal.ward.test\"\n\
         organization = \"St. Example Hospital\"\nnotify_from = \"noreply@hospital.example\"\n{extra}",
        ca = ca.ca_file().display(),
        sp = secure.port(),
        pp = plain.port(),
        dns = dns.addr(),
    );
    Setup::new(Ward::start(&config), secure, plain, ca, cert, dns)
}

/// An HTTPS client that trusts only the test CA and finds
/// portal.ward.test at the portal's loopback address, with a cookie jar.
pub fn http_client(ca: &TestCa, portal: std::net::SocketAddr) -> reqwest::Client {
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
    /// A started Ward with its MXs, CA and DNS, and an HTTP client for
    /// its portal.
    pub fn new(ward: Ward, secure: TestMx, plain: TestMx, ca: TestCa, cert: CertPair, dns: TestDns) -> Setup {
        let http = http_client(&ca, ward.listener("portal"));
        Setup {
            ward,
            http,
            secure,
            plain,
            ca,
            cert,
            dns,
        }
    }

    /// The link from a notification, with the portal's test port.
    pub fn url(&self, link: &str) -> String {
        let port = self.ward.listener("portal").port();
        link.replace(
            "https://portal.ward.test/",
            &format!("https://portal.ward.test:{port}/"),
        )
    }

    /// Sends the protected message to b@plain.test and returns the link
    /// from its notification (with the test port).
    pub async fn send_and_get_link(&self) -> String {
        let mut c = SmtpClient::connect(self.ward.smtp()).await;
        c.ehlo("client.test").await;
        c.send_message("dr@hospital.example", &["b@plain.test"], &protected_message())
            .await
            .assert_is("250 2.0.0");
        let got = self.plain.wait_for(1, LONG).await;
        self.url(&link_in(&got[0].data))
    }

    /// Asks for a code and reads it from the MX (the `n`th mail there).
    pub async fn request_code(&self, url: &str, n: usize) -> String {
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

    /// Sends the protected message, gets a code and opens the message:
    /// returns the link and the message page.
    pub async fn open_message(&self) -> (String, String) {
        let url = self.send_and_get_link().await;
        let code = self.request_code(&url, 2).await;
        let r = self.verify(&url, &code).await;
        assert_eq!(r.status(), 200);
        (url, r.text().await.unwrap())
    }

    pub async fn verify(&self, url: &str, code: &str) -> reqwest::Response {
        self.http
            .post(format!("{url}/verify"))
            .form(&[("code", code)])
            .send()
            .await
            .unwrap()
    }
}

pub fn assert_security_headers(r: &reqwest::Response) {
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
pub fn link_in(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let start = text.find("https://portal.ward.test/m/").expect("a pickup link");
    text[start..].split_whitespace().next().expect("link").to_string()
}

pub fn assert_no_planted(what: &str, data: &[u8]) {
    let text = String::from_utf8_lossy(data).to_lowercase();
    for p in PLANTED {
        assert!(
            !text.contains(&p.to_lowercase()),
            "{what} contains planted content"
        );
    }
}

pub fn grep_dir(dir: &std::path::Path, needle: &[u8]) -> bool {
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
