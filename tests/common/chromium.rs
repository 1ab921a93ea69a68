//! Headless Chromium (Debian's `chromium` package) driven over the DevTools
//! protocol, for tests that need a real browser.
//!
//! The protocol runs over a pair of pipes (`--remote-debugging-pipe`: the
//! browser reads commands on fd 3 and writes replies and events on fd 4,
//! each a JSON text ended by a NUL byte), so no debugging port is opened and
//! no WebSocket client is needed.
//!
//! The browser is shut off from everything but the site under test: every
//! host name resolves to nothing except those mapped to loopback with
//! [`Options::map_host`], background networking (updates, sync, metrics) is
//! off, and certificate errors are ignored only for the one public key given
//! to [`Options::trust_spki`] (`--ignore-certificate-errors-spki-list`, which
//! Chromium honours only with a profile directory of its own, as here).
//!
//! `Chromium::launch` fails with a message saying how to install the
//! browser when it is missing; tests must not pass without it.
//!
//! Used as `#[path = "common/chromium.rs"] mod chromium;` (not part of
//! `common`, so the other test binaries don't carry it).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// How long one DevTools command or awaited event may take.
const STEP: Duration = Duration::from_secs(15);

/// What the browser may reach and trust.
#[derive(Default)]
pub struct Options {
    /// (host name, loopback IP) pairs the browser resolves.
    pub hosts: Vec<(String, String)>,
    /// SHA-256 of certificate public keys (SPKI) whose errors are ignored.
    pub spki_sha256: Vec<[u8; 32]>,
}

impl Options {
    pub fn map_host(mut self, host: &str, ip: std::net::IpAddr) -> Self {
        assert!(ip.is_loopback(), "tests reach loopback addresses only");
        self.hosts.push((host.to_string(), ip.to_string()));
        self
    }

    /// Trusts a certificate by its SubjectPublicKeyInfo (DER).
    pub fn trust_spki(mut self, spki_der: &[u8]) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, spki_der);
        let mut h = [0u8; 32];
        h.copy_from_slice(d.as_ref());
        self.spki_sha256.push(h);
        self
    }
}

/// The browser binary: `$WARD_CHROMIUM`, else `chromium` on PATH.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WARD_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
}

/// A running headless Chromium.
pub struct Chromium {
    child: Child,
    commands: std::io::PipeWriter,
    replies: UnboundedReceiver<Value>,
    /// Events read while waiting for something else.
    events: VecDeque<Value>,
    next_id: u64,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    _profile: tempfile::TempDir,
}

/// One tab, attached with a flat session.
pub struct Tab {
    pub session: String,
}

impl Chromium {
    /// Starts the browser. Err says what is missing.
    pub fn launch(opts: &Options) -> Result<Chromium, String> {
        let Some(bin) = find_chromium() else {
            return Err(
                "headless Chromium is needed for this test and was not found: install \
                 Debian's package (`apt-get install chromium`; .ci/run does) or set \
                 WARD_CHROMIUM to the browser binary"
                    .into(),
            );
        };
        let profile = tempfile::Builder::new()
            .prefix("ward-chromium-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let (cmd_read, cmd_write) = std::io::pipe().map_err(|e| e.to_string())?;
        let (reply_read, reply_write) = std::io::pipe().map_err(|e| e.to_string())?;
        let mut rules: Vec<String> = opts.hosts.iter().map(|(h, ip)| format!("MAP {h} {ip}")).collect();
        rules.push("MAP * ~NOTFOUND".into());
        let spki: Vec<String> = opts
            .spki_sha256
            .iter()
            .map(|h| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(h)
            })
            .collect();
        let mut cmd = Command::new(&bin);
        cmd.args([
            "--headless",
            "--remote-debugging-pipe",
            // Tests run as root in CI, where the sandbox can't start.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--metrics-recording-only",
            "--password-store=basic",
            "--use-mock-keychain",
            "--hide-scrollbars",
            "--mute-audio",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--host-resolver-rules={}", rules.join(", ")))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if !spki.is_empty() {
            cmd.arg(format!(
                "--ignore-certificate-errors-spki-list={}",
                spki.join(",")
            ));
        }
        let cmd_fd = OwnedFd::from(cmd_read);
        let reply_fd = OwnedFd::from(reply_write);
        let (a, b) = (cmd_fd.as_raw_fd(), reply_fd.as_raw_fd());
        // SAFETY: only async-signal-safe calls (dup, dup2, fcntl) between
        // fork and exec. The pipe ends are first moved above fd 4 so that
        // neither dup2 overwrites the other's source.
        unsafe {
            cmd.pre_exec(move || {
                let a2 = libc::fcntl(a, libc::F_DUPFD, 10);
                let b2 = libc::fcntl(b, libc::F_DUPFD, 10);
                if a2 < 0 || b2 < 0 || libc::dup2(a2, 3) < 0 || libc::dup2(b2, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        drop(cmd_fd);
        drop(reply_fd);

        let stderr_text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            let keep = stderr_text.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut k = keep.lock().unwrap();
                    if k.len() < 64 * 1024 {
                        k.push_str(&line);
                        k.push('\n');
                    }
                }
            });
        }
        let (tx, rx) = unbounded_channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(reply_read);
            loop {
                let mut buf = Vec::new();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if buf.last() == Some(&0) {
                            buf.pop();
                        }
                        if let Ok(v) = serde_json::from_slice::<Value>(&buf)
                            && tx.send(v).is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Chromium {
            child,
            commands: cmd_write,
            replies: rx,
            events: VecDeque::new(),
            next_id: 0,
            stderr: stderr_text,
            _profile: profile,
        })
    }

    /// What the browser wrote on stderr (for failure messages).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    async fn next_message(&mut self) -> Value {
        match tokio::time::timeout(STEP, self.replies.recv()).await {
            Ok(Some(v)) => v,
            Ok(None) => panic!("Chromium closed the DevTools pipe; stderr:\n{}", self.stderr()),
            Err(_) => panic!("Chromium did not answer in {STEP:?}; stderr:\n{}", self.stderr()),
        }
    }

