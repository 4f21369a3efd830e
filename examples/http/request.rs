//! Request framing: where a request's head ends, how long its body is, and
//! whether it is acceptable at all. A pure function of the bytes received
//! so far (`frame`), so that any split of the same bytes frames the same;
//! httparse parses the head, the rules about bodies and smuggling are here.

/// The limits a request is framed under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_head: usize,
    pub(crate) max_body: usize,
}

/// The most header fields one request may have.
pub(crate) const MAX_HEADERS: usize = 64;

/// What the head says about the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) method: Method,
    /// What the request target names.
    pub(crate) route: Route,
    /// HTTP/1.0 (`0`) or HTTP/1.1 (`1`).
    pub(crate) minor: u8,
    /// Whether the connection stays open after the response.
    pub(crate) keep_alive: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub(crate) expect_continue: bool,
    /// Bytes of the head, CRLF CRLF included.
    pub(crate) len: usize,
    pub(crate) body: BodyKind,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Method {
    #[default]
    Get,
    Head,
    Post,
    Other,
}

/// The server's routes, by the target's path (the query aside).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/` and `/plaintext`.
    #[default]
    Hello,
    /// `/echo`.
    Echo,
    Unknown,
}

impl Default for BodyKind {
    fn default() -> BodyKind {
        BodyKind::Length(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// `Content-Length: n` (0 without one).
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// How framing the bytes received so far ended.
#[allow(dead_code)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Framed {
    /// The head is not all there; nothing is wrong yet.
    NeedHead,
    /// The head is complete; the body is not all there yet.
    NeedBody(Head),
    /// A whole request: its head, its decoded body, and its length in bytes.
    Request(Head, Vec<u8>, usize),
    /// Not acceptable: answer with this status and close.
    Reject(Status),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    BadRequest,
    UriTooLong,
    HeadersTooLarge,
    PayloadTooLarge,
    NotImplemented,
    VersionNotSupported,
    ExpectationFailed,
}

impl Status {
    pub(crate) fn line(self) -> &'static str {
        match self {
            Status::BadRequest => "400 Bad Request",
            Status::UriTooLong => "414 URI Too Long",
            Status::HeadersTooLarge => "431 Request Header Fields Too Large",
            Status::PayloadTooLarge => "413 Content Too Large",
            Status::NotImplemented => "501 Not Implemented",
            Status::VersionNotSupported => "505 HTTP Version Not Supported",
            Status::ExpectationFailed => "417 Expectation Failed",
        }
    }
}

/// Frames the request at the start of `input`, all at once: the head by
/// [`parse_head`], a chunked body by one [`Dechunk::feed`]. The server runs
/// the same two as bytes arrive; the tests hold this one to "any split of
/// the input frames the same".
#[allow(dead_code)]
pub(crate) fn frame(input: &[u8], limits: Limits) -> Framed {
    let head = match parse_head(input, limits) {
        Ok(Some(head)) => head,
        Ok(None) => return Framed::NeedHead,
        Err(status) => return Framed::Reject(status),
    };
    let rest = &input[head.len..];
    match head.body {
        BodyKind::Length(n) => {
            if rest.len() < n {
                return Framed::NeedBody(head);
            }
            let body = rest[..n].to_vec();
            let total = head.len + n;
            Framed::Request(head, body, total)
        }
        BodyKind::Chunked => {
            let mut body = Vec::new();
            match Dechunk::default().feed(rest, &mut body, limits.max_body) {
                Ok((used, true)) => {
                    let total = head.len + used;
                    Framed::Request(head, body, total)
                }
                Ok((_, false)) => Framed::NeedBody(head),
                Err(status) => Framed::Reject(status),
            }
        }
    }
}

/// Parses the head, if it is all there.
pub(crate) fn parse_head(input: &[u8], limits: Limits) -> Result<Option<Head>, Status> {
    // Where the head ends, found by hand first: httparse also takes bare
    // LFs, which are refused here (a smuggling shape: servers that disagree
    // on line ends disagree on framing). One pass over the lines.
    let window = &input[..input.len().min(limits.max_head)];
    let mut line_start = 0;
    let mut request_line = false;
    let mut end = None;
    while let Some(lf) = window[line_start..].iter().position(|&b| b == b'\n') {
        let lf = line_start + lf;
        if lf == 0 || window[lf - 1] != b'\r' {
            return Err(Status::BadRequest);
        }
        if lf == line_start + 1 && request_line {
            end = Some(lf + 1);
            break;
        }
        request_line = true;
        line_start = lf + 1;
    }
    let Some(end) = end else {
        if input.len() >= limits.max_head {
            // The request line alone does not fit: the target is too long.
            return Err(if request_line {
                Status::HeadersTooLarge
            } else {
                Status::UriTooLong
            });
        }
        return Ok(None);
    };
    let head_bytes = &input[..end];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(head_bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(Status::BadRequest),
        Err(httparse::Error::Version) => return Err(version_status(head_bytes)),
        Err(httparse::Error::TooManyHeaders) => return Err(Status::HeadersTooLarge),
        Err(_) => return Err(Status::BadRequest),
    };
    let minor = request.version.ok_or(Status::BadRequest)?;
    let method = match request.method.ok_or(Status::BadRequest)? {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    let target = request.path.ok_or(Status::BadRequest)?;
    // The absolute form (`http://host/path`) names the same path.
    let target = match target.split_once("://") {
        Some((_, rest)) if !target.starts_with('/') => {
            rest.find('/').map_or("/", |slash| &rest[slash..])
        }
        _ => target,
    };
    let route = match target.split(['?', '#']).next().unwrap_or_default() {
        "/" | "/plaintext" => Route::Hello,
        "/echo" => Route::Echo,
        _ => Route::Unknown,
    };

    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = false;
    let mut keep_alive = false;
    let mut expect_continue = false;
    let mut host = false;
    for header in request.headers.iter() {
        let name = header.name;
        // Values are bytes (obs-text is allowed); only the ones read here
        // need to be ASCII, and are compared as bytes.
        let value = trim(header.value);
        if name.eq_ignore_ascii_case("content-length") {
            // Digits only: no sign, no list; a second one must agree.
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(Status::BadRequest);
            }
            let n = value
                .iter()
                .try_fold(0usize, |n, &d| {
                    n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
                })
                .ok_or(Status::PayloadTooLarge)?;
            if length.is_some_and(|m| m != n) {
                return Err(Status::BadRequest);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if transfer_encoding {
                // Two fields: their codings stack, and chunked must be the
                // last one alone.
                return Err(Status::NotImplemented);
            }
            transfer_encoding = true;
            if value.eq_ignore_ascii_case(b"chunked") {
                chunked = true;
            } else {
                return Err(Status::NotImplemented);
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim(token);
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(Status::ExpectationFailed);
            }
        } else if name.eq_ignore_ascii_case("host") {
            if host {
                return Err(Status::BadRequest);
            }
            host = true;
        }
    }
    if transfer_encoding && length.is_some() {
        return Err(Status::BadRequest);
    }
    if minor == 1 && !host {
        return Err(Status::BadRequest);
    }
    if transfer_encoding && minor == 0 {
        return Err(Status::BadRequest);
    }
    let body = if chunked {
        BodyKind::Chunked
    } else {
        let n = length.unwrap_or(0);
        if n > limits.max_body {
            return Err(Status::PayloadTooLarge);
        }
        BodyKind::Length(n)
    };
    let keep_alive = if minor == 1 {
        !close
    } else {
        keep_alive && !close
    };
    Ok(Some(Head {
        method,
        route,
        minor,
        keep_alive,
        expect_continue: expect_continue && minor == 1,
        len,
        body,
    }))
}

/// `HTTP/2.0` and the like are well-formed but not ours: 505; anything else
/// in the version's place is a bad request.
fn version_status(head: &[u8]) -> Status {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (Some(_), Some(_), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Status::BadRequest;
    };
    let well_formed = v.len() == 8
        && v.starts_with(b"HTTP/")
        && v[5].is_ascii_digit()
        && v[6] == b'.'
        && v[7].is_ascii_digit();
    if well_formed {
        Status::VersionNotSupported
    } else {
        Status::BadRequest
    }
}

/// The most bytes of one chunk-size line (extensions included) and of the
/// trailer section.
const MAX_CHUNK_LINE: usize = 1024;
const MAX_TRAILERS: usize = 8192;

/// Decodes a chunked body as its bytes arrive: each byte is looked at once,
/// whatever the split, and the limits hold for complete and incomplete
/// lines alike. Chunk sizes are checked against the body limit as soon as
/// each size line is there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Dechunk {
    state: ChunkState,
    /// Decoded bytes so far.
    total: usize,
    trailers: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(usize),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields, until an empty line.
    Trailers,
    Done,
}

impl Dechunk {
    /// Decodes from `input` into `body`; returns how many bytes it used and
    /// whether the body is complete. Bytes it did not use are an
    /// incomplete line: call again with them and what follows.
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        body: &mut Vec<u8>,
        max_body: usize,
    ) -> Result<(usize, bool), Status> {
        let mut pos = 0;
        loop {
            match self.state {
                ChunkState::Done => return Ok((pos, true)),
                ChunkState::Size => {
                    let rest = &input[pos..];
                    let Some(lf) = rest.iter().take(MAX_CHUNK_LINE).position(|&b| b == b'\n')
                    else {
                        if rest.len() >= MAX_CHUNK_LINE {
                            return Err(Status::BadRequest);
                        }
                        return Ok((pos, false));
                    };
                    let line = rest[..lf].strip_suffix(b"\r").ok_or(Status::BadRequest)?;
                    let size_text = match line.iter().position(|&b| b == b';') {
                        Some(semi) => &line[..semi],
                        None => line,
                    };
                    // RFC 9112 allows whitespace before an extension.
                    let size_text = trim(size_text);
                    if size_text.is_empty()
                        || size_text.len() > 16
                        || !size_text.iter().all(u8::is_ascii_hexdigit)
                    {
                        return Err(Status::BadRequest);
                    }
                    let size = size_text
                        .iter()
                        .try_fold(0usize, |n, &d| {
                            let d = (d as char).to_digit(16)? as usize;
                            n.checked_mul(16)?.checked_add(d)
                        })
                        .ok_or(Status::PayloadTooLarge)?;
                    self.total = self
                        .total
                        .checked_add(size)
                        .ok_or(Status::PayloadTooLarge)?;
                    if self.total > max_body {
                        return Err(Status::PayloadTooLarge);
                    }
                    pos += lf + 1;
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    let take = left.min(input.len() - pos);
                    if take == 0 {
                        return Ok((pos, false));
                    }
                    body.extend_from_slice(&input[pos..pos + take]);
                    pos += take;
                    self.state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd => {
                    if input.len() - pos < 2 {
                        if input.get(pos).is_some_and(|&b| b != b'\r') {
                            return Err(Status::BadRequest);
                        }
                        return Ok((pos, false));
                    }
                    if &input[pos..pos + 2] != b"\r\n" {
                        return Err(Status::BadRequest);
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let rest = &input[pos..];
                    let room = MAX_TRAILERS - self.trailers;
                    let Some(lf) = rest.iter().take(room + 1).position(|&b| b == b'\n') else {
                        if rest.len() > room {
                            return Err(Status::HeadersTooLarge);
                        }
                        return Ok((pos, false));
                    };
                    if lf == 0 || rest[lf - 1] != b'\r' {
                        return Err(Status::BadRequest);
                    }
                    self.trailers += lf + 1;
                    pos += lf + 1;
                    if lf == 1 {
                        self.state = ChunkState::Done;
                    }
                }
            }
        }
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}
