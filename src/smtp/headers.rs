//! The header section of a received message (RFC 5322 2.2 and 3.6): where it
//! ends, and counting, reading and removing fields by name. Used for loop
//! detection (Received), for taking out headers Ward consumes (the tenant
//! authentication header) and for reading the fields Ward needs.
//!
//! Owns: the line and field boundaries of the header section. A line ends
//! at LF; a CR just before the LF belongs to the line ending. The header
//! section ends with the first empty line (`CRLF`, or a lone `LF`), which
//! belongs to it; with no empty line the whole message is header. A field
//! is a line of the form `name WSP* ":" ...` (RFC 5322 ftext names; the WSP
//! before the colon is the obsolete syntax of RFC 5322 4.5) together with
//! the folded continuation lines (starting with SP or HTAB) below it. Names
//! compare case-insensitively.
//!
//! Guarantees: nothing here panics or allocates more than the result,
//! whatever the bytes: lines without a colon, very long lines, no body, bare
//! LF or CR, non-UTF-8. The body is never read or changed. A line that is
//! not a field (no colon, a bad name, continuation lines before any field)
//! belongs to no field and is left alone; continuation lines below it are
//! its own, not the previous field's, so a junk line cannot make
//! [`remove_fields`] take away a neighbour's text.
//!
//! LF counts as a line ending, though Ward's receivers refuse messages with
//! bare LF, so that these functions agree with lenient parsers downstream:
//! a header a mail client would see as a field is a field here too, and
//! [`remove_fields`] cannot be dodged with `LF` instead of `CRLF`.

use memchr::memchr;

/// Length of the header section: the offset just past the empty line that
/// ends it (so `msg[header_section_len(msg)..]` is the body), or the whole
/// message when there is no empty line. A message starting with an empty
/// line has an empty header section (the empty line is its only line).
pub fn header_section_len(msg: &[u8]) -> usize {
    let mut pos = 0;
    while let Some(rest) = msg.get(pos..) {
        let Some(lf) = memchr(b'\n', rest) else { break };
        if lf == 0 || (lf == 1 && rest.first() == Some(&b'\r')) {
            return pos + lf + 1;
        }
        pos += lf + 1;
    }
    msg.len()
}

/// How many fields called `name` the header section holds.
pub fn count_fields(msg: &[u8], name: &str) -> usize {
    fields(msg).filter(|f| f.is_named(msg, name)).count()
}

/// The values of the fields called `name`, in order: everything after the
/// colon, unfolded (each line ending before a continuation line removed,
/// so `CRLF WSP` becomes `WSP`) and trimmed of surrounding SP and HTAB.
pub fn field_values(msg: &[u8], name: &str) -> Vec<Vec<u8>> {
    fields(msg)
        .filter(|f| f.is_named(msg, name))
        .map(|f| unfold(msg.get(f.value_start..f.end).unwrap_or_default()))
        .collect()
}

/// Removes every field called `name`, continuation lines included, and
/// returns how many were removed. One pass: each kept byte is moved at most
/// once, and nothing moves when nothing matches.
pub fn remove_fields(msg: &mut Vec<u8>, name: &str) -> usize {
    let section = header_section_len(msg);
    let mut removed = 0;
    // Kept bytes are compacted down to `write`. Field boundaries are found
    // at or after the current field's end, which copy_within (moving bytes
    // to lower offsets, never past that end) has not touched.
    let mut write = 0;
    let mut cursor = FieldCursor::new(msg);
    while let Some(field) = cursor.next_in(msg) {
        if field.is_named(msg, name) {
            removed += 1;
        } else {
            if write != field.start {
                msg.copy_within(field.start..field.end, write);
            }
            write += field.end - field.start;
        }
    }
    if removed > 0 {
        let body_len = msg.len() - section;
        msg.copy_within(section.., write);
        msg.truncate(write + body_len);
    }
    removed
}

/// One field, or one line that is not part of any field, in the header
/// section: `start..end` spans its lines with their endings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field {
    start: usize,
    end: usize,
    /// `start..name_end` is the name (trailing WSP excluded) when the first
    /// line is `name WSP* ":"`; `value_start` is just past the colon.
    name: Option<(usize, usize)>,
    value_start: usize,
}

