//! The command line: what an admin sees.

mod common;

use common::process::ward_cli;

fn temp_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn version_and_help() {
    let (status, out, _) = ward_cli(&["--version"]);
    assert!(status.success());
    assert!(out.starts_with("ward "), "{out}");
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["check-config", "--help"],
        &["hash-password", "--help"],
        &["sandbox", "--help"],
        &["sandbox", "show", "--help"],
    ] {
        let (status, out, _) = ward_cli(args);
        assert!(status.success(), "{args:?}");
        assert!(out.contains("Usage: ward"), "{args:?}: {out}");
    }
    let (status, _, err) = ward_cli(&["frobnicate"]);
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("unrecognized subcommand"), "{err}");
}

#[test]
fn check_config_accepts_the_shipped_files() {
    for f in ["conf/ward.toml", "conf/try-it.toml", "conf/container.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
        let (status, out, err) = ward_cli(&["check-config", "--config", path.to_str().unwrap()]);
        assert!(status.success(), "{f}: {err}");
        assert!(out.contains("configuration is valid"), "{out}");
    }
}

#[test]
fn check_config_names_file_line_and_problem() {
    let (_d, path) = temp_file("[server]\ndata_dir = \"./var\"\n\n[smtp]\nmax_message_size = \"ten megs\"\n");
    let (status, _, err) = ward_cli(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1));
    assert!(err.starts_with(&format!("{}:5:", path.display())), "{err}");
    assert!(err.contains("ten megs"), "{err}");

    let (_d, path) = temp_file("[relay]\nnetworks = [\"10.0.0.0/8\"]\nopen_relay = true\n");
    let (status, _, err) = ward_cli(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains(":3:") && err.contains("unknown field"), "{err}");

    let (status, _, err) = ward_cli(&["check-config", "--config", "/nonexistent/ward.toml"]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("cannot read"), "{err}");

    // serve refuses a bad file the same way, and says what to do.
    let (_d, path) = temp_file("[smtp]\nmax_errors = 0\n");
    let (status, _, err) = ward_cli(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1));
    assert!(err.contains(":2:") && err.contains("check-config"), "{err}");
}

#[test]
fn check_config_loads_the_dkim_key() {
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dkim");
    let dkim = |key: &std::path::Path| {
        format!(
            "[dkim]\ndomain = \"hospital.example\"\nselector = \"ward\"\nkey_file = \"{}\"\n",
            key.display()
        )
    };
    for key in ["test-rsa.pem", "test-ed25519.pem"] {
        let (_d, path) = temp_file(&dkim(&keys.join(key)));
        let (status, out, err) = ward_cli(&["check-config", "--config", path.to_str().unwrap()]);
        assert!(status.success(), "{key}: {err}");
        assert!(out.contains("configuration is valid"), "{out}");
    }
    // A public key where the private key belongs, and a missing file.
    for key in [keys.join("test-rsa.p"), keys.join("absent.pem")] {
        let (_d, path) = temp_file(&dkim(&key));
        let (status, _, err) = ward_cli(&["check-config", "--config", path.to_str().unwrap()]);
        assert_eq!(status.code(), Some(1), "{err}");
        // Placed at the key_file line (4), as a reload would log it.
        assert!(
            err.starts_with(&format!("{}:4:", path.display()))
                && err.contains("dkim.key_file")
                && err.contains(&key.display().to_string()),
            "{err}"
        );
    }
}

#[test]
fn hash_password_makes_a_hash_the_config_accepts() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret pass\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let (_d, path) = temp_file(&format!(
        "[[relay.user]]\nname = \"scanner\"\npassword_hash = \"{hash}\"\n"
    ));
    let (status, _, err) = ward_cli(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(status.success(), "{err}");
}

#[test]
fn config_reference_lists_every_setting() {
    let (status, out, _) = ward_cli(&["config-reference"]);
    assert!(status.success());
    for key in [
        "smtp.max_message_size",
        "delivery.tls_policy",
        "queue.retry_schedule",
        "relay.tenant_header.header",
    ] {
        assert!(out.contains(&format!("`{key}`")), "{key}");
    }
}

/// Starts `ward serve` with `args` and `env` on a test config, and returns
/// its stderr up to the "ward started" line.
fn startup_log(args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ward.toml");
    std::fs::write(&config, common::process::base_config(dir.path())).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ward"));
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let started = line.contains("ward started");
        lines.push(line);
        if started {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.last().is_some_and(|l| l.contains("ward started")),
        "{lines:?}"
    );
    lines
}

