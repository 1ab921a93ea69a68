//! SIGHUP reload through the real `ward` process: under load nothing is
//! dropped or lost and new mail follows the new policy and limits; a broken
//! file (syntax error, missing certificate) is refused whole with the same
//! error `ward check-config` prints; a renewed certificate is served to new
//! STARTTLS and portal handshakes while a TLS session already open keeps
//! working; relay networks, users and routes follow a reload; `log.level`
//! does and restart-only settings are named; and the systemd notifications
//! (READY, RELOADING, STOPPING) arrive in order.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::client::{SmtpClient, tls_connector};
use common::process::{Ward, base_config, ward_cli};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LONG: Duration = Duration::from_secs(30);

/// A clean message (no PHI: policy delivers it) with a subject to count by.
fn message(tag: &str) -> Vec<u8> {
    format!("Subject: {tag}\r\nMessage-ID: <{tag}@hospital.example>\r\n\r\nThe menu changes on Monday.\r\n")
        .into_bytes()
}

/// Every subject the MX received.
fn subjects(mx: &TestMx) -> Vec<String> {
    mx.received()
        .iter()
        .filter_map(|r| {
            let text = String::from_utf8_lossy(&r.data).into_owned();
            text.lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        })
        .collect()
}

/// Delivery of everything to `mx` (plain SMTP, TLS policy `may`), quick
/// retries, `blocked` as the policy's never-deliver domain, and `extra`.
fn config(dir: &std::path::Path, mx: &TestMx, blocked: &str, extra: &str) -> String {
    format!(
        "{base}[delivery]\nsmart_host = \"[127.0.0.1]:{port}\"\ntls_policy = \"may\"\nconnection_cache_time = \"200ms\"\n\
         [queue]\nretry_schedule = [\"1s\"]\nscan_interval = \"200ms\"\n\
         [policy]\nblocked_domains = [\"{blocked}\"]\n{extra}",
        base = base_config(dir),
        port = mx.port(),
    )
}

/// A test MX and Ward delivering to it (see [`config`]), in a new
/// directory.
async fn start(blocked: &str) -> (TestMx, tempfile::TempDir, Ward) {
    let mx = TestMx::plain().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let w = Ward::start_in(dir, &config(dir, &mx, blocked, ""));
    (mx, tmp, w)
}