impl Field {
    fn is_named(&self, msg: &[u8], name: &str) -> bool {
        self.name
            .and_then(|(start, end)| msg.get(start..end))
            .is_some_and(|field_name| field_name.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// Walks the fields of the header section, in order. It borrows the
/// message afresh at each step so [`remove_fields`] can edit the part
/// already walked.
struct FieldCursor {
    pos: usize,
    section_end: usize,
}

impl FieldCursor {
    fn new(msg: &[u8]) -> FieldCursor {
        FieldCursor {
            pos: 0,
            section_end: header_section_len(msg),
        }
    }

    fn next_in(&mut self, msg: &[u8]) -> Option<Field> {
        let section = msg.get(..self.section_end)?;
        let start = self.pos;
        let first_end = line_end(section, start)?;
        let first = section.get(start..first_end).unwrap_or_default();
        if is_blank_line(first) {
            // The empty line that ends the section: not a field.
            self.pos = first_end;
            return Some(Field {
                start,
                end: first_end,
                name: None,
                value_start: first_end,
            });
        }
        let mut end = first_end;
        while let Some(next_end) = line_end(section, end) {
            let is_continuation = matches!(section.get(end), Some(b' ' | b'\t'));
            if !is_continuation {
                break;
            }
            end = next_end;
        }
        self.pos = end;
        let (name, value_start) = match field_name_len(first) {
            Some((name_len, colon)) => (Some((start, start + name_len)), start + colon + 1),
            None => (None, end),
        };
        Some(Field {
            start,
            end,
            name,
            value_start,
        })
    }
}

/// The fields of the header section of a message that is not being edited.
fn fields(msg: &[u8]) -> impl Iterator<Item = Field> + '_ {
    let mut cursor = FieldCursor::new(msg);
    std::iter::from_fn(move || cursor.next_in(msg))
}

/// End (past the LF, or the end of `section`) of the line starting at
/// `start`; `None` at the end of the section.
fn line_end(section: &[u8], start: usize) -> Option<usize> {
    let rest = section.get(start..).filter(|rest| !rest.is_empty())?;
    Some(memchr(b'\n', rest).map_or(section.len(), |lf| start + lf + 1))
}

fn is_blank_line(line: &[u8]) -> bool {
    line == b"\r\n" || line == b"\n"
}

/// For a line `name WSP* ":" ...`: the name's length (trailing WSP
/// excluded) and the colon's offset. The name must be 1 or more ftext
/// characters (printable ASCII except ':', RFC 5322 3.6.8).
fn field_name_len(line: &[u8]) -> Option<(usize, usize)> {
    let colon = memchr(b':', line)?;
    let before = line.get(..colon)?;
    let name_len = before
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |last| last + 1);
    let name = before.get(..name_len)?;
    let valid = !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b));
    valid.then_some((name_len, colon))
}

