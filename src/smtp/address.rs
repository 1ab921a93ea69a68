//! Envelope address syntax: the reverse-path of MAIL and the forward-path of
//! RCPT (RFC 5321 4.1.2), with the SMTPUTF8 extensions of RFC 6531 3.3.
//!
//! Owns: deciding whether the `<...>` text a client sent is a path, and what
//! mailbox it names. [`split_path`] finds where the path ends in the argument
//! of MAIL or RCPT (a quoted local part may hold spaces and `>`, so the
//! boundary needs a scanner, not a split on whitespace);
//! [`parse_reverse_path`] and [`parse_forward_path`] validate it and return
//! the mailbox.
//!
//! Guarantees: a returned mailbox matches the RFC 5321 `Mailbox` grammar
//! exactly, is at most 256 octets as a path, has a local part of at most 64
//! octets and a domain of at most 255 octets, and contains no control
//! characters (ASCII or C1), so it is safe in logs, Received headers and
//! DSNs. It is returned as the client wrote it (case and quoting kept), with
//! a source route removed (RFC 5321 4.1.1.3 and appendix C:
//! `<@a,@b:user@c>` names `user@c`). Non-ASCII text is accepted only when
//! the transaction uses SMTPUTF8; otherwise a syntactically valid UTF-8
//! address gives [`AddressError::NonAscii`], which the session answers with
//! 553 5.6.7 (RFC 6531 3.5). Nothing here panics, whatever the input.
//!
//! Refuses:
//! - paths without angle brackets (`MAIL FROM:user@example.com`);
//! - `<Postmaster>` without a domain. RFC 5321 4.5.1 reserves it for the
//!   domains a server delivers to; Ward is a relay with no local mailboxes,
//!   so it is refused as syntax (501 5.1.3) rather than accepted and then
//!   left without a destination;
//! - general address literals (`[tag:content]`): no tag other than `IPv6`
//!   is standardized, so only `[IPv4]` and `[IPv6:...]` literals are
//!   accepted, validated with the standard library's strict parsers;
//! - domains with a trailing dot, empty labels, labels starting or ending
//!   with `-`, and underscores (RFC 5321 `sub-domain` is LDH only);
//! - C1 control characters (U+0080..U+009F), even with SMTPUTF8.
//!
//! Accepts as-is, because relay authorization and not syntax decides about
//! them: percent-hack local parts (`user%other@host`), bang paths
//! (`host!user@example.com`) and quoted local parts holding `@`
//! (`"a@b"@example.com`).
//!
//! Length limits are counted in octets (RFC 5321 4.5.3.1, RFC 6531 3.3). The
//! 63-octet label limit applies to ASCII labels; a U-label's limit is on its
//! A-label form, which would need IDNA conversion, so for U-labels only the
//! 255-octet domain limit is enforced here.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a path was refused. The variants carry no part of the address, so
/// they may be logged freely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not a path by the RFC 5321 grammar.
    #[error("address syntax error")]
    Syntax,
    /// A valid address with non-ASCII characters, in a transaction without
    /// SMTPUTF8.
    #[error("non-ASCII address without SMTPUTF8")]
    NonAscii,
    /// The path, local part, domain or a label is longer than RFC 5321
    /// 4.5.3.1 allows.
    #[error("address too long")]
    TooLong,
}

/// Longest path including the angle brackets (RFC 5321 4.5.3.1.3).
pub const MAX_PATH_LEN: usize = 256;
/// Longest local part (RFC 5321 4.5.3.1.1).
pub const MAX_LOCAL_PART_LEN: usize = 64;
/// Longest domain (RFC 5321 4.5.3.1.2).
pub const MAX_DOMAIN_LEN: usize = 255;
/// Longest label of a domain (RFC 1035 2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// Splits the argument of MAIL FROM: or RCPT TO: (after the colon and any
/// spaces) into the path, `<` to its matching `>`, and the rest (the
/// parameters, which then start with a space if present).
///
/// The scanner knows about quoted strings and quoted pairs, so
/// `<"a> b"@example.com> SIZE=1` splits after `.com>`. It checks only where
/// the path ends; the path itself is validated by [`parse_reverse_path`] or
/// [`parse_forward_path`].
pub fn split_path(s: &str) -> Result<(&str, &str), AddressError> {
    let bytes = s.as_bytes();
    if bytes.first() != Some(&b'<') {
        return Err(AddressError::Syntax);
    }
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        if escaped {
            escaped = false;
        } else if in_quotes {
            match b {
                b'\\' => escaped = true,
                b'"' => in_quotes = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_quotes = true,
                // '>' is ASCII, so i + 1 is a char boundary.
                b'>' => return Ok(s.split_at(i + 1)),
                _ => {}
            }
        }
    }
    Err(AddressError::Syntax)
}

