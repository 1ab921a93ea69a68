//! SMTP command lines: one line from the client (without its CRLF) to a typed
//! [`Command`], or to the exact [`Reply`] that refuses it.
//!
//! Owns: the command grammar of RFC 5321 4.1.1 and of the extensions Ward
//! offers: SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), DSN
//! (RFC 3461), CHUNKING (RFC 3030), AUTH (RFC 4954) and STARTTLS (RFC 3207).
//! Addresses are checked by [`super::address`].
//!
//! Guarantees: [`parse`] never panics, whatever the bytes. An error is a
//! ready reply with an enhanced status code (RFC 3463), built from fixed
//! texts only: nothing the client sent is echoed back (VRFY and EXPN
//! arguments are dropped unread). Values kept in a command are validated,
//! so they are safe to log and store: the EHLO name is a single token of
//! RFC 5322 atext and dots (or an address literal), with no spaces,
//! parentheses, quotes or backslashes, so it can go in a Received header
//! comment as is; ENVID, AUTH= and ORCPT are valid xtext. The `Debug` form
//! of [`Command`] redacts the AUTH initial response (it holds credentials).
//!
//! Refuses, and how:
//! - a line that is not UTF-8: 500 5.5.2;
//! - an unknown verb: 500 5.5.1; obsolete or unoffered verbs (SEND, SOML,
//!   SAML, TURN, ETRN, ATRN, BURL): 502 5.5.1;
//! - arguments to QUIT, RSET, DATA or STARTTLS, a missing or malformed EHLO
//!   or HELO name, MAIL without `FROM:<...>`, RCPT without `TO:<...>`:
//!   501 5.5.4 with the usage;
//! - an invalid sender (501 5.1.7) or recipient (501 5.1.3), or a non-ASCII
//!   address in a transaction without SMTPUTF8 (553 5.6.7);
//! - an unknown parameter, or BODY=BINARYMIME (not offered): 555 5.5.4;
//! - a malformed, out of range or repeated parameter: 501 5.5.4;
//! - an AUTH initial response that is not base64: 501 5.5.2.
//!
//! Leniency, deliberately bounded: verbs and keywords are case-insensitive,
//! spaces after `FROM:`/`TO:` and repeated spaces between arguments are
//! tolerated, and trailing spaces or tabs are ignored. The EHLO name need not
//! be a real domain (clients behind NAT send all sorts), but it must be one
//! token of at most 255 visible characters from the set above.

use std::fmt;

use super::address::{self, AddressError};
use super::reply::Reply;
use crate::queue::{BodyType, Notify, Recipient, Ret};

/// One parsed command.
#[derive(Clone, PartialEq, Eq)]
pub enum Command {
    /// EHLO with the client's name (validated, see the module header).
    Ehlo(String),
    Helo(String),
    /// MAIL FROM; `sender` is empty for the null reverse-path `<>`.
    Mail {
        sender: String,
        params: MailParams,
    },
    Rcpt(Recipient),
    Data,
    /// BDAT chunk header (RFC 3030); the chunk's octets follow the line.
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    /// VRFY; the argument is dropped unread.
    Vrfy,
    /// EXPN; the argument is dropped unread.
    Expn,
    Help,
    StartTls,
    /// AUTH (RFC 4954). `mechanism` is upper-cased; `initial_response` is the
    /// base64 text as sent, `Some("")` for `=` (an empty response).
    Auth {
        mechanism: String,
        initial_response: Option<String>,
    },
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Ehlo(name) => f.debug_tuple("Ehlo").field(name).finish(),
            Command::Helo(name) => f.debug_tuple("Helo").field(name).finish(),
            Command::Mail { sender, params } => f
                .debug_struct("Mail")
                .field("sender", sender)
                .field("params", params)
                .finish(),
            Command::Rcpt(recipient) => f.debug_tuple("Rcpt").field(recipient).finish(),
            Command::Data => f.write_str("Data"),
            Command::Bdat { size, last } => f
                .debug_struct("Bdat")
                .field("size", size)
                .field("last", last)
                .finish(),
            Command::Rset => f.write_str("Rset"),
            Command::Noop => f.write_str("Noop"),
            Command::Quit => f.write_str("Quit"),
            Command::Vrfy => f.write_str("Vrfy"),
            Command::Expn => f.write_str("Expn"),
            Command::Help => f.write_str("Help"),
            Command::StartTls => f.write_str("StartTls"),
            Command::Auth {
                mechanism,
                initial_response,
            } => f
                .debug_struct("Auth")
                .field("mechanism", mechanism)
                .field(
                    "initial_response",
                    &initial_response.as_ref().map(|_| "[redacted]"),
                )
                .finish(),
        }
    }
}

/// The parameters of MAIL FROM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    /// SIZE (RFC 1870): the client's estimate, in octets.
    pub size: Option<u64>,
    /// BODY (RFC 6152).
    pub body: BodyType,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// RET (RFC 3461 4.3).
    pub ret: Option<Ret>,
    /// ENVID (RFC 3461 4.4), as received (xtext).
    pub envid: Option<String>,
    /// AUTH= (RFC 4954 5), as received: xtext, or `<>`.
    pub auth: Option<String>,
}

