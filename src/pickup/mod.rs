//! Pickup: the encrypted escrow for protected copies that can't go over
//! verified TLS, the content-free notification that points the recipient
//! at it, and the HTTPS portal where the recipient reads it.
//!
//! - `store.rs`: the pickup store (sealed content, wrapped keys, records,
//!   one-time codes, lockout, expiry, crypto-shredding).
//! - `notify.rs`: the notification and code mails (no content).
//! - `control.rs`: `ward pickup list` / `revoke` over a Unix socket.
//! - `portal.rs`: the HTTPS portal (axum over rustls): link, code,
//!   session, message page, attachments.
//! - [`Pickup`] ties the store to the queue: a protected copy is escrowed
//!   and its notification queued (policy `may`: it holds no content); a
//!   code request issues a code and queues the code mail; the first view
//!   queues the optional "opened" notice to the sender (`may`, no
//!   content); a reply written on the portal is queued to the original
//!   sender as protected mail (it holds what the recipient wrote), so it
//!   leaves only over verified TLS or through the portal.
//!
//! Floor 3: imports `queue`, `crypto`, `config`, `dkim` and `tls` only; it does not
//! know about MX records or delivery. `dispatch` decides what goes here.

pub mod control;
pub mod notify;
pub mod portal;
pub mod store;

pub use store::{
    CodeCheck, CodeIssue, NewPickup, PickupError, PickupId, PickupRecord, PickupState, PickupStore,
    PickupToken, StoreSettings, View,
};

use crate::config::{Config, PolicyAction, TlsPolicy};
use crate::queue::{ClientInfo, CopyPolicy, Envelope, NewMessage, Queue, QueueId, Recipient, now_ms};

/// The `client.listener` of mail the pickup portal queues (notifications,
/// codes, opened notices, portal replies).
pub const PICKUP_LISTENER: &str = "pickup";

/// What a code request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeRequest {
    /// A code was queued for the recipient's address.
    Sent,
    /// The link is locked after too many wrong codes.
    Locked { until_ms: u64 },
    /// Too many codes were mailed for this link in the last hour.
    TooMany,
}

/// What a reply from the portal came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// Queued to the original sender.
    Sent(QueueId),
    /// `portal.max_replies_per_link` replies were sent already.
    TooMany,
    /// The message had no sender to reply to (null reverse-path).
    NoSender,
}

/// The pickup store and the mail it sends. Cheap to clone.
#[derive(Clone)]
pub struct Pickup {
    store: PickupStore,
    queue: Queue,
    letterhead: notify::Letterhead,
    /// `https://<public_host>/m/`
    link_base: String,
    code_minutes: u64,
    max_replies: u32,
    opened_notice: bool,
    /// Signs every mail queued here, when `[dkim]` is configured.
    dkim: Option<std::sync::Arc<crate::dkim::DkimSigner>>,
}

impl Pickup {
    pub fn new(
        config: &Config,
        store: PickupStore,
        queue: Queue,
        dkim: Option<std::sync::Arc<crate::dkim::DkimSigner>>,
    ) -> Pickup {
        let hostname = config.server.effective_hostname();
        Pickup {
            store,
            queue,
            letterhead: notify::Letterhead {
                organization: config.portal.organization.clone(),
                from: config.portal.effective_notify_from(&config.server),
                subject: config.portal.notify_subject.clone(),
                hostname,
            },
            link_base: format!(
                "https://{}/m/",
                config.portal.effective_public_host(&config.server)
            ),
            code_minutes: config.portal.code_lifetime.as_secs().div_ceil(60),
            max_replies: config.portal.max_replies_per_link,
            opened_notice: config.portal.opened_notice,
            dkim,
        }
    }

    pub fn store(&self) -> &PickupStore {
        &self.store
    }

    pub fn organization(&self) -> &str {
        &self.letterhead.organization
    }

