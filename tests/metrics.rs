//! The admin listener's /metrics against the real `ward` process over
//! loopback: values move as mail is accepted, delivered, held and
//! rate-limited; no label carries an address; and, where `promtool` is
//! installed (always in CI), `promtool check metrics` accepts the output.

mod common;

use std::time::{Duration, Instant};

use common::client::SmtpClient;
use common::metrics::{get, scrape, value};
use common::mx::TestMx;
use common::process::Ward;

/// A valid SSN with context, and a date of birth: PHI by the built-in rules.
const PHI_BODY: &[u8] = b"Subject: follow-up\r\n\r\nPatient SSN 219-44-8213, DOB: 04/17/1961.\r\n";
const CLEAN_BODY: &[u8] = b"Subject: lunch\r\n\r\nSee you at noon.\r\n";

/// Scrapes until `series` reaches `want` (metrics of deliveries move after
/// the MX has the message).
async fn wait_value(w: &Ward, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = scrape(w).await;
        if value(&body, series) >= want {
            return body;
        }
        if Instant::now() > deadline {
            panic!("{series} never reached {want}:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_mail_is_accepted_delivered_held_and_rate_limited() {
    let mx = TestMx::plain().await;
    let w = Ward::start(&format!(
        "[delivery]\nsmart_host = \"[127.0.0.1]:{}\"\ntls_policy = \"may\"\n\
         [rate_limit]\nsender_messages = \"3/1h\"\n",
        mx.port()
    ));
    let before = scrape(&w).await;
    assert_eq!(value(&before, "ward_messages_accepted_total"), 0.0);
    assert_eq!(
        value(&before, "ward_rate_limited_total{rule=\"sender_messages\"}"),
        0.0
    );
    assert!(
        before.contains("ward_rate_limited_total{rule=\"sender_messages\"} 0"),
        "{before}"
    );

    let mut c = SmtpClient::connect(w.smtp()).await;
    c.ehlo("client.test").await;
    for _ in 0..2 {
        c.send_message("alice@hospital.example", &["bob@clinic.example"], CLEAN_BODY)
            .await
            .assert_is("250 2.0.0");
    }
    // PHI to a server without TLS and no portal: protected, it waits.
    c.send_message("alice@hospital.example", &["carol@clinic.example"], PHI_BODY)
        .await
        .assert_is("250 2.0.0");
    c.cmd("MAIL FROM:<alice@hospital.example>")
        .await
        .assert_is("450 4.7.0");
    c.quit().await;
    mx.wait_for(2, Duration::from_secs(10)).await;

    wait_value(
        &w,
        "ward_deliveries_total{outcome=\"delivered\",tls_version=\"none\"}",
        2.0,
    )
    .await;
    // The protected copy could not get verified TLS: it waits for a retry.
    wait_value(
        &w,
        "ward_deliveries_total{outcome=\"tls_policy\",tls_version=\"none\"}",
        1.0,
    )
    .await;
    // The delivered messages leave the queue when the writer records
    // their results, just after the delivery is counted.
    let m = wait_value(&w, "ward_queue_messages", 1.0).await;
    assert_eq!(value(&m, "ward_messages_accepted_total"), 3.0, "{m}");
    assert!(value(&m, "ward_received_bytes_total") > (2 * CLEAN_BODY.len() + PHI_BODY.len()) as f64);
    assert_eq!(
        value(&m, "ward_messages_rejected_total{reason=\"rate_limited\"}"),
        1.0
    );
    assert_eq!(
        value(&m, "ward_rate_limited_total{rule=\"sender_messages\"}"),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "ward_connections_total{listener=\"smtp\",result=\"accepted\"}"
        ),
        1.0
    );
    assert!(value(&m, "ward_smtp_replies_total{class=\"2xx\"}") >= 12.0, "{m}");
    assert_eq!(value(&m, "ward_smtp_replies_total{class=\"4xx\"}"), 1.0, "{m}");
    assert_eq!(value(&m, "ward_scan_duration_seconds_count"), 3.0, "{m}");
    assert_eq!(value(&m, "ward_findings_total{kind=\"ssn\"}"), 1.0, "{m}");
    assert_eq!(value(&m, "ward_findings_total{kind=\"dob\"}"), 1.0, "{m}");
    assert_eq!(value(&m, "ward_policy_decisions_total{action=\"deliver\"}"), 2.0);
    assert_eq!(value(&m, "ward_policy_decisions_total{action=\"protect\"}"), 1.0);
    assert_eq!(value(&m, "ward_delivery_latency_seconds_count"), 2.0, "{m}");
    // The held PHI message is the queue.
    assert_eq!(value(&m, "ward_queue_messages"), 1.0, "{m}");
    assert_eq!(value(&m, "ward_queue_copies"), 1.0, "{m}");
    assert!(value(&m, "ward_queue_oldest_message_age_seconds") < 60.0, "{m}");
    let (free, size) = (
        value(&m, "ward_data_disk_free_bytes"),
        value(&m, "ward_data_disk_size_bytes"),
    );
    assert!(free > 0.0 && size >= free, "{m}");

    // Nothing that names a person, a domain or content.
    for needle in ["@", "hospital.example", "clinic.example", "219-44", "follow-up"] {
        assert!(!m.contains(needle), "{needle:?} in /metrics:\n{m}");
    }

    let (status, _, _) = get(w.listener("admin"), "/queue").await;
    assert!(status.contains(" 404 "), "{status}");

    promtool_check(&m);
}

/// Runs promtool with `args` (and `stdin`), in `dir`; None where promtool
/// is missing, which passes with a note, except under CI, where .ci/run
/// installs it and a missing promtool is a failure.
fn promtool(args: &[&str], stdin: &str, dir: &std::path::Path) -> Option<(bool, String)> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is not installed, and under CI it must be (.ci/run installs the Debian package prometheus)"
            );
            eprintln!(
                "promtool not installed: `promtool {}` skipped (apt-get install prometheus)",
                args.join(" ")
            );
            return None;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), said))
}

