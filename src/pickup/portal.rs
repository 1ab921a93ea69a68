//! The pickup portal: HTTPS (rustls, HTTP/1.1) pages where a recipient
//! opens a protected message with the link from the notification and a
//! one-time code mailed to the same address.
//!
//! Flow: `GET /m/<token>` shows a page with "Email me a code" and a code
//! form (nothing about the message: no subject, sender or size, in the page,
//! its title or the log). `POST /m/<token>/code` mails a code (8 digits,
//! `portal.code_lifetime`). `POST /m/<token>/verify` checks it; the right
//! code starts a session (cookie `HttpOnly; Secure; SameSite=Strict`, path
//! of the link, idle timeout `portal.session_idle_timeout`) and redirects to
//! the link, which then shows From, To, Date, Subject, the text body, the
//! HTML body sanitized by ammonia, and the attachments
//! (`GET /m/<token>/a/<n>`, `Content-Disposition: attachment`), and a
//! reply form: `POST /m/<token>/reply` needs the session and its
//! anti-forgery token, takes at most `portal.max_reply_size` octets, and
//! queues the text to the original sender as protected mail.
//!
//! Guarantees:
//! - Every response carries HSTS, a Content-Security-Policy allowing only
//!   this site's stylesheet and images (no scripts, no remote images, no
//!   framing), `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`,
//!   `X-Content-Type-Options: nosniff` and `Cache-Control: no-store`.
//! - Unknown links get 404, expired and revoked ones a content-free 410.
//! - Wrong codes count per link; the store locks the link after
//!   `portal.max_code_attempts` (even the right code is refused then).
//! - Requests are limited per client IP and per link (429 beyond).
//! - Logs name pickup ids, queue ids, addresses and client IPs, never the
//!   token, a code or anything from the message.
//! - The first view is recorded (time, client IP) in the pickup record,
//!   the copy's delivery status in the queue, and the log.
//!
//! Sessions live in memory: a restart signs everyone out.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use mail_parser::{MessageParser, MimeHeaders, PartType};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::{
    CodeCheck, CodeRequest, Pickup, PickupError, PickupId, PickupRecord, PickupState, PickupToken,
    ReplyOutcome,
};
use crate::queue::now_ms;

const COOKIE: &str = "ward_session";
const CSS: &str = include_str!("../../templates/portal/portal.css");
/// The Content-Security-Policy of every page: our stylesheet and images
/// only, no scripts, no remote anything, no framing, forms post only here.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A signed-in recipient.
struct Session {
    pickup: PickupId,
    last_ms: u64,
    /// The anti-forgery token of this session's forms (hex, 256 bits).
    csrf: String,
}

/// The portal's state, shared by every connection.
pub struct Portal {
    pickup: Pickup,
    organization: String,
    logo: Option<(Vec<u8>, &'static str)>,
    idle_ms: u64,
    /// Largest reply in octets; 0: no replies.
    max_reply: usize,
    /// Sessions by the SHA-256 of their cookie value.
    sessions: DashMap<[u8; 32], Session>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_link: DefaultKeyedRateLimiter<[u8; 32]>,
}

/// The client's address, put into each request by the accept loop.
#[derive(Clone, Copy)]
struct ClientIp(IpAddr);

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("portal logo {0}: {1}")]
    Logo(String, String),
}

impl Portal {
    pub fn new(config: &crate::config::Config, pickup: Pickup) -> Result<Arc<Portal>, PortalError> {
        let pc = &config.portal;
        let logo = if pc.logo_file.as_os_str().is_empty() {
            None
        } else {
            let path = pc.logo_file.display().to_string();
            let data =
                std::fs::read(&pc.logo_file).map_err(|e| PortalError::Logo(path.clone(), e.to_string()))?;
            let kind = if data.starts_with(b"\x89PNG\r\n\x1a\n") {
                "image/png"
            } else if path.ends_with(".svg") {
                "image/svg+xml"
            } else {
                return Err(PortalError::Logo(path, "is neither PNG nor SVG".into()));
            };
            Some((data, kind))
        };
        let per_minute = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Ok(Arc::new(Portal {
            pickup,
            organization: pc.organization.clone(),
            logo,
            idle_ms: pc.session_idle_timeout.as_millis() as u64,
            max_reply: pc.max_reply_size as usize,
            sessions: DashMap::new(),
            per_ip: RateLimiter::keyed(per_minute(pc.requests_per_minute_per_ip)),
            per_link: RateLimiter::keyed(per_minute(pc.requests_per_minute_per_link)),
        }))
    }

