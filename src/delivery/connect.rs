//! Opening a connection that meets a destination's TLS policy.
//!
//! Owns: the walk over a route's addresses and, per address, the greeting,
//! EHLO, STARTTLS and handshake as the policy demands:
//!
//! | policy    | no STARTTLS / refused | handshake or certificate fails |
//! |-----------|-----------------------|--------------------------------|
//! | `verify`  | host fails (TLS)      | host fails (TLS)               |
//! | `encrypt` | host fails (TLS)      | host fails (TLS)               |
//! | `may`     | plaintext             | reconnect once, plaintext      |
//!
//! Under `verify` the handshake uses `ClientTls::verifying` with the
//! route's certificate name; under `encrypt` and `may` it uses
//! `ClientTls::unverified` and records whether the chain would have
//! verified.
//!
//! Guarantees (invariant 3): under `verify` and `encrypt` no MAIL command is
//! ever sent on a connection that is not TLS-protected as required; a host
//! failing the policy is skipped and never retried without TLS. When every
//! address fails, the result is `TlsPolicyNotMet` if any of them failed for
//! TLS reasons, so `dispatch` can take the portal path; otherwise
//! `Temporary`. A greeting or EHLO refusal (even 5xx) only fails that host:
//! another MX may be fine, and a transient refusal must not bounce mail.
//!
//! Refuses: HELO (no extensions, so no STARTTLS) except under `may`, after
//! EHLO was refused with 5xx.

use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::client::{Connection, SmtpStream};
use super::route::{self, Target};
use super::{AttemptError, AttemptErrorKind, Delivery, RemoteReply, Timeouts, TlsEvidence};
use crate::config::TlsPolicy;

/// Why one address failed.
#[derive(Debug)]
enum HostFailure {
    /// The host can't meet the TLS policy (no STARTTLS, refused it).
    Tls(AttemptError),
    /// The TLS handshake or the certificate check failed. Also a TLS
    /// failure; under `may` it sends us back in plaintext.
    Handshake(AttemptError),
    /// Anything else: refused connection, greeting, EHLO, network.
    Other(AttemptError),
}

impl HostFailure {
    fn is_tls(&self) -> bool {
        matches!(self, HostFailure::Tls(_) | HostFailure::Handshake(_))
    }

    fn error(&self) -> &AttemptError {
        match self {
            HostFailure::Tls(e) | HostFailure::Handshake(e) | HostFailure::Other(e) => e,
        }
    }

    fn into_error(self) -> AttemptError {
        match self {
            HostFailure::Tls(e) | HostFailure::Handshake(e) | HostFailure::Other(e) => e,
        }
    }
}

/// Opens a connection under `policy`, or under the stricter of it and the
/// destination's policy when `at_least`.
pub(super) async fn connect(
    delivery: &Delivery,
    domain: &str,
    policy: TlsPolicy,
    at_least: bool,
) -> Result<Connection, AttemptError> {
    let domain = domain.trim_end_matches('.').to_lowercase();
    let policy = if at_least {
        stricter(delivery.policy_for(&domain), policy)
    } else {
        policy
    };
    let targets = route::resolve(delivery, &domain).await.inspect_err(|e| {
        tracing::info!(%domain, kind = ?e.kind, status = %e.status, detail = %e.detail, "no route");
    })?;
    let mut failures = Vec::with_capacity(targets.len());
    for target in &targets {
        let result = match attempt(delivery, target, policy, true).await {
            Err(HostFailure::Handshake(e)) if policy == TlsPolicy::May => {
                // Opportunistic TLS failed: the session is gone, so connect
                // again, once, and stay in plaintext.
                tracing::info!(%domain, remote = %target.host, detail = %e.detail, "TLS failed under may; retrying in plaintext");
                attempt(delivery, target, policy, false).await
            }
            other => other,
        };
        match result {
            Ok(connection) => {
                let ev = connection.evidence();
                tracing::info!(
                    %domain,
                    remote = %target.host,
                    %policy,
                    tls = ev.version.as_deref().unwrap_or("none"),
                    verified = ev.verified,
                    "connected"
                );
                return Ok(connection);
            }
            Err(failure) => {
                let e = failure.error();
                tracing::info!(
                    %domain,
                    remote = %target.host,
                    tls_failure = failure.is_tls(),
                    detail = %e.detail,
                    "host failed"
                );
                failures.push(failure);
            }
        }
    }
    Err(combine(failures))
}

