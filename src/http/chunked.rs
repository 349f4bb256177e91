//! Request bodies: a length of them, or the chunked coding (RFC 9112 section 7.1) read strictly.

use std::io::{self, BufRead, Read};
use std::ops::Range;

use super::parse::split_field;
use super::response::Response;
use super::socket::ReadError;
use super::wire::is_field_value;

/// The longest chunk-size line (with extensions) we accept.
const MAX_CHUNK_LINE: usize = 1024;

fn malformed(why: &'static str) -> ReadError {
    ReadError::Refused(Response::refusal(400, why))
}

/// Appends a line without its CRLF to `out`, returning where it landed, or
/// `None` for a line over `limit` bytes, once known. A bare LF is malformed.
pub(super) fn read_line(
    r: &mut impl BufRead,
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<Option<Range<usize>>, ReadError> {
    let start = out.len();
    // The line, its CR and its LF: any more is over the limit.
    let read = Read::take(&mut *r, limit as u64 + 2).read_until(b'\n', out)?;
    if !out[start..].ends_with(b"\n") {
        if read < limit + 2 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        return Ok(None);
    }
    if !out[start..].ends_with(b"\r\n") {
        return Err(malformed("a line must end in CRLF"));
    }
    out.truncate(out.len() - 2);
    Ok((out.len() - start <= limit).then_some(start..out.len()))
}

/// The size from a chunk-size line: hex, blanks, then extensions checked for stray bytes only.
pub(super) fn chunk_size(line: &[u8]) -> Result<u64, ReadError> {
    let (size, extensions) =
        line.split_at(line.iter().position(|&b| b == b';').unwrap_or(line.len()));
    let blanks = size
        .iter()
        .rev()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let hex = &size[..size.len() - blanks];
    let significant = &hex[hex.iter().take_while(|&&b| b == b'0').count()..];
    if hex.is_empty()
        || !hex.iter().all(u8::is_ascii_hexdigit)
        || significant.len() > 16
        || !is_field_value(extensions)
    {
        return Err(malformed("a chunk size is malformed"));
    }
    // At most 16 hex digits fit in a u64; none is a zero.
    let digits = std::str::from_utf8(significant).unwrap_or_default();
    Ok(u64::from_str_radix(digits, 16).unwrap_or(0))
}

/// Reads and discards the trailers after the last chunk: valid fields within `limit` bytes.
fn skip_trailers(r: &mut impl BufRead, limit: usize) -> Result<(), ReadError> {
    let too_large = || ReadError::Refused(Response::refusal(431, "the trailers are too large"));
    let mut line = Vec::new();
    let mut total = 0;
    loop {
        line.clear();
        let range = read_line(r, limit.saturating_sub(total), &mut line)?;
        let range = range.ok_or_else(too_large)?;
        total += range.len() + 2;
        if range.is_empty() {
            return Ok(());
        }
        if total > limit {
            return Err(too_large());
        }
        if split_field(&line).is_none() {
            return Err(malformed("a trailer line is malformed"));
        }
    }
}

/// Reads the CRLF after a chunk's data.
fn chunk_end(r: &mut impl BufRead) -> Result<(), ReadError> {
    for want in *b"\r\n" {
        let mut got = [0];
        r.read_exact(&mut got)?;
        if got[0] != want {
            return Err(malformed("chunk data is longer than its size"));
        }
    }
    Ok(())
}

/// Decodes a chunked body, refused before reading a chunk that takes it past `max_body`.
pub(super) fn read_body(
    r: &mut impl BufRead,
    max_body: u64,
    max_trailers: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if read_line(r, MAX_CHUNK_LINE, &mut line)?.is_none() {
            return Err(malformed("a chunk-size line is too long"));
        }
        let size = chunk_size(&line)?;
        if size == 0 {
            skip_trailers(r, max_trailers)?;
            return Ok(body);
        }
        if size > max_body - body.len() as u64 {
            return Err(ReadError::Refused(Response::too_large(max_body)));
        }
        read_n(r, size, &mut body)?;
        chunk_end(r)?;
    }
}