#[test]
fn log_format_json_gives_one_object_per_line() {
    let lines = startup_log(&["--log-format", "json"], &[]);
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
        assert!(v["fields"]["message"].is_string(), "{l}");
    }
    // The environment variable does the same, and the flag wins over it.
    let lines = startup_log(&[], &[("WARD_LOG_FORMAT", "json")]);
    assert!(lines.iter().all(|l| l.starts_with('{')), "{lines:?}");
    let lines = startup_log(&["--log-format", "text"], &[("WARD_LOG_FORMAT", "json")]);
    assert!(lines.iter().all(|l| !l.starts_with('{')), "{lines:?}");
    let (status, _, err) = ward_cli(&["serve", "--log-format", "xml"]);
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("possible values: text, json"), "{err}");
}

#[test]
fn under_journald_text_lines_leave_the_time_to_the_journal() {
    let plain = startup_log(&[], &[]);
    assert!(plain[0].starts_with("20"), "a timestamp first: {}", plain[0]);
    let journal = startup_log(&[], &[("JOURNAL_STREAM", "8:12345")]);
    for l in &journal {
        assert!(!l.starts_with("20") && !l.contains('\x1b'), "{l}");
        assert!(
            l.trim_start().starts_with(['I', 'W', 'E', 'D', 'T']),
            "a level first: {l}"
        );
    }
}

/// check-config loads the TLS files as `serve` and a reload would: a
/// missing file, a file that holds no certificate, and a key that is not
/// the certificate's each fail at their line; the matching pair passes.
#[test]
fn check_config_loads_the_certificate_and_key() {
    let ca = common::TestCa::new();
    let (a, b) = (ca.issue(&["ward.test"]), ca.issue(&["ward.test"]));
    let tls = |cert: &std::path::Path, key: &std::path::Path| {
        format!(
            "[server]\ndata_dir = \"./var\"\n\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            cert.display(),
            key.display()
        )
    };
    let (_d, path) = temp_file(&tls(&a.cert_file, &a.key_file));
    let (status, out, err) = ward_cli(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(status.success(), "{err}");
    assert!(out.contains("configuration is valid"), "{out}");
    for (cert, key, line, what) in [
        (
            std::path::Path::new("/nonexistent/ward.crt"),
            &a.key_file,
            5,
            "tls.cert_file",
        ),
        (&a.key_file, &a.key_file, 5, "tls.cert_file"),
        (&a.cert_file, &b.key_file, 6, "tls.key_file"),
    ] {
        let (_d, path) = temp_file(&tls(cert, key));
        let (status, _, err) = ward_cli(&["check-config", "--config", path.to_str().unwrap()]);
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(
            err.starts_with(&format!("{}:{line}:1: {what}: ", path.display())),
            "{err}"
        );
    }
}

/// The provider examples (conf/examples/) are valid configurations: each
/// is checked with the files it names supplied (a certificate from a test
/// CA, a temporary data directory).
#[test]
fn check_config_accepts_the_provider_examples() {
    let ca = common::ca::TestCa::new();
    let cert = ca.issue(&["ward.hospital.example"]);
    let tmp = tempfile::tempdir().unwrap();
    for f in ["microsoft365.toml", "google-workspace.toml"] {
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("conf/examples")
            .join(f);
        let mut text = std::fs::read_to_string(&shipped).unwrap();
        for (from, to) in [
            ("/etc/ward/tls/fullchain.pem", cert.cert_file.to_str().unwrap()),
            ("/etc/ward/tls/privkey.pem", cert.key_file.to_str().unwrap()),
            ("/var/lib/ward", tmp.path().to_str().unwrap()),
            (
                "REPLACE-with-openssl-rand-hex-24-output",
                "3f9c2a7d41e8b6c05d92f1a8e4b7c3d6a2f9e1b8c4d7a3e6",
            ),
        ] {
            assert!(text.contains(from), "{f} no longer names {from}");
            text = text.replace(from, to);
        }
        for t in [
            "mode = \"live\"",
            "[relay.tenant_header]",
            "require_tls = true",
            "enabled = true",
        ] {
            assert!(text.contains(t), "{f}: {t}");
        }
        let path = tmp.path().join(f);
        std::fs::write(&path, &text).unwrap();
        let (status, out, err) = ward_cli(&["check-config", "--config", path.to_str().unwrap()]);
        assert!(status.success(), "{f}: {err}");
        assert!(out.contains("configuration is valid"), "{out}");
        // As shipped, the placeholder secret is refused with what to do.
        let placeholder = text.replace(
            "3f9c2a7d41e8b6c05d92f1a8e4b7c3d6a2f9e1b8c4d7a3e6",
            "REPLACE-with-openssl-rand-hex-24-output",
        );
        std::fs::write(&path, placeholder).unwrap();
        let (status, _, err) = ward_cli(&["check-config", "--config", path.to_str().unwrap()]);
        assert_eq!(status.code(), Some(1), "{f}");
        assert!(err.contains("openssl rand -hex 24"), "{err}");
    }
}