/// Removes line endings (LF, and a CR just before an LF) and trims SP and
/// HTAB at both ends.
fn unfold(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some(lf) = memchr(b'\n', rest) {
        let line = rest.get(..lf).unwrap_or_default();
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        rest = rest.get(lf + 1..).unwrap_or_default();
    }
    out.extend_from_slice(rest);
    let is_wsp = |b: &u8| *b == b' ' || *b == b'\t';
    let start = out.iter().position(|b| !is_wsp(b)).unwrap_or(out.len());
    let end = out
        .iter()
        .rposition(|b| !is_wsp(b))
        .map_or(start, |last| last + 1);
    out.truncate(end);
    out.drain(..start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: from a\r\n\tby b; Mon, 1 Jan 2024 00:00:00 +0000\r\n\
Subject: Hello\r\n\
received: from c by d;\r\n  Tue, 2 Jan 2024\r\n\
X-Empty:\r\n\
\r\n\
Received: in the body\r\n";

    fn remove(msg: &[u8], name: &str) -> (Vec<u8>, usize) {
        let mut msg = msg.to_vec();
        let n = remove_fields(&mut msg, name);
        (msg, n)
    }

    #[test]
    fn section_length() {
        assert_eq!(
            header_section_len(MSG),
            MSG.len() - b"Received: in the body\r\n".len()
        );
        assert_eq!(header_section_len(b""), 0);
        assert_eq!(header_section_len(b"\r\n"), 2);
        assert_eq!(header_section_len(b"\r\nbody"), 2);
        assert_eq!(header_section_len(b"\n\nbody"), 1);
        assert_eq!(header_section_len(b"A: b\r\n"), 6);
        assert_eq!(header_section_len(b"A: b\r\n\r\n"), 8);
        assert_eq!(header_section_len(b"A: b\r\n\r\nbody\r\n\r\nmore"), 8);
        assert_eq!(header_section_len(b"A: b\n\nbody"), 6);
        assert_eq!(header_section_len(b"A: b"), 4);
        assert_eq!(header_section_len(b"A: b\r\n \r\nc"), 10);
        assert_eq!(header_section_len(b"A: b\r\n\r"), 7);
        assert_eq!(header_section_len(b"A: b\r\r\nc"), 8);
    }

    #[test]
    fn counting() {
        assert_eq!(count_fields(MSG, "Received"), 2);
        assert_eq!(count_fields(MSG, "RECEIVED"), 2);
        assert_eq!(count_fields(MSG, "subject"), 1);
        assert_eq!(count_fields(MSG, "X-Empty"), 1);
        assert_eq!(count_fields(MSG, "by"), 0);
        assert_eq!(count_fields(MSG, "From"), 0);
        assert_eq!(count_fields(MSG, ""), 0);
        assert_eq!(count_fields(MSG, "Received:"), 0);
        // Only the header section counts.
        assert_eq!(count_fields(b"\r\nReceived: x\r\n", "Received"), 0);
        // Folded lines that look like fields are part of the field above.
        assert_eq!(count_fields(b"A: x\r\n Received: y\r\n\r\n", "Received"), 0);
    }

    #[test]
    fn obsolete_space_before_colon() {
        assert_eq!(count_fields(b"Subject : x\r\n", "Subject"), 1);
        assert_eq!(field_values(b"Subject\t: x\r\n", "subject"), vec![b"x".to_vec()]);
        assert_eq!(count_fields(b" Subject: x\r\n", "Subject"), 0);
        assert_eq!(count_fields(b"X Subject: x\r\n", "Subject"), 0);
        assert_eq!(count_fields(b"X Subject: x\r\n", "X Subject"), 0);
    }

    #[test]
    fn values_are_unfolded_and_trimmed() {
        assert_eq!(
            field_values(MSG, "Received"),
            vec![
                b"from a\tby b; Mon, 1 Jan 2024 00:00:00 +0000".to_vec(),
                b"from c by d;  Tue, 2 Jan 2024".to_vec(),
            ]
        );
        assert_eq!(field_values(MSG, "Subject"), vec![b"Hello".to_vec()]);
        assert_eq!(field_values(MSG, "X-Empty"), vec![Vec::<u8>::new()]);
        assert!(field_values(MSG, "Nope").is_empty());
        assert_eq!(field_values(b"A:b:c\r\n", "A"), vec![b"b:c".to_vec()]);
        assert_eq!(field_values(b"A:  \t v \t\r\n\r\n", "A"), vec![b"v".to_vec()]);
        assert_eq!(field_values(b"A: v\n w", "a"), vec![b"v w".to_vec()]);
        assert_eq!(field_values(b"A: v\r w\r\n", "a"), vec![b"v\r w".to_vec()]);
        assert_eq!(
            field_values(b"A: v\r\n \r\n\tw\r\n", "a"),
            vec![b"v \tw".to_vec()]
        );
    }

    #[test]
    fn removal() {
        let (out, n) = remove(MSG, "received");
        assert_eq!(n, 2);
        assert_eq!(
            out,
            b"Subject: Hello\r\nX-Empty:\r\n\r\nReceived: in the body\r\n".to_vec()
        );
        let (out, n) = remove(MSG, "Subject");
        assert_eq!(n, 1);
        assert_eq!(count_fields(&out, "Received"), 2);
        assert_eq!(out.len(), MSG.len() - b"Subject: Hello\r\n".len());
        let (out, n) = remove(MSG, "X-Missing");
        assert_eq!((out.as_slice(), n), (MSG, 0));
        // All of the header: the empty line and body remain.
        let (out, n) = remove(b"A: 1\r\nA: 2\r\n continued\r\n\r\nbody", "a");
        assert_eq!((out.as_slice(), n), (&b"\r\nbody"[..], 2));
        // No body, no empty line.
        let (out, n) = remove(b"A: 1\r\nB: 2\r\nA: 3", "A");
        assert_eq!((out.as_slice(), n), (&b"B: 2\r\n"[..], 2));
        // Body untouched even when it looks like header.
        let (out, n) = remove(b"A: 1\r\n\r\nA: 2\r\n\r\nA: 3\r\n", "A");
        assert_eq!((out.as_slice(), n), (&b"\r\nA: 2\r\n\r\nA: 3\r\n"[..], 1));
    }

    #[test]
    fn junk_lines() {
        let msg = b"From someone Mon Jan  1\r\n continuation of junk\r\nA: 1\r\nno colon here\r\n\tmore junk\r\nB: 2\r\n\r\n";
        assert_eq!(count_fields(msg, "A"), 1);
        assert_eq!(count_fields(msg, "B"), 1);
        assert_eq!(field_values(msg, "A"), vec![b"1".to_vec()]);
        let (out, n) = remove(msg, "A");
        assert_eq!(n, 1);
        assert_eq!(
            out,
            b"From someone Mon Jan  1\r\n continuation of junk\r\nno colon here\r\n\tmore junk\r\nB: 2\r\n\r\n"
                .to_vec()
        );
        // Continuation lines before any field belong to nothing.
        assert_eq!(remove(b" x: 1\r\nx: 2\r\n", "x"), (b" x: 1\r\n".to_vec(), 1));
        // ":" alone has no name.
        assert_eq!(count_fields(b": x\r\n", ""), 0);
    }

    #[test]
    fn lf_only_messages() {
        let msg = b"Received: a\nReceived: b\n c\nSubject: s\n\nReceived: body\n";
        assert_eq!(header_section_len(msg), 39);
        assert_eq!(count_fields(msg, "Received"), 2);
        assert_eq!(
            field_values(msg, "Received"),
            vec![b"a".to_vec(), b"b c".to_vec()]
        );
        assert_eq!(
            remove(msg, "Received"),
            (b"Subject: s\n\nReceived: body\n".to_vec(), 2)
        );
        // A bare LF inside a CRLF message is a line ending too: the field
        // it hides is found.
        let msg = b"X-Safe: 1\nX-Ward-Tenant: secret\r\n\r\n";
        assert_eq!(remove(msg, "X-Ward-Tenant"), (b"X-Safe: 1\n\r\n".to_vec(), 1));
    }

    #[test]
    fn long_headers() {
        let mut msg = b"X-Long: ".to_vec();
        msg.extend(std::iter::repeat_n(b'a', 1_000_000));
        msg.extend_from_slice(b"\r\n");
        for _ in 0..10_000 {
            msg.extend_from_slice(b" folded\r\n");
        }
        msg.extend_from_slice(b"Received: x\r\n\r\nbody");
        assert_eq!(count_fields(&msg, "X-Long"), 1);
        assert_eq!(count_fields(&msg, "Received"), 1);
        assert_eq!(field_values(&msg, "x-long")[0].len(), 1_000_000 + 7 * 10_000);
        let (out, n) = remove(&msg, "X-Long");
        assert_eq!((out.as_slice(), n), (&b"Received: x\r\n\r\nbody"[..], 1));
    }

    #[test]
    fn many_fields_removed_in_one_pass() {
        let mut msg = Vec::new();
        for i in 0..50_000 {
            msg.extend_from_slice(if i % 2 == 0 {
                b"Received: x\r\n"
            } else {
                b"Keep: y\r\n"
            });
        }
        msg.extend_from_slice(b"\r\nbody");
        let (out, n) = remove(&msg, "Received");
        assert_eq!(n, 25_000);
        assert_eq!(out.len(), 25_000 * 9 + 6);
        assert_eq!(count_fields(&out, "Keep"), 25_000);
    }

    #[test]
    fn never_panics() {
        let samples: [&[u8]; 16] = [
            b"",
            b"\n",
            b"\r",
            b"\r\n",
            b":",
            b"\n:",
            b"a",
            b"a:",
            b" ",
            b"\t:\r\n",
            b"a:\r",
            b"a:\r\r\n",
            b"\xff\xfe: \x00\r\n",
            b"a\n\r\n",
            b"\r\r\n\n",
            b"a: b\r\n \r\n",
        ];
        for msg in samples {
            for name in ["a", "", ":", "\u{e9}"] {
                let _ = header_section_len(msg);
                let _ = count_fields(msg, name);
                let _ = field_values(msg, name);
                let mut copy = msg.to_vec();
                let n = remove_fields(&mut copy, name);
                assert_eq!(
                    count_fields(&copy, name),
                    if n > 0 { 0 } else { count_fields(msg, name) }
                );
            }
        }
    }
}