/// Validates the reverse-path of MAIL FROM and returns its mailbox: the
/// empty string for the null reverse-path `<>` (bounces, RFC 5321 4.5.5).
pub fn parse_reverse_path(s: &str, smtputf8: bool) -> Result<String, AddressError> {
    if s == "<>" {
        return Ok(String::new());
    }
    parse_path(s, smtputf8)
}

/// Validates the forward-path of RCPT TO and returns its mailbox, source
/// route removed. `<>` and `<Postmaster>` without a domain are refused (see
/// the module documentation).
pub fn parse_forward_path(s: &str, smtputf8: bool) -> Result<String, AddressError> {
    parse_path(s, smtputf8)
}

/// `Path = "<" [ A-d-l ":" ] Mailbox ">"`
fn parse_path(s: &str, smtputf8: bool) -> Result<String, AddressError> {
    let inner = s
        .strip_prefix('<')
        .and_then(|rest| rest.strip_suffix('>'))
        .ok_or(AddressError::Syntax)?;
    if s.len() > MAX_PATH_LEN {
        return Err(AddressError::TooLong);
    }
    // C1 controls are valid UTF-8 but have no business in an address; they
    // would reach logs and headers. (ASCII controls fail the grammar below.)
    if inner.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)) {
        return Err(AddressError::Syntax);
    }
    let mailbox = match inner.strip_prefix('@') {
        Some(_) => {
            // A-d-l: no ':' can occur in a route (domains hold none), so the
            // first ':' ends it.
            let (route, mailbox) = inner.split_once(':').ok_or(AddressError::Syntax)?;
            for at_domain in route.split(',') {
                let domain = at_domain.strip_prefix('@').ok_or(AddressError::Syntax)?;
                check_domain(domain.as_bytes())?;
            }
            mailbox
        }
        None => inner,
    };
    check_mailbox(mailbox)?;
    // The whole path was parsed with the RFC 6531 grammar, so that a valid
    // UTF-8 address sent without SMTPUTF8 gets the specific 553 5.6.7 and
    // not a generic syntax error.
    if !smtputf8 && !s.is_ascii() {
        return Err(AddressError::NonAscii);
    }
    Ok(mailbox.to_string())
}

/// `Mailbox = Local-part "@" ( Domain / address-literal )`
fn check_mailbox(mailbox: &str) -> Result<(), AddressError> {
    let bytes = mailbox.as_bytes();
    let local_len = local_part_len(bytes)?;
    if local_len > MAX_LOCAL_PART_LEN {
        return Err(AddressError::TooLong);
    }
    let rest = bytes.get(local_len..).ok_or(AddressError::Syntax)?;
    let domain = rest.strip_prefix(b"@").ok_or(AddressError::Syntax)?;
    if domain.first() == Some(&b'[') {
        check_address_literal(domain)
    } else {
        check_domain(domain)
    }
}

/// Length in octets of the local part at the start of `s`: a Quoted-string
/// or a Dot-string. Checks its syntax; the caller checks what follows.
fn local_part_len(s: &[u8]) -> Result<usize, AddressError> {
    if s.first() == Some(&b'"') {
        return quoted_string_len(s);
    }
    // Dot-string = Atom *("." Atom): ends at the first byte that is neither
    // atext nor a dot, which must be the '@'.
    let len = s
        .iter()
        .position(|&b| !(is_atext(b) || b == b'.'))
        .unwrap_or(s.len());
    let dot_string = s.get(..len).ok_or(AddressError::Syntax)?;
    if dot_string.is_empty() || dot_string.split(|&b| b == b'.').any(<[u8]>::is_empty) {
        return Err(AddressError::Syntax);
    }
    Ok(len)
}

