//! Runs the real `ward` binary for a test: a temporary data directory, a
//! configuration built from the test's TOML, listeners on ephemeral
//! loopback ports (discovered from Ward's "listening on" log lines), and the
//! log captured so tests can assert on it (and that it holds no content).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running Ward process.
pub struct Ward {
    child: Option<Child>,
    /// The data directory (kept across restarts).
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub config_path: PathBuf,
    /// Bound address per listener name.
    pub listeners: HashMap<String, SocketAddr>,
    log: Arc<Mutex<String>>,
    /// Extra environment variables for the process.
    env: Vec<(String, String)>,
    /// Extra arguments after `serve --config FILE` (e.g. `--sandbox`).
    args: Vec<String>,
}

/// The TOML every test config starts with: server settings, one STARTTLS
/// listener named "smtp" and the admin listener ("admin"), both on
/// ephemeral ports. Tests add other sections (never [server], [log] or
/// [admin]).
pub fn base_config(dir: &Path) -> String {
    format!(
        "[server]\nhostname = \"ward.test\"\ndata_dir = \"{}\"\nshutdown_timeout = \"10s\"\n\n\
         [log]\nlevel = \"info,ward=debug\"\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"smtp\"\naddress = \"127.0.0.1:0\"\ntls = \"starttls\"\n\n",
        dir.join("data").display()
    )
}

impl Ward {
    /// Starts Ward with `base_config` plus `extra` in a new temp dir.
    pub fn start(extra: &str) -> Ward {
        Ward::start_args(extra, &[])
    }

    /// As [`Ward::start`], with extra `serve` arguments (e.g. `--sandbox`).
    pub fn start_args(extra: &str, args: &[&str]) -> Ward {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut w = Ward::launch(&dir, &format!("{}{extra}", base_config(&dir)), args, &[]);
        w._tmp = Some(tmp);
        w
    }

    /// Starts Ward with exactly `config` (written to `dir/ward.toml`).
    pub fn start_in(dir: &Path, config: &str) -> Ward {
        Ward::launch(dir, config, &[], &[])
    }

    /// Like [`Ward::start_in`], with extra environment variables.
    pub fn start_in_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Ward {
        Ward::launch(dir, config, &[], env)
    }

    fn launch(dir: &Path, config: &str, args: &[&str], env: &[(&str, &str)]) -> Ward {
        let config_path = dir.join("ward.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut w = Ward {
            child: None,
            dir: dir.to_path_buf(),
            _tmp: None,
            config_path,
            listeners: HashMap::new(),
            log: Arc::new(Mutex::new(String::new())),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        w.spawn();
        w
    }

    fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .args(&self.args)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ward");
        let stderr = child.stderr.take().expect("stderr");
        let log = self.log.clone();
        let (tx, rx) = std::sync::mpsc::channel::<Option<(String, SocketAddr)>>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(found) = parse_listening(&line) {
                    let _ = tx.send(Some(found));
                }
                if line.contains("ward started") {
                    let _ = tx.send(None);
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        self.listeners.clear();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Some((name, addr))) => {
                    self.listeners.insert(name, addr);
                }
                Ok(None) => break,
                Err(_) => {
                    let _ = child.kill();
                    panic!("ward did not start; log:\n{}", self.log());
                }
            }
        }
        self.child = Some(child);
    }

    /// The address of the default listener.
    pub fn smtp(&self) -> SocketAddr {
        self.listener("smtp")
    }

    pub fn listener(&self, name: &str) -> SocketAddr {
        *self
            .listeners
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name}; log:\n{}", self.log()))
    }

    /// Everything Ward logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle` (or panics after `timeout`).
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("log never contained {needle:?}; log:\n{}", self.log());
    }

    /// Waits (without blocking the async runtime) for a log line containing
    /// every one of `needles`, and returns it.
    pub async fn line(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.log().lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return l.to_string();
            }
            if Instant::now() > deadline {
                panic!("no log line with {needles:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Counts log lines containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// SIGKILL: no shutdown at all.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("ward is running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("ward did not exit after SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the process again with the same configuration and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop ward before restarting it");
        self.spawn();
    }

    /// Rewrites the configuration file (takes effect at the next restart).
    pub fn rewrite_config(&self, config: &str) {
        std::fs::write(&self.config_path, config).expect("write config");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGHUP (reload the configuration).
    pub fn sighup(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid() as i32, libc::SIGHUP);
        }
    }
}

impl Drop for Ward {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Parses `listening on 127.0.0.1:1234 (starttls) listener=smtp`.
fn parse_listening(line: &str) -> Option<(String, SocketAddr)> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let addr: SocketAddr = rest.split_whitespace().next()?.parse().ok()?;
    let name = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listener="))?;
    Some((name.trim_matches('"').to_string(), addr))
}

/// Runs `ward` with arguments and returns (status, stdout, stderr).
pub fn ward_cli(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(args)
        .output()
        .expect("run ward");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every non-empty content segment file of the queue in `data` (Ward's
/// data directory) with its bytes, by path: to check what a command
/// changed in the content log.
pub fn content_segments(data: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(data.join("queue").join("content"))
        .unwrap()
        .flatten()
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
        .filter(|(_, d)| !d.is_empty())
        .collect();
    out.sort();
    out
}
