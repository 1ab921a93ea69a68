//! Message data receivers: DATA (RFC 5321 4.1.1.4, dot-terminated,
//! dot-stuffed) and BDAT (RFC 3030 CHUNKING, length-delimited), and the
//! checks both make on the message octets.
//!
//! Owns: finding the end of DATA, removing dot-stuffing, capping the stored
//! message at the size limit, and noticing bare CR, bare LF and over-long
//! lines. Both receivers feed the same `MessageChecker`, so the rules are
//! written once and hold across any split of the input.
//!
//! Guarantees:
//! - Only `CRLF . CRLF` ends DATA. The receiver starts at the start of a
//!   line (the CRLF ending the DATA command counts), so `.CRLF` alone is an
//!   empty message. None of the SMTP smuggling forms (`LF . CRLF`,
//!   `LF . LF`, `CR . CRLF`, `CR . CR`, `CRLF . LF`, a dot after a bare LF)
//!   ends DATA; they are content, and each is recorded as a bare line
//!   ending, which the session refuses with 550 5.5.2 (DESIGN.md: Postfix's
//!   defaults accepted a smuggled second message; Ward must not).
//! - The result is independent of how the stream is split across calls:
//!   every state that spans a boundary (a CR that may start a CRLF, a dot
//!   that may start the end marker) is carried in the receiver.
//! - `out` never grows by more than `max_size` octets: once the message
//!   exceeds it, only its first `max_size` octets have been appended and
//!   nothing more is, but the stream is still scanned so the session finds
//!   the end and stays in sync (it answers 552 5.3.4).
//! - Never panics; the message octets are not logged or put in errors.
//!
//! Refuses (records as a [`BodyProblem`], for the session to answer after
//! the end of the data): a message over the size limit; a CR not followed by
//! LF or an LF not preceded by CR (RFC 5321 2.3.8); a line longer than the
//! line limit, counted in octets without the CRLF and after un-stuffing
//! (RFC 5322 2.1.1).
//!
//! Where a line ends, for the line-length count: at every LF. A bare CR
//! does not end a line. For BDAT, a CR at the end of one chunk and an LF at
//! the start of the next make a CRLF (the message is the concatenation of
//! the chunks); a CR that ends the last chunk is a bare CR, decided by
//! [`BdatReceiver::finish`].
//!
//! Speed: this is the hot path. Input is scanned with `memchr`, and output
//! is appended in whole spans between the dots that are removed, never
//! byte by byte.

use memchr::{memchr, memchr2};

/// Why a received message must be refused, most serious first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyProblem {
    /// Over the size limit: 552 5.3.4.
    TooBig,
    /// A bare CR or bare LF: 550 5.5.2.
    BareLineEnding,
    /// A line over the line-length limit: 550 5.6.0.
    LineTooLong,
}

/// The size limit and line checks over the message octets, shared by
/// [`DataReceiver`] (on the un-stuffed stream) and [`BdatReceiver`].
#[derive(Debug, Clone)]
struct MessageChecker {
    max_size: u64,
    max_line_length: usize,
    /// Octets of the message so far, including any beyond the limit.
    size: u64,
    too_big: bool,
    bare_line_ending: bool,
    line_too_long: bool,
    /// The last octet seen was a CR: the next octet decides whether it was
    /// half of a CRLF or a bare CR.
    after_cr: bool,
    /// Octets in the current line so far (line endings not counted).
    line_len: usize,
}

impl MessageChecker {
    fn new(max_size: u64, max_line_length: usize) -> MessageChecker {
        MessageChecker {
            max_size,
            max_line_length,
            size: 0,
            too_big: false,
            bare_line_ending: false,
            line_too_long: false,
            after_cr: false,
            line_len: 0,
        }
    }

    /// Takes the next octets of the message: checks them and appends them
    /// to `out` while the message is within the limit.
    fn accept(&mut self, span: &[u8], out: &mut Vec<u8>) {
        if span.is_empty() {
            return;
        }
        self.check_lines(span);
        let stored = self.size.min(self.max_size);
        self.size = self.size.saturating_add(span.len() as u64);
        if self.size > self.max_size {
            self.too_big = true;
        }
        // Keep exactly the first max_size octets, however the input was
        // split; the rest is counted but dropped, so memory stays bounded
        // for a message that will be refused anyway.
        let room = usize::try_from(self.max_size - stored).unwrap_or(usize::MAX);
        out.extend_from_slice(span.get(..room).unwrap_or(span));
    }

