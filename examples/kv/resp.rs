//! RESP2 requests: multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) and inline
//! (`GET k\r\n`, as typed into telnet), parsed incrementally and without
//! trusting length fields; and the replies.
//!
//! A request is parsed from the start of the unconsumed input. Its
//! arguments are ranges into that input (multibulk) or into a scratch buffer
//! (inline, whose quoting needs unescaping). A multibulk request that is not
//! all there yet keeps its progress ([`Partial`]), so a request of a million
//! arguments arriving in a thousand reads is walked once, not a thousand
//! times; and nothing is ever allocated for a length a peer announces, only
//! for bytes that arrived.

use std::borrow::Cow;
use std::ops::Range;

/// Redis's limits: at most this many arguments in one request.
pub(crate) const MAX_ARGS: usize = 1024 * 1024;
/// The longest inline request (and the longest `*N` or `$N` line).
pub(crate) const MAX_INLINE: usize = 64 * 1024;

/// How one attempt to parse a request ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A whole request of this many bytes; its arguments are in the parser.
    Request(usize),
    /// An empty request (`*0`, a blank line) of this many bytes: skip it.
    Empty(usize),
    /// More bytes are needed.
    Incomplete,
    /// Malformed input: reply `-ERR Protocol error: <this>` and close.
    Error(Cow<'static, str>),
}

/// Where the arguments of the last request are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Input,
    Inline,
}

/// The progress of a multibulk request that is not all there yet.
#[derive(Debug, Default)]
pub(crate) struct Partial {
    /// Arguments announced.
    count: usize,
    /// Where the next argument's `$` line starts.
    pos: usize,
    args: Vec<Range<usize>>,
}

/// Parses requests; one per connection holds its partial request, if any.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    partial: Option<Box<Partial>>,
}

/// The arguments of the request just parsed, shared by every connection of
/// a reactor (only one is parsed at a time).
#[derive(Debug, Default)]
pub(crate) struct Args {
    ranges: Vec<Range<usize>>,
    inline: Vec<u8>,
    source: Option<Source>,
}

impl Args {
    /// The arguments of a queued command (MULTI), copied into `self`.
    pub(crate) fn set_owned(&mut self, args: &[Box<[u8]>]) {
        self.ranges.clear();
        self.inline.clear();
        self.source = Some(Source::Inline);
        for arg in args {
            let start = self.inline.len();
            self.inline.extend_from_slice(arg);
            self.ranges.push(start..self.inline.len());
        }
    }

    /// Every argument, copied (to queue a command in MULTI).
    pub(crate) fn to_owned(&self, input: &[u8]) -> Vec<Box<[u8]>> {
        (0..self.len()).map(|i| self.get(input, i).into()).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Argument `i`, from `input` (the bytes the request was parsed from).
    pub(crate) fn get<'a>(&'a self, input: &'a [u8], i: usize) -> &'a [u8] {
        let range = self.ranges[i].clone();
        match self.source {
            Some(Source::Inline) => &self.inline[range],
            _ => &input[range],
        }
    }
}

impl Parser {
    /// Whether a request is half parsed (for memory accounting and tests).
    #[allow(dead_code)]
    pub(crate) fn is_partial(&self) -> bool {
        self.partial.is_some()
    }