    /// The routes, with security headers and the per-IP limit on all.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", get(home))
            .route("/static/portal.css", get(css))
            .route("/logo", get(logo))
            .route("/m/{token}", get(link_page))
            .route("/m/{token}/code", post(request_code))
            .route("/m/{token}/verify", post(verify_code))
            .route("/m/{token}/a/{n}", get(attachment))
            .route(
                "/m/{token}/reply",
                // Percent-encoding can triple the text; room for the rest.
                post(reply).layer(DefaultBodyLimit::max(self.max_reply * 3 + 4096)),
            )
            .route("/m/{token}/signout", post(sign_out))
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(self.clone(), per_ip_limit))
            .layer(axum::middleware::map_response(security_headers))
            .with_state(self.clone())
    }

    fn page<T: Template>(&self, status: StatusCode, t: T) -> Response {
        match t.render() {
            Ok(html) => (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "portal template failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }

    fn status(&self, status: StatusCode, heading: &str, text: &str) -> Response {
        self.page(
            status,
            StatusPage {
                org: &self.organization,
                has_logo: self.logo.is_some(),
                heading,
                text,
            },
        )
    }

    fn gone(&self) -> Response {
        self.status(
            StatusCode::GONE,
            "This link no longer works",
            "The message behind this link has expired or was withdrawn, and it has been deleted. If you still need it, ask the sender to send it again.",
        )
    }

    fn not_found(&self) -> Response {
        self.status(
            StatusCode::NOT_FOUND,
            "Page not found",
            "Check that you opened the whole link from the email.",
        )
    }

    fn too_many(&self) -> Response {
        let mut r = self.status(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            "Please wait a minute and try again.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        r
    }

    fn internal(&self, e: &PickupError) -> Response {
        tracing::error!(error = %e, "portal request failed");
        self.status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "Please try again later.",
        )
    }

    /// The pickup behind a link, after the per-link limit. Err is the
    /// response to send (404, 410, 429).
    async fn resolve(&self, token: &str) -> Result<(PickupToken, PickupRecord), Response> {
        let Some(token) = PickupToken::from_url(token) else {
            return Err(self.not_found());
        };
        if self.per_link.check_key(&token.hash()).is_err() {
            return Err(self.too_many());
        }
        let t = token.clone();
        match self.pickup.blocking(move |s| s.find(&t)).await {
            Ok(Some(rec)) if rec.state == PickupState::Active && rec.expires_ms > now_ms() => {
                Ok((token, rec))
            }
            Ok(Some(_)) => Err(self.gone()),
            Ok(None) => Err(self.not_found()),
            Err(e) => Err(self.internal(&e)),
        }
    }

    /// The session for this pickup, if the request carries a live one
    /// (touching it): its anti-forgery token.
    fn session(&self, headers: &HeaderMap, id: &PickupId) -> Option<String> {
        let value = cookie(headers, COOKIE)?;
        let key = session_key(&value);
        let now = now_ms();
        let live = match self.sessions.get_mut(&key) {
            Some(mut s) if s.pickup == *id && now.saturating_sub(s.last_ms) < self.idle_ms => {
                s.last_ms = now;
                Some(s.csrf.clone())
            }
            Some(_) => None,
            None => return None,
        };
        if live.is_none() {
            self.sessions.remove(&key);
        }
        live
    }

    fn access_page(
        &self,
        token: &PickupToken,
        status: StatusCode,
        notice: Option<&str>,
        error: Option<&str>,
    ) -> Response {
        self.page(
            status,
            AccessPage {
                org: &self.organization,
                has_logo: self.logo.is_some(),
                token: token.as_str(),
                notice,
                error,
            },
        )
    }

    /// The message page (decrypted from the store), with a notice or an
    /// error about a reply.
    async fn message_page(
        &self,
        token: &PickupToken,
        rec: &PickupRecord,
        csrf: &str,
        status: StatusCode,
        notice: Option<&str>,
        error: Option<&str>,
    ) -> Response {
        let id = rec.id;
        let raw = match self.pickup.blocking(move |s| s.open_message(&id)).await {
            Ok(raw) => raw,
            Err(PickupError::Gone(_)) => return self.gone(),
            Err(e) => return self.internal(&e),
        };
        let Some(mut page) = render_message(self, token, rec, &raw) else {
            return self.status(
                StatusCode::OK,
                "This message can't be shown",
                "The message could not be read. Ask the sender to send it again.",
            );
        };
        page.reply_to = (self.max_reply > 0 && !rec.sender.is_empty()).then(|| rec.sender.clone());
        page.csrf = csrf;
        page.notice = notice;
        page.error = error;
        self.page(status, page)
    }

    fn locked(&self, token: &PickupToken) -> Response {
        self.access_page(
            token,
            StatusCode::FORBIDDEN,
            None,
            Some("Too many wrong codes were entered. This link is locked for a while; try again later."),
        )
    }

    /// Drops sessions idle past the timeout (called now and then).
    fn sweep_sessions(&self) {
        let now = now_ms();
        self.sessions
            .retain(|_, s| now.saturating_sub(s.last_ms) < self.idle_ms);
        self.per_ip.retain_recent();
        self.per_link.retain_recent();
    }
}

fn session_key(value: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, value.as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

/// A cookie's value from the request's Cookie headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

#[derive(Template)]
#[template(path = "portal/access.html")]
struct AccessPage<'a> {
    org: &'a str,
    has_logo: bool,
    token: &'a str,
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "portal/status.html")]
struct StatusPage<'a> {
    org: &'a str,
    has_logo: bool,
    heading: &'a str,
    text: &'a str,
}