/// Length of the Quoted-string at the start of `s`, quotes included.
/// `qtextSMTP = %d32-33 / %d35-91 / %d93-126 / UTF8-non-ascii`,
/// `quoted-pairSMTP = %d92 %d32-126`.
fn quoted_string_len(s: &[u8]) -> Result<usize, AddressError> {
    let mut iter = s.iter().enumerate().skip(1);
    while let Some((i, &b)) = iter.next() {
        match b {
            b'"' => return Ok(i + 1),
            b'\\' => match iter.next() {
                Some((_, 32..=126)) => {}
                _ => return Err(AddressError::Syntax),
            },
            32..=126 | 0x80..=0xff => {}
            _ => return Err(AddressError::Syntax),
        }
    }
    Err(AddressError::Syntax)
}

/// RFC 5322 atext, plus the UTF-8 bytes RFC 6531 adds (the input is a
/// `&str`, so bytes >= 0x80 are always parts of whole characters).
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

/// `Domain = sub-domain *("." sub-domain)`, where a sub-domain is an LDH
/// label (`Let-dig [Ldh-str]`) or, with RFC 6531, a U-label.
pub(crate) fn check_domain(domain: &[u8]) -> Result<(), AddressError> {
    if domain.is_empty() {
        return Err(AddressError::Syntax);
    }
    for label in domain.split(|&b| b == b'.') {
        let (Some(&first), Some(&last)) = (label.first(), label.last()) else {
            return Err(AddressError::Syntax);
        };
        if first == b'-' || last == b'-' {
            return Err(AddressError::Syntax);
        }
        if !label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b >= 0x80)
        {
            return Err(AddressError::Syntax);
        }
        if label.len() > MAX_LABEL_LEN && label.is_ascii() {
            return Err(AddressError::TooLong);
        }
    }
    if domain.len() > MAX_DOMAIN_LEN {
        return Err(AddressError::TooLong);
    }
    Ok(())
}