    /// Parses the request at the start of `input`, with bulk strings of at
    /// most `max_bulk` bytes.
    pub(crate) fn parse(&mut self, input: &[u8], max_bulk: usize, args: &mut Args) -> Parsed {
        if input.is_empty() {
            return Parsed::Incomplete;
        }
        if input[0] != b'*' && self.partial.is_none() {
            return parse_inline(input, args);
        }
        let mut partial = match self.partial.take() {
            Some(partial) => partial,
            None => {
                let Some((line, next)) = line(input, 0) else {
                    if input.len() > MAX_INLINE {
                        return Parsed::Error(Cow::Borrowed("too big mbulk count string"));
                    }
                    return Parsed::Incomplete;
                };
                let count = match parse_int(&line[1..]) {
                    Some(n) if n <= MAX_ARGS as i64 => n,
                    _ => return Parsed::Error(Cow::Borrowed("invalid multibulk length")),
                };
                if count <= 0 {
                    return Parsed::Empty(next);
                }
                Box::new(Partial {
                    count: count as usize,
                    pos: next,
                    args: Vec::new(),
                })
            }
        };
        while partial.args.len() < partial.count {
            let pos = partial.pos;
            let Some((line, next)) = line(input, pos) else {
                if input.len() - pos > MAX_INLINE {
                    return Parsed::Error(Cow::Borrowed("too big bulk count string"));
                }
                if pos < input.len() && input[pos] != b'$' {
                    return Parsed::Error(expected_dollar(input[pos]));
                }
                self.partial = Some(partial);
                return Parsed::Incomplete;
            };
            if line[0] != b'$' {
                return Parsed::Error(expected_dollar(line[0]));
            }
            let len = match parse_int(&line[1..]) {
                Some(n) if n >= 0 && n as u64 <= max_bulk as u64 => n as usize,
                _ => return Parsed::Error(Cow::Borrowed("invalid bulk length")),
            };
            // The bytes, then CRLF; wait for them without reserving any.
            if input.len() - next < len + 2 {
                self.partial = Some(partial);
                return Parsed::Incomplete;
            }
            if &input[next + len..next + len + 2] != b"\r\n" {
                return Parsed::Error(Cow::Borrowed("invalid bulk terminator"));
            }
            partial.args.push(next..next + len);
            partial.pos = next + len + 2;
        }
        let consumed = partial.pos;
        // The request is whole: its ranges move to the shared arguments,
        // and the connection's own allocation goes.
        std::mem::swap(&mut args.ranges, &mut partial.args);
        args.source = Some(Source::Input);
        Parsed::Request(consumed)
    }
}

fn expected_dollar(got: u8) -> Cow<'static, str> {
    Cow::Owned(format!("expected '$', got '{}'", got as char))
}

/// The line starting at `from`, without its CRLF, and where the next one
/// starts; `None` if its end has not arrived. A line ends with `\r\n`.
fn line(input: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rest = &input[from..];
    let lf = rest.iter().take(MAX_INLINE + 2).position(|&b| b == b'\n')?;
    if lf == 0 || rest[lf - 1] != b'\r' {
        // A bare LF where CRLF is required: the line keeps its LF, so it
        // fails to parse as a number, and that is the error the peer gets.
        return Some((&rest[..=lf], from + lf + 1));
    }
    Some((&rest[..lf - 1], from + lf + 1))
}

/// A decimal integer as Redis's `string2ll` takes it: optional `-`, digits,
/// no leading `+`, no spaces, no leading zeros but for `0` itself.
pub(crate) fn parse_int(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    if digits[0] == b'0' && (digits.len() > 1 || negative) {
        return None;
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        value = if negative {
            value.checked_mul(10)?.checked_sub(d)?
        } else {
            value.checked_mul(10)?.checked_add(d)?
        };
    }
    Some(value)
}

/// An inline request: one line, arguments split on spaces, with Redis's
/// quoting ("...\n\x41..." and '...').
fn parse_inline(input: &[u8], args: &mut Args) -> Parsed {
    let Some(lf) = input.iter().take(MAX_INLINE + 1).position(|&b| b == b'\n') else {
        if input.len() > MAX_INLINE {
            return Parsed::Error(Cow::Borrowed("too big inline request"));
        }
        return Parsed::Incomplete;
    };
    let mut line = &input[..lf];
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    args.ranges.clear();
    args.inline.clear();
    args.source = Some(Source::Inline);
    if split_args(line, &mut args.inline, &mut args.ranges).is_err() {
        return Parsed::Error(Cow::Borrowed("unbalanced quotes in request"));
    }
    if args.ranges.is_empty() {
        return Parsed::Empty(lf + 1);
    }
    Parsed::Request(lf + 1)
}

