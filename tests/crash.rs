//! Crash safety (invariant 1, durable before 250): Ward is SIGKILLed while
//! clients are sending, restarted on the same data directory, and every
//! message that got a 250 must then be delivered at least once. Three kill
//! cycles make it likely that at least one kill lands between a write and
//! its flush.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::client::SmtpClient;
use common::process::Ward;
use common::*;

/// Sends messages until the connection fails; records each acknowledged
/// marker.
async fn sender(addr: SocketAddr, cycle: usize, t: usize, acked: Arc<Mutex<Vec<String>>>) {
    let Ok(Ok(tcp)) =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await
    else {
        return;
    };
    drop(tcp);
    let mut c = SmtpClient::connect(addr).await;
    c.timeout = Duration::from_secs(5);
    if c.try_cmd("EHLO crash.test").await.map(|r| r.code) != Some(250) {
        return;
    }
    // About 4 KB of ordinary 78-character lines.
    let filler = format!("{}\r\n", "x".repeat(76)).repeat(50);
    for n in 0.. {
        let marker = format!("crash-marker-{cycle}-{t}-{n}");
        for step in [
            "MAIL FROM:<alice@hospital.example>",
            "RCPT TO:<bob@partner.test>",
            "DATA",
        ] {
            match c.try_cmd(step).await {
                Some(r) if r.code < 400 => {}
                _ => return,
            }
        }
        let body = format!("Subject: {marker}\r\n\r\n{filler}{marker}\r\n.\r\n");
        if !c.try_send_raw(body.as_bytes()).await {
            return;
        }
        match c.try_read_reply().await {
            Some(r) if r.code == 250 => acked.lock().unwrap().push(marker),
            _ => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_message_survives_sigkill() {
    let mx = TestMx::plain().await;
    let config = format!(
        "[delivery]\ntls_policy = \"may\"\nconnection_cache_time = \"200ms\"\n\
         [[delivery.destination]]\ndomain = \"partner.test\"\nroute = \"[127.0.0.1]:{}\"\n\
         [queue]\nretry_schedule = [\"1s\"]\nscan_interval = \"200ms\"\n",
        mx.port()
    );
    let mut w = Ward::start(&config);
    let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    for cycle in 0..3 {
        let before = acked.lock().unwrap().len();
        let senders: Vec<_> = (0..12)
            .map(|t| tokio::spawn(sender(w.smtp(), cycle, t, acked.clone())))
            .collect();
        // Kill while the senders are busy.
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.lock().unwrap().len() < before + 150 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        w.kill();
        for s in senders {
            let _ = s.await;
        }
        let now = acked.lock().unwrap().len();
        assert!(
            now >= before + 150,
            "senders stalled in cycle {cycle}: {} acknowledged",
            now - before
        );
        w.restart();
    }

    let acked: Vec<String> = acked.lock().unwrap().clone();
    let want: HashSet<&str> = acked.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let missing = loop {
        let got = mx.subjects();
        let missing = want.iter().filter(|m| !got.contains(**m)).count();
        if missing == 0 || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let delivered = mx.received().len();
    eprintln!(
        "crash test: {} acknowledged, {delivered} deliveries, {missing} missing",
        acked.len()
    );
    assert_eq!(missing, 0, "{missing} acknowledged messages were lost");
}