/// Rewrites the configuration, sends SIGHUP and waits for the outcome: the
/// line of the `n`-th reload result ("reloaded" or "refused").
async fn reload(w: &Ward, text: &str) -> String {
    let before = w.log_count("configuration reload");
    w.rewrite_config(text);
    w.sighup();
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let log = w.log();
        let results: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("configuration reload"))
            .collect();
        if results.len() > before {
            return results[before].to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reload result; log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_drops_nothing_and_new_mail_follows_the_new_rules() {
    let (mx, tmp, w) = start("blocked.test").await;
    let dir = tmp.path();
    let mut accepted: Vec<String> = Vec::new();

    // Before: mail to later.test is delivered, and limited@ has no limit of
    // its own.
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    for i in 0..3 {
        let tag = format!("before-{i}");
        c.send_message("limited@hospital.example", &["a@later.test"], &message(&tag))
            .await
            .assert_is("250 2.0.0");
        accepted.push(tag);
    }

    // One session is mid-transaction across the reload: MAIL and RCPT
    // (to the domain about to be blocked) before, DATA after.
    let mut mid = SmtpClient::connect(w.smtp()).await;
    mid.ehlo("client.test").await;
    mid.cmd("MAIL FROM:<dr@hospital.example>").await.assert_is("250");
    mid.cmd("RCPT TO:<b@later.test>").await.assert_is("250");

    // Four sessions keep sending throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for n in 0..4 {
        let stop = stop.clone();
        let addr = w.smtp();
        load.push(tokio::spawn(async move {
            let mut c = SmtpClient::connect(addr).await;
            c.ehlo("client.test").await;
            let mut sent = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let tag = format!("load-{n}-{i}");
                let r = c
                    .send_message(
                        &format!("sender{n}@hospital.example"),
                        &["c@clinic.test"],
                        &message(&tag),
                    )
                    .await;
                assert_eq!(r.code, 250, "{tag}: {r:?}");
                sent.push(tag);
                i += 1;
            }
            (c, sent)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let new = config(
        dir,
        &mx,
        "later.test",
        "[[rate_limit.sender]]\nsender = \"limited@hospital.example\"\nmessages = \"2/1h\"\n",
    );
    let result = reload(&w, &new).await;
    assert!(result.contains("configuration reloaded"), "{result}");
    // Load goes on across the reload for a while.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);

    // The transaction begun before the reload finishes under the rules it
    // started with.
    mid.cmd("DATA").await.assert_is("354");
    mid.send_raw(&common::client::dot_stuff(&message("mid"))).await;
    mid.send_raw(b".\r\n").await;
    mid.read_reply().await.assert_is("250 2.0.0");
    accepted.push("mid".into());
    // Its next transaction follows the new policy.
    mid.cmd("MAIL FROM:<dr@hospital.example>").await.assert_is("250");
    mid.cmd("RCPT TO:<b@later.test>").await.assert_is("550 5.7.1");
    mid.quit().await;

    // Every load session is still open, its messages all got 250, and on
    // the same connection the new policy applies.
    for task in load {
        let (mut c, sent) = task.await.expect("load session");
        assert!(!sent.is_empty());
        c.cmd("MAIL FROM:<x@hospital.example>").await.assert_is("250");
        c.cmd("RCPT TO:<x@later.test>").await.assert_is("550 5.7.1");
        c.cmd("RSET").await.assert_is("250");
        let bye = c.cmd("QUIT").await;
        assert_eq!(bye.code, 221, "{bye:?}");
        accepted.extend(sent);
    }

    // The new limit: limited@ gets two more, then 450 with a wait.
    let mut refused = None;
    for i in 0..3 {
        let r = c.cmd("MAIL FROM:<limited@hospital.example>").await;
        if r.code == 450 {
            refused = Some(r);
            break;
        }
        r.assert_is("250");
        c.cmd("RCPT TO:<a@clinic.test>").await.assert_is("250");
        c.cmd("DATA").await.assert_is("354");
        let tag = format!("after-{i}");
        c.send_raw(&common::client::dot_stuff(&message(&tag))).await;
        c.send_raw(b".\r\n").await;
        c.read_reply().await.assert_is("250 2.0.0");
        accepted.push(tag);
    }
    let refused = refused.expect("the new sender limit refuses the third message");
    refused.assert_is("450 4.7.0");
    c.quit().await;

    // Every message that got 250 reached the MX, once.
    mx.wait_for(accepted.len(), LONG).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut got = subjects(&mx);
    got.sort();
    accepted.sort();
    assert_eq!(got, accepted, "delivered != accepted");
    assert!(accepted.len() > 10, "too little load: {}", accepted.len());
    assert_eq!(w.log_count("connection error"), 0, "{}", w.log());
}

/// The audit trail's `config_reloaded` lines.
fn audited_reloads(w: &Ward) -> Vec<String> {
    std::fs::read_dir(w.dir.join("data/audit"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
        .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| l.contains("\"event\":\"config_reloaded\""))
        .collect()
}

/// A refused reload: the log names the file and line, `ward check-config`
/// exits 1 with the very same error, and the audit trail records it.
async fn assert_refused(w: &Ward, text: &str, what: &str) {
    let audited = audited_reloads(w).len();
    let line = reload(w, text).await;
    assert!(line.contains("configuration reload refused"), "{line}");
    let file_line = format!("{}:", w.config_path.display());
    assert!(line.contains(&file_line), "no file:line in {line}");
    assert!(line.contains(what), "{what} not in {line}");
    let (status, _, err) = ward_cli(&["check-config", "--config", w.config_path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{err}");
    let err = err.trim();
    assert!(err.starts_with(&file_line), "{err}");
    assert!(
        line.contains(err),
        "check-config said {err:?}, the reload log {line:?}"
    );
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let lines = audited_reloads(w);
        if lines.len() > audited {
            assert!(lines[audited].contains("\"ok\":false"), "{}", lines[audited]);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "reload not audited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The old rules still hold: old.test refused at RCPT, new.test delivered.
async fn assert_old_rules(w: &Ward, mx: &TestMx, tag: &str) {
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    c.cmd("MAIL FROM:<dr@hospital.example>").await.assert_is("250");
    c.cmd("RCPT TO:<a@old.test>").await.assert_is("550 5.7.1");
    c.cmd("RSET").await.assert_is("250");
    c.send_message("dr@hospital.example", &["a@new.test"], &message(tag))
        .await
        .assert_is("250 2.0.0");
    c.quit().await;
    let deadline = std::time::Instant::now() + LONG;
    while !subjects(mx).iter().any(|s| s == tag) {
        assert!(std::time::Instant::now() < deadline, "{tag} not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_configuration_is_refused_and_the_running_one_stays() {
    let (mx, tmp, w) = start("old.test").await;
    let dir = tmp.path();
    assert_old_rules(&w, &mx, "start").await;

    // A syntax error: refused, with its line.
    let broken = format!(
        "{}[rate_limit\nsender_messages = \"1/1h\"\n",
        config(dir, &mx, "new.test", "")
    );
    assert_refused(&w, &broken, "").await;
    assert_old_rules(&w, &mx, "after-syntax-error").await;

    // A certificate file that isn't there: refused at the tls.cert_file
    // line, though the file parses.
    let missing = config(
        dir,
        &mx,
        "new.test",
        "[tls]\ncert_file = \"/nonexistent/ward.crt\"\nkey_file = \"/nonexistent/ward.key\"\n",
    );
    assert_refused(&w, &missing, "tls.cert_file: /nonexistent/ward.crt").await;
    assert_old_rules(&w, &mx, "after-missing-cert").await;

    // A good file is taken; a setting that can't change live is named and
    // kept.
    let good = config(dir, &mx, "new.test", "").replace(
        &format!("data_dir = \"{}\"", dir.join("data").display()),
        &format!("data_dir = \"{}\"", dir.join("elsewhere").display()),
    );
    // log.level too: from "info,ward=debug" to "info".
    let good = good.replace("level = \"info,ward=debug\"", "level = \"info\"");
    assert!(w.log_count(" DEBUG ") > 0);
    let line = reload(&w, &good).await;
    assert!(line.contains("configuration reloaded"), "{line}");
    w.line(&["server.data_dir changed; takes effect at restart"], LONG)
        .await;
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    c.cmd("MAIL FROM:<dr@hospital.example>").await.assert_is("250");
    c.cmd("RCPT TO:<a@new.test>").await.assert_is("550 5.7.1");
    c.cmd("RCPT TO:<a@old.test>").await.assert_is("250");
    c.quit().await;
    assert!(!dir.join("elsewhere").exists(), "data_dir changed while running");
    // No debug line since the reload (sessions log "connected" at debug).
    let log = w.log();
    let since = &log[log.rfind("configuration reloaded").unwrap()..];
    assert!(!since.contains(" DEBUG "), "{since}");
    let audited = audited_reloads(&w);
    assert!(
        audited
            .last()
            .is_some_and(|l| l.contains("\"ok\":true") && l.contains("server.data_dir")),
        "{audited:?}"
    );
}

/// STARTTLS on a fresh connection; returns the server's certificate (DER).
async fn served_certificate(addr: std::net::SocketAddr) -> Vec<u8> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut seen = String::new();
    for (send, want) in [
        (None, "220 "),
        (Some("EHLO client.test\r\n"), "250 "),
        (Some("STARTTLS\r\n"), "220 "),
    ] {
        if let Some(line) = send {
            tcp.write_all(line.as_bytes()).await.unwrap();
        }
        seen.clear();
        while !seen.lines().any(|l| l.starts_with(want)) {
            let n = tokio::time::timeout(LONG, tcp.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed; got {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    handshake_certificate(tcp).await
}

/// TLS handshake on `tcp`; returns the server's certificate (DER).
async fn handshake_certificate(tcp: tokio::net::TcpStream) -> Vec<u8> {
    let tls = tls_connector(None)
        .connect("ward.test".try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let (_, conn) = tls.get_ref();
    conn.peer_certificates().expect("a certificate")[0].to_vec()
}

/// The certificate the HTTPS portal presents to a new connection.
async fn portal_certificate(addr: std::net::SocketAddr) -> Vec<u8> {
    handshake_certificate(tokio::net::TcpStream::connect(addr).await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_to_new_handshakes_and_open_sessions_go_on() {
    let mx = TestMx::plain().await;
    let ca = TestCa::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The certificate lives at a fixed path, renewed in place (as certbot
    // does).
    let (cert_file, key_file) = (dir.join("ward.crt"), dir.join("ward.key"));
    let first = ca.issue(&["ward.test"]);
    std::fs::write(&cert_file, &first.cert_pem).unwrap();
    std::fs::write(&key_file, &first.key_pem).unwrap();
    let tls = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
         [portal]\nenabled = true\naddress = \"127.0.0.1:0\"\npublic_host = \"portal.ward.test\"\n",
        cert_file.display(),
        key_file.display()
    );
    let text = config(dir, &mx, "blocked.test", &tls);
    let w = Ward::start_in(dir, &text);

    let before = served_certificate(w.smtp()).await;
    assert_eq!(portal_certificate(w.listener("portal")).await, before);
    let mut open = SmtpClient::connect(w.smtp()).await;
    open.ehlo("client.test").await;
    let mut open = open.starttls(None).await;

    let second = ca.issue(&["ward.test"]);
    std::fs::write(&cert_file, &second.cert_pem).unwrap();
    std::fs::write(&key_file, &second.key_pem).unwrap();
    let line = reload(&w, &text).await;
    assert!(line.contains("configuration reloaded"), "{line}");

    let after = served_certificate(w.smtp()).await;
    assert_ne!(before, after, "the old certificate is still served");
    let pem_der = |pem: &str| {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    };
    assert_eq!(before, pem_der(&first.cert_pem));
    assert_eq!(after, pem_der(&second.cert_pem));
    // The portal presents the renewed certificate too.
    assert_eq!(portal_certificate(w.listener("portal")).await, after);

    // The session that was open over TLS before the reload still works.
    open.send_message(
        "dr@hospital.example",
        &["a@clinic.test"],
        &message("over-old-tls"),
    )
    .await
    .assert_is("250 2.0.0");
    open.quit().await;
    mx.wait_for(1, LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let tmp = tempfile::tempdir().unwrap();
    let socket_path = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(LONG)).unwrap();
    let next = || {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let has = |msg: &str, field: &str| msg.lines().any(|l| l == field);

    // The file says json, the environment text (which wins, reloads too).
    let dir = tmp.path();
    let text = base_config(dir).replace("[log]\n", "[log]\nformat = \"json\"\n");
    let mut w = Ward::start_in_with_env(
        dir,
        &text,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WARD_LOG_FORMAT", "text"),
        ],
    );
    let ready = next();
    assert!(has(&ready, "READY=1"), "{ready:?}");
    assert!(ready.lines().any(|l| l.starts_with("STATUS=")), "{ready:?}");
    // READY comes after the listeners are up: the log already says so.
    assert!(w.log().contains("ward started"));

    let original = std::fs::read_to_string(&w.config_path).unwrap();
    let line = reload(&w, &original).await;
    assert!(line.contains("configuration reloaded"), "{line}");
    let reloading = next();
    assert!(has(&reloading, "RELOADING=1"), "{reloading:?}");
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000;
    assert!(
        usec <= now && now - usec < 60_000_000,
        "MONOTONIC_USEC={usec}, now {now}"
    );
    let ready = next();
    assert!(has(&ready, "READY=1"), "{ready:?}");
    assert_eq!(w.log_count("log.format changed"), 0, "{}", w.log());

    // A refused reload is still bracketed by RELOADING and READY.
    let line = reload(&w, "[smtp\n").await;
    assert!(line.contains("refused"), "{line}");
    assert!(has(&next(), "RELOADING=1"));
    let ready = next();
    assert!(has(&ready, "READY=1"), "{ready:?}");

    assert!(w.terminate().success());
    let stopping = next();
    assert!(has(&stopping, "STOPPING=1"), "{stopping:?}");
    // Status lines are short and hold no configuration or addresses.
    for msg in [&ready, &stopping] {
        let status = msg.lines().find_map(|l| l.strip_prefix("STATUS=")).unwrap_or("");
        assert!(
            status.len() < 80 && !status.contains('@') && !status.contains('/'),
            "{status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_rules_and_routes_follow_a_reload() {
    let first = TestMx::plain().await;
    let second = TestMx::plain().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let hash = ward::smtp::relay::hash_password(b"correct horse").unwrap();
    // clinic.test goes to the first MX; loopback may relay by address.
    let text = |mx: &TestMx, relay: &str| {
        format!(
            "{}[[delivery.destination]]\ndomain = \"clinic.test\"\nroute = \"[127.0.0.1]:{}\"\ntls_policy = \"may\"\n{relay}",
            config(dir, &first, "blocked.test", ""),
            mx.port()
        )
    };
    let w = Ward::start_in(dir, &text(&first, ""));
    let mut open = SmtpClient::connect(w.smtp()).await;
    open.ehlo("client.test").await;
    open.send_message("dr@hospital.example", &["a@clinic.test"], &message("to-first"))
        .await
        .assert_is("250 2.0.0");
    first.wait_for(1, LONG).await;

    // Now: clinic.test goes to the second MX, loopback may no longer relay
    // by address, and a user may by login.
    let relay =
        format!("[relay]\nnetworks = []\n[[relay.user]]\nname = \"scanner\"\npassword_hash = \"{hash}\"\n");
    let line = reload(&w, &text(&second, &relay)).await;
    assert!(line.contains("configuration reloaded"), "{line}");

    // The session open since before: its address grant is gone at its next
    // transaction.
    open.cmd("MAIL FROM:<dr@hospital.example>").await.assert_is("250");
    open.cmd("RCPT TO:<a@clinic.test>").await.assert_is("550 5.7.1");
    open.quit().await;

    // A new session may relay after AUTH (offered only now), and its mail
    // takes the new route.
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    let mut c = c.starttls(None).await;
    let ehlo = c.ehlo("client.test").await;
    assert!(ehlo.has_line("AUTH"), "{ehlo:?}");
    c.cmd("AUTH PLAIN AHNjYW5uZXIAY29ycmVjdCBob3JzZQ==")
        .await
        .assert_is("235 2.7.0");
    c.send_message("dr@hospital.example", &["a@clinic.test"], &message("to-second"))
        .await
        .assert_is("250 2.0.0");
    c.quit().await;
    second.wait_for(1, LONG).await;
    assert_eq!(subjects(&second), vec!["to-second".to_string()]);
    assert_eq!(subjects(&first), vec!["to-first".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_never_undoes_serve_sandbox() {
    // The file says live delivery to a real MX; --sandbox says otherwise.
    let mx = TestMx::plain().await;
    let tmp = tempfile::tempdir().unwrap();
    let text = config(tmp.path(), &mx, "blocked.test", "");
    // Ward::start_args writes base_config (of its own directory) first.
    let extra = text.trim_start_matches(&base_config(tmp.path())).to_string();
    let w = Ward::start_args(&extra, &["--sandbox"]);
    let text = std::fs::read_to_string(&w.config_path).unwrap();
    let line = reload(&w, &text).await;
    assert!(line.contains("configuration reloaded"), "{line}");
    assert_eq!(w.log_count("takes effect at restart"), 0, "{}", w.log());

    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    c.send_message("dr@hospital.example", &["a@clinic.test"], &message("sandboxed"))
        .await
        .assert_is("250 2.0.0");
    c.quit().await;
    w.line(&["delivered to the sandbox outbox", "to=a@clinic.test"], LONG)
        .await;
    assert!(mx.received().is_empty(), "a reload turned sandbox mode off");
}
