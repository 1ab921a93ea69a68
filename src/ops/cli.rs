//! The command-line side of `ward queue`, `ward keys`, `ward backup` and
//! `ward restore`: asks the running Ward over its admin socket, or, when
//! none answers, opens the data directory itself; prints the answer.
//!
//! Exit status: 0 done; 1 refused or failed (unknown queue id, Ward not
//! running where it must be or running where it must not, a damaged
//! backup, ...), with one line on standard error saying what to do; 2
//! usage errors (from clap).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use serde_json::Value;

use super::{Ops, Request};
use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Every queued message: id, age, size, recipients and their states,
    /// next attempt, held or not, sender. Never content or subject.
    List {
        /// One JSON object per message, one per line.
        #[arg(long)]
        json: bool,
    },
    /// One message: each recipient's state, attempts, last error, policy
    /// decision; the scanner's finding kinds.
    Show {
        /// Queue id (32 hex digits, as `list`, the logs and the 250 reply show it).
        id: String,
        /// The answer as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Make a message's waiting copies (or every message's) due now.
    Retry {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every queued message.
        #[arg(long)]
        all: bool,
    },
    /// No delivery attempts for the message until `release` (it stays in
    /// the queue, encrypted and durable; it does not expire while held).
    Hold { id: String },
    /// Lift a hold; the message is due now. Quarantined copies stay
    /// quarantined.
    Release { id: String },
    /// Remove the message and destroy its key. The sender gets no report;
    /// the audit trail records it.
    Delete { id: String },
    /// Release a message's quarantined copies after review: they are
    /// delivered under `--as` (default `protect`: verified TLS or the
    /// pickup portal; `deliver`: the destination's TLS policy) and are due
    /// now. Other copies are left as they are.
    Unquarantine {
        id: String,
        /// The action the released copies get.
        #[arg(long = "as", value_enum, default_value_t = ReleaseAs::Protect)]
        release_as: ReleaseAs,
    },
}

/// What quarantined copies become when released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReleaseAs {
    Protect,
    Deliver,
}

impl ReleaseAs {
    fn as_str(self) -> &'static str {
        match self {
            ReleaseAs::Protect => "protect",
            ReleaseAs::Deliver => "deliver",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// New master key; every message's key re-wrapped under it, while Ward
    /// runs (over its admin socket, mail keeps flowing) or with Ward
    /// stopped. The old key is kept as <key file>.old-<id> unless
    /// --destroy-old.
    Rotate {
        /// Overwrite and remove the old key file once the rotation is done
        /// (backups made before it can then no longer be read).
        #[arg(long)]
        destroy_old: bool,
    },
}

/// What asking the running Ward gave.
enum Asked {
    Answer(Value),
    NotRunning,
}

/// Sends `request` to the admin socket of `data_dir`.
fn ask(data_dir: &Path, request: &Request, timeout: Duration) -> Result<Asked, String> {
    let socket = super::socket_path(data_dir);
    let mut s = match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(Asked::NotRunning);
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(format!(
                "cannot use the admin socket {}: permission denied; run the command as the user Ward runs as (or root)",
                socket.display()
            ));
        }
        Err(e) => return Err(format!("admin socket {}: {e}", socket.display())),
    };
    let io = |e: std::io::Error| format!("admin socket {}: {e}", socket.display());
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    let line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    s.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(io)?;
    serde_json::from_str(out.trim())
        .map(Asked::Answer)
        .map_err(|e| format!("admin socket {}: unreadable answer: {e}", socket.display()))
}