/// `address-literal = "[" ( IPv4-address-literal / IPv6-address-literal ) "]"`.
/// The standard library parsers are strict: no leading zeros in IPv4
/// octets, no zone ids, IPv4-in-IPv6 forms as RFC 5321 4.1.3 allows.
pub(crate) fn check_address_literal(literal: &[u8]) -> Result<(), AddressError> {
    let inner = literal
        .strip_prefix(b"[")
        .and_then(|rest| rest.strip_suffix(b"]"))
        .ok_or(AddressError::Syntax)?;
    let inner = std::str::from_utf8(inner).map_err(|_| AddressError::Syntax)?;
    let valid = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner
            .get(5..)
            .and_then(|ip| ip.parse::<Ipv6Addr>().ok())
            .is_some(),
        _ => inner.parse::<Ipv4Addr>().is_ok(),
    };
    if valid { Ok(()) } else { Err(AddressError::Syntax) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressError::*;

    fn fwd(s: &str) -> Result<String, AddressError> {
        parse_forward_path(s, false)
    }
    fn fwd8(s: &str) -> Result<String, AddressError> {
        parse_forward_path(s, true)
    }

    #[test]
    fn plain_mailboxes() {
        for ok in [
            "user@example.com",
            "User.Name@Example.COM",
            "a@b",
            "x@1.2.3.4",
            "first.last+tag@sub.example.co.uk",
            "!#$%&'*+-/=?^_`{|}~@example.com",
            "a-b@x-y.example",
            "0@0",
            "a@a1-2b",
        ] {
            assert_eq!(fwd(&format!("<{ok}>")).as_deref(), Ok(ok), "{ok}");
            assert_eq!(
                parse_reverse_path(&format!("<{ok}>"), false).as_deref(),
                Ok(ok),
                "{ok}"
            );
        }
    }

    #[test]
    fn null_reverse_path() {
        assert_eq!(parse_reverse_path("<>", false).as_deref(), Ok(""));
        assert_eq!(parse_reverse_path("<>", true).as_deref(), Ok(""));
        assert_eq!(fwd("<>"), Err(Syntax));
    }

    #[test]
    fn brackets_required() {
        for bad in [
            "user@example.com",
            "<user@example.com",
            "user@example.com>",
            "",
            "<",
            ">",
            "< user@example.com>",
            "<user@example.com >",
            "<<user@example.com>>",
            "<user@example.com>>",
        ] {
            assert_eq!(fwd(bad), Err(Syntax), "{bad:?}");
        }
    }

    #[test]
    fn postmaster_without_domain_is_refused() {
        for bad in ["<Postmaster>", "<postmaster>", "<POSTMASTER>", "<user>"] {
            assert_eq!(fwd(bad), Err(Syntax), "{bad}");
        }
        assert_eq!(
            fwd("<postmaster@example.com>").as_deref(),
            Ok("postmaster@example.com")
        );
    }

    #[test]
    fn source_routes_are_removed() {
        assert_eq!(fwd("<@a,@b:user@c>").as_deref(), Ok("user@c"));
        assert_eq!(
            fwd("<@relay.example:user@example.com>").as_deref(),
            Ok("user@example.com")
        );
        assert_eq!(
            parse_reverse_path("<@a.example,@b.example:\"x y\"@c.example>", false).as_deref(),
            Ok("\"x y\"@c.example")
        );
        for bad in [
            "<@:user@c>",
            "<@a,:user@c>",
            "<@a,b:user@c>",
            "<@a@b:user@c>",
            "<@a user@c>",
            "<@-a:user@c>",
            "<@[1.2.3.4]:user@c>",
            "<@a:>",
            "<@a:@b:user@c>",
            "<@a,,@b:user@c>",
        ] {
            assert_eq!(fwd(bad), Err(Syntax), "{bad}");
        }
    }

    #[test]
    fn dot_strings() {
        for bad in [
            "<.a@b>",
            "<a.@b>",
            "<a..b@b>",
            "<@b>",
            "<a b@c>",
            "<a(b)@c>",
            "<a,b@c>",
            "<a;b@c>",
            "<a:b@c>",
            "<a[b]@c>",
            "<a\\b@c>",
            "<a\"b@c>",
            "<a\tb@c>",
            "<a\0b@c>",
            "<a\x7fb@c>",
            "<a@b@c>",
        ] {
            assert_eq!(fwd(bad), Err(Syntax), "{bad:?}");
        }
    }

    #[test]
    fn quoted_local_parts() {
        for ok in [
            "\"a@b\"@c.example",
            "\"john doe\"@example.com",
            "\"a>b\"@example.com",
            "\"\"@example.com",
            "\"\\\"\"@example.com",
            "\"\\\\\"@example.com",
            "\"a\\ b\"@example.com",
            "\"..\"@example.com",
            "\"<>(),;:[]\"@example.com",
        ] {
            assert_eq!(fwd(&format!("<{ok}>")).as_deref(), Ok(ok), "{ok}");
        }
        for bad in [
            "<\"a@example.com>",
            "<\"a\"b@example.com>",
            "<\"a\".b@example.com>",
            "<a.\"b\"@example.com>",
            "<\"a\tb\"@example.com>",
            "<\"a\\\tb\"@example.com>",
            "<\"a\rb\"@example.com>",
            "<\"a\\\"@example.com>",
            "<\"a\">",
            "<\"a\"@>",
        ] {
            assert_eq!(fwd(bad), Err(Syntax), "{bad:?}");
        }
    }

    #[test]
    fn relay_hacks_are_syntax_valid() {
        for ok in ["user%other@host.example", "host!user@example.com", "a%b%c@d"] {
            assert_eq!(fwd(&format!("<{ok}>")).as_deref(), Ok(ok));
        }
    }

    #[test]
    fn domains() {
        for bad in [
            "<a@>",
            "<a@.>",
            "<a@b.>",
            "<a@.b>",
            "<a@b..c>",
            "<a@-b>",
            "<a@b->",
            "<a@b.-c>",
            "<a@b_c>",
            "<a@b c>",
            "<a@b,c>",
            "<a@b:c>",
            "<a@[1.2.3.4>",
            "<a@1.2.3.4]>",
        ] {
            assert_eq!(fwd(bad), Err(Syntax), "{bad:?}");
        }
        assert_eq!(fwd("<a@x--y.example>").as_deref(), Ok("a@x--y.example"));
    }

    #[test]
    fn address_literals() {
        for ok in [
            "a@[1.2.3.4]",
            "a@[255.255.255.255]",
            "a@[IPv6:::1]",
            "a@[ipv6:2001:db8::1]",
            "a@[IPv6:2001:db8:0:0:0:0:0:1]",
            "a@[IPv6:::ffff:192.0.2.1]",
        ] {
            assert_eq!(fwd(&format!("<{ok}>")).as_deref(), Ok(ok), "{ok}");
        }
        for bad in [
            "<a@[]>",
            "<a@[1.2.3]>",
            "<a@[1.2.3.4.5]>",
            "<a@[256.1.1.1]>",
            "<a@[01.2.3.4]>",
            "<a@[ 1.2.3.4]>",
            "<a@[::1]>",
            "<a@[IPv6:1.2.3.4]>",
            "<a@[IPv6:::1%eth0]>",
            "<a@[IPv6:2001:db8::1::2]>",
            "<a@[IPv6:]>",
            "<a@[tag:content]>",
            "<a@[1.2.3.4].example>",
            "<a@[[1.2.3.4]]>",
        ] {
            assert_eq!(fwd(bad), Err(Syntax), "{bad:?}");
        }
    }

    #[test]
    fn length_limits() {
        let local64 = "l".repeat(64);
        let ok = format!("<{local64}@example.com>");
        assert_eq!(fwd(&ok).map(|s| s.len()), Ok(64 + 12));
        assert_eq!(fwd(&format!("<{local64}l@example.com>")), Err(TooLong));
        // Quotes count: the local part is measured as written.
        assert_eq!(
            fwd(&format!("<\"{}\"@example.com>", "q".repeat(62))).map(|_| ()),
            Ok(())
        );
        assert_eq!(
            fwd(&format!("<\"{}\"@example.com>", "q".repeat(63))),
            Err(TooLong)
        );

        let label63 = "d".repeat(63);
        assert!(fwd(&format!("<a@{label63}.example>")).is_ok());
        assert_eq!(fwd(&format!("<a@{label63}d.example>")), Err(TooLong));

        // A path of exactly 256 octets is fine; 257 is not.
        let domain = ["d".repeat(63), "d".repeat(63), "d".repeat(63), "d".repeat(53)].join(".");
        assert_eq!(domain.len(), 245);
        let path = format!("<{}@{domain}>", "l".repeat(8));
        assert_eq!(path.len(), 256);
        assert!(fwd(&path).is_ok());
        let path = format!("<{}@{domain}>", "l".repeat(9));
        assert_eq!(fwd(&path), Err(TooLong));

        // Anything longer than a path can be is refused before parsing.
        assert_eq!(fwd(&format!("<a@{}>", "x".repeat(1000))), Err(TooLong));
        assert_eq!(fwd(&format!("<@{}:a@b>", "x.".repeat(200))), Err(TooLong));
    }

    #[test]
    fn domain_limit_without_path_limit() {
        // check_domain is also used on its own (source routes, EHLO).
        let long = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(63)].join(".");
        assert_eq!(long.len(), 255);
        assert_eq!(check_domain(long.as_bytes()), Ok(()));
        assert_eq!(check_domain(format!("{long}e").as_bytes()), Err(TooLong));
    }

    #[test]
    fn utf8_needs_smtputf8() {
        for ok in [
            "用户@例子.广告",
            "josé@example.com",
            "user@bücher.example",
            "\"josé doe\"@example.com",
            "δοκιμή@παράδειγμα.δοκιμή",
            "a@xn--bcher-kva.example",
        ] {
            let path = format!("<{ok}>");
            assert_eq!(fwd8(&path).as_deref(), Ok(ok), "{ok}");
            let expected = if ok.is_ascii() {
                Ok(ok.to_string())
            } else {
                Err(NonAscii)
            };
            assert_eq!(fwd(&path), expected, "{ok}");
            assert_eq!(parse_reverse_path(&path, false), expected, "{ok}");
        }
        // Syntax errors stay syntax errors, with or without SMTPUTF8.
        assert_eq!(fwd("<josé>"), Err(Syntax));
        assert_eq!(fwd8("<josé>"), Err(Syntax));
        assert_eq!(fwd8("<a@-bücher>"), Err(Syntax));
        // Non-ASCII in a source route counts too.
        assert_eq!(fwd("<@bücher.example:a@b>"), Err(NonAscii));
        assert_eq!(fwd8("<@bücher.example:a@b>").as_deref(), Ok("a@b"));
    }

    #[test]
    fn c1_controls_refused_even_with_smtputf8() {
        assert_eq!(fwd8("<a\u{85}b@example.com>"), Err(Syntax));
        assert_eq!(fwd8("<\"a\u{9b}b\"@example.com>"), Err(Syntax));
        assert_eq!(fwd8("<a@exa\u{80}mple.com>"), Err(Syntax));
        assert_eq!(
            fwd8("<a\u{a0}b@example.com>").as_deref(),
            Ok("a\u{a0}b@example.com")
        );
    }

    #[test]
    fn u_labels_have_no_octet_label_limit() {
        // 30 CJK characters: 90 octets in UTF-8, a short A-label.
        let label = "例".repeat(30);
        assert!(fwd8(&format!("<a@{label}.example>")).is_ok());
    }

    #[test]
    fn split_path_finds_the_real_end() {
        assert_eq!(split_path("<a@b>"), Ok(("<a@b>", "")));
        assert_eq!(split_path("<a@b> SIZE=10"), Ok(("<a@b>", " SIZE=10")));
        assert_eq!(split_path("<>"), Ok(("<>", "")));
        assert_eq!(split_path("<> BODY=8BITMIME"), Ok(("<>", " BODY=8BITMIME")));
        assert_eq!(
            split_path("<\"a> b\"@example.com> SIZE=1"),
            Ok(("<\"a> b\"@example.com>", " SIZE=1"))
        );
        assert_eq!(
            split_path("<\"a\\\"> b\"@example.com> X"),
            Ok(("<\"a\\\"> b\"@example.com>", " X"))
        );
        assert_eq!(split_path("<a@b>x"), Ok(("<a@b>", "x")));
        assert_eq!(
            split_path("<josé@bücher.example> X"),
            Ok(("<josé@bücher.example>", " X"))
        );
        for bad in ["", "a@b", " <a@b>", "<a@b", "<\"a>@b", "<\"a\\\">"] {
            assert_eq!(split_path(bad), Err(Syntax), "{bad:?}");
        }
    }

    #[test]
    fn split_then_parse_round_trip() {
        let arg = "<\"x >y\"@example.com> NOTIFY=NEVER";
        let (path, rest) = split_path(arg).unwrap();
        assert_eq!(fwd(path).as_deref(), Ok("\"x >y\"@example.com"));
        assert_eq!(rest, " NOTIFY=NEVER");
    }

    #[test]
    fn never_panics_on_odd_input() {
        let samples = [
            "<",
            "<<",
            "<@",
            "<@:",
            "<@,>",
            "<\"",
            "<\"\\",
            "<\"\\\"",
            "<@a:\"",
            "<a@[",
            "<a@[]",
            "<a@[IPv6:",
            "<a@[IPv6]",
            "<a@[IPv",
            "<é",
            "<\"é\"@é>",
            "<@é,@:é>",
            "<>>",
            "<\0>",
        ];
        for s in samples {
            for utf8 in [false, true] {
                let _ = parse_forward_path(s, utf8);
                let _ = parse_reverse_path(s, utf8);
                let _ = split_path(s);
            }
        }
    }
}