    fn check_lines(&mut self, mut rest: &[u8]) {
        loop {
            let found = memchr2(b'\r', b'\n', rest);
            let text_len = found.unwrap_or(rest.len());
            if text_len > 0 {
                if self.after_cr {
                    self.bare_line_ending = true;
                    self.after_cr = false;
                }
                self.line_len = self.line_len.saturating_add(text_len);
                if self.line_len > self.max_line_length {
                    self.line_too_long = true;
                }
            }
            let Some(pos) = found else { return };
            if rest.get(pos) == Some(&b'\n') {
                if !self.after_cr {
                    self.bare_line_ending = true;
                }
                self.after_cr = false;
                self.line_len = 0;
            } else {
                if self.after_cr {
                    self.bare_line_ending = true;
                }
                self.after_cr = true;
            }
            rest = rest.get(pos + 1..).unwrap_or_default();
        }
    }

    /// The message is complete: a CR still waiting for its LF is bare.
    fn finish(&mut self) {
        if self.after_cr {
            self.bare_line_ending = true;
            self.after_cr = false;
        }
    }

    fn problem(&self) -> Option<BodyProblem> {
        if self.too_big {
            Some(BodyProblem::TooBig)
        } else if self.bare_line_ending {
            Some(BodyProblem::BareLineEnding)
        } else if self.line_too_long {
            Some(BodyProblem::LineTooLong)
        } else {
            None
        }
    }
}

/// Where the DATA scanner is in the stream, relative to the end marker
/// `CRLF . CRLF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// Just after a CRLF (or at the start of the data).
    LineStart,
    /// Inside a line.
    Text,
    /// Just after a CR inside a line.
    Cr,
    /// After CRLF and a dot. The dot is never part of the message: it is
    /// either dot-stuffing or the end marker.
    Dot,
    /// After CRLF, a dot and a CR, all within this call: an LF ends DATA.
    DotCr,
    /// As `DotCr`, but the CR ended the previous call and was held back
    /// from `out`, since it belongs to the message only if no LF follows.
    DotCrHeld,
    /// The end marker has been consumed.
    Done,
}

/// Receives the DATA stream of one message: un-stuffs it into the caller's
/// buffer and finds its end.
#[derive(Debug, Clone)]
pub struct DataReceiver {
    checker: MessageChecker,
    state: DataState,
}

impl DataReceiver {
    /// A receiver for one message, positioned just after the CRLF of the
    /// DATA command.
    pub fn new(max_size: u64, max_line_length: usize) -> DataReceiver {
        DataReceiver {
            checker: MessageChecker::new(max_size, max_line_length),
            state: DataState::LineStart,
        }
    }