    /// Sends a command (to a tab's session, or the browser) and returns its
    /// result; a protocol error panics with the method's name.
    pub async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("writing to Chromium: {e}; stderr:\n{}", self.stderr()));
        loop {
            let v = self.next_message().await;
            if v.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(err) = v.get("error") {
                    panic!("{method} failed: {err}");
                }
                return v.get("result").cloned().unwrap_or(Value::Null);
            }
            if v.get("method").is_some() {
                self.events.push_back(v);
            }
        }
    }

    /// Sends a command to a tab.
    pub async fn on(&mut self, tab: &Tab, method: &str, params: Value) -> Value {
        let session = tab.session.clone();
        self.call(Some(&session), method, params).await
    }

    /// Forgets the events read so far (call before an action whose event
    /// you then wait for).
    pub fn clear_events(&mut self) {
        self.events.clear();
        while let Ok(v) = self.replies.try_recv() {
            drop(v);
        }
    }

    /// Waits for the event `method` from `session`.
    pub async fn event(&mut self, session: &str, method: &str) -> Value {
        let matches = |v: &Value| {
            v.get("method").and_then(Value::as_str) == Some(method)
                && v.get("sessionId").and_then(Value::as_str) == Some(session)
        };
        if let Some(i) = self.events.iter().position(matches) {
            return self.events.remove(i).unwrap();
        }
        loop {
            let v = self.next_message().await;
            if matches(&v) {
                return v;
            }
            self.events.push_back(v);
        }
    }

    /// Opens a tab and attaches to it.
    pub async fn new_tab(&mut self) -> Tab {
        let r = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let target = r["targetId"].as_str().expect("targetId").to_string();
        let r = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .await;
        let session = r["sessionId"].as_str().expect("sessionId").to_string();
        let tab = Tab { session };
        self.on(&tab, "Page.enable", json!({})).await;
        self.on(&tab, "Runtime.enable", json!({})).await;
        tab
    }

    /// Loads `url` and waits for its load event.
    pub async fn navigate(&mut self, tab: &Tab, url: &str) {
        self.clear_events();
        let r = self.on(tab, "Page.navigate", json!({ "url": url })).await;
        if let Some(e) = r.get("errorText") {
            panic!("navigation failed: {e}; stderr:\n{}", self.stderr());
        }
        self.event(&tab.session, "Page.loadEventFired").await;
    }

    /// Evaluates a JavaScript expression in the page (DevTools runs it
    /// outside the page's Content-Security-Policy) and returns its value.
    pub async fn eval(&mut self, tab: &Tab, expr: &str) -> Value {
        let r = self
            .on(
                tab,
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true }),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expr:?} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// The page's visible text.
    pub async fn text(&mut self, tab: &Tab) -> String {
        self.eval(tab, "document.body.innerText")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Moves keyboard focus to the element matching `selector`.
    pub async fn focus(&mut self, tab: &Tab, selector: &str) {
        let doc = self.on(tab, "DOM.getDocument", json!({})).await;
        let root = doc["root"]["nodeId"].clone();
        let r = self
            .on(
                tab,
                "DOM.querySelector",
                json!({ "nodeId": root, "selector": selector }),
            )
            .await;
        let node = r["nodeId"].as_u64().unwrap_or(0);
        assert!(node != 0, "no element matches {selector:?}");
        self.on(tab, "DOM.focus", json!({ "nodeId": node })).await;
    }

    /// Types text as the keyboard would into the focused element.
    pub async fn type_text(&mut self, tab: &Tab, text: &str) {
        self.on(tab, "Input.insertText", json!({ "text": text })).await;
    }

    /// Presses a key ("Enter" or "Tab") on the focused element.
    pub async fn press(&mut self, tab: &Tab, key: &str) {
        let (code, text) = match key {
            "Enter" => (13, "\r"),
            "Tab" => (9, ""),
            other => panic!("no key {other}"),
        };
        for kind in ["keyDown", "keyUp"] {
            let mut p = json!({
                "type": kind, "key": key, "code": key,
                "windowsVirtualKeyCode": code, "nativeVirtualKeyCode": code,
            });
            if kind == "keyDown" && !text.is_empty() {
                p["text"] = json!(text);
            }
            self.on(tab, "Input.dispatchKeyEvent", p).await;
        }
    }

    /// Presses Enter on the focused element and waits for the page that
    /// its form submission loads.
    pub async fn submit_with_enter(&mut self, tab: &Tab) {
        self.clear_events();
        self.press(tab, "Enter").await;
        self.event(&tab.session, "Page.loadEventFired").await;
    }

    /// Makes the tab a phone screen (CSS pixels, touch, mobile viewport).
    pub async fn phone(&mut self, tab: &Tab, width: u32, height: u32) {
        self.on(
            tab,
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 2, "mobile": true }),
        )
        .await;
    }

    /// A PNG of the whole page, written to `path`.
    pub async fn screenshot(&mut self, tab: &Tab, path: &Path) {
        use base64::Engine;
        let m = self.on(tab, "Page.getLayoutMetrics", json!({})).await;
        let w = m["cssContentSize"]["width"].as_f64().unwrap_or(800.0);
        let h = m["cssContentSize"]["height"].as_f64().unwrap_or(600.0);
        let r = self
            .on(
                tab,
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": { "x": 0, "y": 0, "width": w, "height": h, "scale": 1 },
                }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