/// One error for an attempt in which every address failed.
fn combine(failures: Vec<HostFailure>) -> AttemptError {
    let any_tls = failures.iter().any(HostFailure::is_tls);
    let detail = failures
        .iter()
        .map(|f| {
            let e = f.error();
            match &e.remote {
                Some(r) => format!("{r}: {}", e.detail),
                None => e.detail.clone(),
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    let count = failures.len();
    // Report the last TLS failure when there is one (that is what decides
    // the kind), else the last failure.
    let last = if any_tls {
        failures.into_iter().rev().find(HostFailure::is_tls)
    } else {
        failures.into_iter().next_back()
    };
    let Some(last) = last.map(HostFailure::into_error) else {
        return AttemptError::temporary("4.4.4", "no address to try");
    };
    let (kind, status) = if any_tls {
        (AttemptErrorKind::TlsPolicyNotMet, "4.7.5".to_string())
    } else {
        // Even a 5xx greeting from every host is not proof the domain
        // can't receive mail: try again later.
        (AttemptErrorKind::Temporary, as_temporary(&last.status))
    };
    AttemptError {
        kind,
        status,
        detail: format!("all {count} addresses failed: {detail}"),
        ..last
    }
}

/// How long a QUIT on a connection we are giving up on may take: a server
/// that neither answers nor closes must not hold the attempt for the full
/// command timeout.
fn polite(t: Timeouts) -> Duration {
    t.command.min(Duration::from_secs(10))
}

/// A status code moved to the temporary class ("5.7.1" -> "4.7.1").
fn as_temporary(status: &str) -> String {
    match status.strip_prefix('5') {
        Some(rest) => format!("4{rest}"),
        None => status.to_string(),
    }
}

/// Opens one address under `policy`; `try_tls` false skips STARTTLS (the
/// plaintext retry under `may`).
async fn attempt(
    delivery: &Delivery,
    target: &Target,
    policy: TlsPolicy,
    try_tls: bool,
) -> Result<Connection, HostFailure> {
    let t = Timeouts::from_config(&delivery.config);
    let remote = &target.host;
    let plaintext = TlsEvidence::plaintext(policy, &target.tls_name);
    let other = |e: AttemptError, evidence: &TlsEvidence| {
        HostFailure::Other(e.with_remote(remote).with_evidence(Some(evidence.clone())))
    };
    let session =
        |e: super::client::SessionError, evidence: &TlsEvidence| other(e.into_attempt_error(), evidence);
    let tls_failure = |detail: String| {
        HostFailure::Tls(
            AttemptError::new(AttemptErrorKind::TlsPolicyNotMet, "4.7.5", detail)
                .with_remote(remote)
                .with_evidence(Some(plaintext.clone())),
        )
    };
    let refused = |reply: RemoteReply, stage: &str, evidence: &TlsEvidence| {
        let detail = format!("{stage} refused: {reply}");
        other(AttemptError::from_reply(reply, detail), evidence)
    };

    let tcp = match timeout(t.connect, TcpStream::connect(remote.addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err(other(
                AttemptError::temporary("4.4.1", format!("connect: {e}")),
                &plaintext,
            ));
        }
        Err(_) => {
            return Err(other(
                AttemptError::temporary("4.4.1", "connect: timed out"),
                &plaintext,
            ));
        }
    };
    // Small command writes must not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let mut stream = SmtpStream::new(tcp);

    let greeting = stream
        .read_reply(t.greeting, "greeting")
        .await
        .map_err(|e| session(e, &plaintext))?;
    if !greeting.is_positive() {
        stream.quit(polite(t)).await;
        return Err(refused(greeting, "greeting", &plaintext));
    }

    let helo_name = &delivery.helo_name;
    let mut extensions = match stream
        .ehlo(helo_name, t.command)
        .await
        .map_err(|e| session(e, &plaintext))?
    {
        Ok(ext) => ext,
        Err(reply) if reply.is_permanent() && policy == TlsPolicy::May => {
            let helo = stream
                .helo(helo_name, t.command)
                .await
                .map_err(|e| session(e, &plaintext))?;
            if !helo.is_positive() {
                return Err(refused(helo, "HELO", &plaintext));
            }
            Default::default()
        }
        Err(reply) if reply.is_permanent() => {
            stream.quit(polite(t)).await;
            return Err(tls_failure(format!(
                "EHLO refused ({reply}), so no STARTTLS; {policy} requires TLS"
            )));
        }
        Err(reply) => return Err(refused(reply, "EHLO", &plaintext)),
    };

    let must_tls = policy != TlsPolicy::May;
    if !(must_tls || (try_tls && extensions.starttls())) {
        return Ok(Connection::new(stream, extensions, plaintext, remote.clone(), t));
    }
    if !extensions.starttls() {
        stream.quit(polite(t)).await;
        return Err(tls_failure(format!(
            "STARTTLS not offered; {policy} requires TLS"
        )));
    }

    stream
        .send(b"STARTTLS\r\n", t.command, "STARTTLS")
        .await
        .map_err(|e| session(e, &plaintext))?;
    let reply = stream
        .read_reply(t.command, "STARTTLS")
        .await
        .map_err(|e| session(e, &plaintext))?;
    if reply.code != 220 {
        if must_tls {
            stream.quit(polite(t)).await;
            return Err(tls_failure(format!(
                "STARTTLS refused ({reply}); {policy} requires TLS"
            )));
        }
        // RFC 3207 4: after a refusal the session goes on as before.
        return Ok(Connection::new(stream, extensions, plaintext, remote.clone(), t));
    }

    let config = match policy {
        TlsPolicy::Verify => delivery.tls.verifying.clone(),
        TlsPolicy::Encrypt | TlsPolicy::May => delivery.tls.unverified.clone(),
    };
    let server_name = ServerName::try_from(target.tls_name.clone()).map_err(|_| {
        HostFailure::Handshake(
            AttemptError::new(
                AttemptErrorKind::TlsPolicyNotMet,
                "4.7.5",
                format!("`{}` is not a valid certificate name", target.tls_name),
            )
            .with_remote(remote)
            .with_evidence(Some(plaintext.clone())),
        )
    })?;
    let mut stream = stream
        .start_tls(config, server_name.clone(), t.command)
        .await
        .map_err(|detail| {
            HostFailure::Handshake(
                AttemptError::new(AttemptErrorKind::TlsPolicyNotMet, "4.7.5", detail)
                    .with_remote(remote)
                    .with_evidence(Some(plaintext.clone())),
            )
        })?;

    let (version, cipher, chain) = stream.tls_session().unwrap_or_default();
    let verified = match policy {
        // The verifying config only completes the handshake for a trusted
        // chain valid for the name.
        TlsPolicy::Verify => true,
        TlsPolicy::Encrypt | TlsPolicy::May => delivery.tls.would_verify(&chain, &server_name),
    };
    let evidence = TlsEvidence {
        policy,
        version,
        cipher,
        verified,
        peer_name: target.tls_name.clone(),
    };

    // RFC 3207 4.2: forget everything learnt before TLS and ask again.
    extensions = match stream
        .ehlo(helo_name, t.command)
        .await
        .map_err(|e| session(e, &evidence))?
    {
        Ok(ext) => ext,
        Err(reply) => return Err(refused(reply, "EHLO after STARTTLS", &evidence)),
    };
    Ok(Connection::new(stream, extensions, evidence, remote.clone(), t))
}

/// The stricter of two TLS policies: verify > encrypt > may.
pub(crate) fn stricter(a: TlsPolicy, b: TlsPolicy) -> TlsPolicy {
    let rank = |p: TlsPolicy| match p {
        TlsPolicy::May => 0,
        TlsPolicy::Encrypt => 1,
        TlsPolicy::Verify => 2,
    };
    if rank(a) >= rank(b) { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(tls: bool, remote: &str, status: &str) -> HostFailure {
        let mut e = AttemptError::temporary(status, "x");
        e.remote = Some(remote.into());
        if tls {
            HostFailure::Tls(e)
        } else {
            HostFailure::Other(e)
        }
    }

    #[test]
    fn any_tls_failure_makes_the_attempt_tls_policy_not_met() {
        let e = combine(vec![failure(true, "a", "4.7.5"), failure(false, "b", "4.4.1")]);
        assert_eq!(e.kind, AttemptErrorKind::TlsPolicyNotMet);
        assert_eq!(e.status, "4.7.5");
        assert_eq!(e.remote.as_deref(), Some("a"));
        assert!(
            e.detail.contains("a: x") && e.detail.contains("b: x"),
            "{}",
            e.detail
        );
    }

    #[test]
    fn otherwise_temporary_even_after_5xx() {
        let e = combine(vec![failure(false, "a", "4.4.1"), failure(false, "b", "5.7.1")]);
        assert_eq!(e.kind, AttemptErrorKind::Temporary);
        assert_eq!(e.status, "4.7.1");
        assert_eq!(e.remote.as_deref(), Some("b"));
    }
}