/// Longest ENVID value, counted on the xtext as sent (RFC 3461 4.4).
pub const MAX_ENVID_LEN: usize = 100;
/// Longest ORCPT value (RFC 3461 4.2).
pub const MAX_ORCPT_LEN: usize = 500;
/// Longest EHLO/HELO name: a domain's limit (RFC 5321 4.5.3.1.2).
pub const MAX_HELO_LEN: usize = 255;
/// Longest SASL mechanism name (RFC 4422 3.1).
pub const MAX_MECHANISM_LEN: usize = 20;

const MAIL_USAGE: &str = "MAIL FROM:<address> [parameters]";
const RCPT_USAGE: &str = "RCPT TO:<address> [parameters]";
const BDAT_USAGE: &str = "BDAT chunk-size [LAST]";
const AUTH_USAGE: &str = "AUTH mechanism [initial-response]";

/// Parses one command line, given without its CRLF.
/// `in_smtputf8_transaction` says whether the current MAIL FROM carried
/// SMTPUTF8; it decides whether a RCPT address may be non-ASCII.
pub fn parse(line: &[u8], in_smtputf8_transaction: bool) -> Result<Command, Reply> {
    let line = std::str::from_utf8(line).map_err(|_| Reply::command_not_utf8())?;
    let line = line.trim_end_matches([' ', '\t']);
    let (verb, args) = match line.split_once(' ') {
        Some((verb, args)) => (verb, args.trim_start_matches(' ')),
        None => (line, ""),
    };
    // Verbs are at most 8 letters: upper-case them into a stack buffer so
    // the match below is one comparison per arm and nothing is allocated.
    let mut upper = [0u8; 8];
    let Some(slot) = upper.get_mut(..verb.len()) else {
        return Err(Reply::unrecognized());
    };
    slot.copy_from_slice(verb.as_bytes());
    slot.make_ascii_uppercase();
    match &*slot {
        b"EHLO" => hello_name(args, "EHLO domain").map(Command::Ehlo),
        b"HELO" => hello_name(args, "HELO domain").map(Command::Helo),
        b"MAIL" => mail(args),
        b"RCPT" => rcpt(args, in_smtputf8_transaction),
        b"DATA" => no_args(args, "DATA", Command::Data),
        b"BDAT" => bdat(args),
        b"RSET" => no_args(args, "RSET", Command::Rset),
        b"QUIT" => no_args(args, "QUIT", Command::Quit),
        b"STARTTLS" => no_args(args, "STARTTLS", Command::StartTls),
        b"NOOP" => Ok(Command::Noop),
        b"HELP" => Ok(Command::Help),
        b"VRFY" => Ok(Command::Vrfy),
        b"EXPN" => Ok(Command::Expn),
        b"AUTH" => auth(args),
        b"SEND" | b"SOML" | b"SAML" | b"TURN" | b"ETRN" | b"ATRN" | b"BURL" => {
            Err(Reply::not_implemented("Command not implemented"))
        }
        _ => Err(Reply::unrecognized()),
    }
}

fn no_args(args: &str, usage: &'static str, command: Command) -> Result<Command, Reply> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(Reply::syntax(usage))
    }
}

/// The EHLO/HELO argument: an address literal, or one token of RFC 5322
/// atext and dots (a superset of LDH domains, subset of what is safe in a
/// Received header comment).
fn hello_name(args: &str, usage: &'static str) -> Result<String, Reply> {
    let valid = if args.starts_with('[') {
        address::check_address_literal(args.as_bytes()).is_ok()
    } else {
        (1..=MAX_HELO_LEN).contains(&args.len()) && args.bytes().all(|b| is_atext_ascii(b) || b == b'.')
    };
    if valid {
        Ok(args.to_string())
    } else {
        Err(Reply::syntax(usage))
    }
}

fn mail(args: &str) -> Result<Command, Reply> {
    let syntax = || Reply::syntax(MAIL_USAGE);
    let rest = strip_prefix_ignore_case(args, "FROM:").ok_or_else(syntax)?;
    let (path, rest) = address::split_path(rest.trim_start_matches(' ')).map_err(|_| syntax())?;
    let params = mail_params(param_tokens(rest).ok_or_else(syntax)?)?;
    let sender = address::parse_reverse_path(path, params.smtputf8).map_err(|e| match e {
        AddressError::NonAscii => Reply::non_ascii_needs_smtputf8(),
        AddressError::Syntax | AddressError::TooLong => Reply::bad_sender_syntax(),
    })?;
    Ok(Command::Mail { sender, params })
}

fn rcpt(args: &str, smtputf8: bool) -> Result<Command, Reply> {
    let syntax = || Reply::syntax(RCPT_USAGE);
    let rest = strip_prefix_ignore_case(args, "TO:").ok_or_else(syntax)?;
    let (path, rest) = address::split_path(rest.trim_start_matches(' ')).map_err(|_| syntax())?;
    let tokens = param_tokens(rest).ok_or_else(syntax)?;
    let address = address::parse_forward_path(path, smtputf8).map_err(|e| match e {
        AddressError::NonAscii => Reply::non_ascii_needs_smtputf8(),
        AddressError::Syntax | AddressError::TooLong => Reply::bad_recipient_syntax(),
    })?;
    let mut recipient = Recipient::new(address);
    for token in tokens {
        let (keyword, value) = split_param(token)?;
        if keyword.eq_ignore_ascii_case("NOTIFY") {
            set_once(&mut recipient.notify, notify(value)?)?;
        } else if keyword.eq_ignore_ascii_case("ORCPT") {
            set_once(&mut recipient.orcpt, orcpt(value, smtputf8)?)?;
        } else {
            return Err(Reply::unsupported_parameter());
        }
    }
    Ok(Command::Rcpt(recipient))
}

