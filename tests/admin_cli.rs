//! Operating Ward from the command line against the real binary: `ward
//! queue list|show|retry|hold|release|delete` over the admin socket and
//! with Ward stopped, `ward keys rotate`, `ward backup` under load and
//! `ward restore`, and what each says to bad input.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::client::SmtpClient;
use common::process::{Ward, content_segments, ward_cli};
use common::*;

const LONG: Duration = Duration::from_secs(30);

/// A port nothing listens on (yet): the destination is down.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Delivery to partner.test goes to 127.0.0.1:`port`; retries every `retry`.
fn route_config(port: u16, retry: &str) -> String {
    format!(
        "[delivery]\ntls_policy = \"may\"\nconnect_timeout = \"2s\"\nconnection_cache_time = \"200ms\"\n\
         [[delivery.destination]]\ndomain = \"partner.test\"\nroute = \"[127.0.0.1]:{port}\"\n\
         [queue]\nretry_schedule = [\"{retry}\"]\nscan_interval = \"200ms\"\n"
    )
}

fn queue_id(reply: &client::SmtpReply) -> String {
    reply
        .text()
        .split_whitespace()
        .find(|w| w.len() == 32 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .expect("queue id in the 250")
        .to_string()
}

async fn send(w: &Ward, to: &[&str], content: &[u8]) -> String {
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    let r = c.send_message("dr@hospital.example", to, content).await;
    r.assert_is("250");
    c.quit().await;
    queue_id(&r)
}

fn message(marker: &str) -> Vec<u8> {
    format!(
        "From: dr@hospital.example\r\nTo: pat@partner.test\r\nSubject: SECRET-SUBJECT {marker}\r\n\r\n\
         body line one\r\nbody {marker}\r\n"
    )
    .into_bytes()
}

/// `ward <args> --config <ward's config>`.
fn cli(w: &Ward, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    let cfg = w.config_path.to_str().unwrap();
    all.extend(["--config", cfg]);
    let (status, out, err) = ward_cli(&all);
    (status.code(), out, err)
}

fn show_json(w: &Ward, id: &str) -> serde_json::Value {
    let (code, out, err) = cli(w, &["queue", "show", id, "--json"]);
    assert_eq!(code, Some(0), "{err}");
    serde_json::from_str(&out).unwrap()
}

fn copy_states(w: &Ward, id: &str) -> Vec<String> {
    show_json(w, id)["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until every pending copy of `id` has `state`.
async fn wait_state(w: &Ward, id: &str, state: &str) {
    let deadline = Instant::now() + LONG;
    loop {
        let states = copy_states(w, id);
        if !states.is_empty() && states.iter().all(|s| s == state) {
            return;
        }
        assert!(Instant::now() < deadline, "{id}: {states:?}, wanted {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the audit trail under `dir` has an `event` line for `queue_id`.
fn audit_has(dir: &Path, event: &str, queue_id: &str) -> bool {
    audit_text(dir).lines().any(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
        v["event"] == event && v["queue_id"] == queue_id
    })
}

fn audit_text(dir: &Path) -> String {
    let mut all = String::new();
    if let Ok(rd) = std::fs::read_dir(dir.join("data").join("audit")) {
        for e in rd.flatten() {
            all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    all
}

fn delivered_to(mx: &TestMx, marker: &str) -> usize {
    mx.received()
        .iter()
        .filter(|m| String::from_utf8_lossy(&m.data).contains(marker))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_commands_against_a_running_server() {
    let port = dead_port();
    let w = Ward::start(&route_config(port, "1h"));
    let socket = w.dir.join("data").join("admin.sock");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the admin socket is for Ward's user only");
    }
    let held = send(&w, &["a@partner.test", "b@partner.test"], &message("held-one")).await;
    let retried = send(&w, &["c@partner.test"], &message("retried-one")).await;
    let deleted = send(&w, &["d@partner.test"], &message("deleted-one")).await;
    let gone = send(&w, &["e@partner.test"], &message("never-sent")).await;
    for id in [&held, &retried, &deleted, &gone] {
        wait_state(&w, id, "deferred").await;
    }

    // delete (of a held message, too): gone, and never delivered later.
    let (code, _, err) = cli(&w, &["queue", "hold", &gone]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = cli(&w, &["queue", "delete", &gone]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("deleted") && out.contains("no report"), "{out}");
    let (code, _, err) = cli(&w, &["queue", "show", &gone]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no message") && err.contains(&gone), "{err}");

    // list: ids, sender, counts, states; no subject or body.
    let (code, out, err) = cli(&w, &["queue", "list"]);
    assert_eq!(code, Some(0), "{err}");
    for id in [&held, &retried, &deleted] {
        assert!(out.contains(id.as_str()), "{out}");
    }
    assert!(
        out.contains("dr@hospital.example") && out.contains("2 deferred"),
        "{out}"
    );
    assert!(out.contains("3 messages") && !out.contains(&gone), "{out}");
    let (code, out, _) = cli(&w, &["queue", "list", "--json"]);
    assert_eq!(code, Some(0));
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    let first = lines.iter().find(|l| l["id"] == held.as_str()).unwrap();
    assert_eq!(first["recipients"], 2);
    assert_eq!(first["held"], false);
    assert!(first["size"].as_u64().unwrap() > 50);
    assert!(first["next_attempt_ms"].as_u64().is_some());

    // show: per-recipient state, attempts, last error, policy.
    let v = show_json(&w, &held);
    let copies = v["copies"].as_array().unwrap();
    assert_eq!(copies.len(), 2);
    assert_eq!(copies[0]["recipient"], "a@partner.test");
    assert_eq!(copies[0]["attempts"], 1);
    assert_eq!(copies[0]["policy"], "deliver");
    assert_eq!(copies[0]["last"]["outcome"], "deferred");
    let (code, text, _) = cli(&w, &["queue", "show", &held]);
    assert_eq!(code, Some(0));
    assert!(
        text.contains("a@partner.test") && text.contains("deferred"),
        "{text}"
    );
    for o in [&out, &text, &v.to_string()] {
        assert!(!o.contains("SECRET-SUBJECT") && !o.contains("body line"), "{o}");
    }

    // hold: no attempts until released, even on retry and with the MX up.
    let (code, out, err) = cli(&w, &["queue", "hold", &held]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("2 copies held"), "{out}");
    assert_eq!(copy_states(&w, &held), ["held", "held"]);
    let (_, out, _) = cli(&w, &["queue", "hold", &held]);
    assert!(out.contains("0 copies held; 2 already held"), "{out}");
    let mx = TestMx::start(MxOptions::new().port(port)).await;
    let (code, out, err) = cli(&w, &["queue", "retry", &retried]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("1 copies due now"), "{out}");
    mx.wait_for(1, LONG).await;
    assert_eq!(delivered_to(&mx, "retried-one"), 1);
    let (code, out, _) = cli(&w, &["queue", "retry", "--all"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("2 held or quarantined, left alone"), "{out}");
    mx.wait_for(2, LONG).await;
    assert_eq!(
        delivered_to(&mx, "deleted-one"),
        1,
        "retry --all sent the other message"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(delivered_to(&mx, "held-one"), 0, "a held message was delivered");
    assert_eq!(
        delivered_to(&mx, "never-sent"),
        0,
        "a deleted message was delivered"
    );
    assert_eq!(copy_states(&w, &held), ["held", "held"]);

    // release: due now.
    let (code, out, err) = cli(&w, &["queue", "release", &held]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("2 copies released"), "{out}");
    let deadline = Instant::now() + LONG;
    while delivered_to(&mx, "held-one") == 0 {
        assert!(
            Instant::now() < deadline,
            "the released message was not delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(
        delivered_to(&mx, "never-sent"),
        0,
        "a deleted message was delivered"
    );

    // Bad input: unknown or malformed ids, exit 1 with a clear line.
    let unknown = "0123456789abcdef0123456789abcdef";
    for args in [
        &["queue", "show", unknown][..],
        &["queue", "hold", unknown],
        &["queue", "release", "not-an-id"],
        &["queue", "delete", unknown],
        &["queue", "retry", unknown],
    ] {
        let (code, out, err) = cli(&w, args);
        assert_eq!(code, Some(1), "{args:?}: {out}{err}");
        assert!(
            err.contains("no message") && err.contains("ward queue list"),
            "{err}"
        );
    }
    let (code, _, err) = cli(&w, &["queue", "hold"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = cli(&w, &["queue", "retry"]);
    assert_eq!(code, Some(2), "{err}");

    // The audit trail has every action with its queue id (its writer
    // batches: wait for it).
    let deadline = Instant::now() + WAIT;
    loop {
        let want = [
            ("queue_hold", held.as_str()),
            ("queue_retry", retried.as_str()),
            ("queue_retry", "all"),
            ("queue_release", held.as_str()),
            ("queue_delete", gone.as_str()),
        ];
        let missing: Vec<_> = want.iter().filter(|(e, q)| !audit_has(&w.dir, e, q)).collect();
        if missing.is_empty() {
            assert!(!audit_text(&w.dir).contains("SECRET-SUBJECT"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "audit lacks {missing:?}:\n{}",
            audit_text(&w.dir)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!w.log().contains("SECRET-SUBJECT"));
}

/// Quarantined copies wait for an administrator: `release` and `retry`
/// leave them alone; `unquarantine` sends them, as `deliver` or (the
/// default) `protect`, which still demands verified TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantined_mail_leaves_quarantine_only_by_unquarantine() {
    let mx = TestMx::plain().await;
    let w = Ward::start(&format!(
        "{}[[policy.rule]]\nrecipient = \"q@partner.test\"\naction = \"quarantine\"\n",
        route_config(mx.port(), "1s")
    ));
    let one = send(&w, &["q@partner.test", "a@partner.test"], &message("review-one")).await;
    let two = send(&w, &["q@partner.test"], &message("review-two")).await;
    mx.wait_for(1, LONG).await;
    // a@'s result is recorded a moment after the MX has the message.
    wait_state(&w, &one, "quarantined").await;
    assert_eq!(
        copy_states(&w, &one),
        ["quarantined"],
        "a@ was delivered, q@ waits"
    );
    let (code, out, _) = cli(&w, &["queue", "release", &one]);
    assert_eq!(code, Some(0));
    assert!(out.contains("0 copies released; 1 were not held"), "{out}");
    let (_, out, _) = cli(&w, &["queue", "retry", &one]);
    assert!(out.contains("0 copies due now; 1 held or quarantined"), "{out}");

    let (code, out, err) = cli(&w, &["queue", "unquarantine", &one, "--as", "deliver"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("1 copies released from quarantine as deliver"),
        "{out}"
    );
    let deadline = Instant::now() + LONG;
    while mx
        .received()
        .iter()
        .filter(|m| m.rcpt_to == ["q@partner.test"])
        .count()
        == 0
    {
        assert!(Instant::now() < deadline, "the released copy was not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivered_to(&mx, "review-one"), 2);

    // The default, protect: no verified TLS here, so it waits, no longer
    // quarantined, and is not sent in the clear.
    let (code, out, err) = cli(&w, &["queue", "unquarantine", &two]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("as protect"), "{out}");
    wait_state(&w, &two, "deferred").await;
    let v = show_json(&w, &two);
    assert_eq!(v["copies"][0]["policy"], "protect", "{v}");
    assert_eq!(delivered_to(&mx, "review-two"), 0);
    let (_, out, _) = cli(&w, &["queue", "unquarantine", &two]);
    assert!(
        out.contains("0 copies released from quarantine as protect; 1 were not quarantined"),
        "{out}"
    );
    let (code, _, err) = cli(&w, &["queue", "unquarantine", "0123456789abcdef0123456789abcdef"]);
    assert_eq!(code, Some(1), "{err}");
    let deadline = Instant::now() + LONG;
    while !(audit_has(&w.dir, "queue_unquarantine", &one) && audit_has(&w.dir, "queue_unquarantine", &two)) {
        assert!(Instant::now() < deadline, "{}", audit_text(&w.dir));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_commands_with_ward_stopped_and_refusals() {
    let port = dead_port();
    let mut w = Ward::start(&route_config(port, "1h"));
    let id = send(&w, &["a@partner.test"], &message("offline")).await;
    wait_state(&w, &id, "deferred").await;

    // Key rotation runs in the running Ward; without --destroy-old the old
    // key stays beside the new one (and is loaded again at start).
    let (code, out, err) = cli(&w, &["keys", "rotate"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("in the running Ward") && out.contains("1 queued messages") && out.contains(".old-"),
        "{out}"
    );

    // Killed: its socket file stays behind, and nobody answers on it.
    w.kill();
    assert!(w.dir.join("data").join("admin.sock").exists());
    let (code, out, err) = cli(&w, &["queue", "list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&id), "{out}");
    let (code, out, err) = cli(&w, &["queue", "hold", &id]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("1 copies held"), "{out}");
    assert!(audit_has(&w.dir, "queue_hold", &id), "{}", audit_text(&w.dir));
    let (code, _, err) = ward_cli(&["audit", "verify", "--config", w.config_path.to_str().unwrap()]);
    assert!(code.success(), "{err}");

    // A backup with Ward stopped, the key included on request.
    let dest = w.dir.join("offline-backup");
    let (code, out, err) = cli(&w, &["backup", dest.to_str().unwrap(), "--include-key"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("warning") && err.contains("master key"), "{err}");
    assert!(
        out.contains("1 messages") && out.contains("includes the master key"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(dest.join("master.key")).unwrap(),
        std::fs::read(w.dir.join("data").join("master.key")).unwrap()
    );
    let (code, _, err) = cli(&w, &["backup", dest.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is not empty"), "{err}");

    // A master key file others can read is refused, with what to do.
    {
        use std::os::unix::fs::PermissionsExt;
        let key = w.dir.join("data").join("master.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (code, _, err) = cli(&w, &["queue", "list"]);
        assert_eq!(code, Some(1));
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    // Held across a restart: not attempted although due.
    w.restart();
    assert_eq!(copy_states(&w, &id), ["held"]);
    w.terminate();

    // No Ward and no data directory.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ward.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\ndata_dir = \"{}\"\n",
            tmp.path().join("nothing").display()
        ),
    )
    .unwrap();
    let (status, _, err) = ward_cli(&["queue", "list", "--config", cfg.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("Ward is not running") && err.contains("no queue"),
        "{err}"
    );

    // A socket this user may not open: the command says so. (Root opens
    // any file; the check only means something for another user.)
    if unsafe { libc::geteuid() } != 0 {
        let data = w.dir.join("data");
        let sock = std::os::unix::net::UnixListener::bind(data.join("admin.sock")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data.join("admin.sock"), std::fs::Permissions::from_mode(0o000)).unwrap();
        let (code, _, err) = cli(&w, &["queue", "list"]);
        assert_eq!(code, Some(1));
        assert!(err.contains("permission denied"), "{err}");
        drop(sock);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_queued_mail_deliverable() {
    let port = dead_port();
    let mut w = Ward::start(&route_config(port, "1s"));
    let bodies: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            let mut b = message(&format!("rotate-{i}"));
            b.extend((0..2000).map(|n| b"abcdefghij\r\n"[n % 12]));
            b.extend_from_slice(b"\r\n");
            b
        })
        .collect();
    let mut ids = Vec::new();
    for b in &bodies {
        ids.push(send(&w, &["a@partner.test"], b).await);
    }
    wait_state(&w, &ids[2], "deferred").await;
    w.terminate();

    let data = w.dir.join("data");
    let key = data.join("master.key");
    let old_key = std::fs::read_to_string(&key).unwrap();
    let before = content_segments(&data);
    assert!(!before.is_empty());
    let (code, out, err) = cli(&w, &["keys", "rotate"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("3 queued messages"), "{out}");
    let new_key = std::fs::read_to_string(&key).unwrap();
    assert_ne!(old_key, new_key);
    // The bodies were not re-encrypted: every segment is byte-identical.
    let after = content_segments(&data);
    assert_eq!(before, after, "rotation changed the content log");
    let retired: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("master.key.old-"))
        .collect();
    assert_eq!(retired.len(), 1, "{out}");
    assert!(out.contains(retired[0].to_str().unwrap()), "{out}");
    assert_eq!(std::fs::read_to_string(&retired[0]).unwrap(), old_key);

    // Started with the old key file gone and the destination up: all three
    // delivered, byte for byte.
    std::fs::remove_file(&retired[0]).unwrap();
    let mx = TestMx::start(MxOptions::new().port(port)).await;
    w.restart();
    let got = mx.wait_for(3, LONG).await;
    for b in &bodies {
        let m = got
            .iter()
            .find(|m| m.data.ends_with(b))
            .unwrap_or_else(|| panic!("a message was not delivered intact"));
        assert_eq!(&m.data[m.data.len() - b.len()..], &b[..]);
    }
    assert!(!w.log().contains("cannot load message"), "{}", w.log());
    w.terminate();

    // A second rotation, destroying the old key.
    let (code, out, err) = cli(&w, &["keys", "rotate", "--destroy-old"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("old key was destroyed"), "{out}");
    assert!(
        !std::fs::read_dir(&data)
            .unwrap()
            .flatten()
            .any(|e| e.path().to_string_lossy().contains(".old-"))
    );
    // An interrupted rotation (a pending new key) stops Ward from starting.
    std::fs::write(
        data.join("master.key.new"),
        "0000000000000000000000000000000000000000000000000000000000000001\n",
    )
    .unwrap();
    let (status, _, err) = ward_cli(&["serve", "--config", w.config_path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("rotation was interrupted") && err.contains("ward keys rotate"),
        "{err}"
    );
}

/// Sends messages until `stop`; records each acknowledged marker with the
/// time of its 250. A refusal (the sender rate limit) is waited out.
async fn sender(addr: SocketAddr, t: usize, acked: Arc<Mutex<Vec<(Instant, String)>>>, stop: Instant) {
    let mut c = SmtpClient::connect(addr).await;
    c.ehlo("load.test").await;
    let filler = format!("{}\r\n", "y".repeat(76)).repeat(30);
    for n in 0.. {
        if Instant::now() > stop {
            break;
        }
        let marker = format!("backup-marker-{t}-{n}-end");
        let mut refused = false;
        for step in [
            "MAIL FROM:<dr@hospital.example>",
            "RCPT TO:<a@partner.test>",
            "DATA",
        ] {
            match c.try_cmd(step).await {
                Some(r) if r.code < 400 => {}
                Some(_) => {
                    refused = true;
                    break;
                }
                None => return,
            }
        }
        if refused {
            let _ = c.try_cmd("RSET").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let body = format!("Subject: {marker}\r\n\r\n{filler}{marker}\r\n.\r\n");
        if !c.try_send_raw(body.as_bytes()).await {
            return;
        }
        match c.try_read_reply().await {
            Some(r) if r.code == 250 => acked.lock().unwrap().push((Instant::now(), marker)),
            Some(_) => {}
            None => return,
        }
    }
    c.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_under_load_restores_and_delivers() {
    let port = dead_port();
    let w = Ward::start(&format!(
        "{}[rate_limit]\nenabled = false\n",
        route_config(port, "1h")
    ));
    let acked: Arc<Mutex<Vec<(Instant, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Instant::now() + Duration::from_secs(4);
    let senders: Vec<_> = (0..4)
        .map(|t| tokio::spawn(sender(w.smtp(), t, acked.clone(), stop)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let backup_dir = tempfile::tempdir().unwrap();
    let dest = backup_dir.path().join("b1");
    let started = Instant::now();
    let args = [
        "backup".to_string(),
        dest.to_str().unwrap().to_string(),
        "--config".to_string(),
        w.config_path.to_str().unwrap().to_string(),
    ];
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (s, o, e) = ward_cli(&a);
        (s.code(), o, e)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("does not include the master key"), "{out}");
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let before: HashSet<String> = acked
        .iter()
        .filter(|(at, _)| *at < started)
        .map(|(_, m)| m.clone())
        .collect();
    let after = acked.len() - before.len();
    assert!(
        before.len() >= 20,
        "too little load before the backup: {}",
        before.len()
    );
    assert!(after > 0, "no message was acknowledged after the backup began");
    assert!(!dest.join("master.key").exists());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the backup directory is the owner's only");
    }
    let pause = w
        .line(&["commits were paused"], WAIT)
        .await
        .split("paused_us=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dest.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest["files"].as_array().unwrap().len() >= 2);
    // Still encrypted: no marker in any file of the backup.
    for f in walk(&dest) {
        let data = std::fs::read(&f).unwrap();
        assert!(
            !data.windows(14).any(|w| w == b"backup-marker-"),
            "plaintext in {}",
            f.display()
        );
    }

    // Restore refuses a non-empty target and a damaged backup.
    let target_tmp = tempfile::tempdir().unwrap();
    std::fs::write(target_tmp.path().join("x"), "x").unwrap();
    let (status, _, err) = ward_cli(&[
        "restore",
        dest.to_str().unwrap(),
        "--data-dir",
        target_tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("not empty"), "{err}");
    let damaged = backup_dir.path().join("damaged");
    copy_tree(&dest, &damaged);
    let seg = walk(&damaged.join("queue").join("content"))
        .into_iter()
        .next()
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&seg, bytes).unwrap();
    let (status, _, err) = ward_cli(&[
        "restore",
        damaged.to_str().unwrap(),
        "--data-dir",
        backup_dir.path().join("never").to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("backup damaged"), "{err}");
    assert!(!backup_dir.path().join("never").join("queue").exists());

    // Restore into a fresh directory, start a second Ward on it with the
    // same master key and a live destination.
    let mx = TestMx::plain().await;
    let tmp2 = tempfile::tempdir().unwrap();
    let data2 = tmp2.path().join("data");
    let (status, out, err) = ward_cli(&[
        "restore",
        dest.to_str().unwrap(),
        "--data-dir",
        data2.to_str().unwrap(),
    ]);
    assert!(status.success(), "{err}");
    assert!(out.contains("put the master key"), "{out}");
    // Started without that key (Ward would make a new one): refused.
    let config2 = format!(
        "{}{}",
        common::process::base_config(tmp2.path()),
        route_config(mx.port(), "1s")
    );
    std::fs::write(tmp2.path().join("ward.toml"), &config2).unwrap();
    let (status, _, err) = ward_cli(&[
        "serve",
        "--config",
        tmp2.path().join("ward.toml").to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("queued messages are sealed under key"), "{err}");
    std::fs::copy(w.dir.join("data").join("master.key"), data2.join("master.key")).unwrap();
    let w2 = Ward::start_in(tmp2.path(), &config2);
    // The copies kept their retry times (an hour away): make them due.
    let (status, out, err) = ward_cli(&[
        "queue",
        "retry",
        "--all",
        "--config",
        w2.config_path.to_str().unwrap(),
    ]);
    assert!(status.success(), "{err}");
    assert!(out.contains("copies due now"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let got = mx.subjects();
        let missing = before.iter().filter(|m| !got.contains(*m)).count();
        if missing == 0 || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "backup test: {} acknowledged before the backup, {} after, {} delivered from the restore, {} missing; commits paused {pause} us",
        before.len(),
        after,
        mx.received().len(),
        missing
    );
    assert_eq!(
        missing, 0,
        "{missing} messages acknowledged before the backup were lost"
    );
    assert!(!w2.log().contains("cannot load message"), "{}", w2.log());
    assert!(!w2.log().contains("discarding a message"), "{}", w2.log());
    let (status, out, err) = ward_cli(&["audit", "verify", "--config", w2.config_path.to_str().unwrap()]);
    assert!(status.success(), "{out}{err}");
    assert!(audit_text(tmp2.path()).contains("backup_restored"));
    assert!(audit_text(&w.dir).contains("backup_created"));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    for f in walk(from) {
        let rel = f.strip_prefix(from).unwrap();
        let t = to.join(rel);
        std::fs::create_dir_all(t.parent().unwrap()).unwrap();
        std::fs::copy(&f, &t).unwrap();
    }
}
