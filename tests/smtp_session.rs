//! Inbound SMTP against the real `ward` process over loopback: the
//! protocol, the extensions, relay authorization and hostile input.
//! Each test reads like a transcript and asserts reply codes.

mod common;

use std::time::Duration;

use common::client::SmtpClient;
use common::process::Ward;

/// Deliveries go nowhere (port 1 on loopback refuses), so these tests only
/// see the inbound side.
const NOWHERE: &str = "[delivery]\nsmart_host = \"[127.0.0.1]:1\"\ntls_policy = \"may\"\n";

fn ward(extra: &str) -> Ward {
    Ward::start(&format!("{NOWHERE}{extra}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ehlo_advertises_the_extensions() {
    let w = ward("");
    let mut c = SmtpClient::connect(w.smtp()).await;
    let r = c.ehlo("client.test").await;
    for ext in [
        "PIPELINING",
        "SIZE 36700160",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "DSN",
        "CHUNKING",
        "STARTTLS",
        "HELP",
    ] {
        assert!(r.lines.iter().any(|l| l == ext), "missing {ext} in {r:?}");
    }
    assert!(
        !r.lines.iter().any(|l| l.starts_with("AUTH")),
        "AUTH offered before TLS: {r:?}"
    );
    let c = c.starttls(None).await;
    c.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_commands_answer_with_enhanced_codes() {
    let w = ward("");
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.cmd("MAIL FROM:<a@b.example>").await.assert_is("503 5.5.1");
    c.cmd("HELO client.test").await.assert_is("250");
    c.cmd("NOOP").await.assert_is("250 2.0.0");
    c.cmd("VRFY someone").await.assert_is("252 2.5.0");
    c.cmd("EXPN list").await.assert_is("502 5.5.1");
    c.cmd("HELP").await.assert_is("214 2.0.0");
    c.cmd("RSET").await.assert_is("250 2.0.0");
    c.cmd("FROBNICATE").await.assert_is("500 5.5.1");
    c.cmd("RCPT TO:<x@y.example>").await.assert_is("503 5.5.1");
    c.cmd("DATA").await.assert_is("503 5.5.1");
    c.cmd("QUIT").await.assert_is("221 2.0.0");
    assert!(c.is_closed(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_queued_with_its_id() {
    let w = ward("");
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    let r = c
        .send_message(
            "alice@hospital.example",
            &["bob@clinic.example"],
            b"Subject: t\r\n\r\nhello\r\n",
        )
        .await;
    r.assert_is("250 2.0.0");
    let id = r.lines[0].rsplit(' ').next().unwrap().to_string();
    assert_eq!(id.len(), 32, "{r:?}");
    w.wait_log(&format!("queue_id={id}"), Duration::from_secs(5));
    c.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_get_replies_in_order() {
    let w = ward("");
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    c.send_raw(
        b"MAIL FROM:<a@hospital.example>\r\nRCPT TO:<b@x.example>\r\nRCPT TO:<c@y.example>\r\nDATA\r\n",
    )
    .await;
    c.read_reply().await.assert_is("250 2.1.0");
    c.read_reply().await.assert_is("250 2.1.5");
    c.read_reply().await.assert_is("250 2.1.5");
    c.read_reply().await.assert_is("354");
    c.send_raw(b"Subject: p\r\n\r\nbody\r\n.\r\nNOOP\r\n").await;
    c.read_reply().await.assert_is("250 2.0.0");
    c.read_reply().await.assert_is("250 2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bdat_chunks_make_one_message() {
    let w = ward("");
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    c.cmd("MAIL FROM:<a@hospital.example> BODY=8BITMIME")
        .await
        .assert_is("250");
    c.cmd("RCPT TO:<b@x.example>").await.assert_is("250");
    let part1 = b"Subject: chunked\r\n\r\nfirst part\r\n";
    let part2 = b"second part\r\n";
    c.send_raw(format!("BDAT {}\r\n", part1.len()).as_bytes()).await;
    c.send_raw(part1).await;
    c.read_reply().await.assert_is("250 2.0.0");
    c.send_raw(format!("BDAT {} LAST\r\n", part2.len()).as_bytes())
        .await;
    c.send_raw(part2).await;
    let r = c.read_reply().await;
    r.assert_is("250 2.0.0");
    assert!(r.text().contains("queued as"), "{r:?}");
    // BDAT without a transaction: the chunk is consumed, the session stays in step.
    c.send_raw(b"BDAT 5 LAST\r\nhello").await;
    c.read_reply().await.assert_is("503 5.5.1");
    c.cmd("NOOP").await.assert_is("250");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsn_and_utf8_parameters_are_accepted() {
    let w = ward("");
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    c.cmd("MAIL FROM:<alice@hospital.example> RET=HDRS ENVID=QQ314159 SIZE=100 BODY=8BITMIME")
        .await
        .assert_is("250");
    c.cmd("RCPT TO:<b@x.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@x.example")
        .await
        .assert_is("250");
    c.cmd("RCPT TO:<c@x.example> NOTIFY=NEVER").await.assert_is("250");
    c.cmd("RCPT TO:<d@x.example> NOTIFY=NEVER,SUCCESS")
        .await
        .assert_is("501 5.5.4");
    c.cmd("RSET").await.assert_is("250");
    c.cmd("MAIL FROM:<a@b.example> FOO=BAR")
        .await
        .assert_is("555 5.5.4");
    c.cmd("MAIL FROM:<jörg@hospital.example>")
        .await
        .assert_is("553 5.6.7");
    c.cmd("MAIL FROM:<jörg@hospital.example> SMTPUTF8")
        .await
        .assert_is("250");
    c.cmd("RCPT TO:<müller@beispiel.example>").await.assert_is("250");
    c.cmd("DATA").await.assert_is("354");
    c.send_raw("Subject: grüße\r\n\r\nhallo\r\n.\r\n".as_bytes())
        .await;
    c.read_reply().await.assert_is("250 2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_is_refused_outside_allowed_networks_including_classic_tricks() {
    // Loopback is not an allowed network here: nothing may be relayed.
    let w = ward("[relay]\nnetworks = [\"10.0.0.0/8\"]\n");
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("attacker.test").await;
    c.cmd("MAIL FROM:<spammer@attacker.test>").await.assert_is("250");
    for rcpt in [
        "<victim@example.net>",
        "<victim%example.net@ward.test>",
        "<example.net!victim@ward.test>",
        "<victim%example.net@[127.0.0.1]>",
        "<@ward.test:victim@example.net>",
        "<@ward.test,@relay.test:victim@example.net>",
        "<\"victim@example.net\"@ward.test>",
        "<\"victim%example.net\"@ward.test>",
        "<postmaster@ward.test>",
    ] {
        let r = c.cmd(&format!("RCPT TO:{rcpt}")).await;
        assert!(r.code == 550 && r.status() == "5.7.1", "{rcpt} got {r:?}");
    }
    c.cmd("DATA").await.assert_is("554 5.5.1");
    // The log line is written by the session task and may trail the reply
    // on a busy machine: wait for it rather than read the log once.
    w.line(&["relay denied"], std::time::Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_networks_are_refused_at_connect() {
    let w = ward("[relay]\ndeny_networks = [\"127.0.0.0/8\"]\n");
    let mut c = SmtpClient::connect_raw(w.smtp()).await;
    c.read_reply().await.assert_is("554 5.7.1");
    assert!(c.is_closed(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_tls_refuses_mail_before_starttls() {
    let w = Ward::start(&format!(
        "{NOWHERE}[[listener]]\nname = \"strict\"\naddress = \"127.0.0.1:0\"\ntls = \"starttls\"\nrequire_tls = true\n"
    ));
    let mut c = SmtpClient::connect(w.listener("strict")).await;
    c.ehlo("client.test").await;
    c.cmd("MAIL FROM:<a@hospital.example>")
        .await
        .assert_is("530 5.7.0");
    let mut c = c.starttls(None).await;
    c.cmd("MAIL FROM:<a@hospital.example>").await.assert_is("250");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_listener() {
    let w = Ward::start(&format!(
        "{NOWHERE}[[listener]]\nname = \"smtps\"\naddress = \"127.0.0.1:0\"\ntls = \"implicit\"\n"
    ));
    let mut c = SmtpClient::connect_tls(w.listener("smtps")).await;
    let r = c.ehlo("client.test").await;
    assert!(!r.lines.iter().any(|l| l == "STARTTLS"), "{r:?}");
    let r = c
        .send_message("a@hospital.example", &["b@x.example"], b"Subject: s\r\n\r\nx\r\n")
        .await;
    r.assert_is("250 2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_discards_pipelined_commands() {
    // CVE-2011-0411: commands sent with STARTTLS must not run after TLS.
    let w = ward("");
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    c.send_raw(b"STARTTLS\r\nMAIL FROM:<injected@attacker.test>\r\n")
        .await;
    c.read_reply().await.assert_is("220 2.0.0");
    assert!(
        w.log().contains("discarded input pipelined after STARTTLS") || {
            std::thread::sleep(Duration::from_millis(300));
            w.log().contains("discarded input pipelined after STARTTLS")
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_plain_and_login_after_tls_only() {
    let hash = ward::smtp::relay::hash_password(b"correct horse").unwrap();
    let w = ward(&format!(
        "[relay]\nnetworks = []\n[[relay.user]]\nname = \"scanner\"\npassword_hash = \"{hash}\"\n"
    ));
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    c.cmd("AUTH PLAIN AHNjYW5uZXIAY29ycmVjdCBob3JzZQ==")
        .await
        .assert_is("538 5.7.11");
    c.cmd("MAIL FROM:<a@hospital.example>").await.assert_is("250");
    c.cmd("RCPT TO:<b@x.example>").await.assert_is("550 5.7.1");
    c.cmd("RSET").await.assert_is("250");
    let mut c = c.starttls(None).await;
    // Wrong password, then the right one (PLAIN with initial response).
    c.cmd("AUTH PLAIN AHNjYW5uZXIAd3Jvbmc=")
        .await
        .assert_is("535 5.7.8");
    c.cmd("AUTH PLAIN AHNjYW5uZXIAY29ycmVjdCBob3JzZQ==")
        .await
        .assert_is("235 2.7.0");
    c.cmd("AUTH PLAIN AHNjYW5uZXIAY29ycmVjdCBob3JzZQ==")
        .await
        .assert_is("503 5.5.1");
    let r = c
        .send_message("a@hospital.example", &["b@x.example"], b"Subject: a\r\n\r\nx\r\n")
        .await;
    r.assert_is("250 2.0.0");
    w.wait_log("authorized=user scanner", Duration::from_secs(2));

    // LOGIN, step by step.
    let c2 = SmtpClient::connect(w.smtp()).await;
    let mut c2 = c2.starttls(None).await;
    c2.cmd("AUTH LOGIN").await.assert_is("334");
    c2.cmd("c2Nhbm5lcg==").await.assert_is("334");
    c2.cmd("Y29ycmVjdCBob3JzZQ==").await.assert_is("235 2.7.0");
    // Cancelled exchange.
    let c3 = SmtpClient::connect(w.smtp()).await;
    let mut c3 = c3.starttls(None).await;
    c3.cmd("AUTH LOGIN").await.assert_is("334");
    c3.cmd("*").await.assert_is("501 5.7.0");
    c3.cmd("AUTH CRAM-MD5").await.assert_is("504 5.5.4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_auth_failures_close_the_session() {
    let hash = ward::smtp::relay::hash_password(b"pw").unwrap();
    let w = ward(&format!(
        "[smtp]\nmax_auth_failures = 2\n[[relay.user]]\nname = \"u\"\npassword_hash = \"{hash}\"\n"
    ));
    let c = SmtpClient::connect(w.smtp()).await;
    let mut c = c.starttls(None).await;
    c.cmd("AUTH PLAIN AHUAeA==").await.assert_is("535 5.7.8");
    c.cmd("AUTH PLAIN AHUAeQ==").await.assert_is("535 5.7.8");
    c.read_reply().await.assert_is("421 4.7.0");
    assert!(c.is_closed(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_header_authorizes_and_is_removed() {
    let secret = "t0p-s3cret-tenant-value-0123456789";
    let w = ward(&format!(
        "[relay]\nnetworks = []\n[relay.tenant_header]\nheader = \"X-Ward-Tenant\"\nnetworks = [\"127.0.0.0/8\"]\n\
         [[relay.tenant_header.tenant]]\nname = \"contoso\"\nsecret = \"{secret}\"\n"
    ));
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("mail.protection.outlook.test").await;
    // Without the header: accepted at RCPT, refused at the end of DATA.
    let r = c
        .send_message(
            "a@contoso.example",
            &["b@x.example"],
            b"Subject: no header\r\n\r\nx\r\n",
        )
        .await;
    r.assert_is("550 5.7.1");
    // Wrong secret.
    let r = c
        .send_message(
            "a@contoso.example",
            &["b@x.example"],
            b"X-Ward-Tenant: wrong-secret-wrong-secret-0000\r\nSubject: w\r\n\r\nx\r\n",
        )
        .await;
    r.assert_is("550 5.7.1");
    // Right secret.
    let msg = format!("X-Ward-Tenant: {secret}\r\nSubject: ok\r\n\r\nx\r\n");
    c.send_message("a@contoso.example", &["b@x.example"], msg.as_bytes())
        .await
        .assert_is("250 2.0.0");
    w.wait_log("authorized=tenant contoso", Duration::from_secs(2));
    assert!(
        !w.log().contains(secret),
        "the tenant secret must never be logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_command_line_is_drained_and_refused() {
    let w = ward("");
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    let long = format!("NOOP {}\r\n", "x".repeat(100_000));
    c.send_raw(long.as_bytes()).await;
    c.read_reply().await.assert_is("500 5.5.2");
    // The session is still in step.
    c.cmd("NOOP").await.assert_is("250 2.0.0");
    c.cmd(&format!(
        "MAIL FROM:<a@hospital.example> ENVID={}",
        "A".repeat(2100)
    ))
    .await
    .assert_is("500 5.5.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_limits_are_enforced_after_draining() {
    let w = ward("[smtp]\nmax_message_size = 4096\nmax_recipients = 3\n");
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    // Declared too big.
    c.cmd("MAIL FROM:<a@hospital.example> SIZE=5000")
        .await
        .assert_is("552 5.3.4");
    // Too many recipients.
    c.cmd("MAIL FROM:<a@hospital.example>").await.assert_is("250");
    for i in 0..3 {
        c.cmd(&format!("RCPT TO:<r{i}@x.example>")).await.assert_is("250");
    }
    c.cmd("RCPT TO:<r4@x.example>").await.assert_is("452 4.5.3");
    // Too big in fact: drained, answered at the end.
    c.cmd("DATA").await.assert_is("354");
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..200 {
        body.extend_from_slice(&[b'y'; 78]);
        body.extend_from_slice(b"\r\n");
    }
    c.send_raw(&body).await;
    c.send_raw(b".\r\n").await;
    c.read_reply().await.assert_is("552 5.3.4");
    c.cmd("NOOP").await.assert_is("250");
    // A line over 998 octets.
    c.cmd("MAIL FROM:<a@hospital.example>").await.assert_is("250");
    c.cmd("RCPT TO:<r@x.example>").await.assert_is("250");
    c.cmd("DATA").await.assert_is("354");
    c.send_raw(format!("Subject: long\r\n\r\n{}\r\n.\r\n", "z".repeat(1200)).as_bytes())
        .await;
    c.read_reply().await.assert_is("550 5.6.0");
    c.cmd("NOOP").await.assert_is("250");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_line_endings_in_data_are_refused() {
    let w = ward("");
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    for body in [
        &b"Subject: x\r\n\r\nbare\nlf\r\n"[..],
        b"Subject: x\r\n\r\nbare\rcr\r\n",
    ] {
        c.cmd("MAIL FROM:<a@hospital.example>").await.assert_is("250");
        c.cmd("RCPT TO:<r@x.example>").await.assert_is("250");
        c.cmd("DATA").await.assert_is("354");
        c.send_raw(body).await;
        c.send_raw(b".\r\n").await;
        c.read_reply().await.assert_is("550 5.5.2");
    }
}

/// Each smuggling vector is followed by a complete second transaction. None
/// may end DATA early: the client must get exactly one final reply (a
/// refusal, since the data holds bare line endings) and no second 250.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_vectors_never_end_data_or_make_a_second_message() {
    let w = ward("");
    for vector in [
        &b"\n.\r\n"[..],
        b"\n.\n",
        b"\r.\r\n",
        b"\r.\r",
        b"\r\n.\n",
        b"\n..\r\n",
    ] {
        let mut c = SmtpClient::connect(w.smtp()).await;
        c.ehlo("client.test").await;
        c.cmd("MAIL FROM:<a@hospital.example>").await.assert_is("250");
        c.cmd("RCPT TO:<r@x.example>").await.assert_is("250");
        c.cmd("DATA").await.assert_is("354");
        let mut data = b"Subject: smuggle\r\n\r\nfirst".to_vec();
        data.extend_from_slice(vector);
        data.extend_from_slice(b"MAIL FROM:<admin@hospital.example>\r\nRCPT TO:<victim@x.example>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n");
        c.send_raw(&data).await;
        let r = c.read_reply().await;
        assert_eq!(r.code, 550, "vector {vector:?}: {r:?}");
        // Nothing else arrives: no replies to smuggled commands.
        c.cmd("NOOP").await.assert_is("250 2.0.0");
    }
    assert_eq!(w.log_count("message queued"), 0, "{}", w.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_addresses_get_precise_replies() {
    let w = ward("");
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    for bad in [
        "<a@@b.example>",
        "<a b@c.example>",
        "<@nodomain>",
        "<a@-bad-.example>",
        "a@b.example",
        "<a@b.example",
        "<.a@b.example>",
    ] {
        let r = c.cmd(&format!("MAIL FROM:{bad}")).await;
        assert_eq!(r.code, 501, "MAIL FROM:{bad} got {r:?}");
    }
    c.cmd("MAIL FROM:<a@hospital.example>").await.assert_is("250");
    for bad in [
        "<a@@b.example>",
        "<a b@c.example>",
        "<>",
        "<a@b..example>",
        "<a@[999.1.1.1]>",
    ] {
        let r = c.cmd(&format!("RCPT TO:{bad}")).await;
        r.assert_is("501 5.1.3");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_loops_are_refused() {
    let w = ward("[smtp]\nmax_received_headers = 5\n");
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    let mut msg = String::new();
    for i in 0..6 {
        msg.push_str(&format!(
            "Received: from hop{i}.test by hop{}.test; Fri, 4 Dec 2026 10:00:00 +0000\r\n",
            i + 1
        ));
    }
    msg.push_str("Subject: loop\r\n\r\nx\r\n");
    c.send_message("a@hospital.example", &["b@x.example"], msg.as_bytes())
        .await
        .assert_is("554 5.4.6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_total_and_per_ip() {
    let w = ward("[smtp]\nmax_connections_per_ip = 2\n");
    let _a = SmtpClient::connect(w.smtp()).await;
    let _b = SmtpClient::connect(w.smtp()).await;
    let mut c = SmtpClient::connect_raw(w.smtp()).await;
    c.read_reply().await.assert_is("421 4.7.0");
    drop(_a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _d = SmtpClient::connect(w.smtp()).await;

    let w2 = ward("[smtp]\nmax_connections = 1\n");
    let _a = SmtpClient::connect(w2.smtp()).await;
    let mut c = SmtpClient::connect_raw(w2.smtp()).await;
    c.read_reply().await.assert_is("421 4.7.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talking_before_the_greeting_is_refused() {
    let w = ward("[smtp]\ngreeting_delay = \"500ms\"\n");
    let mut c = SmtpClient::connect_raw(w.smtp()).await;
    c.send_raw(b"EHLO impatient.test\r\n").await;
    c.read_reply().await.assert_is("554 5.5.1");
    assert!(c.is_closed(Duration::from_secs(2)).await);
    // A patient client is greeted after the delay.
    let mut ok = SmtpClient::connect(w.smtp()).await;
    ok.ehlo("patient.test").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_time_out_and_error_storms_are_cut_off() {
    let w = ward("[smtp]\ncommand_timeout = \"1s\"\nmax_errors = 3\n");
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.read_reply().await.assert_is("421 4.4.2");
    let mut c = SmtpClient::connect(w.smtp()).await;
    for _ in 0..2 {
        c.cmd("BOGUS").await.assert_is("500 5.5.1");
    }
    c.cmd("BOGUS").await.assert_is("500 5.5.1");
    c.read_reply().await.assert_is("421 4.7.0");
    assert!(c.is_closed(Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_does_not_stall_others() {
    let w = ward("");
    // One client opens DATA and goes silent; others keep working.
    let mut stuck = SmtpClient::connect(w.smtp()).await;
    stuck.ehlo("slow.test").await;
    stuck.cmd("MAIL FROM:<a@hospital.example>").await.assert_is("250");
    stuck.cmd("RCPT TO:<b@x.example>").await.assert_is("250");
    stuck.cmd("DATA").await.assert_is("354");
    stuck.send_raw(b"Subject: half").await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let addr = w.smtp();
        tasks.push(tokio::spawn(async move {
            let mut c = SmtpClient::connect(addr).await;
            c.ehlo("fast.test").await;
            c.send_message(
                "a@hospital.example",
                &[&format!("r{i}@x.example")],
                b"Subject: f\r\n\r\nx\r\n",
            )
            .await
            .code
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 250);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_content_in_logs() {
    let w = ward("");
    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    let r = c
        .send_message(
            "a@hospital.example",
            &["b@x.example"],
            b"Subject: Diagnosis for SSN 078-05-1120\r\n\r\nPatient MRN 99887766 has condition X\r\n",
        )
        .await;
    r.assert_is("250 2.0.0");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = w.log();
    for secret in ["Diagnosis", "078-05-1120", "99887766", "condition X"] {
        assert!(!log.contains(secret), "content leaked into the log: {secret}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificate_fingerprint_authorizes_relay() {
    let ca = common::TestCa::new();
    let allowed = ca.issue(&["connector.hospital.example"]);
    let other = ca.issue(&["someone-else.example"]);
    let der = rustls_pemfile::certs(&mut allowed.cert_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let fp = ward::tls::fingerprint(&der);
    let hex: Vec<String> = fp.iter().map(|b| format!("{b:02X}")).collect();
    let w = ward(&format!(
        "[relay]\nnetworks = []\n[[relay.client_certificate]]\nname = \"m365-connector\"\nsha256 = \"{}\"\n",
        hex.join(":")
    ));
    let pair = |c: &common::CertPair| Some((c.cert_pem.clone().into_bytes(), c.key_pem.clone().into_bytes()));

    // The configured certificate may relay.
    let c = SmtpClient::connect(w.smtp()).await;
    let mut c = c.starttls(pair(&allowed)).await;
    c.send_message("a@hospital.example", &["b@x.example"], b"Subject: c\r\n\r\nx\r\n")
        .await
        .assert_is("250 2.0.0");
    w.wait_log("authorized=certificate m365-connector", Duration::from_secs(2));

    // Another certificate, or none, may not.
    for cert in [pair(&other), None] {
        let c = SmtpClient::connect(w.smtp()).await;
        let mut c = c.starttls(cert).await;
        c.cmd("MAIL FROM:<a@hospital.example>").await.assert_is("250");
        c.cmd("RCPT TO:<b@x.example>").await.assert_is("550 5.7.1");
    }
}