fn mail_params<'a>(tokens: impl Iterator<Item = &'a str>) -> Result<MailParams, Reply> {
    let mut params = MailParams::default();
    // BODY and SMTPUTF8 have defaults in MailParams, so repeats are tracked
    // here; the Option fields track themselves through set_once.
    let (mut seen_body, mut seen_smtputf8) = (false, false);
    for token in tokens {
        let (keyword, value) = split_param(token)?;
        let is = |name: &str| keyword.eq_ignore_ascii_case(name);
        if is("SIZE") {
            set_once(&mut params.size, number(value.ok_or_else(Reply::bad_parameter)?)?)?;
        } else if is("BODY") {
            if std::mem::replace(&mut seen_body, true) {
                return Err(Reply::bad_parameter());
            }
            params.body = match value {
                Some(v) if v.eq_ignore_ascii_case("7BIT") => BodyType::SevenBit,
                Some(v) if v.eq_ignore_ascii_case("8BITMIME") => BodyType::EightBitMime,
                Some(v) if v.eq_ignore_ascii_case("BINARYMIME") => {
                    return Err(Reply::unsupported_parameter());
                }
                _ => return Err(Reply::bad_parameter()),
            };
        } else if is("SMTPUTF8") {
            if value.is_some() || std::mem::replace(&mut seen_smtputf8, true) {
                return Err(Reply::bad_parameter());
            }
            params.smtputf8 = true;
        } else if is("RET") {
            let ret = match value {
                Some(v) if v.eq_ignore_ascii_case("FULL") => Ret::Full,
                Some(v) if v.eq_ignore_ascii_case("HDRS") => Ret::Hdrs,
                _ => return Err(Reply::bad_parameter()),
            };
            set_once(&mut params.ret, ret)?;
        } else if is("ENVID") {
            let envid = value.filter(|v| v.len() <= MAX_ENVID_LEN && is_xtext(v));
            set_once(
                &mut params.envid,
                envid.ok_or_else(Reply::bad_parameter)?.to_string(),
            )?;
        } else if is("AUTH") {
            // RFC 4954 5: xtext or "<>"; "<" and ">" are xchars, so xtext
            // covers both.
            let auth = value.filter(|v| is_xtext(v));
            set_once(
                &mut params.auth,
                auth.ok_or_else(Reply::bad_parameter)?.to_string(),
            )?;
        } else {
            return Err(Reply::unsupported_parameter());
        }
    }
    Ok(params)
}

/// The parameters after a path: nothing, or a space then space-separated
/// tokens. `None` when something is glued to the closing `>`.
fn param_tokens(rest: &str) -> Option<impl Iterator<Item = &str>> {
    if !rest.is_empty() && !rest.starts_with(' ') {
        return None;
    }
    Some(rest.split(' ').filter(|t| !t.is_empty()))
}

/// `esmtp-param = esmtp-keyword ["=" esmtp-value]` (RFC 5321 4.1.2), with
/// the UTF-8 values RFC 6531 3.3 allows; each parameter then narrows its
/// value further.
fn split_param(token: &str) -> Result<(&str, Option<&str>), Reply> {
    let (keyword, value) = match token.split_once('=') {
        Some((keyword, value)) => (keyword, Some(value)),
        None => (token, None),
    };
    let keyword_ok = keyword.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && keyword.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let value_ok = value
        .is_none_or(|v| !v.is_empty() && v.bytes().all(|b| matches!(b, 33..=60 | 62..=126 | 0x80..=0xff)));
    if keyword_ok && value_ok {
        Ok((keyword, value))
    } else {
        Err(Reply::bad_parameter())
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), Reply> {
    if slot.is_some() {
        return Err(Reply::bad_parameter());
    }
    *slot = Some(value);
    Ok(())
}

/// Digits only (`u64::from_str` would also take a leading `+`); too large
/// for a u64 is an invalid value.
fn number(s: &str) -> Result<u64, Reply> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reply::bad_parameter());
    }
    s.parse().map_err(|_| Reply::bad_parameter())
}

/// NOTIFY (RFC 3461 4.1): NEVER alone, or a list of SUCCESS, FAILURE and
/// DELAY without repeats.
fn notify(value: Option<&str>) -> Result<Notify, Reply> {
    let value = value.ok_or_else(Reply::bad_parameter)?;
    let mut notify = Notify::default();
    for item in value.split(',') {
        let flag = if item.eq_ignore_ascii_case("NEVER") {
            &mut notify.never
        } else if item.eq_ignore_ascii_case("SUCCESS") {
            &mut notify.success
        } else if item.eq_ignore_ascii_case("FAILURE") {
            &mut notify.failure
        } else if item.eq_ignore_ascii_case("DELAY") {
            &mut notify.delay
        } else {
            return Err(Reply::bad_parameter());
        };
        if std::mem::replace(flag, true) {
            return Err(Reply::bad_parameter());
        }
    }
    if notify.never && (notify.success || notify.failure || notify.delay) {
        return Err(Reply::bad_parameter());
    }
    Ok(notify)
}

