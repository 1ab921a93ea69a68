//! `ward keys rotate` against the running Ward (over its admin socket)
//! while mail flows: clients keep sending to a destination that is down,
//! a pickup waits in the portal, and the rotation with `--destroy-old`
//! neither fails a session nor loses or changes a message.

mod common;
#[path = "common/portal.rs"]
mod portal;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::client::SmtpClient;
use common::process::{content_segments, ward_cli};
use common::*;

const LONG: Duration = Duration::from_secs(60);

/// A port nothing listens on (yet): the destination is down.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// What the senders saw: each acknowledged message (time of its 250 and
/// its bytes), and every session that failed.
#[derive(Default)]
struct Load {
    acked: Mutex<Vec<(Instant, Vec<u8>)>>,
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
    sent: AtomicUsize,
}

/// Sends messages to partner.test on one connection until `stop`.
async fn sender(addr: std::net::SocketAddr, t: usize, load: Arc<Load>) {
    let mut c = SmtpClient::connect(addr).await;
    c.ehlo("load.test").await;
    let mut n = 0;
    while !load.stop.load(Ordering::Relaxed) {
        let marker = format!("rotation-marker-{t}-{n}-end");
        n += 1;
        let filler = format!("{}\r\n", "z".repeat(70)).repeat(1 + n % 20);
        let body = format!(
            "From: dr@hospital.example\r\nTo: x@partner.test\r\nSubject: {marker}\r\n\r\n{filler}{marker}\r\n"
        );
        let failed = match c
            .try_send_message("dr@hospital.example", &["x@partner.test"], body.as_bytes())
            .await
        {
            Ok(r) if r.code == 250 => {
                load.acked
                    .lock()
                    .unwrap()
                    .push((Instant::now(), body.into_bytes()));
                None
            }
            Ok(r) => Some(format!("end of data: {}", r.code)),
            Err(e) => Some(e),
        };
        load.sent.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = failed {
            load.failures.lock().unwrap().push(f);
            return;
        }
    }
    c.quit().await;
}

fn key_files(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("master.key"))
        .collect();
    names.sort();
    names
}

fn audit_lines(data: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(data.join("audit")).unwrap().flatten() {
        for l in std::fs::read_to_string(e.path()).unwrap_or_default().lines() {
            out.extend(serde_json::from_str(l).ok());
        }
    }
    out
}

async fn wait_acked(load: &Load, n: usize) {
    let deadline = Instant::now() + LONG;
    while load.acked.lock().unwrap().len() < n {
        assert!(
            load.failures.lock().unwrap().is_empty(),
            "{:?}",
            load.failures.lock().unwrap()
        );
        assert!(Instant::now() < deadline, "the senders are stuck");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn online_rotation_while_mail_flows_and_a_pickup_waits() {
    let dead = dead_port();
    let mut s = portal::setup(&format!(
        "[[delivery.destination]]\ndomain = \"partner.test\"\nroute = \"[127.0.0.1]:{dead}\"\ntls_policy = \"may\"\n\
         [rate_limit]\nenabled = false\n"
    ))
    .await;
    let data = s.ward.dir.join("data");
    // A pickup waiting in the portal (escrowed under the old key).
    let url = s.send_and_get_link().await;
    let old_key = std::fs::read_to_string(data.join("master.key")).unwrap();

    // Clients keep sending; the destination is down, so it all queues.
    let load = Arc::new(Load::default());
    let senders: Vec<_> = (0..3)
        .map(|t| tokio::spawn(sender(s.ward.smtp(), t, load.clone())))
        .collect();
    wait_acked(&load, 30).await;
    let before = content_segments(&data);
    assert!(!before.is_empty());

    let args = [
        "keys".to_string(),
        "rotate".to_string(),
        "--destroy-old".to_string(),
        "--config".to_string(),
        s.ward.config_path.to_str().unwrap().to_string(),
    ];
    let started = Instant::now();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (st, o, e) = ward_cli(&a);
        (st.code(), o, e)
    })
    .await
    .unwrap();
    let finished = Instant::now();
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("in the running Ward"), "{out}");
    assert!(out.contains("old key was destroyed"), "{out}");
    // Mail kept flowing after the rotation.
    let at_rotation = load.acked.lock().unwrap().len();
    wait_acked(&load, at_rotation + 20).await;
    load.stop.store(true, Ordering::Relaxed);
    for t in senders {
        t.await.unwrap();
    }
    assert!(
        load.failures.lock().unwrap().is_empty(),
        "a session failed: {:?}",
        load.failures.lock().unwrap()
    );
    let acked = load.acked.lock().unwrap().clone();
    let during = acked
        .iter()
        .filter(|(at, _)| *at >= started && *at <= finished)
        .count();
    eprintln!(
        "acknowledged: {} in all, {during} while the rotation ran ({} ms)",
        acked.len(),
        (finished - started).as_millis()
    );

    // One key file: the new one; the old one is gone, nothing pending.
    assert_eq!(key_files(&data), vec!["master.key".to_string()]);
    assert_ne!(std::fs::read_to_string(data.join("master.key")).unwrap(), old_key);
    // The content log was only appended to: every segment there before
    // still starts with the same bytes.
    let after = content_segments(&data);
    for (path, bytes) in &before {
        if let Some((_, now)) = after.iter().find(|(p, _)| p == path) {
            assert!(now.starts_with(bytes), "rotation rewrote {}", path.display());
        }
    }
    assert!(
        before.iter().any(|(p, _)| after.iter().any(|(q, _)| p == q)),
        "no segment left to compare"
    );
    let audit = audit_lines(&data);
    let rotated: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|v| v["event"] == "master_key_rotated")
        .collect();
    assert_eq!(rotated.len(), 1);
    assert_eq!(rotated[0]["old_key_destroyed"], true);
    assert!(rotated[0]["pickup_keys"].as_u64().unwrap() >= 1);

    // The pickup escrowed under the old key opens.
    let code = s.request_code(&url, 2).await;
    let r = s.verify(&url, &code).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains(portal::PLANTED[1]));

    // Restarted (with only the new key on disk), the destination up: every
    // acknowledged message arrives, byte for byte.
    s.ward.terminate();
    let mx = TestMx::start(MxOptions::new().port(dead)).await;
    s.ward.restart();
    let got = mx.wait_for(acked.len(), LONG).await;
    for (_, body) in &acked {
        assert!(
            got.iter().any(|m| m.data.ends_with(body)),
            "an acknowledged message was not delivered intact"
        );
    }
    assert!(!s.ward.log().contains("cannot load message"), "{}", s.ward.log());
}

