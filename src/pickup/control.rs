//! Administration of the pickup store: `ward pickup list` and
//! `ward pickup revoke ID`.
//!
//! While Ward runs it holds the store's database lock, so the commands talk
//! to it over a Unix socket in the data directory
//! (`<data_dir>/pickup/control.sock`, mode 0600: only the user Ward runs as
//! can use it). When Ward is not running they open the store themselves.
//!
//! Protocol: one request line, `list` or `revoke <id>`; the answer is JSON
//! lines (`list`) or one line `revoked <id>`, `ended <id>` (already expired
//! or revoked) or `unknown <id>`, then the server closes. Nothing in it is
//! content: ids, addresses, states and times.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use super::{Pickup, PickupError, PickupId, PickupRecord, PickupStore};
use crate::queue::now_ms;

/// The control socket's path for a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("pickup").join("control.sock")
}

/// One line of `ward pickup list --json` / the control answer.
pub fn summary(r: &PickupRecord) -> serde_json::Value {
    serde_json::json!({
        "id": r.id.to_string(),
        "queue_id": r.queue_id.to_string(),
        "recipient": r.recipient,
        "sender": r.sender,
        "state": r.state.to_string(),
        "reason": r.reason,
        "created_ms": r.created_ms,
        "expires_ms": r.expires_ms,
        "ended_ms": r.ended_ms,
        "first_view_ms": r.first_view.as_ref().map(|v| v.at_ms),
        "first_view_ip": r.first_view.as_ref().map(|v| v.ip.clone()),
        "views": r.views,
    })
}

/// Answers one request against a store (blocking).
pub fn answer(store: &PickupStore, line: &str) -> Result<String, PickupError> {
    let line = line.trim();
    if line == "list" {
        let mut out = String::new();
        for r in store.list()? {
            out.push_str(&summary(&r).to_string());
            out.push('\n');
        }
        return Ok(out);
    }
    if let Some(arg) = line.strip_prefix("revoke ") {
        let arg = arg.trim();
        let Some(id) = PickupId::parse(arg) else {
            return Ok(format!("unknown {arg}\n"));
        };
        return Ok(match store.revoke(&id, now_ms()) {
            Ok(true) => {
                tracing::info!(pickup_id = %id, "pickup revoked by an administrator; its key and data destroyed");
                crate::audit::record("pickup_revoked", serde_json::json!({"pickup_id": id.to_string()}));
                format!("revoked {id}\n")
            }
            Ok(false) => format!("ended {id}\n"),
            Err(PickupError::NotFound(_)) => format!("unknown {id}\n"),
            Err(e) => return Err(e),
        });
    }
    Ok("error: requests are `list` or `revoke <id>`\n".into())
}

/// Serves the control socket until `shutdown`.
pub async fn serve(pickup: Pickup, data_dir: PathBuf, shutdown: CancellationToken) {
    let path = socket_path(&data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot open the pickup control socket; `ward pickup` commands need Ward stopped");
            return;
        }
    };
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot set the control socket's mode");
        }
    }
    serve_lines(listener, path, 512, shutdown, move |line| {
        let pickup = pickup.clone();
        async move {
            let answer = pickup.blocking(move |s| answer(s, &line)).await;
            answer.unwrap_or_else(|e| format!("error: {e}\n"))
        }
    })
    .await
}

/// Serves a request-line socket until `shutdown`, then removes its file
/// (`path`): each connection, in a task of its own, sends one line (at
/// most `max_line` bytes; the rest is not read), gets `handle`'s answer
/// and is closed. Shared by this control socket and the admin socket
/// (`ops`).
pub async fn serve_lines<F, Fut>(
    listener: UnixListener,
    path: PathBuf,
    max_line: u64,
    shutdown: CancellationToken,
    handle: F,
) where
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = String> + Send,
{
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = shutdown.cancelled() => break,
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let _ = BufReader::new(read).take(max_line).read_line(&mut line).await;
            let text = handle(line).await;
            let _ = write.write_all(text.as_bytes()).await;
            let _ = write.shutdown().await;
        });
    }
    let _ = std::fs::remove_file(&path);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pickup::{NewPickup, StoreSettings};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn list_and_revoke_answers() {
        let tmp = tempfile::tempdir().unwrap();
        let settings = StoreSettings {
            link_lifetime: Duration::from_secs(3600),
            code_lifetime: Duration::from_secs(600),
            max_code_attempts: 5,
            lockout: Duration::from_secs(60),
            max_codes_per_hour: 5,
            retention: Duration::from_secs(3600),
        };
        let master = Arc::new(crate::crypto::MasterKey::from_bytes(&[3u8; 32]));
        let store = PickupStore::open(tmp.path(), master, settings).unwrap();
        let (rec, _) = store
            .escrow(
                NewPickup {
                    queue_id: crate::queue::QueueId::generate(),
                    copy_idx: 0,
                    recipient: "pat@clinic.example".into(),
                    sender: "dr@hospital.example".into(),
                    reason: "portal domain".into(),
                    content: b"Subject: SECRET-SUBJECT\r\n\r\nbody\r\n".to_vec(),
                },
                now_ms(),
            )
            .unwrap();
        let list = answer(&store, "list\n").unwrap();
        assert!(list.contains(&rec.id.to_string()) && list.contains("\"state\":\"active\""));
        assert!(!list.contains("SECRET-SUBJECT"));
        assert_eq!(
            answer(&store, &format!("revoke {}", rec.id)).unwrap(),
            format!("revoked {}\n", rec.id)
        );
        assert_eq!(
            answer(&store, &format!("revoke {}", rec.id)).unwrap(),
            format!("ended {}\n", rec.id)
        );
        let other = PickupId::generate();
        assert_eq!(
            answer(&store, &format!("revoke {other}")).unwrap(),
            format!("unknown {other}\n")
        );
        assert_eq!(answer(&store, "revoke nonsense").unwrap(), "unknown nonsense\n");
        assert!(answer(&store, "drop table").unwrap().starts_with("error:"));
    }
}