/// `promtool check metrics` on the exposition: no errors and no lint
/// warnings (promtool exits 0 with warnings on its output).
fn promtool_check(body: &str) {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some((ok, said)) = promtool(&["check", "metrics"], body, here) {
        assert!(ok, "promtool check metrics failed:\n{said}");
        assert!(said.trim().is_empty(), "promtool check metrics:\n{said}");
    }
}

/// The `ward_*` names in a text.
fn ward_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("ward_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let before_ok = i == 0 || !rest[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
        if before_ok {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alert_rules_use_only_exported_metrics_and_pass_promtool() {
    let w = Ward::start("");
    let body = scrape(&w).await;
    // Exported series names: each family, and a histogram's parts.
    let mut exported = std::collections::BTreeSet::new();
    for l in body.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            exported.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_count", "_sum"] {
                    exported.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let rules = std::fs::read_to_string(conf.join("prometheus/ward-alerts.yml")).unwrap();
    let dashboard = std::fs::read_to_string(conf.join("grafana/ward-dashboard.json")).unwrap();
    for (file, text) in [("ward-alerts.yml", &rules), ("ward-dashboard.json", &dashboard)] {
        let used = ward_names(text);
        assert!(used.len() >= 5, "{file} uses {used:?}");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics Ward does not export: {unknown:?}"
        );
    }
    // Every panel of the dashboard queries something.
    let dash: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(
            !targets.is_empty()
                && targets
                    .iter()
                    .all(|t| t["expr"].as_str().is_some_and(|e| e.contains("ward_"))),
            "{p}"
        );
    }
    // The alert names the issue asks for.
    for alert in [
        "WardQueueGrowing",
        "WardOldestMessageOverAnHour",
        "WardPortalFallbackSpike",
        "WardTlsFailures",
        "WardRateLimitStorm",
        "WardDataDiskFilling",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
    let dir = conf.join("prometheus");
    if let Some((ok, said)) = promtool(&["check", "rules", "ward-alerts.yml"], "", &dir) {
        assert!(ok, "promtool check rules:\n{said}");
    }
    // Each alert fires on the series it is written for and stays quiet on a
    // healthy Ward.
    if let Some((ok, said)) = promtool(&["test", "rules", "ward-alerts.test.yml"], "", &dir) {
        assert!(ok, "promtool test rules:\n{said}");
    }
}