/// The id Ward gives a master key file's key (first 8 bytes of the
/// SHA-256 of the 32 key bytes), in hex.
fn key_id(key_file_text: &str) -> String {
    let bytes = hex::decode(key_file_text.trim()).unwrap();
    hex::encode(&ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()[..8])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_key_file_beside_the_key_still_reads_its_records() {
    let port = dead_port();
    let config = format!(
        "[delivery]\ntls_policy = \"may\"\nconnect_timeout = \"2s\"\n\
         [[delivery.destination]]\ndomain = \"partner.test\"\nroute = \"[127.0.0.1]:{port}\"\n\
         [queue]\nretry_schedule = [\"1s\"]\nscan_interval = \"200ms\"\n"
    );
    let mut w = common::process::Ward::start(&config);
    let body = b"From: dr@hospital.example\r\nSubject: retired\r\n\r\nunder the retired key\r\n".to_vec();
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    c.send_message("dr@hospital.example", &["a@partner.test"], &body)
        .await
        .assert_is("250");
    c.quit().await;
    w.terminate();

    // The key the message is under becomes a retired key file; a new key
    // takes its place (as a rotation would leave it, minus the re-wrap).
    let data = w.dir.join("data");
    let old = std::fs::read_to_string(data.join("master.key")).unwrap();
    let retired = data.join(format!("master.key.old-{}", key_id(&old)));
    std::fs::rename(data.join("master.key"), &retired).unwrap();
    let mx = TestMx::start(MxOptions::new().port(port)).await;
    w.restart();
    let got = mx.wait_for(1, LONG).await;
    assert!(got[0].data.ends_with(&body));
    assert_ne!(std::fs::read_to_string(data.join("master.key")).unwrap(), old);
    w.terminate();

    // Without it, Ward refuses to start and names the missing key (the
    // destination down again, so the message stays queued).
    drop(mx);
    let moved = config.replace(&format!(":{port}\""), &format!(":{}\"", dead_port()));
    assert_ne!(moved, config);
    let config = moved;
    let mut w2 = common::process::Ward::start(&config);
    let mut c = SmtpClient::connect(w2.smtp()).await;
    c.ehlo("client.test").await;
    c.send_message("dr@hospital.example", &["a@partner.test"], &body)
        .await
        .assert_is("250");
    c.quit().await;
    w2.terminate();
    let data2 = w2.dir.join("data");
    let id2 = key_id(&std::fs::read_to_string(data2.join("master.key")).unwrap());
    std::fs::remove_file(data2.join("master.key")).unwrap();
    let (status, _, err) = ward_cli(&["serve", "--config", w2.config_path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains(&id2), "{err}");
}