    /// Runs a store operation on a blocking thread.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&PickupStore) -> Result<T, PickupError> + Send + 'static,
    ) -> Result<T, PickupError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| PickupError::Corrupt("pickup task".into(), e.to_string()))?
    }

    /// Escrows a protected copy and queues its notification. When it
    /// returns Ok both are on disk, so the queue may drop the copy. If the
    /// notification can't be queued the pickup is revoked again (its key
    /// destroyed) and the error returned, so the copy is retried whole.
    pub async fn escrow_and_notify(&self, new: NewPickup) -> Result<PickupRecord, PickupError> {
        let (record, token) = self.blocking(move |s| s.escrow(new, now_ms())).await?;
        let link = format!("{}{}", self.link_base, token.as_str());
        let content = notify::notification(
            &self.letterhead,
            &record.recipient,
            &link,
            record.expires_ms,
            now_ms(),
        );
        drop(link);
        match self
            .enqueue_mail(
                &record.recipient,
                content,
                Self::content_free("pickup notification"),
            )
            .await
        {
            Ok(_) => {
                crate::metrics::metrics().pickup("created", 1);
                crate::audit::record(
                    "pickup_created",
                    serde_json::json!({
                        "pickup_id": record.id.to_string(), "queue_id": record.queue_id.to_string(),
                        "recipient": record.recipient, "expires_ms": record.expires_ms,
                    }),
                );
                crate::audit::record(
                    "pickup_notified",
                    serde_json::json!({"pickup_id": record.id.to_string(), "recipient": record.recipient}),
                );
                Ok(record)
            }
            Err(e) => {
                let id = record.id;
                if let Err(e2) = self.blocking(move |s| s.revoke(&id, now_ms())).await {
                    tracing::error!(pickup_id = %id, error = %e2, "cannot revoke a pickup whose notification failed");
                }
                Err(e)
            }
        }
    }

    /// Ends expired pickups (key first, then content) and forgets old
    /// tombstones, once a minute until `shutdown`.
    pub async fn purge_loop(self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            match self.blocking(|s| s.purge(now_ms())).await {
                Ok((0, 0)) => {}
                Ok((expired, forgotten)) => {
                    crate::metrics::metrics().pickup("expired", expired as u64);
                    crate::audit::record("pickup_expired", serde_json::json!({"count": expired}));
                    tracing::info!(
                        expired,
                        forgotten,
                        "pickup links expired; their keys and data destroyed"
                    )
                }
                Err(e) => tracing::warn!(error = %e, "pickup purge failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// The read receipt in the queue's delivery status of the copy, and,
    /// with `portal.opened_notice`, the content-free notice to the sender.
    pub async fn record_opened(
        &self,
        rec: &PickupRecord,
        at_ms: u64,
        client_ip: &str,
    ) -> Result<bool, PickupError> {
        let opened = crate::queue::Opened {
            at_ms,
            client_ip: client_ip.to_string(),
        };
        let recorded = self
            .queue
            .record_opened(rec.queue_id, rec.copy_idx, opened)
            .await?;
        if self.opened_notice && !rec.sender.is_empty() {
            let content = notify::opened(
                &self.letterhead,
                &rec.sender,
                &rec.recipient,
                rec.created_ms,
                at_ms,
                now_ms(),
            );
            let notice = self
                .enqueue_mail(&rec.sender, content, Self::content_free("pickup opened notice"))
                .await?;
            tracing::info!(
                pickup_id = %rec.id, notice_queue_id = %notice, to = %rec.sender,
                "opened notice queued to the sender"
            );
        }
        Ok(recorded)
    }

    /// Queues a reply the recipient wrote on the portal to the original
    /// sender, as protected mail (verified TLS or the portal): From the
    /// notifier address, Reply-To the recipient.
    pub async fn send_reply(&self, rec: &PickupRecord, text: &str) -> Result<ReplyOutcome, PickupError> {
        if rec.sender.is_empty() {
            return Ok(ReplyOutcome::NoSender);
        }
        let id = rec.id;
        let max = self.max_replies;
        if !self.blocking(move |s| s.count_reply(&id, max)).await? {
            return Ok(ReplyOutcome::TooMany);
        }
        let raw = self.blocking(move |s| s.open_message(&id)).await?;
        let parsed = mail_parser::MessageParser::default().parse_headers(&raw);
        let original = notify::Original {
            sender: &rec.sender,
            recipient: &rec.recipient,
            subject: parsed.as_ref().and_then(|m| m.subject()),
            message_id: parsed.as_ref().and_then(|m| m.message_id()),
        };
        let content = notify::reply(&self.letterhead, &original, text, now_ms());
        drop(parsed);
        drop(raw);
        let policy = CopyPolicy {
            action: PolicyAction::Protect,
            reason: "portal reply".into(),
            ..CopyPolicy::default()
        };
        let queued = self.enqueue_mail(&rec.sender, content, policy).await?;
        Ok(ReplyOutcome::Sent(queued))
    }

    /// The policy of mail Ward writes that holds no content: TLS `may`, as
    /// it must reach recipients whose servers can't do verified TLS, which
    /// is why they get the portal at all.
    fn content_free(reason: &str) -> CopyPolicy {
        CopyPolicy {
            action: PolicyAction::Deliver,
            reason: reason.into(),
            tls_policy: Some(TlsPolicy::May),
            ..CopyPolicy::default()
        }
    }

    /// Issues a one-time code for a pickup and queues it to the recipient.
    pub async fn send_code(&self, id: PickupId) -> Result<CodeRequest, PickupError> {
        match self.blocking(move |s| s.issue_code(&id, now_ms())).await? {
            CodeIssue::Issued(code) => {
                let rec = self
                    .blocking(move |s| s.record(&id))
                    .await?
                    .ok_or(PickupError::NotFound(id))?;
                let content = notify::code(
                    &self.letterhead,
                    &rec.recipient,
                    &code,
                    self.code_minutes,
                    now_ms(),
                );
                self.enqueue_mail(&rec.recipient, content, Self::content_free("pickup code"))
                    .await?;
                crate::audit::record(
                    "pickup_code_sent",
                    serde_json::json!({"pickup_id": id.to_string(), "recipient": rec.recipient}),
                );
                Ok(CodeRequest::Sent)
            }
            CodeIssue::Locked { until_ms } => Ok(CodeRequest::Locked { until_ms }),
            CodeIssue::TooMany => Ok(CodeRequest::TooMany),
        }
    }

    /// Queues a mail Ward wrote itself, from the notifier address, under
    /// `policy`, DKIM-signed when a key is configured. A signing failure
    /// (not expected with a key that loaded) is logged and the mail goes
    /// unsigned: a recipient must still learn that a message waits.
    async fn enqueue_mail(
        &self,
        to: &str,
        content: Vec<u8>,
        policy: CopyPolicy,
    ) -> Result<QueueId, PickupError> {
        let content = match &self.dkim {
            Some(d) => d.sign(&content).unwrap_or_else(|e| {
                tracing::error!(error = %e, to, "mail queued without its DKIM signature");
                content
            }),
            None => content,
        };
        let msg = NewMessage {
            id: QueueId::generate(),
            envelope: Envelope {
                sender: self.letterhead.from.clone(),
                recipients: vec![Recipient::new(to)],
                ..Default::default()
            },
            client: ClientInfo {
                ip: String::new(),
                helo: String::new(),
                authorized_by: "ward pickup".into(),
                tls: None,
                listener: PICKUP_LISTENER.into(),
            },
            content,
            received_ms: now_ms(),
            policies: vec![policy],
            findings: Vec::new(),
            unscanned: Vec::new(),
            message_id: None,
        };
        Ok(self.queue.enqueue(msg).await?)
    }
}