/// ORCPT (RFC 3461 4.2): `addr-type ";" xtext`, kept raw. For the `utf-8`
/// address type (RFC 6533 3) the value is utf-8-addr-xtext, or with SMTPUTF8
/// utf-8-addr-unitext (which may hold UTF-8).
fn orcpt(value: Option<&str>, smtputf8: bool) -> Result<String, Reply> {
    let value = value.ok_or_else(Reply::bad_parameter)?;
    let (addr_type, addr) = value.split_once(';').ok_or_else(Reply::bad_parameter)?;
    let type_ok = !addr_type.is_empty() && addr_type.bytes().all(is_atext_ascii);
    let addr_ok = if addr_type.eq_ignore_ascii_case("utf-8") {
        !addr.is_empty()
            && addr
                .bytes()
                .all(|b| matches!(b, 0x21..=0x2a | 0x2c..=0x3c | 0x3e..=0x7e) || (smtputf8 && b >= 0x80))
    } else {
        is_xtext(addr)
    };
    if type_ok && addr_ok && value.len() <= MAX_ORCPT_LEN {
        Ok(value.to_string())
    } else {
        Err(Reply::bad_parameter())
    }
}

fn bdat(args: &str) -> Result<Command, Reply> {
    let syntax = || Reply::syntax(BDAT_USAGE);
    let mut tokens = args.split(' ').filter(|t| !t.is_empty());
    let size = tokens.next().ok_or_else(syntax)?;
    if !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    let size = number(size)?;
    let last = match tokens.next() {
        None => false,
        Some(t) if t.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(syntax()),
    };
    if tokens.next().is_some() {
        return Err(syntax());
    }
    Ok(Command::Bdat { size, last })
}

fn auth(args: &str) -> Result<Command, Reply> {
    let syntax = || Reply::syntax(AUTH_USAGE);
    let mut tokens = args.split(' ').filter(|t| !t.is_empty());
    let mechanism = tokens.next().ok_or_else(syntax)?;
    // sasl-mech = 1*20(UPPER-ALPHA / DIGIT / "-" / "_"), taken
    // case-insensitively.
    if mechanism.len() > MAX_MECHANISM_LEN
        || !mechanism
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(syntax());
    }
    let initial_response = match tokens.next() {
        None => None,
        Some("=") => Some(String::new()),
        Some(response) if is_base64(response) => Some(response.to_string()),
        Some(_) => return Err(Reply::invalid_base64()),
    };
    if tokens.next().is_some() {
        return Err(syntax());
    }
    Ok(Command::Auth {
        mechanism: mechanism.to_ascii_uppercase(),
        initial_response,
    })
}

