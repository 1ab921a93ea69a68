//! HTML to text, for the detectors: what a reader would see, as one string.
//!
//! Owns: dropping tags, comments and the contents of `<script>`/`<style>`;
//! decoding character references (named, decimal, hex); turning block-level
//! tags into line breaks and table cells into spaces, while inline tags
//! (`span`, `b`, `a`, `font`, ...) add nothing, so `<span>123</span>-45-6789`
//! stays one token. Non-breaking and exotic spaces become a plain space;
//! invisible characters (zero-width space and joiners, soft hyphen, BOM) are
//! dropped, so they can't split an identifier that looks whole on screen.
//!
//! Guarantees: one linear pass (memchr to the next `<` or `&`), no
//! allocation beyond the output, never panics (all indexing is checked or at
//! ASCII positions found by search).
//!
//! Refuses: to build a DOM or honour CSS (text hidden by `display:none` is
//! still scanned: it is in the message), and the contents of `<title>` are
//! kept (the head has no other text, and a title can carry PHI too).

use memchr::{memchr, memchr2, memchr3};

/// Appends the text of `html` to `out`.
pub(super) fn to_text(html: &str, out: &mut String) {
    let b = html.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let Some(off) = memchr2(b'<', b'&', &b[i..]) else {
            push_text(out, &html[i..]);
            break;
        };
        push_text(out, &html[i..i + off]);
        i += off;
        if b[i] == b'&' {
            i += entity(&b[i..], out);
        } else {
            i = tag(html, i, out);
        }
    }
}

/// Copies text, normalizing spaces and dropping invisible characters. The
/// characters concerned all start with 0xC2, 0xE2 or 0xEF in UTF-8.
fn push_text(out: &mut String, text: &str) {
    let b = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while let Some(off) = memchr3(0xC2, 0xE2, 0xEF, &b[i..]) {
        let at = i + off;
        // `at` is the first byte of a multi-byte character, so a boundary.
        let c = text[at..].chars().next().unwrap_or('\u{FFFD}');
        let len = c.len_utf8();
        if let Some(replacement) = normalize(c) {
            out.push_str(&text[start..at]);
            if let Some(r) = replacement {
                out.push(r);
            }
            start = at + len;
        }
        i = at + len;
    }
    out.push_str(&text[start..]);
}

/// `Some(Some(' '))`: replace with a space; `Some(None)`: drop; `None`: keep.
fn normalize(c: char) -> Option<Option<char>> {
    match c {
        '\u{A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' => Some(Some(' ')),
        '\u{AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' => Some(None),
        _ => None,
    }
}

fn push_char(out: &mut String, c: char) {
    match normalize(c) {
        Some(Some(r)) => out.push(r),
        Some(None) => {}
        None => out.push(c),
    }
}

/// A separator, unless the text so far ends in whitespace already.
fn separate(out: &mut String, sep: char) {
    if out.chars().next_back().is_some_and(|c| !c.is_whitespace()) {
        out.push(sep);
    }
}

/// Handles the tag (or comment, or stray `<`) at `html[i]`; returns the
/// index after it.
fn tag(html: &str, i: usize, out: &mut String) -> usize {
    let b = html.as_bytes();
    let rest = &b[i..];
    if rest.starts_with(b"<!--") {
        return match memchr::memmem::find(&rest[4..], b"-->") {
            Some(end) => i + 4 + end + 3,
            None => b.len(),
        };
    }
    let (closing, name_start) = match rest.get(1) {
        Some(b'/') => (true, 2),
        Some(c) if c.is_ascii_alphabetic() => (false, 1),
        Some(b'!' | b'?') => {
            // Doctype, CDATA, processing instruction: no text.
            return memchr(b'>', rest).map_or(b.len(), |end| i + end + 1);
        }
        _ => {
            // A literal `<` ("a < b").
            out.push('<');
            return i + 1;
        }
    };
    let name_len = rest[name_start..]
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'-' || **c == b':')
        .count();
    let mut name = [0u8; 12];
    let name = if name_len <= name.len() {
        for (dst, src) in name.iter_mut().zip(&rest[name_start..name_start + name_len]) {
            *dst = src.to_ascii_lowercase();
        }
        &name[..name_len]
    } else {
        &b""[..]
    };
    let end = tag_end(b, i + name_start + name_len);

    if !closing && (name == b"script" || name == b"style") && !b[..end].ends_with(b"/>") {
        return skip_raw_text(b, end, name);
    }
    match name {
        b"br" | b"p" | b"div" | b"tr" | b"li" | b"h1" | b"h2" | b"h3" | b"h4" | b"h5" | b"h6" | b"table"
        | b"ul" | b"ol" | b"dl" | b"dt" | b"dd" | b"blockquote" | b"pre" | b"hr" | b"section"
        | b"article" | b"header" | b"footer" | b"title" | b"address" | b"center" | b"form" | b"fieldset"
        | b"legend" | b"nav" | b"main" | b"aside" | b"figure" | b"figcaption" | b"caption" | b"thead"
        | b"tbody" | b"tfoot" | b"option" | b"body" | b"html" | b"head" | b"o:p" => separate(out, '\n'),
        b"td" | b"th" | b"input" | b"select" | b"textarea" | b"button" | b"label" | b"img" => {
            separate(out, ' ')
        }
        _ => {}
    }
    end
}

