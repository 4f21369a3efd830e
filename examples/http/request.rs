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
#[derive(Debug, Clone, PartialEq, Eq)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Head,
    Post,
    Other,
}

/// The server's routes, by the target's path (the query aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/` and `/plaintext`.
    Hello,
    /// `/echo`.
    Echo,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// `Content-Length: n` (0 without one).
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// How framing the bytes received so far ended.
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
        }
    }
}

/// Frames the request at the start of `input`.
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
        BodyKind::Chunked => match dechunk(rest, limits.max_body) {
            Ok(Some((body, used))) => {
                let total = head.len + used;
                Framed::Request(head, body, total)
            }
            Ok(None) => Framed::NeedBody(head),
            Err(status) => Framed::Reject(status),
        },
    }
}

/// Parses the head, if it is all there.
fn parse_head(input: &[u8], limits: Limits) -> Result<Option<Head>, Status> {
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
        let value = std::str::from_utf8(header.value).map_err(|_| Status::BadRequest)?;
        if name.eq_ignore_ascii_case("content-length") {
            // Digits only: no sign, no list; a second one must agree.
            let value = value.trim();
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Status::BadRequest);
            }
            let n: usize = value.parse().map_err(|_| Status::PayloadTooLarge)?;
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
            if value.trim().eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else {
                return Err(Status::NotImplemented);
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',') {
                let token = token.trim();
                close |= token.eq_ignore_ascii_case("close");
                keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if value.trim().eq_ignore_ascii_case("100-continue") {
                expect_continue = true;
            } else {
                return Err(Status::BadRequest);
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
    match line.rsplit(|&b| b == b' ').next() {
        Some(v)
            if v.len() == 8
                && v.starts_with(b"HTTP/")
                && v[5].is_ascii_digit()
                && v[6] == b'.'
                && v[7].is_ascii_digit() =>
        {
            Status::VersionNotSupported
        }
        _ => Status::BadRequest,
    }
}

/// Decodes a chunked body from the start of `input`: the body and the bytes
/// it took, or `None` if it is not all there. Chunk sizes are checked
/// against `max_body` as soon as each size line arrives.
fn dechunk(input: &[u8], max_body: usize) -> Result<Option<(Vec<u8>, usize)>, Status> {
    let mut pos = 0;
    let mut total = 0usize;
    // First pass: sizes and limits, without copying.
    let mut chunks: Vec<(usize, usize)> = Vec::new();
    loop {
        let Some(lf) = input[pos..].iter().position(|&b| b == b'\n') else {
            if input.len() - pos > 1024 {
                return Err(Status::BadRequest);
            }
            return Ok(None);
        };
        let line = &input[pos..pos + lf];
        let line = line.strip_suffix(b"\r").ok_or(Status::BadRequest)?;
        let size_text = match line.iter().position(|&b| b == b';') {
            Some(semi) => &line[..semi],
            None => line,
        };
        if size_text.is_empty()
            || size_text.len() > 16
            || !size_text.iter().all(u8::is_ascii_hexdigit)
        {
            return Err(Status::BadRequest);
        }
        let size = usize::from_str_radix(
            std::str::from_utf8(size_text).map_err(|_| Status::BadRequest)?,
            16,
        )
        .map_err(|_| Status::PayloadTooLarge)?;
        total = total.checked_add(size).ok_or(Status::PayloadTooLarge)?;
        if total > max_body {
            return Err(Status::PayloadTooLarge);
        }
        pos += lf + 1;
        if size == 0 {
            break;
        }
        if input.len() - pos < size + 2 {
            return Ok(None);
        }
        if &input[pos + size..pos + size + 2] != b"\r\n" {
            return Err(Status::BadRequest);
        }
        chunks.push((pos, size));
        pos += size + 2;
    }
    // Trailer fields, then the empty line.
    loop {
        let Some(lf) = input[pos..].iter().position(|&b| b == b'\n') else {
            if input.len() - pos > 8192 {
                return Err(Status::HeadersTooLarge);
            }
            return Ok(None);
        };
        let line = &input[pos..pos + lf];
        if line.last() != Some(&b'\r') {
            return Err(Status::BadRequest);
        }
        pos += lf + 1;
        if line.len() == 1 {
            break;
        }
    }
    let mut body = Vec::with_capacity(total);
    for (start, size) in chunks {
        body.extend_from_slice(&input[start..start + size]);
    }
    Ok(Some((body, pos)))
}