/// The base64 alphabet with at most two `=` at the end. Padding is not
/// required here; decoding is the authenticator's job.
fn is_base64(s: &str) -> bool {
    let data = s.trim_end_matches('=');
    s.len() - data.len() <= 2
        && !data.is_empty()
        && data
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// RFC 3461 4: `xtext = *( xchar / hexchar )`, non-empty here;
/// `xchar` is `!`..`~` except `+` and `=`; `hexchar` is `+` and two
/// upper-case hex digits.
fn is_xtext(s: &str) -> bool {
    let mut bytes = s.bytes();
    let mut any = false;
    while let Some(b) = bytes.next() {
        any = true;
        let ok = match b {
            b'+' => (0..2).all(|_| {
                bytes
                    .next()
                    .is_some_and(|h| matches!(h, b'0'..=b'9' | b'A'..=b'F'))
            }),
            b'=' => false,
            33..=126 => true,
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    any
}

/// RFC 5322 atext, ASCII only.
fn is_atext_ascii(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        match parse(line.as_bytes(), false) {
            Ok(command) => command,
            Err(reply) => panic!("{line:?} refused: {reply}"),
        }
    }

    fn ok8(line: &str) -> Command {
        match parse(line.as_bytes(), true) {
            Ok(command) => command,
            Err(reply) => panic!("{line:?} refused: {reply}"),
        }
    }

    /// The reply to a refused line, as "code status".
    fn err_with(line: &[u8], smtputf8: bool) -> String {
        match parse(line, smtputf8) {
            Ok(command) => panic!("{:?} accepted as {command:?}", String::from_utf8_lossy(line)),
            Err(reply) => format!("{} {}", reply.code, reply.status),
        }
    }

    fn err(line: &str) -> String {
        err_with(line.as_bytes(), false)
    }

    fn mail_params(line: &str) -> MailParams {
        match ok(line) {
            Command::Mail { params, .. } => params,
            other => panic!("not MAIL: {other:?}"),
        }
    }

    fn rcpt(line: &str) -> Recipient {
        match ok(line) {
            Command::Rcpt(recipient) => recipient,
            other => panic!("not RCPT: {other:?}"),
        }
    }

    #[test]
    fn simple_verbs_any_case() {
        for (line, expected) in [
            ("DATA", Command::Data),
            ("data", Command::Data),
            ("RSET", Command::Rset),
            ("rSeT", Command::Rset),
            ("QUIT", Command::Quit),
            ("quit", Command::Quit),
            ("STARTTLS", Command::StartTls),
            ("starttls", Command::StartTls),
            ("NOOP", Command::Noop),
            ("HELP", Command::Help),
            ("VRFY", Command::Vrfy),
            ("EXPN", Command::Expn),
            ("QUIT ", Command::Quit),
            ("QUIT\t", Command::Quit),
        ] {
            assert_eq!(ok(line), expected, "{line}");
        }
    }

    #[test]
    fn ignored_arguments() {
        assert_eq!(ok("NOOP hello there"), Command::Noop);
        assert_eq!(ok("HELP MAIL"), Command::Help);
        assert_eq!(ok("VRFY <postmaster@example.com>"), Command::Vrfy);
        assert_eq!(ok("VRFY \"(); DROP\""), Command::Vrfy);
        assert_eq!(ok("EXPN staff"), Command::Expn);
    }

    #[test]
    fn arguments_where_none_belong() {
        for line in ["QUIT now", "RSET x", "DATA x", "STARTTLS x", "data  FOO"] {
            assert_eq!(err(line), "501 5.5.4", "{line}");
        }
    }

    #[test]
    fn unknown_and_unimplemented_verbs() {
        for line in [
            "",
            " ",
            "FOO",
            "MAILFROM:<a@b>",
            "GET / HTTP/1.1",
            "EHL",
            "EHLOO x",
            " QUIT",
            "QUIT\r",
            "\0",
            "STARTTLSX",
            "VERYLONGVERB",
            "ÉHLO x",
        ] {
            assert_eq!(err(line), "500 5.5.1", "{line:?}");
        }
        for line in [
            "TURN",
            "ETRN example.com",
            "SEND FROM:<a@b>",
            "SOML",
            "SAML",
            "ATRN",
            "BURL x",
        ] {
            assert_eq!(err(line), "502 5.5.1", "{line}");
        }
    }

    #[test]
    fn non_utf8_line() {
        assert_eq!(err_with(b"MAIL FROM:<\xff@b>", false), "500 5.5.2");
        assert_eq!(err_with(b"\xc3", true), "500 5.5.2");
        assert_eq!(err_with(b"EHLO \xed\xa0\x80", false), "500 5.5.2");
    }

    #[test]
    fn ehlo_and_helo() {
        for name in [
            "mail.example.com",
            "localhost",
            "EXAMPLE",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
            "host_with_underscore.local",
            "a",
            "x.",
            "12345",
            "win-host{1}",
        ] {
            assert_eq!(ok(&format!("EHLO {name}")), Command::Ehlo(name.to_string()));
            assert_eq!(ok(&format!("helo {name}")), Command::Helo(name.to_string()));
        }
        assert_eq!(
            ok("EHLO   spaced.example  "),
            Command::Ehlo("spaced.example".into())
        );
        let long = "a".repeat(255);
        assert_eq!(ok(&format!("EHLO {long}")), Command::Ehlo(long.clone()));
        for line in [
            "EHLO".to_string(),
            "EHLO ".to_string(),
            "HELO".to_string(),
            format!("EHLO {long}a"),
            "EHLO two words".into(),
            "EHLO (comment)".into(),
            "EHLO a)b".into(),
            "EHLO a\\b".into(),
            "EHLO \"quoted\"".into(),
            "EHLO <a>".into(),
            "EHLO a;b".into(),
            "EHLO a@b".into(),
            "EHLO a,b".into(),
            "EHLO a\tb".into(),
            "EHLO a\0b".into(),
            "EHLO a\rb".into(),
            "EHLO [300.1.1.1]".into(),
            "EHLO [1.2.3.4".into(),
            "EHLO [unknown:tag]".into(),
            "EHLO bücher.example".into(),
        ] {
            assert_eq!(err(&line), "501 5.5.4", "{line:?}");
        }
    }

    #[test]
    fn mail_from() {
        assert_eq!(
            ok("MAIL FROM:<alice@example.com>"),
            Command::Mail {
                sender: "alice@example.com".into(),
                params: MailParams::default()
            }
        );
        for line in [
            "mail from:<alice@example.com>",
            "MAIL FROM: <alice@example.com>",
            "MAIL FROM:   <alice@example.com>",
            "Mail From:<alice@example.com>   ",
            "MAIL  FROM:<alice@example.com>",
        ] {
            assert!(matches!(ok(line), Command::Mail { sender, .. } if sender == "alice@example.com"));
        }
        assert!(matches!(ok("MAIL FROM:<>"), Command::Mail { sender, .. } if sender.is_empty()));
        assert!(
            matches!(ok("MAIL FROM:<@relay.example:a@b.example>"), Command::Mail { sender, .. } if sender == "a@b.example")
        );
        assert!(
            matches!(ok("MAIL FROM:<\"a b>c\"@example.com> SIZE=5"), Command::Mail { sender, params } if sender == "\"a b>c\"@example.com" && params.size == Some(5))
        );
    }

    #[test]
    fn mail_syntax_errors() {
        for line in [
            "MAIL",
            "MAIL FROM",
            "MAIL FROM:",
            "MAIL FROM: ",
            "MAIL TO:<a@b>",
            "MAIL FROM <a@b>",
            "MAIL FROM :<a@b>",
            "MAIL FROM:a@b",
            "MAIL FROM:<a@b",
            "MAIL FROM:<a@b>SIZE=1",
            "MAIL FROM:<a@b>>",
            "MAIL FROM:<\"a@b>",
        ] {
            assert_eq!(err(line), "501 5.5.4", "{line}");
        }
        let reply = parse(b"MAIL FROM:a@b", false).unwrap_err();
        assert_eq!(reply.lines[0], "Syntax: MAIL FROM:<address> [parameters]");
    }

    #[test]
    fn bad_sender_addresses() {
        for line in [
            "MAIL FROM:<a>",
            "MAIL FROM:<a@>",
            "MAIL FROM:<@b>",
            "MAIL FROM:<a b@c>",
            "MAIL FROM:<a@b..c>",
            "MAIL FROM:<a@[1.2.3.999]>",
        ] {
            assert_eq!(err(line), "501 5.1.7", "{line}");
        }
        assert_eq!(
            err(&format!("MAIL FROM:<{}@example.com>", "x".repeat(65))),
            "501 5.1.7"
        );
    }

    #[test]
    fn utf8_sender_needs_smtputf8_parameter() {
        assert_eq!(err("MAIL FROM:<josé@example.com>"), "553 5.6.7");
        assert_eq!(err("MAIL FROM:<josé@example.com> BODY=8BITMIME"), "553 5.6.7");
        // The transaction flag is about RCPT; MAIL decides by its own
        // parameter.
        assert_eq!(
            err_with("MAIL FROM:<josé@example.com>".as_bytes(), true),
            "553 5.6.7"
        );
        let command = ok("MAIL FROM:<josé@bücher.example> SMTPUTF8 BODY=8BITMIME");
        assert_eq!(
            command,
            Command::Mail {
                sender: "josé@bücher.example".into(),
                params: MailParams {
                    smtputf8: true,
                    body: BodyType::EightBitMime,
                    ..MailParams::default()
                }
            }
        );
        assert!(mail_params("MAIL FROM:<a@b> smtputf8").smtputf8);
    }

    #[test]
    fn mail_parameters() {
        let params = mail_params(
            "MAIL FROM:<a@b> SIZE=12345 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ314159 AUTH=e+3Dmc2@example.com",
        );
        assert_eq!(
            params,
            MailParams {
                size: Some(12345),
                body: BodyType::EightBitMime,
                smtputf8: true,
                ret: Some(Ret::Hdrs),
                envid: Some("QQ314159".into()),
                auth: Some("e+3Dmc2@example.com".into()),
            }
        );
        let params = mail_params("MAIL FROM:<a@b>   size=0   body=7bit  ret=full auth=<>");
        assert_eq!(params.size, Some(0));
        assert_eq!(params.body, BodyType::SevenBit);
        assert_eq!(params.ret, Some(Ret::Full));
        assert_eq!(params.auth.as_deref(), Some("<>"));
        assert_eq!(
            mail_params(&format!("MAIL FROM:<a@b> SIZE={}", u64::MAX)).size,
            Some(u64::MAX)
        );
        assert_eq!(
            mail_params("MAIL FROM:<a@b> ENVID=hi+20there").envid.as_deref(),
            Some("hi+20there")
        );
        let envid = "e".repeat(100);
        assert_eq!(
            mail_params(&format!("MAIL FROM:<a@b> ENVID={envid}")).envid,
            Some(envid.clone())
        );
    }

    #[test]
    fn bad_mail_parameter_values() {
        for line in [
            "MAIL FROM:<a@b> SIZE",
            "MAIL FROM:<a@b> SIZE=",
            "MAIL FROM:<a@b> SIZE=-1",
            "MAIL FROM:<a@b> SIZE=+1",
            "MAIL FROM:<a@b> SIZE=1k",
            "MAIL FROM:<a@b> SIZE=18446744073709551616",
            "MAIL FROM:<a@b> SIZE=99999999999999999999999999",
            "MAIL FROM:<a@b> SIZE=1 SIZE=1",
            "MAIL FROM:<a@b> BODY",
            "MAIL FROM:<a@b> BODY=8BIT",
            "MAIL FROM:<a@b> BODY=7BIT BODY=7BIT",
            "MAIL FROM:<a@b> BODY=7BIT body=8bitmime",
            "MAIL FROM:<a@b> SMTPUTF8=yes",
            "MAIL FROM:<a@b> SMTPUTF8 SMTPUTF8",
            "MAIL FROM:<a@b> RET",
            "MAIL FROM:<a@b> RET=BODY",
            "MAIL FROM:<a@b> RET=FULL RET=HDRS",
            "MAIL FROM:<a@b> ENVID",
            "MAIL FROM:<a@b> ENVID=",
            "MAIL FROM:<a@b> ENVID=a+2",
            "MAIL FROM:<a@b> ENVID=a+2g",
            "MAIL FROM:<a@b> ENVID=a+2f",
            "MAIL FROM:<a@b> ENVID=a+",
            "MAIL FROM:<a@b> ENVID=é",
            "MAIL FROM:<a@b> ENVID=a ENVID=b",
            "MAIL FROM:<a@b> AUTH",
            "MAIL FROM:<a@b> AUTH=+zz",
            "MAIL FROM:<a@b> AUTH=a AUTH=a",
            "MAIL FROM:<a@b> =value",
            "MAIL FROM:<a@b> SIZE==1",
            "MAIL FROM:<a@b> SIZE=1=2",
            "MAIL FROM:<a@b> -X=1",
            "MAIL FROM:<a@b> X_Y=1",
            "MAIL FROM:<a@b> SIZE=1\tBODY=7BIT",
            "MAIL FROM:<a@b> SIZE=\x01",
        ] {
            assert_eq!(err(line), "501 5.5.4", "{line:?}");
        }
        assert_eq!(
            err(&format!("MAIL FROM:<a@b> ENVID={}", "e".repeat(101))),
            "501 5.5.4"
        );
    }

    #[test]
    fn unsupported_mail_parameters() {
        for line in [
            "MAIL FROM:<a@b> BODY=BINARYMIME",
            "MAIL FROM:<a@b> body=binarymime",
            "MAIL FROM:<a@b> REQUIRETLS",
            "MAIL FROM:<a@b> HOLDFOR=10",
            "MAIL FROM:<a@b> NOTIFY=NEVER",
            "MAIL FROM:<a@b> X-FOO",
            "MAIL FROM:<a@b> SIZE=1 FOO=bar",
        ] {
            assert_eq!(err(line), "555 5.5.4", "{line}");
        }
    }

    #[test]
    fn rcpt_to() {
        assert_eq!(
            ok("RCPT TO:<bob@example.org>"),
            Command::Rcpt(Recipient::new("bob@example.org"))
        );
        assert_eq!(rcpt("rcpt to: <bob@example.org>").address, "bob@example.org");
        assert_eq!(
            rcpt("RCPT TO:<@hop.example:bob@example.org>").address,
            "bob@example.org"
        );
        assert_eq!(
            rcpt("RCPT TO:<\"b o b\"@example.org>").address,
            "\"b o b\"@example.org"
        );
        for line in [
            "RCPT",
            "RCPT TO",
            "RCPT TO:",
            "RCPT FROM:<a@b>",
            "RCPT TO:a@b",
            "RCPT TO:<a@b",
            "RCPT TO:<a@b>NOTIFY=NEVER",
        ] {
            assert_eq!(err(line), "501 5.5.4", "{line}");
        }
        for line in [
            "RCPT TO:<>",
            "RCPT TO:<postmaster>",
            "RCPT TO:<a@-b>",
            "RCPT TO:<a..b@c>",
        ] {
            assert_eq!(err(line), "501 5.1.3", "{line}");
        }
    }

    #[test]
    fn utf8_recipient_depends_on_transaction() {
        assert_eq!(err("RCPT TO:<用户@例子.广告>"), "553 5.6.7");
        assert_eq!(
            ok8("RCPT TO:<用户@例子.广告>"),
            Command::Rcpt(Recipient::new("用户@例子.广告"))
        );
        assert_eq!(err_with("RCPT TO:<用户>".as_bytes(), true), "501 5.1.3");
    }

    #[test]
    fn notify() {
        let all = Notify {
            success: true,
            failure: true,
            delay: true,
            ..Notify::default()
        };
        assert_eq!(
            rcpt("RCPT TO:<a@b> NOTIFY=SUCCESS,FAILURE,DELAY").notify,
            Some(all)
        );
        assert_eq!(
            rcpt("RCPT TO:<a@b> notify=delay,success,failure").notify,
            Some(all)
        );
        assert_eq!(
            rcpt("RCPT TO:<a@b> NOTIFY=NEVER").notify,
            Some(Notify {
                never: true,
                ..Notify::default()
            })
        );
        assert_eq!(
            rcpt("RCPT TO:<a@b> NOTIFY=FAILURE").notify,
            Some(Notify {
                failure: true,
                ..Notify::default()
            })
        );
        for line in [
            "RCPT TO:<a@b> NOTIFY",
            "RCPT TO:<a@b> NOTIFY=",
            "RCPT TO:<a@b> NOTIFY=NEVER,SUCCESS",
            "RCPT TO:<a@b> NOTIFY=FAILURE,NEVER",
            "RCPT TO:<a@b> NOTIFY=NEVER,NEVER",
            "RCPT TO:<a@b> NOTIFY=SUCCESS,SUCCESS",
            "RCPT TO:<a@b> NOTIFY=SUCCESS,",
            "RCPT TO:<a@b> NOTIFY=,SUCCESS",
            "RCPT TO:<a@b> NOTIFY=SUCCESS,,DELAY",
            "RCPT TO:<a@b> NOTIFY=ALWAYS",
            "RCPT TO:<a@b> NOTIFY=SUCCESS NOTIFY=DELAY",
        ] {
            assert_eq!(err(line), "501 5.5.4", "{line}");
        }
    }

    #[test]
    fn orcpt() {
        let r = rcpt("RCPT TO:<a@b> NOTIFY=FAILURE ORCPT=rfc822;Bob+40example.org");
        assert_eq!(r.orcpt.as_deref(), Some("rfc822;Bob+40example.org"));
        assert_eq!(
            rcpt("RCPT TO:<a@b> ORCPT=RFC822;a@b").orcpt.as_deref(),
            Some("RFC822;a@b")
        );
        assert_eq!(
            rcpt("RCPT TO:<a@b> ORCPT=utf-8;caf\\x{E9}@example.org")
                .orcpt
                .as_deref(),
            Some("utf-8;caf\\x{E9}@example.org")
        );
        match ok8("RCPT TO:<a@b> ORCPT=utf-8;café@example.org") {
            Command::Rcpt(r) => assert_eq!(r.orcpt.as_deref(), Some("utf-8;café@example.org")),
            other => panic!("{other:?}"),
        }
        for line in [
            "RCPT TO:<a@b> ORCPT",
            "RCPT TO:<a@b> ORCPT=rfc822",
            "RCPT TO:<a@b> ORCPT=rfc822;",
            "RCPT TO:<a@b> ORCPT=;a@b",
            "RCPT TO:<a@b> ORCPT=rf(c;a@b",
            "RCPT TO:<a@b> ORCPT=rfc822;a+4",
            "RCPT TO:<a@b> ORCPT=rfc822;a+4g",
            "RCPT TO:<a@b> ORCPT=rfc822;café@b",
            "RCPT TO:<a@b> ORCPT=utf-8;café@example.org",
            "RCPT TO:<a@b> ORCPT=utf-8;a+b",
            "RCPT TO:<a@b> ORCPT=rfc822;a@b ORCPT=rfc822;a@b",
        ] {
            assert_eq!(err(line), "501 5.5.4", "{line}");
        }
        let long = format!("RCPT TO:<a@b> ORCPT=rfc822;{}", "o".repeat(493));
        assert!(rcpt(&long).orcpt.is_some());
        let too_long = format!("RCPT TO:<a@b> ORCPT=rfc822;{}", "o".repeat(494));
        assert_eq!(err(&too_long), "501 5.5.4");
    }

    #[test]
    fn unsupported_rcpt_parameters() {
        for line in [
            "RCPT TO:<a@b> SIZE=1",
            "RCPT TO:<a@b> FOO",
            "RCPT TO:<a@b> NOTIFY=NEVER RRVS=x",
        ] {
            assert_eq!(err(line), "555 5.5.4", "{line}");
        }
    }

    #[test]
    fn bdat() {
        assert_eq!(
            ok("BDAT 100"),
            Command::Bdat {
                size: 100,
                last: false
            }
        );
        assert_eq!(ok("bdat 0 last"), Command::Bdat { size: 0, last: true });
        assert_eq!(ok("BDAT  42  LAST "), Command::Bdat { size: 42, last: true });
        assert_eq!(
            ok(&format!("BDAT {} LAST", u64::MAX)),
            Command::Bdat {
                size: u64::MAX,
                last: true
            }
        );
        for line in [
            "BDAT",
            "BDAT LAST",
            "BDAT -1",
            "BDAT +1",
            "BDAT 1x",
            "BDAT 1 FIRST",
            "BDAT 1 LAST x",
        ] {
            assert_eq!(err(line), "501 5.5.4", "{line}");
        }
        assert_eq!(err("BDAT 18446744073709551616 LAST"), "501 5.5.4");
        let reply = parse(b"BDAT 18446744073709551616", false).unwrap_err();
        assert_eq!(reply, Reply::bad_parameter());
    }

    #[test]
    fn auth() {
        assert_eq!(
            ok("AUTH plain"),
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial_response: None
            }
        );
        assert_eq!(
            ok("AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial_response: Some("AGFsaWNlAHNlY3JldA==".into())
            }
        );
        assert_eq!(
            ok("AUTH EXTERNAL ="),
            Command::Auth {
                mechanism: "EXTERNAL".into(),
                initial_response: Some(String::new())
            }
        );
        assert_eq!(
            ok("AUTH scram-sha-256"),
            Command::Auth {
                mechanism: "SCRAM-SHA-256".into(),
                initial_response: None
            }
        );
        for line in [
            "AUTH",
            "AUTH PL@IN",
            "AUTH A23456789012345678901",
            "AUTH PLAIN abc def",
        ] {
            assert_eq!(err(line), "501 5.5.4", "{line}");
        }
        for line in [
            "AUTH PLAIN ab$c",
            "AUTH PLAIN ab=c",
            "AUTH PLAIN abc===",
            "AUTH PLAIN ==",
            "AUTH PLAIN é",
        ] {
            assert_eq!(err(line), "501 5.5.2", "{line}");
        }
    }

    #[test]
    fn debug_redacts_auth_response() {
        let command = ok("AUTH PLAIN AGFsaWNlAHNlY3JldA==");
        let shown = format!("{command:?}");
        assert!(!shown.contains("AGFsaWNl"), "{shown}");
        assert!(shown.contains("[redacted]") && shown.contains("PLAIN"), "{shown}");
    }

    #[test]
    fn xtext_validation() {
        for good in ["a", "+2B", "+3D", "<>", "!~", "a+20b+7E"] {
            assert!(is_xtext(good), "{good}");
        }
        for bad in ["", "+", "+2", "+2b", "+G0", "a=b", "a b", "é", "\x7f", "\x1f"] {
            assert!(!is_xtext(bad), "{bad:?}");
        }
    }

    #[test]
    fn never_panics_on_fragments() {
        let verbs = [
            "MAIL FROM:",
            "RCPT TO:",
            "EHLO ",
            "BDAT ",
            "AUTH ",
            "mail from: ",
            "rcpt to:",
        ];
        let tails = [
            "",
            "<",
            ">",
            "<>",
            "<\"",
            "<\"\\",
            "<a@b> ",
            "<a@b> =",
            "<a@b> X=",
            "<a@b> SIZE=9",
            "é",
            "<é@é> SMTPUTF8",
            "<a@b> ORCPT=utf-8;",
            "<a@b> NOTIFY=,",
            "[",
            "[IPv6:",
            "=",
            "1 LAST",
        ];
        for verb in verbs {
            for tail in tails {
                for utf8 in [false, true] {
                    let _ = parse(format!("{verb}{tail}").as_bytes(), utf8);
                }
            }
        }
    }
}
