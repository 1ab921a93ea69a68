//! Sandbox mode through the real `ward` binary: nothing leaves the machine
//! (the test MXs and the test DNS server see nothing), every outbound copy
//! is kept sealed in the outbox, `ward sandbox list|show` show them, and a
//! portal pickup completes with the link and the code read from the outbox.

mod common;
#[path = "common/portal.rs"]
mod portal;

use std::time::Duration;

use common::client::{self, SmtpClient};
use common::process::{Ward, ward_cli};
use common::*;
use portal::*;

const TOKEN: &str = "sandbox-test-token-0123456789";
const PLAIN_SUBJECT: &str = "Lunch menu for Thursday";
const PLAIN_BODY: &str = "Soup and bread in room 4.";

fn plain_message() -> Vec<u8> {
    format!(
        "From: dr@hospital.example\r\nTo: a@secure.test\r\nSubject: {PLAIN_SUBJECT}\r\n\
         Message-ID: <lunch-1@hospital.example>\r\n\r\n{PLAIN_BODY}\r\n"
    )
    .into_bytes()
}

/// `ward sandbox ARGS --config <ward's config>`.
fn sandbox_cli(ward: &Ward, args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let cfg = ward.config_path.to_str().unwrap().to_string();
    let mut all = vec!["sandbox"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", &cfg]);
    ward_cli(&all)
}

/// The outbox as `ward sandbox list --json` gives it.
fn outbox_list(ward: &Ward) -> Vec<serde_json::Value> {
    let (status, out, err) = sandbox_cli(ward, &["list", "--json"]);
    assert!(status.success(), "{err}");
    out.lines().map(|l| serde_json::from_str(l).expect(l)).collect()
}

/// Waits until the outbox holds `n` copies and returns them.
async fn wait_outbox(ward: &Ward, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let list = outbox_list(ward);
        if list.len() >= n {
            return list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "outbox: {list:?}\nlog:\n{}",
            ward.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn show(ward: &Ward, id: &str) -> String {
    let (status, out, err) = sandbox_cli(ward, &["show", id]);
    assert!(status.success(), "{err}");
    out
}

fn audit_text(ward: &Ward) -> String {
    std::fs::read_dir(ward.dir.join("data/audit"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_leaves_the_machine_and_the_portal_works_from_the_outbox() {
    let ca = TestCa::new();
    let secure = TestMx::start(MxOptions::new().starttls(ca.issue(&["mx.secure.test"]))).await;
    let plain = TestMx::plain().await;
    let dns = TestDns::start().await;
    dns.mx("secure.test", 10, "mx.secure.test");
    dns.a("mx.secure.test", std::net::Ipv4Addr::LOCALHOST);
    dns.mx("plain.test", 10, "mx.plain.test");
    dns.a("mx.plain.test", std::net::Ipv4Addr::LOCALHOST);
    let cert = ca.issue(&["portal.ward.test", "ward.test"]);
    // Live, these routes and this DNS server would take both messages.
    let config = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
         [delivery]\nmode = \"sandbox\"\ntls_policy = \"verify\"\nca_file = \"{ca}\"\nsystem_roots = false\n\
         smtp_port = {sp}\n\
         [[delivery.destination]]\ndomain = \"plain.test\"\nroute = \"[127.0.0.1]:{pp}\"\n\
         [dns]\nnameservers = [\"{dns}\"]\n\
         [queue]\nretry_schedule = [\"1s\"]\nscan_interval = \"200ms\"\n\
         [portal]\nenabled = true\naddress = \"127.0.0.1:0\"\npublic_host = \"portal.ward.test\"\n\
         organization = \"St. Example Hospital\"\nnotify_from = \"noreply@hospital.example\"\n",
        cert.cert_file.display(),
        cert.key_file.display(),
        ca = ca.ca_file().display(),
        sp = secure.port(),
        pp = plain.port(),
        dns = dns.addr(),
    );
    let ward = Ward::start(&config);
    assert!(ward.log().contains("sandbox mode"), "{}", ward.log());

    let mut c = SmtpClient::connect(ward.smtp()).await;
    c.ehlo("client.test").await;
    c.send_message("dr@hospital.example", &["a@secure.test"], &plain_message())
        .await
        .assert_is("250 2.0.0");
    c.send_message("dr@hospital.example", &["b@plain.test"], &protected_message())
        .await
        .assert_is("250 2.0.0");

    // The plain message is kept as delivered to the sandbox; the protected
    // one goes to the portal (no destination does verified TLS in the
    // sandbox) and its notification is kept.
    let line = ward
        .line(&["delivered to the sandbox outbox", "to=a@secure.test"], LONG)
        .await;
    assert!(
        line.contains("remote=sandbox") && line.contains("tls=sandbox"),
        "{line}"
    );
    let line = ward
        .line(&["delivered to the pickup portal", "to=b@plain.test"], LONG)
        .await;
    assert!(line.contains("sandbox mode"), "{line}");
    let list = wait_outbox(&ward, 2).await;
    assert_eq!(list.len(), 2, "{list:?}");
    let message = list.iter().find(|e| e["kind"] == "message").expect("the message");
    assert_eq!(message["from"], "dr@hospital.example");
    assert_eq!(message["to"], serde_json::json!(["a@secure.test"]));
    // As it would have been sent: with Ward's Received header on top.
    assert!(message["size"].as_u64().unwrap() > plain_message().len() as u64);
    let note = list
        .iter()
        .find(|e| e["kind"] == "notification")
        .expect("the notification");
    assert_eq!(note["to"], serde_json::json!(["b@plain.test"]));
    assert_eq!(note["from"], "noreply@hospital.example");

    // The listing never shows a subject; the text listing has the ids.
    let (status, text, _) = sandbox_cli(&ward, &["list"]);
    assert!(status.success());
    assert!(
        text.contains(message["id"].as_str().unwrap()) && text.contains("notification"),
        "{text}"
    );
    for out in [&text, &serde_json::to_string(&list).unwrap()] {
        assert!(!out.contains(PLAIN_SUBJECT) && !out.contains(SUBJECT), "{out}");
    }

    // `show` prints the kept message in full (the operator asked for it).
    let shown = show(&ward, message["id"].as_str().unwrap());
    assert!(
        shown.contains(PLAIN_SUBJECT) && shown.contains(PLAIN_BODY),
        "{shown}"
    );
    // The notification holds the link and nothing of the message.
    let shown = show(&ward, &note["id"].as_str().unwrap()[..12]);
    assert_no_planted("the notification", shown.as_bytes());
    let port = ward.listener("portal").port();
    let url = link_in(shown.as_bytes()).replace(
        "https://portal.ward.test/",
        &format!("https://portal.ward.test:{port}/"),
    );

    // Pick the message up with the code mail taken from the outbox.
    let http = http_client(&ca, ward.listener("portal"));
    let r = http.post(format!("{url}/code")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let list = wait_outbox(&ward, 3).await;
    let code_mail = list
        .iter()
        .filter(|e| e["kind"] == "notification")
        .max_by_key(|e| e["id"].as_str().unwrap().to_string())
        .unwrap();
    assert_ne!(code_mail["id"], note["id"]);
    let shown = show(&ward, code_mail["id"].as_str().unwrap());
    assert_no_planted("the code mail", shown.as_bytes());
    let code = shown
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 8 && l.bytes().all(|b| b.is_ascii_digit()))
        .expect("a code in the mail")
        .to_string();
    let r = http
        .post(format!("{url}/verify"))
        .form(&[("code", code.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("Jane Roe"), "the message page");

    // Nothing went anywhere: no connection to either MX, no DNS query.
    assert_eq!(secure.connections(), 0);
    assert_eq!(plain.connections(), 0);
    assert!(dns.queries().is_empty(), "{:?}", dns.queries());

    // The delivery status and audit say where the copies went.
    let audit = audit_text(&ward);
    assert!(
        audit.lines().any(|l| l.contains("\"event\":\"delivery_attempt\"")
            && l.contains("\"outcome\":\"delivered-to-sandbox\"")
            && l.contains("\"tls_version\":\"sandbox\"")
            && l.contains("a@secure.test")),
        "{audit}"
    );

    // Nothing readable at rest, nothing in the log.
    let outbox = ward.dir.join("data/sandbox");
    assert!(std::fs::read_dir(&outbox).unwrap().count() >= 6);
    for needle in PLANTED.iter().chain([&PLAIN_SUBJECT, &PLAIN_BODY, &SUBJECT]) {
        assert!(
            !grep_dir(&ward.dir, needle.as_bytes()),
            "{needle:?} readable on disk"
        );
        assert!(!ward.log().contains(needle), "{needle:?} in the log");
    }
    assert!(!ward.log().contains(&code), "the code in the log");

    // Unknown ids: exit 1; clear destroys everything.
    let (status, _, err) = sandbox_cli(&ward, &["show", "0123456789abcdef0123456789abcdef"]);
    assert_eq!(status.code(), Some(1), "{err}");
    let (status, out, _) = sandbox_cli(&ward, &["clear"]);
    assert!(status.success() && out.contains("removed 3"), "{out}");
    assert!(outbox_list(&ward).is_empty());
}

/// The README's quick start: `ward serve --sandbox` with nothing else
/// configured keeps mail local and runs the portal with links to itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sandbox_turns_on_the_portal_with_links_to_itself() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // A route that would deliver live, to prove the flag wins.
    let mx = TestMx::plain().await;
    let extra = format!(
        "[delivery]\nsmart_host = \"[127.0.0.1]:{}\"\ntls_policy = \"may\"\n\
         [portal]\naddress = \"127.0.0.1:{port}\"\n",
        mx.port()
    );
    let ward = Ward::start_args(&extra, &["--sandbox"]);
    assert_eq!(ward.listener("portal").port(), port);
    let mut c = SmtpClient::connect(ward.smtp()).await;
    c.ehlo("client.test").await;
    c.send_message(
        "alice@hospital.example",
        &["bob@clinic.example"],
        &protected_message(),
    )
    .await
    .assert_is("250 2.0.0");
    let list = wait_outbox(&ward, 1).await;
    assert_eq!(list[0]["kind"], "notification");
    let shown = show(&ward, list[0]["id"].as_str().unwrap());
    let prefix = format!("https://127.0.0.1:{port}/m/");
    let start = shown.find(&prefix).expect("a link to the local portal");
    let link = shown[start..].split_whitespace().next().unwrap();
    // The self-signed certificate of a first start: a browser warns once.
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = http.get(link).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mx.connections(), 0);
}

/// With the portal off, a protected copy waits in the sandbox as it would
/// for a destination without verified TLS; an ordinary one is kept, and
/// the success report its NOTIFY asked for is kept too, as a `dsn`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_kept_and_protected_copies_wait_without_the_portal() {
    let mx = TestMx::plain().await;
    let extra = format!(
        "[delivery]\nmode = \"sandbox\"\nsmart_host = \"[127.0.0.1]:{}\"\n\
         [queue]\nretry_schedule = [\"1s\"]\nscan_interval = \"200ms\"\n",
        mx.port()
    );
    // The admin section comes from base_config; the token is added to it.
    let tmp = tempfile::tempdir().unwrap();
    let base = common::process::base_config(tmp.path());
    assert!(base.contains("[admin]\n"));
    let base = base.replace("[admin]\n", &format!("[admin]\ntoken = \"{TOKEN}\"\n"));
    let ward = Ward::start_in(tmp.path(), &format!("{base}{extra}"));
    let mut c = SmtpClient::connect(ward.smtp()).await;
    c.ehlo("client.test").await;
    c.cmd("MAIL FROM:<dr@hospital.example>").await.assert_is("250");
    c.cmd("RCPT TO:<a@secure.test> NOTIFY=SUCCESS")
        .await
        .assert_is("250");
    c.cmd("DATA").await.assert_is("354");
    c.send_raw(&client::dot_stuff(&plain_message())).await;
    c.send_raw(b".\r\n").await;
    let reply = c.read_reply().await;
    reply.assert_is("250 2.0.0");
    let qid = reply.queue_id();
    c.send_message("dr@hospital.example", &["b@plain.test"], &protected_message())
        .await
        .assert_is("250 2.0.0");

    let list = wait_outbox(&ward, 2).await;
    let report = list
        .iter()
        .find(|e| e["kind"] == "dsn")
        .expect("the success report");
    assert_eq!(report["from"], "");
    assert_eq!(report["to"], serde_json::json!(["dr@hospital.example"]));
    let shown = show(&ward, report["id"].as_str().unwrap());
    assert!(shown.contains("Action: relayed"), "{shown}");
    assert!(
        !shown.contains(PLAIN_SUBJECT) && !shown.contains(PLAIN_BODY),
        "{shown}"
    );

    // The delivery status says where the copy went.
    let admin = ward.listener("admin").to_string();
    let cfg = ward.config_path.to_str().unwrap().to_string();
    // (The copy's result is stored a moment after its report is queued.)
    let deadline = std::time::Instant::now() + LONG;
    let (v, out) = loop {
        let (status, out, err) = ward_cli(&["status", &qid, "--admin", &admin, "--config", &cfg]);
        assert!(status.success(), "{out}{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        if v["recipients"][0]["state"] == "delivered-to-sandbox" {
            break (v, out);
        }
        assert!(std::time::Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let r = &v["recipients"][0];
    assert_eq!(r["last"]["remote"], "sandbox", "{out}");
    assert_eq!(r["last"]["tls_version"], "sandbox", "{out}");

    // The protected copy is retried, never kept or sent.
    let line = ward
        .line(
            &["delivery deferred", "to=b@plain.test", "outcome=tls-policy"],
            LONG,
        )
        .await;
    assert!(line.contains("sandbox mode"), "{line}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let list = outbox_list(&ward);
    assert!(
        list.iter()
            .all(|e| e["to"] != serde_json::json!(["b@plain.test"])),
        "{list:?}"
    );
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(mx.connections(), 0);

    // A backup of the running Ward holds the outbox; restored elsewhere
    // (with the key), the same copies list and open there.
    let dest = tmp.path().join("backup");
    let (status, out, err) = ward_cli(&[
        "backup",
        dest.to_str().unwrap(),
        "--include-key",
        "--config",
        &cfg,
    ]);
    assert!(status.success(), "{out}{err}");
    let manifest = std::fs::read_to_string(dest.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"sandbox/"), "{manifest}");
    let restored = tmp.path().join("restored");
    let (status, out, err) = ward_cli(&[
        "restore",
        dest.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ]);
    assert!(status.success(), "{out}{err}");
    let cfg2 = tmp.path().join("restored.toml");
    std::fs::write(
        &cfg2,
        format!("[server]\ndata_dir = \"{}\"\n", restored.display()),
    )
    .unwrap();
    let (status, out, err) = ward_cli(&["sandbox", "list", "--json", "--config", cfg2.to_str().unwrap()]);
    assert!(status.success(), "{err}");
    let again: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(again, list);
    let (status, shown, err) = ward_cli(&[
        "sandbox",
        "show",
        report["id"].as_str().unwrap(),
        "--config",
        cfg2.to_str().unwrap(),
    ]);
    assert!(status.success(), "{err}");
    assert!(shown.contains("Action: relayed"), "{shown}");
}

/// `ward keys rotate --destroy-old` against Ward in sandbox mode: the kept
/// copy's wrapped key is re-wrapped (its sealed file untouched), it still
/// shows with only the new key on disk, and copies kept afterwards too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_in_the_running_ward_rewraps_the_outbox() {
    let ward = Ward::start(
        "[delivery]\nmode = \"sandbox\"\n[queue]\nretry_schedule = [\"1s\"]\nscan_interval = \"200ms\"\n",
    );
    let send = || async {
        let mut c = SmtpClient::connect(ward.smtp()).await;
        c.ehlo("client.test").await;
        c.send_message("dr@hospital.example", &["a@secure.test"], &plain_message())
            .await
            .assert_is("250");
        c.quit().await;
    };
    send().await;
    let first = wait_outbox(&ward, 1).await[0]["id"].as_str().unwrap().to_string();
    let data = ward.dir.join("data");
    let sealed = data.join("sandbox").join(format!("{first}.sealed"));
    let sealed_before = std::fs::read(&sealed).unwrap();
    let record_before = std::fs::read(data.join("sandbox").join(format!("{first}.json"))).unwrap();

    let cfg = ward.config_path.to_str().unwrap().to_string();
    let (status, out, err) = ward_cli(&["keys", "rotate", "--destroy-old", "--config", &cfg]);
    assert!(status.success(), "{err}");
    assert!(
        out.contains("in the running Ward") && out.contains("1 sandbox copies"),
        "{out}"
    );
    assert_eq!(std::fs::read(&sealed).unwrap(), sealed_before);
    assert_ne!(
        std::fs::read(data.join("sandbox").join(format!("{first}.json"))).unwrap(),
        record_before,
        "the record's wrapped key was re-wrapped"
    );
    let keys: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("master.key"))
        .collect();
    assert_eq!(keys, vec!["master.key".to_string()]);
    assert!(show(&ward, &first).contains(PLAIN_BODY));

    send().await;
    let list = wait_outbox(&ward, 2).await;
    let second = list
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .find(|id| *id != first)
        .unwrap();
    assert!(show(&ward, second).contains(PLAIN_BODY));
}