/// Appends exactly `n` bytes of `r` to `out`, which grows as they arrive.
pub(super) fn read_n(r: &mut impl BufRead, n: u64, out: &mut Vec<u8>) -> io::Result<()> {
    // Copied from the reader's buffer: `read_to_end` would zero its room first.
    let mut left = n;
    while left > 0 {
        let buf = match r.fill_buf() {
            Ok([]) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        out.extend_from_slice(&buf[..take]);
        r.consume(take);
        left -= take as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{chunk_size, read_body, read_line, ReadError};
    use std::io::BufReader;

    fn decode(wire: &[u8], max: u64) -> Result<Vec<u8>, ReadError> {
        // A tiny buffer makes every boundary fall inside a read.
        read_body(&mut BufReader::with_capacity(3, wire), max, 64)
    }

    /// The status a refused body gets, with the body of that answer.
    fn refused(wire: &[u8], max: u64) -> Option<(u16, String)> {
        match decode(wire, max) {
            Err(ReadError::Refused(r)) => Some((r.status, String::from_utf8(r.body).unwrap())),
            _ => None,
        }
    }

    #[test]
    fn decodes_chunks_with_extensions_and_trailers() {
        let wire = b"5\r\nhello\r\n6;name=\"v\" \r\n world\r\n0 ;x\r\nA: b\r\nC: d\r\n\r\nNEXT";
        let mut r = BufReader::with_capacity(3, &wire[..]);
        assert_eq!(read_body(&mut r, 100, 64).unwrap(), b"hello world");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut r, &mut rest).unwrap();
        assert_eq!(rest, "NEXT");
    }

    #[test]
    fn enforces_the_body_limit_before_reading() {
        let wire = b"b\r\nhello world\r\n0\r\n\r\n";
        assert_eq!(refused(wire, 10).unwrap().0, 413);
        assert!(decode(b"a\r\nhello worl\r\n0\r\n\r\n", 10).is_ok());
        let huge = b"ffffffffffffffff\r\n";
        assert_eq!(refused(huge, 1 << 20).unwrap().0, 413);
    }

    #[test]
    fn refuses_malformed_framing() {
        let bad: [&[u8]; 9] = [
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"x\r\n",
            b"-5\r\n",
            b"\r\n",
            b"10000000000000000\r\n",
            b"5 5\r\n",
            b"0\r\nbad trailer\r\n\r\n",
        ];
        for wire in bad {
            assert_eq!(refused(wire, 100).unwrap().0, 400, "{wire:?}");
        }
        assert!(matches!(decode(b"5\r\nhel", 100), Err(ReadError::Io(_))));
    }

    #[test]
    fn bounds_lines_and_trailers() {
        let long = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(2000));
        let why = r#"{"error":{"code":"BAD_REQUEST","message":"a chunk-size line is too long"}}"#;
        assert_eq!(refused(long.as_bytes(), 100), Some((400, why.to_string())));
        let trailers = format!("0\r\nA: {}\r\n\r\n", "v".repeat(100));
        assert_eq!(refused(trailers.as_bytes(), 100).unwrap().0, 431);
        let trailers = format!("0\r\n{}\r\n", "A: b\r\n".repeat(20));
        assert_eq!(refused(trailers.as_bytes(), 100).unwrap().0, 431);
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"0").unwrap(), 0);
        assert_eq!(chunk_size(b"fF").unwrap(), 255);
        assert_eq!(chunk_size(b"00000000000000000001").unwrap(), 1);
        assert_eq!(chunk_size(b"ffffffffffffffff").unwrap(), u64::MAX);
        assert_eq!(chunk_size(b"1\t;a=b").unwrap(), 1);
        assert!(chunk_size(b"1;a\x01").is_err());
        assert!(chunk_size(b"0x1").is_err());
    }

    #[test]
    fn lines() {
        let mut out = Vec::new();
        let mut r = BufReader::with_capacity(2, &b"ab\r\ncd"[..]);
        let range = read_line(&mut r, 10, &mut out).unwrap().unwrap();
        assert_eq!(&out[range], b"ab");
        assert!(matches!(
            read_line(&mut r, 10, &mut out),
            Err(ReadError::Io(_))
        ));
    }
}
