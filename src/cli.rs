//! The command line: `ward serve`, `ward check-config`, `ward hash-password`,
//! `ward config-reference`, `ward scan`, `ward pickup list|revoke`,
//! `ward sandbox list|show|clear`, `ward status`, `ward audit`, `ward report`; and, in
//! `crate::ops::cli`, `ward queue`, `ward keys rotate`, `ward backup`, `ward restore`.
//!
//! Errors are printed as one line saying what is wrong and what to do, with
//! exit status 1 (2 for usage errors, from clap).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};

/// Ward: a secure SMTP gateway for healthcare.
#[derive(Parser, Debug)]
#[command(name = "ward", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway (SMTP listeners, queue, delivery) until SIGTERM.
    Serve {
        /// Configuration file (TOML). Without it Ward runs on its embedded
        /// defaults: SMTP on 127.0.0.1:2525, data in ./var.
        #[arg(long, short, env = "WARD_CONFIG")]
        config: Option<PathBuf>,
        /// Log format, overriding log.format: `text` for people and
        /// journald, `json` (one object per line) for a SIEM.
        #[arg(long, value_enum, env = "WARD_LOG_FORMAT")]
        log_format: Option<LogFormat>,
        /// Sandbox mode: nothing leaves this machine (delivery.mode =
        /// "sandbox"; `ward sandbox list` shows what would have been sent),
        /// and, unless the configuration turns it on itself, the pickup
        /// portal runs on portal.address with links to that address.
        #[arg(long)]
        sandbox: bool,
    },
    /// Check a configuration file; prints file:line: error and exits 1 if
    /// it is not valid.
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(long, short, env = "WARD_CONFIG")]
        config: PathBuf,
    },
    /// Read a password from standard input and print an argon2 hash for
    /// `[[relay.user]] password_hash`.
    HashPassword,
    /// Print the reference of every setting, its default and meaning
    /// (Markdown).
    ConfigReference,
    /// Scan message files (.eml) for PHI offline, with the same code and
    /// policy the server uses. Exit 0: no PHI; 1: PHI in some file; 2: error.
    Scan {
        /// One JSON object per file, one per line.
        #[arg(long)]
        json: bool,
        /// Show masked evidence for each match (kind, part, masked value,
        /// context keyword), for operators tuning policy.
        #[arg(long, conflicts_with = "json")]
        explain: bool,
        /// Configuration file for [scan] and [policy]; default: the embedded
        /// defaults.
        #[arg(long, short, env = "WARD_CONFIG")]
        config: Option<PathBuf>,
        /// Message files (RFC 5322).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Pickup portal administration: list pickups, revoke one (its key is
    /// destroyed, then its data; the link answers 410).
    Pickup {
        #[command(subcommand)]
        action: PickupCommand,
        /// Configuration file (for server.data_dir); default: the embedded
        /// defaults.
        #[arg(long, short, env = "WARD_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// Per-recipient delivery status of a message, from the running
    /// server's status API (admin.token must be set). Exit 0: found; 1:
    /// no such message; 2: error.
    Status {
        /// Queue id (32 hex digits, as in the 250 reply and the logs) or
        /// Message-ID (with or without angle brackets; every message with
        /// it is shown).
        queue_id: String,
        /// Admin listener address; default: admin.address.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// Configuration file (admin.address, admin.token).
        #[arg(long, short, env = "WARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The sandbox outbox (delivery.mode = "sandbox"): what Ward would
    /// have sent. `list` shows ids, addresses, sizes and times; `show ID`
    /// decrypts one copy and prints it in full, on purpose, to this
    /// terminal only (never to a log); `clear` destroys them all. Exit 0;
    /// 1: no such copy; 2: error.
    Sandbox {
        #[command(subcommand)]
        action: SandboxCommand,
        /// Configuration file (server.data_dir, server.master_key_file);
        /// default: the embedded defaults.
        #[arg(long, short, env = "WARD_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// The audit trail: verify its hash chain, export a period.
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
        /// Configuration file (for server.data_dir); default: the embedded
        /// defaults.
        #[arg(long, short, env = "WARD_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// What went through Ward in a period, from the audit trail: volume
    /// per sender, findings per kind, policy decisions, outcomes,
    /// deliveries by TLS version, portal fallback rate, bounces, and
    /// senders far above their usual volume. Works with Ward stopped.
    /// Exit 0: printed; 2: error.
    Report {
        /// First day or instant included: YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC).
        #[arg(long)]
        since: String,
        /// First day or instant excluded (default: now).
        #[arg(long)]
        until: Option<String>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Senders listed in the text report (JSON lists all).
        #[arg(long, default_value_t = 20)]
        top: usize,
        /// Unusual volume: a day at this multiple of the sender's daily
        /// median...
        #[arg(long, default_value_t = 3.0)]
        factor: f64,
        /// ...and at least this many messages that day.
        #[arg(long, default_value_t = 20)]
        min_messages: u64,
        /// Days before --since that make a sender's daily median.
        #[arg(long, default_value_t = 28)]
        baseline_days: u32,
        /// Configuration file (for server.data_dir); default: the embedded
        /// defaults.
        #[arg(long, short, env = "WARD_CONFIG")]
        config: Option<PathBuf>,
    },
    // Operating Ward (src/ops): queue, keys, backup, restore.
    /// The queue: list, show, retry, hold, release, delete (through the
    /// running Ward's admin socket, or on its data directory when it is
    /// stopped). Exit 0: done; 1: refused (unknown id, ...).
    Queue {
        #[command(subcommand)]
        action: crate::ops::cli::QueueCommand,
        /// Configuration file (for server.data_dir); default: the embedded
        /// defaults.
        #[arg(long, short, env = "WARD_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// The master key: rotate it (Ward running or stopped). Exit 0: done; 1: refused.
    Keys {
        #[command(subcommand)]
        action: crate::ops::cli::KeysCommand,
        /// Configuration file (server.data_dir, server.master_key_file).
        #[arg(long, short, env = "WARD_CONFIG", global = true)]
        config: Option<PathBuf>,
    },
    /// A consistent, still-encrypted copy of the data directory (queue,
    /// pickup store, audit trail), taken while Ward runs. The master key is
    /// not in it unless --include-key. Exit 0: written; 1: refused.
    Backup {
        /// A new (or empty) directory for the backup.
        dest: PathBuf,
        /// Put the master key into the backup too (then the backup alone
        /// can read every message: keep it as safe as the mail).
        #[arg(long)]
        include_key: bool,
        /// Configuration file (server.data_dir).
        #[arg(long, short, env = "WARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Restore a backup into a new data directory (checked against the
    /// backup's manifest first). Exit 0: restored; 1: refused.
    Restore {
        /// The backup directory (`ward backup DEST`).
        src: PathBuf,
        /// The new data directory (must not exist or be empty).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the chain of every audit file (or only the files given).
    /// Exit 0: intact; 1: names the first edited, deleted or reordered
    /// line; 2: error.
    Verify {
        /// Audit files to check, oldest first (default: all, under
        /// <data_dir>/audit/).
        #[arg(long)]
        file: Vec<PathBuf>,
    },
    /// Print the audit lines of a period, verbatim (JSON lines).
    Export {
        /// First day or instant included: YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC).
        #[arg(long)]
        since: String,
        /// First day or instant excluded (default: now).
        #[arg(long)]
        until: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SandboxCommand {
    /// Every kept copy: id, kind (message, notification, dsn), time, size,
    /// from, to. Never a subject.
    List {
        /// One JSON object per copy, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Decrypt one copy and print it in full (headers and body) on standard
    /// output, after one `X-Ward-Sandbox:` line naming the copy: for looking
    /// at a local test message. ID: as `list` shows it, or its first 8 or
    /// more digits.
    Show { id: String },
    /// Destroy every kept copy (wrapped keys shredded first).
    Clear,
}

#[derive(Subcommand, Debug)]
pub enum PickupCommand {
    /// Every pickup: id, state, recipient, created, expires, first view.
    List {
        /// One JSON object per pickup, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a pickup by id (as `list` shows it).
    Revoke { id: String },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            log_format,
            sandbox,
        } => serve(config, log_format, sandbox),
        // The files the settings name are loaded too, as `serve` and a
        // reload load them: a certificate, key, CA or DKIM file that
        // doesn't parse shows here, with the same error a reload logs.
        Command::CheckConfig { config } => {
            match Config::load(&config).and_then(|c| crate::server::check(&c, &config).map(|()| c)) {
                Ok(c) => {
                    println!("{}: configuration is valid", config.display());
                    if c.delivery.mode == crate::config::DeliveryMode::Sandbox {
                        println!(
                            "note: delivery.mode = \"sandbox\": Ward will deliver nothing; every outbound copy stays in its sandbox outbox"
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::HashPassword => hash_password(),
        Command::ConfigReference => {
            print!("{}", crate::config::reference_markdown());
            ExitCode::SUCCESS
        }
        Command::Scan {
            json,
            explain,
            config,
            files,
        } => scan(json, explain, config, &files),
        Command::Pickup { action, config } => pickup(action, config),
        Command::Audit { action, config } => audit(action, config),
        Command::Report {
            since,
            until,
            json,
            top,
            factor,
            min_messages,
            baseline_days,
            config,
        } => {
            let Some(config) = admin_config(config.as_ref()) else {
                return ExitCode::from(2);
            };
            let Some(since_ms) = crate::audit::parse_date(&since) else {
                eprintln!("ward: --since: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ");
                return ExitCode::from(2);
            };
            let until_ms = match until.as_deref().map(crate::audit::parse_date) {
                None => crate::queue::now_ms(),
                Some(Some(ms)) => ms,
                Some(None) => {
                    eprintln!("ward: --until: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ");
                    return ExitCode::from(2);
                }
            };
            if until_ms <= since_ms || !factor.is_finite() || factor <= 0.0 {
                eprintln!("ward: --until must be after --since, and --factor above 0");
                return ExitCode::from(2);
            }
            let opts = crate::report::Options {
                since_ms,
                until_ms,
                baseline_days,
                factor,
                min_messages,
            };
            report(&config, &opts, json, top)
        }
        Command::Sandbox { action, config } => sandbox(action, config),
        Command::Status {
            queue_id,
            admin,
            config,
        } => status(&queue_id, admin, config),
        Command::Queue { action, config } => match admin_config(config.as_ref()) {
            Some(c) => crate::ops::cli::queue(action, &c),
            None => ExitCode::FAILURE,
        },
        Command::Keys { action, config } => match admin_config(config.as_ref()) {
            Some(c) => crate::ops::cli::keys(action, &c),
            None => ExitCode::FAILURE,
        },
        Command::Backup {
            dest,
            include_key,
            config,
        } => match admin_config(config.as_ref()) {
            Some(c) => crate::ops::cli::backup(dest, include_key, &c),
            None => ExitCode::FAILURE,
        },
        Command::Restore { src, data_dir } => crate::ops::cli::restore(&src, &data_dir, true),
    }
}

fn status(queue_id: &str, admin: Option<std::net::SocketAddr>, config: Option<PathBuf>) -> ExitCode {
    use std::io::{Read, Write};
    let Some(config) = admin_config(config.as_ref()) else {
        return ExitCode::from(2);
    };
    if config.admin.token.0.is_empty() {
        eprintln!("ward: admin.token is not set: the status API is off");
        return ExitCode::from(2);
    }
    let mut addr = admin.unwrap_or(config.admin.address);
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    // A queue id as the logs print it, or a Message-ID, percent-encoded
    // for the request path.
    let id: String = match crate::queue::QueueId::parse(queue_id.trim()) {
        Some(qid) => qid.to_string(),
        None => match crate::queue::normalize_message_id(queue_id.as_bytes()) {
            Some(mid) => mid
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect(),
            None => {
                eprintln!(
                    "ward: `{}` is neither a queue id (32 hex digits) nor a Message-ID",
                    queue_id.escape_debug()
                );
                return ExitCode::from(2);
            }
        },
    };
    let answer = (|| -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
        write!(
            s,
            "GET /api/status/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            config.admin.token.0
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })();
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ward: admin listener {addr}: {e}");
            return ExitCode::from(2);
        }
    };
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let code = head.split(' ').nth(1).unwrap_or("");
    match code {
        "200" => {
            match serde_json::from_str::<serde_json::Value>(body) {
                Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
                Err(_) => print!("{body}"),
            }
            ExitCode::SUCCESS
        }
        "404" => {
            eprintln!("ward: {}", body.trim());
            ExitCode::FAILURE
        }
        _ => {
            eprintln!("ward: status API answered {code}: {}", body.trim());
            ExitCode::from(2)
        }
    }
}

/// The configuration an administration command reads (for
/// server.data_dir): the file given, or the embedded defaults. An invalid
/// file is reported.
fn admin_config(config: Option<&PathBuf>) -> Option<Config> {
    match config {
        Some(p) => match Config::load(p) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("ward: {e}");
                None
            }
        },
        None => Some(Config::embedded()),
    }
}

fn report(config: &Config, opts: &crate::report::Options, json: bool, top: usize) -> ExitCode {
    let dir = config.server.data_dir.join("audit");
    let files = crate::audit::files(&dir);
    if files.is_empty() {
        eprintln!(
            "ward: no audit files in {} (is --config the server's configuration?)",
            dir.display()
        );
        return ExitCode::from(2);
    }
    match crate::report::build(&files, opts) {
        Ok(r) if json => {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            print!("{}", r.text(top));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ward: audit trail: {e}");
            ExitCode::from(2)
        }
    }
}

fn audit(action: AuditCommand, config: Option<PathBuf>) -> ExitCode {
    let Some(config) = admin_config(config.as_ref()) else {
        return ExitCode::from(2);
    };
    let dir = config.server.data_dir.join("audit");
    match action {
        AuditCommand::Verify { file } => {
            let files = if file.is_empty() {
                crate::audit::files(&dir)
            } else {
                file
            };
            if files.is_empty() {
                eprintln!("ward: no audit files in {}", dir.display());
                return ExitCode::from(2);
            }
            match crate::audit::verify(&files) {
                Ok(n) => {
                    println!("audit trail intact: {n} lines in {} files", files.len());
                    ExitCode::SUCCESS
                }
                Err(b) => {
                    println!("{b}");
                    ExitCode::FAILURE
                }
            }
        }
        AuditCommand::Export { since, until } => {
            let Some(since_ms) = crate::audit::parse_date(&since) else {
                eprintln!("ward: --since: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ");
                return ExitCode::from(2);
            };
            let until_ms = match until.as_deref().map(crate::audit::parse_date) {
                None => u64::MAX,
                Some(Some(ms)) => ms,
                Some(None) => {
                    eprintln!("ward: --until: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ");
                    return ExitCode::from(2);
                }
            };
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            match crate::audit::export(&crate::audit::files(&dir), since_ms, until_ms, &mut out) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ward: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn pickup(action: PickupCommand, config: Option<PathBuf>) -> ExitCode {
    let Some(config) = admin_config(config.as_ref()) else {
        return ExitCode::FAILURE;
    };
    let request = match &action {
        PickupCommand::List { .. } => "list".to_string(),
        PickupCommand::Revoke { id } => format!("revoke {}", id.trim()),
    };
    let answer = match pickup_request(&config, &request) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ward: {e}");
            return ExitCode::FAILURE;
        }
    };
    match action {
        PickupCommand::List { json: true } => print!("{answer}"),
        PickupCommand::List { json: false } => {
            println!(
                "{:<32}  {:<8}  {:<20}  {:<20}  {:<20}  recipient",
                "id", "state", "created", "expires", "opened"
            );
            for line in answer.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    eprintln!("ward: {line}");
                    return ExitCode::FAILURE;
                };
                let time = |k: &str| {
                    v[k].as_u64()
                        .map(crate::pickup::notify::date_words)
                        .unwrap_or_else(|| "-".into())
                };
                println!(
                    "{:<32}  {:<8}  {:<20}  {:<20}  {:<20}  {}",
                    v["id"].as_str().unwrap_or("?"),
                    v["state"].as_str().unwrap_or("?"),
                    time("created_ms"),
                    time("expires_ms"),
                    time("first_view_ms"),
                    v["recipient"].as_str().unwrap_or("?"),
                );
            }
        }
        PickupCommand::Revoke { .. } => {
            print!("{answer}");
            if !answer.starts_with("revoked ") {
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// Asks the running Ward over its control socket, or, when none runs,
/// opens the pickup store directly.
fn pickup_request(config: &Config, request: &str) -> Result<String, String> {
    use std::io::Read;
    let data_dir = &config.server.data_dir;
    let socket = crate::pickup::control::socket_path(data_dir);
    match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(mut s) => {
            s.write_all(format!("{request}\n").as_bytes())
                .map_err(|e| format!("{}: {e}", socket.display()))?;
            let mut out = String::new();
            s.read_to_string(&mut out)
                .map_err(|e| format!("{}: {e}", socket.display()))?;
            if let Some(e) = out.strip_prefix("error: ") {
                return Err(e.trim().to_string());
            }
            Ok(out)
        }
        Err(_) => {
            let dir = data_dir.join("pickup");
            let key_path = config.server.master_key_path();
            if !dir.exists() || !key_path.exists() {
                return Err(format!("no pickup store in {}", dir.display()));
            }
            let (master, _) = crate::crypto::MasterKey::load_ring(&key_path).map_err(|e| e.to_string())?;
            let store = crate::pickup::PickupStore::open(
                &dir,
                std::sync::Arc::new(master),
                crate::pickup::StoreSettings::from_config(config),
            )
            .map_err(|e| format!("{e} (is Ward running without its control socket?)"))?;
            let out = crate::pickup::control::answer(&store, request).map_err(|e| e.to_string())?;
            store.flush().map_err(|e| e.to_string())?;
            Ok(out)
        }
    }
}

fn scan(json: bool, explain: bool, config: Option<PathBuf>, files: &[PathBuf]) -> ExitCode {
    let config = match &config {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ward: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::embedded(),
    };
    let scanner = crate::scan::Scanner::new(crate::smtp::scan_settings(&config.scan));
    let policy = crate::policy::Policy::new(&config.policy);
    let mut any_phi = false;
    let mut any_error = false;
    for file in files {
        let raw = match std::fs::read(file) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("ward: {}: cannot read: {e}", file.display());
                any_error = true;
                continue;
            }
        };
        let verdict = scanner.scan(&raw);
        let subject = crate::scan::subject_of(&raw).unwrap_or_default();
        let decision = policy.content(&verdict, policy.subject_triggers(&subject));
        let phi = matches!(decision.reason, crate::policy::Reason::Detector(_));
        any_phi |= phi;
        if json {
            let findings: Vec<serde_json::Value> = verdict
                .findings
                .iter()
                .map(|f| serde_json::json!({"kind": f.kind.id(), "count": f.count, "part": f.part.to_string()}))
                .collect();
            let line = serde_json::json!({
                "file": file.to_string_lossy(),
                "phi": phi,
                "findings": findings,
                "action": decision.action.to_string(),
            });
            println!("{line}");
            continue;
        }
        let mut summary: Vec<String> = verdict
            .findings
            .iter()
            .map(|f| format!("{} x{} in {}", f.kind, f.count, f.part))
            .collect();
        summary.extend(
            verdict
                .unscanned
                .iter()
                .map(|u| format!("{} unscanned ({:?})", u.part, u.reason)),
        );
        let what = if summary.is_empty() {
            "nothing found".to_string()
        } else {
            summary.join(", ")
        };
        println!(
            "{}: {} ({}): {what}",
            file.display(),
            decision.action,
            decision.reason
        );
        if explain {
            for e in scanner.explain(&raw) {
                let context = e
                    .context
                    .as_deref()
                    .map(|c| format!("  context \"{c}\""))
                    .unwrap_or_default();
                println!(
                    "    {:<15} {:<14} {:<24} {:?}{context}",
                    e.kind.id(),
                    e.part.to_string(),
                    e.masked,
                    e.confidence
                );
            }
        }
    }
    if any_error {
        ExitCode::from(2)
    } else if any_phi {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn serve(path: Option<PathBuf>, log_format: Option<LogFormat>, sandbox: bool) -> ExitCode {
    let mut config = match &path {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ward: {e}");
                eprintln!(
                    "ward: fix the configuration (check it with `ward check-config --config {}`)",
                    p.display()
                );
                return ExitCode::FAILURE;
            }
        },
        None => Config::embedded(),
    };
    if let Some(f) = log_format {
        config.log.format = f;
    }
    let log_level = init_logging(&config);
    if path.is_none() {
        tracing::info!("no --config given: running on the embedded defaults");
    }
    if sandbox {
        sandbox_overrides(&mut config, true);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ward")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ward: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = crate::server::ServeOptions {
        set_log_level: log_level,
        // What the command line says wins over every file read, the
        // reloaded ones too (a reload must not undo --sandbox).
        overrides: Box::new(move |c: &mut Config| {
            if let Some(f) = log_format {
                c.log.format = f;
            }
            if sandbox {
                sandbox_overrides(c, false);
            }
        }),
    };
    match runtime.block_on(crate::server::run(config, path, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "ward failed");
            eprintln!("ward: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Crates that parse message content and log what they parse (html5ever
/// logs every text node at debug; lopdf quotes document text in parse
/// errors): silenced at every level (invariant 4).
const CONTENT_PARSERS: [&str; 6] = [
    "lopdf",
    "html5ever",
    "markup5ever",
    "xml5ever",
    "ammonia",
    "quick_xml",
];
// --- sandbox mode: `ward serve --sandbox`, `ward sandbox` ---

/// `ward serve --sandbox`: delivery.mode = "sandbox" and, unless the
/// configuration has it on already, the pickup portal on portal.address
/// with links pointing there (so a protected test message can be picked up
/// on this machine).
fn sandbox_overrides(config: &mut Config, announce: bool) {
    config.delivery.mode = crate::config::DeliveryMode::Sandbox;
    if !config.portal.enabled {
        config.portal.enabled = true;
        if config.portal.public_host.is_empty() {
            config.portal.public_host = config.portal.address.to_string();
        }
        if !announce {
            return;
        }
        tracing::info!(
            address = %config.portal.address,
            "--sandbox: the pickup portal is on, with links to https://{}/",
            config.portal.public_host
        );
    }
}

fn sandbox(action: SandboxCommand, config: Option<PathBuf>) -> ExitCode {
    let Some(config) = admin_config(config.as_ref()) else {
        return ExitCode::from(2);
    };
    let dir = crate::sandbox::outbox_dir(&config.server.data_dir);
    let key_path = config.server.master_key_path();
    if !dir.exists() || !key_path.exists() {
        eprintln!(
            "ward: no sandbox outbox in {} (run `ward serve --sandbox`, or set delivery.mode = \"sandbox\", and pass the same --config here)",
            dir.display()
        );
        return ExitCode::from(2);
    }
    // The outbox is files sealed under the master key: read here directly
    // (Ward holds no lock on them), as the user Ward runs as.
    let outbox = match crate::crypto::MasterKey::load_ring(&key_path)
        .map_err(|e| e.to_string())
        .and_then(|(k, _)| {
            crate::sandbox::Outbox::open(&dir, std::sync::Arc::new(k)).map_err(|e| e.to_string())
        }) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ward: {e}");
            return ExitCode::from(2);
        }
    };
    let failed = |e: crate::sandbox::OutboxError| {
        eprintln!("ward: {e}");
        match e {
            crate::sandbox::OutboxError::NotFound(_) => ExitCode::FAILURE,
            _ => ExitCode::from(2),
        }
    };
    match action {
        SandboxCommand::List { json } => {
            let entries = match outbox.list() {
                Ok(e) => e,
                Err(e) => return failed(e),
            };
            if json {
                for e in &entries {
                    println!("{}", serde_json::to_string(e).unwrap_or_default());
                }
            } else {
                println!(
                    "{:<32}  {:<12}  {:<26}  {:>9}  {:<28}  to",
                    "id", "kind", "time", "size", "from"
                );
                for e in &entries {
                    let from = if e.from.is_empty() { "<>" } else { &e.from };
                    println!(
                        "{:<32}  {:<12}  {:<26}  {:>9}  {:<28}  {}",
                        e.id,
                        e.kind.to_string(),
                        crate::pickup::notify::date_words(e.created_ms),
                        e.size,
                        from,
                        e.to.join(", ")
                    );
                }
            }
            ExitCode::SUCCESS
        }
        SandboxCommand::Show { id } => match outbox.open_message(&id) {
            Ok((entry, content)) => {
                // The operator asked to see this local test message: it
                // goes to standard output and nowhere else.
                let stdout = std::io::stdout();
                let mut out = stdout.lock();
                let from = if entry.from.is_empty() { "<>" } else { &entry.from };
                let shown = writeln!(
                    out,
                    "X-Ward-Sandbox: id={} kind={} queue_id={} from={} to={}",
                    entry.id,
                    entry.kind,
                    entry.queue_id,
                    from,
                    entry.to.join(",")
                )
                .and_then(|_| out.write_all(&content))
                .and_then(|_| out.flush());
                match shown {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("ward: writing to standard output: {e}");
                        ExitCode::from(2)
                    }
                }
            }
            Err(e) => failed(e),
        },
        SandboxCommand::Clear => match outbox.clear() {
            Ok(n) => {
                println!("removed {n} copies from the sandbox outbox");
                ExitCode::SUCCESS
            }
            Err(e) => failed(e),
        },
    }
}

// --- end sandbox mode ---

/// Sets up logging; returns what changes `log.level` on reload (None when
/// RUST_LOG overrides the configured level).
fn init_logging(config: &Config) -> Option<crate::server::LogLevelReload> {
    use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
    use tracing_subscriber::prelude::*;
    let from_env = EnvFilter::try_from_default_env().ok();
    let env_overrides = from_env.is_some();
    let filter = match from_env {
        Some(f) => silence_content_parsers(f),
        None => log_filter(&config.log.level).unwrap_or_else(|e| {
            eprintln!(
                "ward: log.level `{}` is not a valid filter ({e}); using info",
                config.log.level
            );
            log_filter("info").expect("static filter")
        }),
    };
    // The level part can be replaced on reload; the rule below stays.
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    // Whatever log.level says, other crates log at info at most: their
    // debug and trace output is written for their developers and may hold
    // the bytes they handle (headers, TLS records, parsed text). Ward's
    // own debug lines are content-free.
    let filter = filter.and(filter_fn(|m| {
        m.target().starts_with("ward") || *m.level() <= tracing::Level::INFO
    }));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // Under systemd, stderr goes to the journal (JOURNAL_STREAM is set),
    // which stamps each line itself: text lines leave the time out.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    match config.log.format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().with_filter(filter))
            .init(),
        LogFormat::Text if journal => tracing_subscriber::registry()
            .with(layer.without_time().with_ansi(false).with_filter(filter))
            .init(),
        LogFormat::Text => tracing_subscriber::registry()
            .with(
                layer
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_filter(filter),
            )
            .init(),
    }
    let reload: crate::server::LogLevelReload = Box::new(move |level| {
        let f = log_filter(level)?;
        handle.reload(f).map_err(|e| e.to_string())
    });
    (!env_overrides).then_some(reload)
}

/// The filter for a `log.level` value, content parsers silenced.
fn log_filter(level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    Ok(silence_content_parsers(filter))
}

fn silence_content_parsers(filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    CONTENT_PARSERS.iter().fold(filter, |f, c| {
        f.add_directive(format!("{c}=off").parse().expect("static directive"))
    })
}

fn hash_password() -> ExitCode {
    if std::io::stdin().is_terminal() {
        eprint!("Password (input is echoed; pipe it in to avoid that): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
        eprintln!("ward: cannot read the password from standard input: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!(
            "ward: empty password; write the password on standard input, e.g. `ward hash-password < pwfile`"
        );
        return ExitCode::FAILURE;
    }
    match crate::smtp::relay::hash_password(password.as_bytes()) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ward: hashing failed: {e}");
            ExitCode::FAILURE
        }
    }
}