/// The index after the `>` that closes a tag, skipping quoted attribute
/// values (an unterminated quote runs to the end, as in a browser).
fn tag_end(b: &[u8], mut i: usize) -> usize {
    let mut quote = 0u8;
    while i < b.len() {
        let c = b[i];
        if quote != 0 {
            if c == quote {
                quote = 0;
            }
        } else if c == b'"' || c == b'\'' {
            quote = c;
        } else if c == b'>' {
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// Skips the contents of `<script>`/`<style>` up to and including its
/// closing tag (ASCII case-insensitive).
fn skip_raw_text(b: &[u8], mut i: usize, name: &[u8]) -> usize {
    while let Some(off) = memchr::memmem::find(&b[i..], b"</") {
        let at = i + off + 2;
        let candidate = &b[at..b.len().min(at + name.len())];
        if candidate.eq_ignore_ascii_case(name) {
            return tag_end(b, at + name.len());
        }
        i = at;
    }
    b.len()
}

/// Decodes the character reference at `b[0] == b'&'` into `out`; returns
/// how many bytes it used (1 for a lone `&`, which is kept).
fn entity(b: &[u8], out: &mut String) -> usize {
    if b.get(1) == Some(&b'#') {
        let (hex, start) = match b.get(2) {
            Some(b'x' | b'X') => (true, 3),
            _ => (false, 2),
        };
        let digits = b[start..]
            .iter()
            .take(8)
            .take_while(|c| {
                if hex {
                    c.is_ascii_hexdigit()
                } else {
                    c.is_ascii_digit()
                }
            })
            .count();
        if digits == 0 {
            out.push('&');
            return 1;
        }
        let text = std::str::from_utf8(&b[start..start + digits]).unwrap_or("0");
        let code = u32::from_str_radix(text, if hex { 16 } else { 10 }).unwrap_or(0xFFFD);
        push_char(out, numeric(code));
        let end = start + digits;
        return if b.get(end) == Some(&b';') { end + 1 } else { end };
    }
    let name_len = b[1..]
        .iter()
        .take(32)
        .take_while(|c| c.is_ascii_alphanumeric())
        .count();
    let name = std::str::from_utf8(&b[1..1 + name_len]).unwrap_or("");
    if b.get(1 + name_len) == Some(&b';')
        && let Some(text) = named(name)
    {
        for c in text.chars() {
            push_char(out, c);
        }
        return name_len + 2;
    }
    // Browsers also accept a few legacy names without the semicolon.
    for legacy in ["nbsp", "amp", "lt", "gt", "quot", "copy", "reg", "shy"] {
        if name.starts_with(legacy) {
            for c in named(legacy).unwrap_or("").chars() {
                push_char(out, c);
            }
            return 1 + legacy.len();
        }
    }
    out.push('&');
    1
}

/// A numeric reference's character, as browsers read it: 0x80–0x9F are
/// Windows-1252 (`&#150;` is an en dash), invalid ones U+FFFD.
fn numeric(code: u32) -> char {
    const CP1252: [u32; 32] = [
        0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152,
        0x8D, 0x017D, 0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122,
        0x0161, 0x203A, 0x0153, 0x9D, 0x017E, 0x0178,
    ];
    let code = match code {
        0x80..=0x9F => CP1252[(code - 0x80) as usize],
        0 => 0xFFFD,
        c => c,
    };
    char::from_u32(code).unwrap_or('\u{FFFD}')
}

/// Named references: the XML five, HTML 4's Latin-1 set, and the
/// punctuation and spaces that show up in mail.
fn named(name: &str) -> Option<&'static str> {
    Some(match name {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        "nbsp" | "ensp" | "emsp" | "thinsp" | "numsp" | "puncsp" | "hairsp" | "MediumSpace"
        | "NonBreakingSpace" => " ",
        "zwnj" | "zwj" | "shy" | "ZeroWidthSpace" | "NoBreak" | "lrm" | "rlm" | "InvisibleTimes" => "",
        "ndash" => "\u{2013}",
        "mdash" => "\u{2014}",
        "minus" => "\u{2212}",
        "hyphen" | "dash" => "\u{2010}",
        "lsquo" => "\u{2018}",
        "rsquo" => "\u{2019}",
        "sbquo" => "\u{201A}",
        "ldquo" => "\u{201C}",
        "rdquo" => "\u{201D}",
        "bdquo" => "\u{201E}",
        "laquo" => "\u{AB}",
        "raquo" => "\u{BB}",
        "lsaquo" => "\u{2039}",
        "rsaquo" => "\u{203A}",
        "bull" => "\u{2022}",
        "middot" => "\u{B7}",
        "hellip" => "\u{2026}",
        "prime" => "\u{2032}",
        "Prime" => "\u{2033}",
        "dagger" => "\u{2020}",
        "Dagger" => "\u{2021}",
        "permil" => "\u{2030}",
        "trade" => "\u{2122}",
        "euro" => "\u{20AC}",
        "larr" => "\u{2190}",
        "rarr" => "\u{2192}",
        "uarr" => "\u{2191}",
        "darr" => "\u{2193}",
        "le" => "\u{2264}",
        "ge" => "\u{2265}",
        "ne" => "\u{2260}",
        "infin" => "\u{221E}",
        "sol" => "/",
        "colon" => ":",
        "comma" => ",",
        "period" => ".",
        "lpar" => "(",
        "rpar" => ")",
        "num" => "#",
        "commat" => "@",
        "excl" => "!",
        "quest" => "?",
        "plus" => "+",
        "equals" => "=",
        "lowbar" => "_",
        "Tab" => "\t",
        "NewLine" => "\n",
        // Latin-1, U+00A1..U+00FF in order.
        "iexcl" => "\u{A1}",
        "cent" => "\u{A2}",
        "pound" => "\u{A3}",
        "curren" => "\u{A4}",
        "yen" => "\u{A5}",
        "brvbar" => "\u{A6}",
        "sect" => "\u{A7}",
        "uml" => "\u{A8}",
        "copy" => "\u{A9}",
        "ordf" => "\u{AA}",
        "not" => "\u{AC}",
        "reg" => "\u{AE}",
        "macr" => "\u{AF}",
        "deg" => "\u{B0}",
        "plusmn" => "\u{B1}",
        "sup2" => "\u{B2}",
        "sup3" => "\u{B3}",
        "acute" => "\u{B4}",
        "micro" => "\u{B5}",
        "para" => "\u{B6}",
        "cedil" => "\u{B8}",
        "sup1" => "\u{B9}",
        "ordm" => "\u{BA}",
        "frac14" => "\u{BC}",
        "frac12" => "\u{BD}",
        "frac34" => "\u{BE}",
        "iquest" => "\u{BF}",
        "Agrave" => "\u{C0}",
        "Aacute" => "\u{C1}",
        "Acirc" => "\u{C2}",
        "Atilde" => "\u{C3}",
        "Auml" => "\u{C4}",
        "Aring" => "\u{C5}",
        "AElig" => "\u{C6}",
        "Ccedil" => "\u{C7}",
        "Egrave" => "\u{C8}",
        "Eacute" => "\u{C9}",
        "Ecirc" => "\u{CA}",
        "Euml" => "\u{CB}",
        "Igrave" => "\u{CC}",
        "Iacute" => "\u{CD}",
        "Icirc" => "\u{CE}",
        "Iuml" => "\u{CF}",
        "ETH" => "\u{D0}",
        "Ntilde" => "\u{D1}",
        "Ograve" => "\u{D2}",
        "Oacute" => "\u{D3}",
        "Ocirc" => "\u{D4}",
        "Otilde" => "\u{D5}",
        "Ouml" => "\u{D6}",
        "times" => "\u{D7}",
        "Oslash" => "\u{D8}",
        "Ugrave" => "\u{D9}",
        "Uacute" => "\u{DA}",
        "Ucirc" => "\u{DB}",
        "Uuml" => "\u{DC}",
        "Yacute" => "\u{DD}",
        "THORN" => "\u{DE}",
        "szlig" => "\u{DF}",
        "agrave" => "\u{E0}",
        "aacute" => "\u{E1}",
        "acirc" => "\u{E2}",
        "atilde" => "\u{E3}",
        "auml" => "\u{E4}",
        "aring" => "\u{E5}",
        "aelig" => "\u{E6}",
        "ccedil" => "\u{E7}",
        "egrave" => "\u{E8}",
        "eacute" => "\u{E9}",
        "ecirc" => "\u{EA}",
        "euml" => "\u{EB}",
        "igrave" => "\u{EC}",
        "iacute" => "\u{ED}",
        "icirc" => "\u{EE}",
        "iuml" => "\u{EF}",
        "eth" => "\u{F0}",
        "ntilde" => "\u{F1}",
        "ograve" => "\u{F2}",
        "oacute" => "\u{F3}",
        "ocirc" => "\u{F4}",
        "otilde" => "\u{F5}",
        "ouml" => "\u{F6}",
        "divide" => "\u{F7}",
        "oslash" => "\u{F8}",
        "ugrave" => "\u{F9}",
        "uacute" => "\u{FA}",
        "ucirc" => "\u{FB}",
        "uuml" => "\u{FC}",
        "yacute" => "\u{FD}",
        "thorn" => "\u{FE}",
        "yuml" => "\u{FF}",
        "OElig" => "\u{152}",
        "oelig" => "\u{153}",
        "Scaron" => "\u{160}",
        "scaron" => "\u{161}",
        "Yuml" => "\u{178}",
        "fnof" => "\u{192}",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::to_text;

    fn text(html: &str) -> String {
        let mut out = String::new();
        to_text(html, &mut out);
        out
    }

    #[test]
    fn inline_tags_join_and_blocks_separate() {
        assert_eq!(
            text("<p>SSN <span>123</span>-45-<b>6789</b></p>"),
            "SSN 123-45-6789\n"
        );
        assert_eq!(text("<td>123</td><td>45</td>"), "123 45 ");
        assert_eq!(text("a<br>b<BR/>c<div>d</div>"), "a\nb\nc\nd\n");
        assert_eq!(text("<a href=\"x>y\" title='>'>link</a>"), "link");
    }

    #[test]
    fn entities_decode() {
        assert_eq!(text("1&#50;3&#x2D;45&ndash;6789"), "123-45\u{2013}6789");
        assert_eq!(text("a&nbsp;b&amp;c&lt;d&gt;&quot;&apos;"), "a b&c<d>\"'");
        assert_eq!(
            text("&eacute;&Uuml;&copy; &unknown; & alone &nbspx"),
            "\u{E9}\u{DC}\u{A9} &unknown; & alone  x"
        );
        assert_eq!(text("12&#150;3"), "12\u{2013}3");
        assert_eq!(text("&#0;&#xFFFFFFFF;&#"), "\u{FFFD}\u{FFFD}&#");
    }

    #[test]
    fn invisible_characters_dropped_and_spaces_normalized() {
        assert_eq!(text("123\u{200B}45\u{AD}6789"), "123456789");
        assert_eq!(text("a\u{A0}b&#8203;c&zwj;d\u{202F}e"), "a bcd e");
    }

    #[test]
    fn scripts_styles_comments_dropped() {
        let html = "<html><head><title>T</title><style>p{x:1}</style><script>var s='</p>';</SCRIPT></head>\
                    <body><!-- 078-05-1120 -->x<!DOCTYPE html>y<![CDATA[z]]></body></html>";
        assert_eq!(text(html), "T\nxy\n");
        assert_eq!(text("<script>never closed 123"), "");
        assert_eq!(text("<!-- never closed"), "");
        assert_eq!(text("<style/>ok"), "ok");
    }

    #[test]
    fn malformed_input_is_safe() {
        assert_eq!(text("a < b and c<"), "a < b and c<");
        assert_eq!(text("<"), "<");
        assert_eq!(text("&"), "&");
        assert_eq!(text("<a title=\"unterminated>text"), "");
        assert_eq!(
            text("<verylongtagnamethatisnotknown>x</verylongtagnamethatisnotknown>"),
            "x"
        );
        for s in [
            "<\u{E9}>",
            "&\u{E9};",
            "&#x\u{E9}",
            "\u{A0}",
            "<p\u{A0}>",
            "&#99999999999;",
        ] {
            let _ = text(s);
        }
    }
}
