//! Dot-stuffing (RFC 5321 4.5.2) of outgoing message data.
//!
//! Owns: the one place message bytes are put on the wire, between the 354
//! and the final `.`.
//!
//! Guarantees: no sequence in the content can end the DATA phase early on
//! any receiver, strict or lenient. A `.` is doubled at the very start of
//! the content and after every CR or LF, so a line start after CRLF, after a
//! bare LF and after a bare CR are all covered: a receiver that (like older
//! Postfix, see DESIGN.md) treats `\n.\r\n` or `\r.\r` as the end of data
//! still sees only a doubled dot. The content is otherwise sent byte for
//! byte; if it does not end in CRLF, one is added before the terminating
//! `.CRLF`. Bytes are copied in runs found with memchr into a buffered
//! writer, never one at a time. Content never leaves this function other
//! than into `out` (invariant 4).
//!
//! Refuses: nothing; any byte sequence can be sent.

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Writes `content` dot-stuffed, then the end-of-data marker, to `out`
/// (a buffered writer: runs between dots are copied in as large slices). It
/// does not flush; the caller's writer enforces the per-write deadline.
pub(crate) async fn write_dot_stuffed<W: AsyncWrite + Unpin>(
    out: &mut W,
    content: &[u8],
) -> std::io::Result<()> {
    let mut start = 0;
    // A '.' at offset 0 starts the first line.
    if content.first() == Some(&b'.') {
        out.write_all(b".").await?;
    }
    for eol in memchr::memchr2_iter(b'\r', b'\n', content) {
        if content.get(eol + 1) == Some(&b'.') {
            // Write through the line break and the dot, then the dot again:
            // the second one is the one the receiver keeps.
            out.write_all(&content[start..eol + 2]).await?;
            start = eol + 1;
        }
    }
    out.write_all(&content[start..]).await?;
    if content.is_empty() || content.ends_with(b"\r\n") {
        out.write_all(b".\r\n").await
    } else {
        out.write_all(b"\r\n.\r\n").await
    }
}

/// The stuffed form as a vector (tests and size estimates).
#[cfg(test)]
pub(crate) fn dot_stuffed(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("test runtime");
    rt.block_on(write_dot_stuffed(&mut out, content))
        .expect("writing to a Vec cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::dot_stuffed;

    fn check(input: &[u8], expected: &[u8]) {
        assert_eq!(
            String::from_utf8_lossy(&dot_stuffed(input)),
            String::from_utf8_lossy(expected),
            "input {:?}",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn plain_message_gets_terminator() {
        check(
            b"Subject: x\r\n\r\nhello\r\n",
            b"Subject: x\r\n\r\nhello\r\n.\r\n",
        );
    }

    #[test]
    fn dot_at_start_of_content_and_after_crlf() {
        check(b".hidden\r\n", b"..hidden\r\n.\r\n");
        check(b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n");
        check(b"a\r\n..two\r\n", b"a\r\n...two\r\n.\r\n");
        check(b"a\r\n.\r\n.\r\n", b"a\r\n..\r\n..\r\n.\r\n");
    }

    #[test]
    fn dot_after_bare_lf_and_bare_cr() {
        // The smuggling shapes: each must reach the receiver as a doubled
        // dot, whatever it takes for a line end.
        check(b"a\n.\r\nb\r\n", b"a\n..\r\nb\r\n.\r\n");
        check(b"a\r\n.\nb\r\n", b"a\r\n..\nb\r\n.\r\n");
        check(b"a\r.\rb\r\n", b"a\r..\rb\r\n.\r\n");
        check(b"a\n.\n", b"a\n..\n\r\n.\r\n");
    }

    #[test]
    fn dots_elsewhere_untouched() {
        check(b"a.b\r\nc. .\r\n", b"a.b\r\nc. .\r\n.\r\n");
    }

    #[test]
    fn missing_final_crlf_is_added() {
        check(b"no newline", b"no newline\r\n.\r\n");
        check(b"ends in cr\r", b"ends in cr\r\r\n.\r\n");
        check(b"", b".\r\n");
        check(b".", b"..\r\n.\r\n");
    }

    #[test]
    fn large_content_round_trips() {
        let mut content = Vec::new();
        for i in 0..10_000 {
            if i % 7 == 0 {
                content.extend_from_slice(b".");
            }
            content.extend_from_slice(format!("line {i}\r\n").as_bytes());
        }
        let out = dot_stuffed(&content);
        // Undo: drop the terminator, then one dot after each line break.
        let body = &out[..out.len() - 3];
        let mut undone = Vec::new();
        let mut line_start = true;
        for &b in body {
            if line_start && b == b'.' {
                line_start = false;
                continue;
            }
            line_start = b == b'\n';
            undone.push(b);
        }
        assert_eq!(undone, content);
    }
}