struct AttachmentLink {
    index: usize,
    name: String,
    size: String,
}

#[derive(Template)]
#[template(path = "portal/message.html")]
struct MessagePage<'a> {
    org: &'a str,
    has_logo: bool,
    token: &'a str,
    subject: String,
    from: String,
    to: String,
    cc: String,
    date: String,
    text: String,
    html: Option<String>,
    attachments: Vec<AttachmentLink>,
    expires: String,
    /// The original sender, when replies are on and there is one.
    reply_to: Option<String>,
    max_reply: usize,
    csrf: &'a str,
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

async fn per_ip_limit(
    State(p): State<Arc<Portal>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let ip = req.extensions().get::<ClientIp>().map(|c| c.0);
    if let Some(ip) = ip
        && p.per_ip.check_key(&ip).is_err()
    {
        return p.too_many();
    }
    next.run(req).await
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000; includeSubDomains"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    r
}

async fn home(State(p): State<Arc<Portal>>) -> Response {
    p.status(
        StatusCode::OK,
        "Secure message portal",
        "Open the link from the email you received to read your message.",
    )
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

async fn logo(State(p): State<Arc<Portal>>) -> Response {
    match &p.logo {
        Some((data, kind)) => ([(header::CONTENT_TYPE, *kind)], data.clone()).into_response(),
        None => p.not_found(),
    }
}

async fn not_found(State(p): State<Arc<Portal>>) -> Response {
    p.not_found()
}

async fn link_page(
    State(p): State<Arc<Portal>>,
    Path(token): Path<String>,
    axum::Extension(ClientIp(ip)): axum::Extension<ClientIp>,
    headers: HeaderMap,
) -> Response {
    let (token, rec) = match p.resolve(&token).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(csrf) = p.session(&headers, &rec.id) else {
        return p.access_page(&token, StatusCode::OK, None, None);
    };
    let id = rec.id;
    let ip_s = ip.to_string();
    let now = now_ms();
    match p.pickup.blocking(move |s| s.record_view(&id, &ip_s, now)).await {
        Ok(before) if before.first_view.is_none() => {
            tracing::info!(
                pickup_id = %rec.id, queue_id = %rec.queue_id, to = %rec.recipient, client = %ip,
                "pickup opened for the first time (read receipt)"
            );
            crate::metrics::metrics().pickup("opened", 1);
            crate::audit::record(
                "pickup_opened",
                serde_json::json!({"pickup_id": rec.id.to_string(), "queue_id": rec.queue_id.to_string(), "recipient": rec.recipient, "client": ip.to_string()}),
            );
            if let Err(e) = p.pickup.record_opened(&rec, now, &ip.to_string()).await {
                tracing::warn!(pickup_id = %rec.id, error = %e, "cannot record the read receipt in the delivery status");
            }
        }
        Ok(_) => tracing::debug!(pickup_id = %rec.id, client = %ip, "pickup viewed again"),
        Err(e) => tracing::warn!(pickup_id = %rec.id, error = %e, "cannot record a pickup view"),
    }
    p.message_page(&token, &rec, &csrf, StatusCode::OK, None, None)
        .await
}

fn addresses(a: Option<&mail_parser::Address<'_>>) -> String {
    a.map(|a| {
        a.iter()
            .map(|x| match (x.name(), x.address()) {
                (Some(n), Some(ad)) => format!("{n} <{ad}>"),
                (None, Some(ad)) => ad.to_string(),
                (Some(n), None) => n.to_string(),
                (None, None) => String::new(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    })
    .unwrap_or_default()
}

fn human_size(n: usize) -> String {
    if n < 1024 {
        format!("{n} bytes")
    } else if n < 1024 * 1024 {
        format!("{:.1} KB", n as f64 / 1024.0)
    } else {
        format!("{:.1} MB", n as f64 / (1024.0 * 1024.0))
    }
}

/// HTML mail made safe to show: ammonia's defaults (no scripts, styles,
/// event handlers, forms or frames) and no images at all (remote images
/// are trackers; the CSP blocks them too).
fn sanitize_html(html: &str) -> String {
    ammonia::Builder::default()
        .rm_tags(["img"])
        .link_rel(Some("noopener noreferrer nofollow"))
        .url_schemes(["http", "https", "mailto"].into_iter().collect())
        .clean(html)
        .to_string()
}

fn render_message<'a>(
    p: &'a Portal,
    token: &'a PickupToken,
    rec: &PickupRecord,
    raw: &[u8],
) -> Option<MessagePage<'a>> {
    let msg = MessageParser::default().parse(raw)?;
    let has_html = msg.html_bodies().any(|b| matches!(b.body, PartType::Html(_)));
    let html = if has_html {
        msg.body_html(0).map(|h| sanitize_html(&h))
    } else {
        None
    };
    let text = if msg.text_bodies().any(|b| matches!(b.body, PartType::Text(_))) || !has_html {
        msg.body_text(0).map(|t| t.into_owned()).unwrap_or_default()
    } else {
        String::new()
    };
    let attachments = msg
        .attachments()
        .enumerate()
        .map(|(i, a)| AttachmentLink {
            index: i,
            name: a
                .attachment_name()
                .map(str::to_string)
                .unwrap_or_else(|| format!("attachment-{}", i + 1)),
            size: human_size(a.contents().len()),
        })
        .collect();
    Some(MessagePage {
        org: &p.organization,
        has_logo: p.logo.is_some(),
        token: token.as_str(),
        subject: msg.subject().unwrap_or("(no subject)").to_string(),
        from: addresses(msg.from()),
        to: addresses(msg.to()),
        cc: addresses(msg.cc()),
        date: msg.date().map(|d| d.to_rfc822()).unwrap_or_default(),
        text,
        html,
        attachments,
        expires: super::notify::date_words(rec.expires_ms),
        reply_to: None,
        max_reply: p.max_reply,
        csrf: "",
        notice: None,
        error: None,
    })
}

async fn request_code(
    State(p): State<Arc<Portal>>,
    Path(token): Path<String>,
    axum::Extension(ClientIp(ip)): axum::Extension<ClientIp>,
) -> Response {
    let (token, rec) = match p.resolve(&token).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match p.pickup.send_code(rec.id).await {
        Ok(CodeRequest::Sent) => {
            tracing::info!(pickup_id = %rec.id, to = %rec.recipient, client = %ip, "pickup code mailed");
            p.access_page(
                &token,
                StatusCode::OK,
                Some("We emailed you a code. It can take a minute to arrive; it works for a few minutes."),
                None,
            )
        }
        Ok(CodeRequest::Locked { .. }) => p.locked(&token),
        Ok(CodeRequest::TooMany) => p.access_page(
            &token,
            StatusCode::TOO_MANY_REQUESTS,
            None,
            Some("Several codes were sent already. Use the last one, or try again in an hour."),
        ),
        Err(PickupError::Gone(_)) => p.gone(),
        Err(e) => p.internal(&e),
    }
}

#[derive(serde::Deserialize)]
struct CodeForm {
    #[serde(default)]
    code: String,
}

async fn verify_code(
    State(p): State<Arc<Portal>>,
    Path(token): Path<String>,
    axum::Extension(ClientIp(ip)): axum::Extension<ClientIp>,
    form: Result<Form<CodeForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (token, rec) = match p.resolve(&token).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let code: String = form
        .map(|f| f.0.code)
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace())
        .take(64)
        .collect();
    let id = rec.id;
    match p
        .pickup
        .blocking(move |s| s.check_code(&id, &code, now_ms()))
        .await
    {
        Ok(CodeCheck::Accepted) => {
            let mut raw = [0u8; 32];
            crate::crypto::fill_random(&mut raw);
            let value = hex::encode(raw);
            let mut csrf = [0u8; 32];
            crate::crypto::fill_random(&mut csrf);
            p.sessions.insert(
                session_key(&value),
                Session {
                    pickup: rec.id,
                    last_ms: now_ms(),
                    csrf: hex::encode(csrf),
                },
            );
            p.sweep_sessions();
            tracing::info!(pickup_id = %rec.id, client = %ip, "pickup code accepted; session started");
            let cookie = format!(
                "{COOKIE}={value}; Path=/m/{}; HttpOnly; Secure; SameSite=Strict",
                token.as_str()
            );
            let mut r = Redirect::to(&format!("/m/{}", token.as_str())).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Ok(CodeCheck::Wrong { left }) => {
            tracing::info!(pickup_id = %rec.id, client = %ip, left, "pickup code refused");
            crate::metrics::metrics().code_failures.inc();
            crate::audit::record(
                "pickup_code_failed",
                serde_json::json!({"pickup_id": rec.id.to_string(), "client": ip.to_string(), "left": left}),
            );
            let msg = format!(
                "That code is not right. {left} more {} before this link locks.",
                if left == 1 { "try" } else { "tries" }
            );
            p.access_page(&token, StatusCode::UNAUTHORIZED, None, Some(&msg))
        }
        Ok(CodeCheck::Locked { .. }) => {
            tracing::warn!(pickup_id = %rec.id, client = %ip, "pickup code refused: link locked after too many wrong codes");
            crate::metrics::metrics().code_failures.inc();
            crate::audit::record(
                "pickup_code_failed",
                serde_json::json!({"pickup_id": rec.id.to_string(), "client": ip.to_string(), "locked": true}),
            );
            p.locked(&token)
        }
        Ok(CodeCheck::NoCode) => p.access_page(
            &token,
            StatusCode::UNAUTHORIZED,
            None,
            Some("That code has expired or was already used. Ask for a new one."),
        ),
        Err(PickupError::Gone(_)) => p.gone(),
        Err(e) => p.internal(&e),
    }
}

async fn attachment(
    State(p): State<Arc<Portal>>,
    Path((token, n)): Path<(String, usize)>,
    headers: HeaderMap,
) -> Response {
    let (token, rec) = match p.resolve(&token).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if p.session(&headers, &rec.id).is_none() {
        return Redirect::to(&format!("/m/{}", token.as_str())).into_response();
    }
    let id = rec.id;
    let raw = match p.pickup.blocking(move |s| s.open_message(&id)).await {
        Ok(raw) => raw,
        Err(PickupError::Gone(_)) => return p.gone(),
        Err(e) => return p.internal(&e),
    };
    let Some(msg) = MessageParser::default().parse(&raw) else {
        return p.not_found();
    };
    let Some(part) = msg.attachments().nth(n) else {
        return p.not_found();
    };
    let name = part
        .attachment_name()
        .map(str::to_string)
        .unwrap_or_else(|| format!("attachment-{}", n + 1));
    let disposition = content_disposition(&name);
    let data = part.contents().to_vec();
    tracing::info!(pickup_id = %rec.id, attachment = n, size = data.len(), "pickup attachment downloaded");
    let mut r = data.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    } else {
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    r
}

#[derive(serde::Deserialize)]
struct ReplyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reply: String,
}

/// `POST /m/<token>/reply`: a live session, its anti-forgery token, and
/// text within `portal.max_reply_size`; the reply is queued to the original
/// sender. The text never reaches the log (its size does).
async fn reply(
    State(p): State<Arc<Portal>>,
    Path(token): Path<String>,
    axum::Extension(ClientIp(ip)): axum::Extension<ClientIp>,
    headers: HeaderMap,
    form: Result<Form<ReplyForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (token, rec) = match p.resolve(&token).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(csrf) = p.session(&headers, &rec.id) else {
        return Redirect::to(&format!("/m/{}", token.as_str())).into_response();
    };
    let too_long = format!(
        "Your reply is too long: it can have at most {} characters.",
        p.max_reply
    );
    // The message page again, with a notice or an error.
    let page = |status: StatusCode, notice: Option<&'static str>, error: Option<&str>| {
        let error = error.map(str::to_string);
        let (p, token, rec, csrf) = (&p, &token, &rec, &csrf);
        async move {
            p.message_page(token, rec, csrf, status, notice, error.as_deref())
                .await
        }
    };
    let no_replies = || {
        p.status(
            StatusCode::FORBIDDEN,
            "Replies are not possible here",
            "Reply to the sender by other means.",
        )
    };
    let form = match form {
        Ok(Form(f)) => f,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return page(StatusCode::PAYLOAD_TOO_LARGE, None, Some(&too_long)).await;
        }
        Err(_) => {
            return p.status(
                StatusCode::BAD_REQUEST,
                "The form could not be read",
                "Go back to the message and try again.",
            );
        }
    };
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        form.csrf.as_bytes(),
        csrf.as_bytes(),
    )) {
        tracing::warn!(pickup_id = %rec.id, client = %ip, "portal reply refused: anti-forgery token missing or wrong");
        return p.status(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "Open the message again and write your reply there.",
        );
    }
    if p.max_reply == 0 || rec.sender.is_empty() {
        return no_replies();
    }
    if form.reply.len() > p.max_reply {
        return page(StatusCode::PAYLOAD_TOO_LARGE, None, Some(&too_long)).await;
    }
    if form.reply.trim().is_empty() {
        return page(StatusCode::BAD_REQUEST, None, Some("Write your reply first.")).await;
    }
    let size = form.reply.len();
    match p.pickup.send_reply(&rec, &form.reply).await {
        Ok(ReplyOutcome::Sent(queue_id)) => {
            tracing::info!(
                pickup_id = %rec.id, reply_queue_id = %queue_id, from = %rec.recipient, to = %rec.sender,
                size, client = %ip, "portal reply queued to the sender"
            );
            page(StatusCode::OK, Some("Your reply was sent."), None).await
        }
        Ok(ReplyOutcome::TooMany) => {
            page(
                StatusCode::TOO_MANY_REQUESTS,
                None,
                Some("No more replies can be sent from this link."),
            )
            .await
        }
        Ok(ReplyOutcome::NoSender) => no_replies(),
        Err(PickupError::Gone(_)) => p.gone(),
        Err(e) => p.internal(&e),
    }
}