    /// Consumes the next bytes of the DATA stream, appending the message
    /// (un-stuffed) to `out`. Returns `Some(n)` once the end marker has been
    /// consumed, `n` being how many bytes of `input` were used, marker
    /// included; the rest belongs to the next command. Returns `None` when
    /// all of `input` was used and the message continues. After the end,
    /// further calls consume nothing and return `Some(0)`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        use DataState::*;
        match self.state {
            Done => return Some(0),
            DotCrHeld => match input.first() {
                None => return None,
                Some(b'\n') => {
                    self.state = Done;
                    return Some(1);
                }
                Some(_) => {
                    // "CRLF . CR x": the dot was stuffing, the held CR is
                    // message content.
                    self.checker.accept(b"\r", out);
                    self.state = Text;
                }
            },
            _ => {}
        }
        // `span_start..i` is input not yet handed to the checker; it is
        // handed over in one piece whenever a dot must be left out.
        let mut span_start = 0;
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            match self.state {
                Text => match memchr(b'\r', input.get(i..).unwrap_or_default()) {
                    Some(pos) => {
                        i += pos + 1;
                        self.state = Cr;
                    }
                    None => i = input.len(),
                },
                Cr => match b {
                    b'\n' => {
                        i += 1;
                        self.state = LineStart;
                    }
                    b'\r' => i += 1,
                    _ => self.state = Text,
                },
                LineStart => {
                    if b == b'.' {
                        self.checker
                            .accept(input.get(span_start..i).unwrap_or_default(), out);
                        i += 1;
                        span_start = i;
                        self.state = Dot;
                    } else {
                        self.state = Text;
                    }
                }
                Dot => {
                    if b == b'\r' {
                        i += 1;
                        self.state = DotCr;
                    } else {
                        self.state = Text;
                    }
                }
                DotCr => {
                    if b == b'\n' {
                        // Everything before the dot was handed over when
                        // the dot was seen; the dot, CR and LF are the
                        // marker.
                        self.state = Done;
                        return Some(i + 1);
                    }
                    self.state = Text;
                }
                // Handled before the loop; neither is entered inside it
                // without returning.
                DotCrHeld | Done => break,
            }
        }
        let mut end = input.len();
        if self.state == DotCr {
            // The CR just after the dot is the last input byte: hold it
            // back until the next byte shows whether it is the marker's.
            end = end.saturating_sub(1);
            self.state = DotCrHeld;
        }
        self.checker
            .accept(input.get(span_start..end).unwrap_or_default(), out);
        None
    }

    /// Whether the end marker has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == DataState::Done
    }

    /// The most serious problem with the message so far:
    /// TooBig > BareLineEnding > LineTooLong.
    pub fn problem(&self) -> Option<BodyProblem> {
        self.checker.problem()
    }

    /// Octets of the un-stuffed message so far, counting those beyond the
    /// size limit that were not stored.
    pub fn size(&self) -> u64 {
        self.checker.size
    }
}

/// Receives the chunks of one message sent with BDAT (RFC 3030). Chunks are
/// length-delimited, so there is no end marker and no dot-stuffing; the
/// size limit and line checks are those of DATA, across chunk boundaries.
#[derive(Debug, Clone)]
pub struct BdatReceiver {
    checker: MessageChecker,
}

impl BdatReceiver {
    /// A receiver for one message, kept across its BDAT commands.
    pub fn new(max_size: u64, max_line_length: usize) -> BdatReceiver {
        BdatReceiver {
            checker: MessageChecker::new(max_size, max_line_length),
        }
    }

    /// Takes octets of a chunk (a whole chunk or any part of one) and
    /// appends them to `out` while the message is within the limit.
    pub fn feed(&mut self, chunk_bytes: &[u8], out: &mut Vec<u8>) {
        self.checker.accept(chunk_bytes, out);
    }

    /// Called after the chunk of BDAT LAST: a CR ending the message is a
    /// bare CR.
    pub fn finish(&mut self) {
        self.checker.finish();
    }

    /// The most serious problem with the message so far:
    /// TooBig > BareLineEnding > LineTooLong.
    pub fn problem(&self) -> Option<BodyProblem> {
        self.checker.problem()
    }

