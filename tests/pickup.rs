//! The pickup portal through the real `ward` process: protected copies whose
//! destination can't do verified TLS go to the portal at once, the
//! recipient's MX gets only a content-free notification, and the portal
//! serves the message to whoever has the link and the emailed code.

mod common;
#[path = "common/portal.rs"]
mod portal;

use std::time::Duration;

use common::client::SmtpClient;
use common::process::ward_cli;
use portal::*;

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

/// The anti-forgery token in a message page's reply form.
fn csrf_in(page: &str) -> String {
    let needle = "name=\"csrf\" value=\"";
    let at = page.find(needle).expect("a reply form") + needle.len();
    let csrf = &page[at..at + 64];
    assert!(csrf.bytes().all(|b| b.is_ascii_hexdigit()), "{csrf}");
    csrf.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recipient_replies_to_the_sender_through_the_queue() {
    let s = setup("max_reply_size = 300\nmax_replies_per_link = 1\n").await;
    let (url, page) = s.open_message().await;
    assert!(page.contains("<label for=\"reply\">Your reply to dr@hospital.example</label>"));
    let csrf = csrf_in(&page);
    let reply = |form: Vec<(&'static str, String)>| {
        let http = s.http.clone();
        let url = format!("{url}/reply");
        async move { http.post(url).form(&form).send().await.unwrap() }
    };
    const TEXT: &str = "Thank you, doctor. Is 219-44-8213 the right number?\nCall me.";

    // Forged or incomplete forms are refused.
    let r = reply(vec![("reply", TEXT.into())]).await;
    assert_eq!(r.status(), 403, "no anti-forgery token");
    let r = reply(vec![("csrf", "0".repeat(64)), ("reply", TEXT.into())]).await;
    assert_eq!(r.status(), 403, "a wrong anti-forgery token");
    let r = reply(vec![("csrf", csrf.clone()), ("reply", "  \n ".into())]).await;
    assert_eq!(r.status(), 400, "an empty reply");
    let r = reply(vec![("csrf", csrf.clone()), ("reply", "x".repeat(301))]).await;
    assert_eq!(r.status(), 413, "a reply over max_reply_size");
    assert!(r.text().await.unwrap().contains("at most 300 characters"));
    let r = reply(vec![("csrf", csrf.clone()), ("reply", "x".repeat(2000))]).await;
    assert_eq!(r.status(), 413, "a body over the route's limit");
    // Without the session cookie the form leads back to the code page.
    let stranger = http_client(&s.ca, s.ward.listener("portal"));
    let r = stranger
        .post(format!("{url}/reply"))
        .form(&[("csrf", csrf.as_str()), ("reply", TEXT)])
        .send()
        .await
        .unwrap();
    let page = r.text().await.unwrap();
    assert!(page.contains("Email me a code") && !page.contains("was sent"));

    let r = reply(vec![("csrf", csrf.clone()), ("reply", TEXT.into())]).await;
    assert_eq!(r.status(), 200);
    assert_security_headers(&r);
    assert!(r.text().await.unwrap().contains("Your reply was sent."));
    let r = reply(vec![("csrf", csrf.clone()), ("reply", "again".into())]).await;
    assert_eq!(r.status(), 429, "max_replies_per_link");

    // The sender's MX gets exactly the one reply, over verified TLS.
    let got = s.secure.wait_for(1, LONG).await;
    let m = &got[0];
    assert!(m.tls.is_some(), "a reply holds content: verified TLS only");
    assert_eq!(m.mail_from, "noreply@hospital.example");
    assert_eq!(m.rcpt_to, vec!["dr@hospital.example".to_string()]);
    let parsed = mail_parser::MessageParser::default().parse(&m.data).unwrap();
    let from = parsed.from().and_then(|f| f.first()).unwrap();
    assert_eq!(from.address(), Some("noreply@hospital.example"));
    assert_eq!(
        parsed
            .reply_to()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some("b@plain.test")
    );
    assert_eq!(parsed.subject(), Some(format!("Re: {SUBJECT}").as_str()));
    assert_eq!(parsed.in_reply_to().as_text(), Some("orig-1@hospital.example"));
    let body = parsed.body_text(0).unwrap();
    assert!(
        body.contains("Is 219-44-8213 the right number?\r\nCall me.\r\n"),
        "{body:?}"
    );
    let line = s
        .ward
        .line(
            &["portal reply queued to the sender", "to=dr@hospital.example"],
            LONG,
        )
        .await;
    assert!(line.contains(&format!("size={}", TEXT.len())), "{line}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.secure.received().len(),
        1,
        "one reply, and no opened notice by default"
    );
    let log = s.ward.log();
    assert!(!log.contains("Thank you, doctor"), "the reply reached the log");
    assert_no_planted("the log", log.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_gets_a_content_free_opened_notice_once() {
    let s = setup("opened_notice = true\n").await;
    let (url, page) = s.open_message().await;
    assert!(page.contains(SUBJECT));
    let got = s.secure.wait_for(1, LONG).await;
    let n = &got[0];
    assert_eq!(n.mail_from, "noreply@hospital.example");
    assert_eq!(n.rcpt_to, vec!["dr@hospital.example".to_string()]);
    assert_no_planted("the opened notice", &n.data);
    let parsed = mail_parser::MessageParser::default().parse(&n.data).unwrap();
    assert_eq!(
        parsed.subject(),
        Some("Your secure message to b@plain.test was opened")
    );
    // Viewing again sends nothing more.
    assert!(
        s.http
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains(SUBJECT)
    );
    s.ward.line(&["pickup viewed again"], LONG).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(s.secure.received().len(), 1);
}

/// A DKIM verifier (mail-auth) that asks only the test DNS.
fn dkim_verifier(dns: std::net::SocketAddr) -> mail_auth::MessageAuthenticator {
    use mail_auth::hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
    let mut udp = ConnectionConfig::udp();
    udp.port = dns.port();
    let mut builder = mail_auth::hickory_resolver::TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![NameServerConfig::new(dns.ip(), true, vec![udp])]),
        mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
    );
    builder.options_mut().use_hosts_file = mail_auth::hickory_resolver::config::ResolveHosts::Never;
    mail_auth::MessageAuthenticator(builder.build().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_and_codes_are_dkim_signed() {
    use mail_auth::{AuthenticatedMessage, DkimResult, Parameters};
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dkim");
    let s = setup(&format!(
        "\n[dkim]\ndomain = \"hospital.example\"\nselector = \"ward\"\nkey_file = \"{}\"\n",
        keys.join("test-rsa.pem").display()
    ))
    .await;
    let p = std::fs::read_to_string(keys.join("test-rsa.p")).unwrap();
    s.dns.txt(
        "ward._domainkey.hospital.example",
        &format!("v=DKIM1; k=rsa; p={}", p.trim()),
    );
    let url = s.send_and_get_link().await;
    s.request_code(&url, 2).await;
    let got = s.plain.wait_for(2, LONG).await;
    let verifier = dkim_verifier(s.dns.addr());
    for (what, m) in [("the notification", &got[0]), ("the code mail", &got[1])] {
        let text = String::from_utf8_lossy(&m.data);
        assert!(text.starts_with("DKIM-Signature: "), "{what}: {text}");
        assert!(text.contains("a=rsa-sha256") && text.contains("d=hospital.example"));
        let msg = AuthenticatedMessage::parse(&m.data).unwrap();
        let results: Vec<DkimResult> = verifier
            .verify_dkim(Parameters::new(&msg))
            .await
            .iter()
            .map(|o| o.result().clone())
            .collect();
        assert_eq!(results, vec![DkimResult::Pass], "{what}");
        // The signature covers the link: change it and it fails.
        let forged = text.replacen("https://portal.ward.test/m/", "https://evil.test/m/", 1);
        let msg = AuthenticatedMessage::parse(forged.as_bytes()).unwrap();
        let out = verifier.verify_dkim(Parameters::new(&msg)).await;
        if what == "the notification" {
            assert!(
                matches!(out[0].result(), DkimResult::Fail(_) | DkimResult::Neutral(_)),
                "{what}: {:?}",
                out[0].result()
            );
        }
    }
    assert!(
        s.dns
            .queries()
            .iter()
            .any(|(n, _)| n == "ward._domainkey.hospital.example"),
        "the key came from DNS"
    );
    s.ward.wait_log("DKIM signing of notifications", LONG);
}