/// `attachment; filename="ascii"; filename*=UTF-8''percent-encoded`
/// (RFC 6266): quotes, backslashes, controls and path separators never
/// reach the header.
fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '/' | ';' | '%') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

async fn sign_out(State(p): State<Arc<Portal>>, Path(token): Path<String>, headers: HeaderMap) -> Response {
    if let Some(v) = cookie(&headers, COOKIE) {
        p.sessions.remove(&session_key(&v));
    }
    let Some(token) = PickupToken::from_url(&token) else {
        return p.not_found();
    };
    let mut r = p.status(StatusCode::OK, "Signed out", "You can close this page.");
    let clear = format!(
        "{COOKIE}=; Path=/m/{}; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
        token.as_str()
    );
    if let Ok(v) = HeaderValue::from_str(&clear) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Binds the portal's listener.
pub async fn bind(address: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(address).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

/// Accepts connections until `shutdown`: TLS handshake (10 s at most),
/// then HTTP/1.1 with the client's IP in each request.
pub async fn serve(
    portal: Arc<Portal>,
    listener: TcpListener,
    acceptor: Arc<crate::config::Live<TlsAcceptor>>,
    shutdown: CancellationToken,
) {
    let router = portal.router();
    let conns = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "portal accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // The certificate in force at accept (a reload replaces it for
        // later connections only).
        let acceptor = acceptor.get();
        let router = router.clone();
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer.ip(), error = %e, "portal TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let ip = peer.ip();
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ClientIp(ip));
                let mut r = router.clone();
                async move { tower_service::Service::call(&mut r, req.map(axum::body::Body::new)).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(20))
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(client = %ip, error = %e, "portal connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    conns.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), conns.wait()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizer_drops_scripts_handlers_and_images() {
        let out = sanitize_html(
            "<p onclick=\"x()\">hi</p><script>alert(1)</script><img src=\"https://t.example/p.gif\"><a href=\"javascript:x()\">j</a><a href=\"https://ok.example/\">ok</a><style>p{}</style>",
        );
        assert!(out.contains("<p>hi</p>"), "{out}");
        assert!(!out.contains("script") && !out.contains("onclick") && !out.contains("img"));
        assert!(!out.contains("javascript") && !out.contains("style"), "{out}");
        assert!(out.contains("href=\"https://ok.example/\""), "{out}");
    }

    #[test]
    fn content_disposition_is_safe_and_keeps_the_name() {
        assert_eq!(
            content_disposition("report.pdf"),
            "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
        );
        let d = content_disposition("a\"b\r\nX-Evil: 1/../résumé.pdf");
        assert!(!d.contains('\r') && !d.contains('\n'));
        assert!(
            d.starts_with("attachment; filename=\"a_b__X-Evil: 1_.._r_sum_.pdf\""),
            "{d}"
        );
        assert!(d.ends_with("r%C3%A9sum%C3%A9.pdf"), "{d}");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; ward_session=abc; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }

    /// WCAG 2.x contrast ratio of two "#rrggbb" colors.
    fn contrast(a: &str, b: &str) -> f64 {
        fn luminance(hex: &str) -> f64 {
            let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap();
            let channel = |shift: u32| {
                let c = ((v >> shift) & 0xff) as f64 / 255.0;
                if c <= 0.03928 {
                    c / 12.92
                } else {
                    ((c + 0.055) / 1.055).powf(2.4)
                }
            };
            0.2126 * channel(16) + 0.7152 * channel(8) + 0.0722 * channel(0)
        }
        let (x, y) = (luminance(a), luminance(b));
        (x.max(y) + 0.05) / (x.min(y) + 0.05)
    }

    /// The stylesheet's colors meet WCAG AA: 4.5:1 for text (7:1 for the
    /// small print), 3:1 for the focus ring against what it sits on.
    #[test]
    fn stylesheet_colors_have_enough_contrast() {
        let var = |name: &str| {
            let at = CSS
                .find(&format!("--{name}: "))
                .unwrap_or_else(|| panic!("--{name}"));
            CSS[at + name.len() + 4..at + name.len() + 11].to_string()
        };
        let white = "#ffffff".to_string();
        for (what, fg, bg, min) in [
            ("text", var("fg"), var("bg"), 4.5),
            ("links and headings", var("accent"), var("bg"), 4.5),
            ("small print", var("muted"), var("bg"), 7.0),
            ("button text", white.clone(), var("accent"), 4.5),
            ("secondary button text", var("fg"), var("quiet"), 4.5),
            ("error text", var("err"), var("err-bg"), 4.5),
            ("notice text", var("fg"), var("notice-bg"), 4.5),
            ("focus ring on the page", var("focus"), var("bg"), 3.0),
            ("focus halo by the ring", var("focus-halo"), var("focus"), 3.0),
        ] {
            let c = contrast(&fg, &bg);
            assert!(c >= min, "{what}: {fg} on {bg} is {c:.2}:1, below {min}:1");
        }
        assert!(CSS.contains("outline: 3px solid var(--focus)"));
        assert!(!CSS.contains("outline: none") && !CSS.contains("outline: 0"));
    }
}