/// Ward is not running: opens the data directory and answers `request`
/// here, with the audit trail written here too.
fn offline(config: &Config, request: Request) -> Result<Value, String> {
    let data_dir = &config.server.data_dir;
    let queue_dir = data_dir.join("queue");
    if !queue_dir.join("db").exists() {
        return Err(format!(
            "Ward is not running and {} holds no queue (server.data_dir); start Ward, or give the --config it runs with",
            data_dir.display()
        ));
    }
    let key_path = config.server.master_key_path();
    if !key_path.exists() {
        return Err(format!(
            "Ward is not running and its master key {} is missing",
            key_path.display()
        ));
    }
    let (master, _) = crate::crypto::MasterKey::load_ring(&key_path).map_err(|e| e.to_string())?;
    let master = Arc::new(master);
    if config.audit.enabled {
        crate::audit::start(crate::audit::Settings {
            dir: data_dir.join("audit"),
            max_file_size: config.audit.max_file_size,
            retention: config.audit.retention,
        })
        .map_err(|e| e.to_string())?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let answer = runtime.block_on(async {
        let cache = config.queue.cache_size;
        let m = master.clone();
        let qd = queue_dir.clone();
        let queue = tokio::task::spawn_blocking(move || crate::queue::Queue::open(&qd, cache, m))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| {
                format!(
                    "Ward's admin socket does not answer and the queue in {} can't be opened: {e}; if Ward is running, restart it",
                    queue_dir.display()
                )
            })?;
        let pickup_dir = data_dir.join("pickup");
        let pickup = if pickup_dir.join("db").exists() {
            let settings = crate::pickup::StoreSettings::from_config(config);
            let m = master.clone();
            Some(
                tokio::task::spawn_blocking(move || crate::pickup::PickupStore::open(&pickup_dir, m, settings))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        let ops = Ops {
            queue: queue.clone(),
            pickup: pickup.clone(),
            outbox: None,
            pickup_settings: crate::pickup::StoreSettings::from_config(config),
            data_dir: data_dir.clone(),
            key_path: key_path.clone(),
            master: master.clone(),
        };
        let answer = super::answer(&ops, request).await;
        let _ = queue.flush().await;
        let _ = tokio::task::spawn_blocking(move || {
            queue.close();
            if let Some(p) = pickup {
                let _ = p.flush();
            }
        })
        .await;
        Ok::<Value, String>(answer)
    })?;
    if !crate::audit::sync(Duration::from_secs(10)) {
        eprintln!("ward: warning: the audit trail could not be written in time");
    }
    Ok(answer)
}

/// Asks the running Ward, or answers offline.
fn request(config: &Config, request: Request, timeout: Duration) -> Result<Value, String> {
    match ask(&config.server.data_dir, &request, timeout)? {
        Asked::Answer(v) => Ok(v),
        Asked::NotRunning => offline(config, request),
    }
}

/// Prints the error of a failed answer; true if it was ok.
fn ok_or_report(v: &Value) -> bool {
    if v["ok"] == true {
        return true;
    }
    eprintln!("ward: {}", v["error"].as_str().unwrap_or("the request failed"));
    false
}

fn report(e: String) -> ExitCode {
    eprintln!("ward: {e}");
    ExitCode::FAILURE
}

/// `ward queue ...`
pub fn queue(command: QueueCommand, config: &Config) -> ExitCode {
    let timeout = Duration::from_secs(60);
    let (req, json_out) = match &command {
        QueueCommand::List { json } => (Request::QueueList, *json),
        QueueCommand::Show { id, json } => (Request::QueueShow { id: id.clone() }, *json),
        QueueCommand::Retry { id, .. } => (action("retry", id.clone()), false),
        QueueCommand::Hold { id } => (action("hold", Some(id.clone())), false),
        QueueCommand::Release { id } => (action("release", Some(id.clone())), false),
        QueueCommand::Delete { id } => (action("delete", Some(id.clone())), false),
        QueueCommand::Unquarantine { id, release_as } => (
            action(&format!("unquarantine-{}", release_as.as_str()), Some(id.clone())),
            false,
        ),
    };
    let v = match request(config, req, timeout) {
        Ok(v) => v,
        Err(e) => return report(e),
    };
    if !ok_or_report(&v) {
        return ExitCode::FAILURE;
    }
    let now = crate::queue::now_ms();
    match command {
        QueueCommand::List { .. } => {
            let messages = v["messages"].as_array().cloned().unwrap_or_default();
            if json_out {
                for m in &messages {
                    println!("{m}");
                }
            } else {
                print_list(&messages, now);
            }
        }
        QueueCommand::Show { .. } => {
            if json_out {
                println!("{}", v["message"]);
            } else {
                print_show(&v["message"], now);
            }
        }
        QueueCommand::Retry { id, .. } => {
            let o = &v["outcome"];
            let what = id.map_or_else(|| format!("{} messages", o["messages"]), |i| i.trim().to_string());
            println!(
                "{what}: {} copies due now{}{}",
                o["changed"],
                note(o, "in_delivery", "being delivered right now"),
                note(o, "unchanged", "held or quarantined, left alone")
            );
        }
        QueueCommand::Hold { id } => {
            let o = &v["outcome"];
            println!(
                "{}: {} copies held{}{}",
                id.trim(),
                o["changed"],
                note(o, "unchanged", "already held"),
                note(
                    o,
                    "in_delivery",
                    "in a delivery attempt now: that attempt finishes, no new one starts"
                )
            );
        }
        QueueCommand::Release { id } => {
            let o = &v["outcome"];
            println!(
                "{}: {} copies released{}{}",
                id.trim(),
                o["changed"],
                note(o, "unchanged", "were not held"),
                note(o, "quarantined", "still quarantined by policy")
            );
        }
        QueueCommand::Unquarantine { id, release_as } => {
            let o = &v["outcome"];
            println!(
                "{}: {} copies released from quarantine as {}{}",
                id.trim(),
                o["changed"],
                release_as.as_str(),
                note(o, "unchanged", "were not quarantined")
            );
        }
        QueueCommand::Delete { id } => {
            let o = &v["outcome"];
            println!(
                "{}: deleted ({} pending copies; no report to the sender){}",
                id.trim(),
                o["copies"],
                note(
                    o,
                    "in_delivery",
                    "were in a delivery attempt that may still complete"
                )
            );
        }
    }
    ExitCode::SUCCESS
}

fn action(action: &str, id: Option<String>) -> Request {
    Request::QueueAction {
        action: action.into(),
        id,
    }
}

/// "; N <what>" when the count is not zero.
fn note(o: &Value, key: &str, what: &str) -> String {
    match o[key].as_u64() {
        Some(n) if n > 0 => format!("; {n} {what}"),
        _ => String::new(),
    }
}

/// "3m", "2h10m", "5d" for a number of seconds.
fn span(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

fn next_attempt(v: &Value, now: u64) -> String {
    match v.as_u64() {
        None => "-".into(),
        Some(t) if t <= now => "now".into(),
        Some(t) => format!("in {}", span((t - now) / 1000)),
    }
}

fn state_words(states: &Value) -> String {
    states
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn print_list(messages: &[Value], now: u64) {
    if messages.is_empty() {
        println!("the queue is empty");
        return;
    }
    println!(
        "{:<32}  {:>7}  {:>9}  {:>5}  {:<26}  {:<10}  {:<4}  sender",
        "id", "age", "size", "rcpts", "states", "next", "held"
    );
    for m in messages {
        println!(
            "{:<32}  {:>7}  {:>9}  {:>5}  {:<26}  {:<10}  {:<4}  {}",
            m["id"].as_str().unwrap_or("?"),
            span(m["age_s"].as_u64().unwrap_or(0)),
            m["size"].to_string(),
            m["recipients"].to_string(),
            state_words(&m["states"]),
            next_attempt(&m["next_attempt_ms"], now),
            if m["held"] == true { "yes" } else { "no" },
            m["sender"].as_str().unwrap_or(""),
        );
    }
    println!("{} messages", messages.len());
}

fn print_show(m: &Value, now: u64) {
    let s = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    println!("id:          {}", s(&m["id"]));
    println!("sender:      {}", s(&m["sender"]));
    println!("size:        {} octets", m["size"]);
    println!("age:         {}", span(m["age_s"].as_u64().unwrap_or(0)));
    println!("client:      {} ({})", s(&m["client_ip"]), s(&m["authorized_by"]));
    let findings: Vec<String> = m["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| format!("{} x{} in {}", s(&f["kind"]), f["count"], s(&f["part"])))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "findings:    {}",
        if findings.is_empty() {
            "none".to_string()
        } else {
            findings.join(", ")
        }
    );
    println!("recipients:");
    for c in m["copies"].as_array().into_iter().flatten() {
        println!(
            "  {:<40} {:<11} attempts {:<3} next {:<10} policy {} ({})",
            s(&c["recipient"]),
            s(&c["state"]),
            c["attempts"].to_string(),
            if c["state"] == "held" || c["state"] == "quarantined" {
                "-".to_string()
            } else {
                next_attempt(&c["next_attempt_ms"], now)
            },
            s(&c["policy"]),
            s(&c["policy_reason"]),
        );
        print_last(&c["last"]);
    }
    for f in m["finished"].as_array().into_iter().flatten() {
        println!(
            "  {:<40} {:<11} attempts {:<3} policy {}",
            s(&f["recipient"]),
            s(&f["state"]),
            f["attempts"].to_string(),
            s(&f["policy"]),
        );
        print_last(&f["last"]);
    }
}

fn print_last(last: &Value) {
    if last.is_null() {
        return;
    }
    let code = last["reply_code"]
        .as_u64()
        .map(|c| c.to_string())
        .unwrap_or_default();
    println!(
        "      last: {} {} {} {}",
        last["outcome"].as_str().unwrap_or(""),
        code,
        last["status"].as_str().unwrap_or(""),
        last["detail"].as_str().unwrap_or(""),
    );
}

/// `ward keys rotate`.
pub fn keys(command: KeysCommand, config: &Config) -> ExitCode {
    let KeysCommand::Rotate { destroy_old } = command;
    // Re-wrapping a large queue takes a while: wait for the answer.
    let asked = ask(
        &config.server.data_dir,
        &Request::KeysRotate { destroy_old },
        Duration::from_secs(3600),
    );
    let v = match asked {
        Err(e) => return report(e),
        Ok(Asked::Answer(v)) if v["ok"] == true => v,
        Ok(Asked::Answer(v)) => {
            return report(v["error"].as_str().unwrap_or("the rotation failed").to_string());
        }
        Ok(Asked::NotRunning) => {
            if config.audit.enabled {
                let _ = crate::audit::start(crate::audit::Settings {
                    dir: config.server.data_dir.join("audit"),
                    max_file_size: config.audit.max_file_size,
                    retention: config.audit.retention,
                });
            }
            let r = super::keys::rotate(config, destroy_old);
            crate::audit::sync(Duration::from_secs(10));
            match r {
                Ok(v) => v,
                Err(e) => return report(e),
            }
        }
    };
    println!(
        "master key rotated{}: {} -> {}{}; {} queued messages, {} pickups and {} sandbox copies re-wrapped",
        if v["online"] == true {
            " in the running Ward"
        } else {
            ""
        },
        v["old_key_id"].as_str().unwrap_or("?"),
        v["new_key_id"].as_str().unwrap_or("?"),
        if v["resumed"] == true {
            " (an interrupted rotation, finished)"
        } else {
            ""
        },
        v["queue_records"],
        v["pickup_keys"],
        v["sandbox_keys"],
    );
    match v["old_key_file"].as_str() {
        Some(p) => println!(
            "the old key is in {p}: backups made before now need it; destroy it (shred -u) once they have expired"
        ),
        None => println!("the old key was destroyed"),
    }
    ExitCode::SUCCESS
}

/// `ward backup DEST`.
pub fn backup(dest: PathBuf, include_key: bool, config: &Config) -> ExitCode {
    let dest = if dest.is_absolute() {
        dest
    } else {
        match std::env::current_dir() {
            Ok(d) => d.join(dest),
            Err(e) => return report(format!("current directory: {e}")),
        }
    };
    if include_key {
        eprintln!(
            "ward: warning: --include-key puts the master key into the backup: whoever holds the backup can read every message in it; keep it as safe as the mail itself"
        );
    }
    let v = match request(
        config,
        Request::Backup {
            dest: dest.clone(),
            include_key,
        },
        Duration::from_secs(3600),
    ) {
        Ok(v) => v,
        Err(e) => return report(e),
    };
    if !ok_or_report(&v) {
        return ExitCode::FAILURE;
    }
    println!(
        "backup written to {}: {} messages ({} pending copies), {} pickups, {} files, {} bytes",
        dest.display(),
        v["messages"],
        v["copies"],
        v["pickups"],
        v["files"],
        v["bytes"]
    );
    if v["includes_key"] == true {
        println!(
            "it includes the master key (id {})",
            v["master_key_id"].as_str().unwrap_or("?")
        );
    } else {
        println!(
            "it does not include the master key: a restore needs the key with id {} (back up {} separately)",
            v["master_key_id"].as_str().unwrap_or("?"),
            config.server.master_key_path().display()
        );
    }
    ExitCode::SUCCESS
}

/// `ward restore SRC --data-dir DIR`.
pub fn restore(src: &Path, data_dir: &Path, audit: bool) -> ExitCode {
    let v = match super::backup::restore(src, data_dir) {
        Ok(v) => v,
        Err(e) => return report(e),
    };
    if audit {
        let audit_dir = data_dir.join("audit");
        if crate::audit::start(crate::audit::Settings {
            dir: audit_dir,
            max_file_size: crate::config::Config::embedded().audit.max_file_size,
            retention: crate::config::Config::embedded().audit.retention,
        })
        .is_ok()
        {
            crate::audit::record(
                "backup_restored",
                serde_json::json!({"from": src.display().to_string(), "messages": v["messages"]}),
            );
            crate::audit::sync(Duration::from_secs(10));
        }
    }
    println!(
        "restored {} messages and {} pickups into {}",
        v["messages"],
        v["pickups"],
        data_dir.display()
    );
    let key = v["master_key_id"].as_str().unwrap_or("?");
    if v["includes_key"] == true {
        println!(
            "the master key (id {key}) is in {}",
            data_dir.join("master.key").display()
        );
    } else {
        println!(
            "put the master key with id {key} at {} (or point server.master_key_file at it) before starting Ward",
            data_dir.join("master.key").display()
        );
    }
    println!(
        "copies keep the retry times they had; once Ward runs, `ward queue retry --all` makes them due now"
    );
    ExitCode::SUCCESS
}