/// Splits a line as Redis's `sdssplitargs` does, into `out`: arguments
/// separated by spaces; a double or single quote, even inside an argument,
/// opens a quoted part (with escapes in double quotes), whose closing quote
/// must end the argument.
fn split_args(line: &[u8], out: &mut Vec<u8>, ranges: &mut Vec<Range<usize>>) -> Result<(), ()> {
    let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Ok(());
        }
        let start = out.len();
        while i < line.len() && !line[i].is_ascii_whitespace() {
            match line[i] {
                b'"' => {
                    i += 1;
                    loop {
                        match line.get(i) {
                            None => return Err(()),
                            Some(b'\\')
                                if i + 3 < line.len()
                                    && line[i + 1] == b'x'
                                    && line[i + 2].is_ascii_hexdigit()
                                    && line[i + 3].is_ascii_hexdigit() =>
                            {
                                out.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                                i += 4;
                            }
                            Some(b'\\') if i + 1 < line.len() => {
                                out.push(match line[i + 1] {
                                    b'n' => b'\n',
                                    b'r' => b'\r',
                                    b't' => b'\t',
                                    b'b' => 8,
                                    b'a' => 7,
                                    other => other,
                                });
                                i += 2;
                            }
                            Some(b'"') => {
                                i += 1;
                                break;
                            }
                            Some(&b) => {
                                out.push(b);
                                i += 1;
                            }
                        }
                    }
                    // A closing quote must be followed by a space or the end.
                    if line.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                        return Err(());
                    }
                }
                b'\'' => {
                    i += 1;
                    loop {
                        match line.get(i) {
                            None => return Err(()),
                            Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                                out.push(b'\'');
                                i += 2;
                            }
                            Some(b'\'') => {
                                i += 1;
                                break;
                            }
                            Some(&b) => {
                                out.push(b);
                                i += 1;
                            }
                        }
                    }
                    if line.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                        return Err(());
                    }
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        ranges.push(start..out.len());
    }
}

// ---- Replies ------------------------------------------------------------

/// Appends replies to a byte sink, in RESP2 or (where the types differ)
/// RESP3.
pub(crate) trait Reply {
    fn put(&mut self, bytes: &[u8]);

    /// Whether the client asked for RESP3 (`HELLO 3`).
    fn resp3(&self) -> bool {
        false
    }

    /// A map of `len` pairs: `%` in RESP3, a flat array in RESP2.
    fn map(&mut self, len: usize) {
        if self.resp3() {
            self.prefixed(b'%', len as i64);
        } else {
            self.prefixed(b'*', 2 * len as i64);
        }
    }

    /// An out-of-band message (pub/sub): `>` in RESP3, an array in RESP2.
    fn push(&mut self, len: usize) {
        if self.resp3() {
            self.prefixed(b'>', len as i64);
        } else {
            self.prefixed(b'*', len as i64);
        }
    }

    fn simple(&mut self, s: &str) {
        self.put(b"+");
        self.put(s.as_bytes());
        self.put(b"\r\n");
    }

    fn error(&mut self, s: &str) {
        self.put(b"-");
        self.put(s.as_bytes());
        self.put(b"\r\n");
    }

    fn ok(&mut self) {
        self.put(b"+OK\r\n");
    }

    fn int(&mut self, n: i64) {
        self.prefixed(b':', n);
    }

    fn bulk(&mut self, bytes: &[u8]) {
        self.prefixed(b'$', bytes.len() as i64);
        self.put(bytes);
        self.put(b"\r\n");
    }

    fn null(&mut self) {
        if self.resp3() {
            self.put(b"_\r\n");
        } else {
            self.put(b"$-1\r\n");
        }
    }

    fn array(&mut self, len: usize) {
        self.prefixed(b'*', len as i64);
    }

    fn null_array(&mut self) {
        if self.resp3() {
            self.put(b"_\r\n");
        } else {
            self.put(b"*-1\r\n");
        }
    }

    /// `<kind><n>\r\n`, formatted without `fmt`.
    fn prefixed(&mut self, kind: u8, n: i64) {
        let mut buf = [0u8; 24];
        let mut i = buf.len();
        buf[i - 1] = b'\n';
        buf[i - 2] = b'\r';
        i -= 2;
        let mut value = n.unsigned_abs();
        loop {
            i -= 1;
            buf[i] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        if n < 0 {
            i -= 1;
            buf[i] = b'-';
        }
        i -= 1;
        buf[i] = kind;
        self.put(&buf[i..]);
    }
}

impl Reply for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A reply buffer for one client, in the protocol it speaks.
#[derive(Debug, Default)]
pub(crate) struct Out {
    pub(crate) buf: Vec<u8>,
    pub(crate) resp3: bool,
}

impl Reply for Out {
    fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn resp3(&self) -> bool {
        self.resp3
    }
}