    /// Octets received so far, counting those beyond the size limit that
    /// were not stored.
    pub fn size(&self) -> u64 {
        self.checker.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: u64 = 1 << 30;
    const LINE: usize = 998;

    /// The outcome of receiving a DATA stream: (consumed, message, problem,
    /// size); consumed is None if the stream never ended.
    type Outcome = (Option<usize>, Vec<u8>, Option<BodyProblem>, u64);

    /// Feeds `input` in the pieces given by `cuts` (ascending offsets).
    fn receive_cut(input: &[u8], cuts: &[usize], max_size: u64, max_line: usize) -> Outcome {
        let mut receiver = DataReceiver::new(max_size, max_line);
        let mut out = Vec::new();
        let mut start = 0;
        for end in cuts.iter().copied().chain([input.len()]) {
            let end = end.clamp(start, input.len());
            if let Some(n) = receiver.feed(&input[start..end], &mut out) {
                assert!(receiver.is_done());
                return (Some(start + n), out, receiver.problem(), receiver.size());
            }
            start = end;
        }
        (None, out, receiver.problem(), receiver.size())
    }

    fn receive(input: &[u8]) -> Outcome {
        receive_cut(input, &[], BIG, LINE)
    }

    /// Feeds `input` whole, at every split point, and byte by byte; all must
    /// agree. Returns the outcome.
    fn receive_all_ways(input: &[u8], max_size: u64, max_line: usize) -> Outcome {
        let whole = receive_cut(input, &[], max_size, max_line);
        for cut in 0..=input.len() {
            assert_eq!(
                receive_cut(input, &[cut], max_size, max_line),
                whole,
                "split at {cut}"
            );
        }
        let bytes: Vec<usize> = (0..input.len()).collect();
        assert_eq!(
            receive_cut(input, &bytes, max_size, max_line),
            whole,
            "byte by byte"
        );
        whole
    }

    /// A straightforward model of DATA: the end is the first CRLF.CRLF in
    /// CRLF + input; every line of the message loses one leading dot.
    fn reference(input: &[u8], max_line: usize) -> (Option<usize>, Vec<u8>, Option<BodyProblem>) {
        let mut framed = b"\r\n".to_vec();
        framed.extend_from_slice(input);
        let end = framed.windows(5).position(|w| w == b"\r\n.\r\n");
        let raw = match end {
            Some(p) => &input[..p],
            None => input,
        };
        let mut message = Vec::new();
        let mut at_line_start = true;
        for (i, &b) in raw.iter().enumerate() {
            if !(at_line_start && b == b'.') {
                message.push(b);
            }
            at_line_start = b == b'\n' && i > 0 && raw[i - 1] == b'\r';
        }
        // A CR held at the very end of an unfinished stream is not yet in
        // the message.
        if end.is_none() && (raw.ends_with(b"\r\n.\r") || raw == b".\r") {
            message.pop();
        }
        let mut bare = false;
        let mut long = false;
        let mut line_len = 0;
        for (i, &b) in message.iter().enumerate() {
            match b {
                b'\n' => {
                    bare |= i == 0 || message[i - 1] != b'\r';
                    line_len = 0;
                }
                b'\r' => bare |= message.get(i + 1).is_some_and(|&n| n != b'\n'),
                _ => {
                    line_len += 1;
                    long |= line_len > max_line;
                }
            }
        }
        let problem = if bare {
            Some(BodyProblem::BareLineEnding)
        } else if long {
            Some(BodyProblem::LineTooLong)
        } else {
            None
        };
        (end.map(|p| p + 3), message, problem)
    }

    #[test]
    fn simple_message() {
        let input = b"Subject: hi\r\n\r\nHello\r\n.\r\nQUIT\r\n";
        let (n, out, problem, size) = receive_all_ways(input, BIG, LINE);
        assert_eq!(n, Some(input.len() - 6));
        assert_eq!(out, b"Subject: hi\r\n\r\nHello\r\n");
        assert_eq!(problem, None);
        assert_eq!(size, out.len() as u64);
    }

    #[test]
    fn empty_message() {
        assert_eq!(receive_all_ways(b".\r\n", BIG, LINE), (Some(3), vec![], None, 0));
        assert_eq!(
            receive_all_ways(b".\r\nNOOP\r\n", BIG, LINE),
            (Some(3), vec![], None, 0)
        );
        assert_eq!(
            receive_all_ways(b"\r\n.\r\n", BIG, LINE),
            (Some(5), b"\r\n".to_vec(), None, 2)
        );
    }

    #[test]
    fn unfinished_stream() {
        for input in [
            &b""[..],
            b"abc",
            b"abc\r\n",
            b"abc\r\n.",
            b"abc\r\n.\r",
            b".",
            b".\r",
            b"\r\n.\r",
        ] {
            let (n, _, _, _) = receive_all_ways(input, BIG, LINE);
            assert_eq!(n, None, "{input:?}");
        }
        let mut receiver = DataReceiver::new(BIG, LINE);
        let mut out = Vec::new();
        assert_eq!(receiver.feed(b"a\r\n.\r", &mut out), None);
        assert_eq!(out, b"a\r\n");
        assert_eq!(receiver.feed(b"", &mut out), None);
        assert_eq!(receiver.feed(b"x\r\n.\r\n", &mut out), Some(6));
        assert_eq!(out, b"a\r\n\rx\r\n");
        assert_eq!(receiver.problem(), Some(BodyProblem::BareLineEnding));
        assert_eq!(receiver.feed(b"more", &mut out), Some(0));
        assert_eq!(out, b"a\r\n\rx\r\n");
    }

    #[test]
    fn dot_unstuffing() {
        let (n, out, problem, _) = receive_all_ways(b"..\r\n...x\r\n.a\r\na.b\r\n\r\n.\r\n", BIG, LINE);
        assert_eq!(n, Some(24));
        assert_eq!(out, b".\r\n..x\r\na\r\na.b\r\n\r\n");
        assert_eq!(problem, None);
        // smtp-proto's vectors.
        assert_eq!(receive(b"hi\r\n..\r\n.a\r\n\r\n.\r\n").1, b"hi\r\n.\r\na\r\n\r\n");
        assert_eq!(
            receive(b"\r\na\rb\nc\r\n.d\r\n..\r\n\r\n.\r\n").1,
            b"\r\na\rb\nc\r\nd\r\n.\r\n\r\n"
        );
    }

    /// Every smuggling form: inside a message, followed by a complete second
    /// transaction. None may end DATA: the only end is the real one, and the
    /// "second message" is just content of the first, which is flagged.
    #[test]
    fn smuggling_vectors_do_not_end_data() {
        let vectors: [&[u8]; 14] = [
            b"\n.\r\n",
            b"\n.\n",
            b"\r.\r\n",
            b"\r.\r",
            b"\r\n.\n",
            b"\n..\r\n",
            b"\n.",
            b"\r.",
            b"\r\n.\r",
            b"\r\n.\rX",
            b"\n\n.\r\n",
            b"\r\r.\r\r",
            b"\n\r.\r\n",
            b"\r\n\n.\r\n",
        ];
        let second = b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: forged\r\n\r\nsmuggled\r\n";
        for vector in vectors {
            let mut input = b"Subject: first\r\n\r\nbody".to_vec();
            input.extend_from_slice(vector);
            input.extend_from_slice(second);
            // Without the real end, the stream has not ended at all.
            let (n, _, problem, _) = receive_all_ways(&input, BIG, LINE);
            assert_eq!(n, None, "{vector:?} ended DATA");
            assert_eq!(problem, Some(BodyProblem::BareLineEnding), "{vector:?}");

            input.extend_from_slice(b".\r\nQUIT\r\n");
            let (n, out, problem, _) = receive_all_ways(&input, BIG, LINE);
            assert_eq!(n, Some(input.len() - 6), "{vector:?}");
            assert!(out.ends_with(b"smuggled\r\n"), "{vector:?}");
            assert_eq!(problem, Some(BodyProblem::BareLineEnding), "{vector:?}");
            assert_eq!(reference(&input, LINE), (n, out, problem));
        }
    }

    /// Stalwart / smtp-proto's smuggling vectors, as sent in pieces.
    #[test]
    fn stalwart_smuggling_vectors() {
        let tail = concat!(
            "MAIL FROM:<hello@world.com>\r\n",
            "RCPT TO:<test@domain.com\r\n",
            "DATA\r\n",
        );
        for vector in ["\n.\r\n", "\n.\n", "\r.\r\n", "\r.\r", "\r\n.\n", "\n..\r\n"] {
            let mut receiver = DataReceiver::new(BIG, LINE);
            let mut out = Vec::new();
            let pieces = [
                vector,
                "MAIL FROM:<hello@world.com>\r\n",
                "RCPT TO:<test@domain.com\r\n",
                "DATA\r\n",
            ];
            for piece in pieces {
                assert_eq!(receiver.feed(piece.as_bytes(), &mut out), None, "{vector:?}");
            }
            assert_eq!(receiver.feed(b"\r\n.\r\n", &mut out), Some(5));
            let mut expected = vector.as_bytes().to_vec();
            if vector == "\r\n.\n" {
                expected = b"\r\n\n".to_vec();
            }
            expected.extend_from_slice(tail.as_bytes());
            expected.extend_from_slice(b"\r\n");
            assert_eq!(out, expected, "{vector:?}");
            assert_eq!(
                receiver.problem(),
                Some(BodyProblem::BareLineEnding),
                "{vector:?}"
            );
        }
    }

    #[test]
    fn dot_after_bare_lf_is_not_unstuffed() {
        let (_, out, problem, _) = receive_all_ways(b"a\n..b\r\n.\r\n", BIG, LINE);
        assert_eq!(out, b"a\n..b\r\n");
        assert_eq!(problem, Some(BodyProblem::BareLineEnding));
    }

    #[test]
    fn only_the_first_end_counts() {
        let input = b"one\r\n.\r\ntwo\r\n.\r\n";
        let (n, out, _, _) = receive_all_ways(input, BIG, LINE);
        assert_eq!(n, Some(8));
        assert_eq!(out, b"one\r\n");
    }

    #[test]
    fn bare_cr_before_real_end() {
        // "\r\r\n.\r\n" holds a real CRLF.CRLF; the CR before it is bare.
        let (n, out, problem, _) = receive_all_ways(b"a\r\r\n.\r\n", BIG, LINE);
        assert_eq!(n, Some(7));
        assert_eq!(out, b"a\r\r\n");
        assert_eq!(problem, Some(BodyProblem::BareLineEnding));
    }

    #[test]
    fn size_limit() {
        let input = b"0123456789\r\n0123456789\r\n.\r\n";
        // Exactly at the limit: fine.
        let (n, out, problem, size) = receive_all_ways(input, 24, LINE);
        assert_eq!((n, out.len(), problem, size), (Some(27), 24, None, 24));
        // One octet less: too big, but the end is still found and the
        // whole size is reported.
        let (n, out, problem, size) = receive_all_ways(input, 23, LINE);
        assert_eq!(n, Some(27));
        assert_eq!(out, &input[..23]);
        assert_eq!((problem, size), (Some(BodyProblem::TooBig), 24));
        // Zero: only the empty message fits.
        assert_eq!(receive_all_ways(b".\r\n", 0, LINE).2, None);
        assert_eq!(
            receive_all_ways(b"\r\n.\r\n", 0, LINE).2,
            Some(BodyProblem::TooBig)
        );
        // The first max_size octets are kept; nothing more once over.
        let mut receiver = DataReceiver::new(5, LINE);
        let mut out = Vec::new();
        assert_eq!(receiver.feed(b"abcdef", &mut out), None);
        assert_eq!(receiver.feed(b"\r\n", &mut out), None);
        assert_eq!(out, b"abcde");
        assert_eq!(receiver.feed(b".\r\n", &mut out), Some(3));
        assert_eq!(receiver.size(), 8);
    }

    #[test]
    fn size_counts_unstuffed_octets() {
        let (_, out, _, size) = receive(b"..\r\n.\r\n");
        assert_eq!((out.as_slice(), size), (&b".\r\n"[..], 3));
    }

    #[test]
    fn line_length() {
        let ok = [b"x".repeat(10), b"\r\n.\r\n".to_vec()].concat();
        assert_eq!(receive_all_ways(&ok, BIG, 10).2, None);
        let long = [b"x".repeat(11), b"\r\n.\r\n".to_vec()].concat();
        assert_eq!(receive_all_ways(&long, BIG, 10).2, Some(BodyProblem::LineTooLong));
        // Counted after un-stuffing: 11 octets on the wire, 10 in the message.
        let stuffed = [b".".repeat(11), b"\r\n.\r\n".to_vec()].concat();
        assert_eq!(receive_all_ways(&stuffed, BIG, 10).2, None);
        // A long line anywhere, spread over many feeds.
        let mut receiver = DataReceiver::new(BIG, 100);
        let mut out = Vec::new();
        for _ in 0..20 {
            assert_eq!(receiver.feed(&[b'y'; 7], &mut out), None);
        }
        assert_eq!(receiver.feed(b"\r\n.\r\n", &mut out), Some(5));
        assert_eq!(receiver.problem(), Some(BodyProblem::LineTooLong));
    }

    #[test]
    fn problem_priority() {
        let input = [b"x".repeat(20), b"\n".to_vec(), b"\r\n.\r\n".to_vec()].concat();
        assert_eq!(
            receive_all_ways(&input, BIG, 10).2,
            Some(BodyProblem::BareLineEnding)
        );
        assert_eq!(receive_all_ways(&input, 10, 10).2, Some(BodyProblem::TooBig));
        let input = [b"x".repeat(20), b"\r\n.\r\n".to_vec()].concat();
        assert_eq!(receive_all_ways(&input, 10, 10).2, Some(BodyProblem::TooBig));
    }

    #[test]
    fn matches_reference_on_tricky_inputs() {
        let inputs: [&[u8]; 16] = [
            b".\r\n",
            b"..\r\n.\r\n",
            b".\r.\r\n.\r\n",
            b".\n.\r\n",
            b"\r\n\r\n.\r\n",
            b"a\r\n.\rb\r\n.\r\n",
            b"a\r\n.\r\r\n.\r\n",
            b"a\r\n..\r\n.\r\n",
            b"\r\r\r\n.\r\n",
            b"\n\n\n",
            b"\r\r\r",
            b".....",
            b"\r\n.\r\n.\r\n",
            b"a\r\n.b\r\n.\r\n",
            b"x\r\n.\r",
            b".\r",
        ];
        for input in inputs {
            let (n, out, problem, _) = receive_all_ways(input, BIG, 4);
            assert_eq!(reference(input, 4), (n, out, problem), "{input:?}");
        }
    }

    #[test]
    fn bdat_chunks() {
        let mut receiver = BdatReceiver::new(BIG, LINE);
        let mut out = Vec::new();
        receiver.feed(b"Subject: a\r", &mut out);
        receiver.feed(b"\n\r\nbody\r\n", &mut out);
        receiver.finish();
        assert_eq!(out, b"Subject: a\r\n\r\nbody\r\n");
        assert_eq!(receiver.problem(), None);
        assert_eq!(receiver.size(), out.len() as u64);

        // No dot handling: BDAT data is opaque octets.
        let mut receiver = BdatReceiver::new(BIG, LINE);
        let mut out = Vec::new();
        receiver.feed(b"..\r\n.\r\n", &mut out);
        receiver.finish();
        assert_eq!(out, b"..\r\n.\r\n");
        assert_eq!(receiver.problem(), None);
    }

    #[test]
    fn bdat_bare_line_endings() {
        for chunks in [
            &[&b"a\nb"[..]][..],
            &[b"a\rb"],
            &[b"a\r", b"b"],
            &[b"a\r", b"\rb"],
            &[b"a", b"\n"],
            &[b"a\r\n", b"\n"],
            &[b"a\r"],
            &[b"a\r\n\r"],
            &[b"a\r\n", b"\r"],
        ] {
            let mut receiver = BdatReceiver::new(BIG, LINE);
            let mut out = Vec::new();
            for chunk in chunks {
                receiver.feed(chunk, &mut out);
            }
            receiver.finish();
            assert_eq!(
                receiver.problem(),
                Some(BodyProblem::BareLineEnding),
                "{chunks:?}"
            );
        }
        // A trailing CR is only known to be bare at the end.
        let mut receiver = BdatReceiver::new(BIG, LINE);
        receiver.feed(b"a\r", &mut Vec::new());
        assert_eq!(receiver.problem(), None);
        receiver.finish();
        assert_eq!(receiver.problem(), Some(BodyProblem::BareLineEnding));
    }

    #[test]
    fn bdat_limits() {
        let mut receiver = BdatReceiver::new(10, 4);
        let mut out = Vec::new();
        receiver.feed(b"abc", &mut out);
        receiver.feed(b"de\r\n", &mut out);
        assert_eq!(receiver.problem(), Some(BodyProblem::LineTooLong));
        receiver.feed(b"abcdef", &mut out);
        receiver.finish();
        assert_eq!(receiver.problem(), Some(BodyProblem::TooBig));
        assert_eq!(receiver.size(), 13);
        assert_eq!(out, b"abcde\r\nabc");
    }

    use crate::scan::test_rng::Rng;

    #[test]
    fn random_byte_soup() {
        // Pieces that make the interesting sequences likely: line endings
        // of every kind, dots, and now and then a whole end marker.
        const PIECES: [&[u8]; 12] = [
            b"\r",
            b"\n",
            b"\r\n",
            b"\r\n",
            b".",
            b".",
            b"..",
            b"a",
            b"ab c",
            b"\xff",
            b"\r\n.",
            b"\r\n.\r\n",
        ];
        let mut rng = Rng(0x5eed_f00d_3a11_u64);
        let (mut ended, mut too_big) = (0, 0);
        for round in 0..40_000 {
            let mut input = Vec::new();
            for _ in 0..rng.below(24) {
                if round % 4 == 0 {
                    // Plain byte soup.
                    input.push(rng.next() as u8);
                } else {
                    input.extend_from_slice(PIECES[rng.below(PIECES.len())]);
                }
            }
            let len = input.len();
            let max_size = rng.below(40) as u64;
            let max_line = rng.below(8);
            let mut cuts: Vec<usize> = (0..rng.below(5)).map(|_| rng.below(len + 1)).collect();
            cuts.sort_unstable();

            let (n, out, problem, size) = receive_cut(&input, &cuts, max_size, max_line);
            assert!(out.len() as u64 <= max_size);
            let (ref_n, ref_message, ref_problem) = reference(&input, max_line);
            assert_eq!(n, ref_n, "{input:?}");
            if n.is_some() {
                ended += 1;
                too_big += usize::from(size > max_size);
                assert_eq!(size, ref_message.len() as u64, "{input:?}");
                if size <= max_size {
                    assert_eq!(out, ref_message, "{input:?}");
                    assert_eq!(problem, ref_problem, "{input:?}");
                } else {
                    assert_eq!(problem, Some(BodyProblem::TooBig));
                    assert_eq!(out, &ref_message[..max_size as usize]);
                }
            }

            let mut bdat = BdatReceiver::new(max_size, max_line);
            let mut out = Vec::new();
            let mut start = 0;
            for &cut in cuts.iter().chain([&len]) {
                bdat.feed(&input[start..cut], &mut out);
                start = cut;
            }
            bdat.finish();
            assert!(out.len() as u64 <= max_size);
            assert_eq!(bdat.size(), len as u64);
            assert_eq!(out, &input[..len.min(max_size as usize)]);

            let _ = crate::smtp::command::parse(&input, round % 2 == 0);
            let mut line = match round % 5 {
                0 => b"MAIL FROM:<".to_vec(),
                1 => b"RCPT TO:<".to_vec(),
                2 => b"EHLO ".to_vec(),
                3 => b"BDAT ".to_vec(),
                _ => b"AUTH PLAIN ".to_vec(),
            };
            line.extend_from_slice(&input);
            let _ = crate::smtp::command::parse(&line, round % 3 == 0);
        }
        // The soup must exercise both outcomes, or the test proves little.
        assert!(
            ended > 10_000 && too_big > 2_000,
            "ended {ended}, too big {too_big}"
        );
    }

    #[test]
    fn large_message_in_big_reads() {
        let line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n";
        let mut input = Vec::new();
        for i in 0..20_000 {
            if i % 100 == 0 {
                input.extend_from_slice(b"..stuffed\r\n");
            }
            input.extend_from_slice(line);
        }
        input.extend_from_slice(b".\r\n");
        let mut receiver = DataReceiver::new(BIG, LINE);
        let mut out = Vec::with_capacity(input.len());
        let mut consumed = None;
        for (i, chunk) in input.chunks(65_536).enumerate() {
            if let Some(n) = receiver.feed(chunk, &mut out) {
                consumed = Some(i * 65_536 + n);
                break;
            }
        }
        assert_eq!(consumed, Some(input.len()));
        assert_eq!(receiver.problem(), None);
        assert_eq!(out.len(), input.len() - 200 - 3);
        assert_eq!(receiver.size(), out.len() as u64);
    }
}
