//! WebSocket framing (RFC 6455 section 5). `Reader` turns a client's masked
//! frames into messages; after an error the stream is out of step with the
//! frames and the connection must close. `write` appends an unmasked server frame.

use std::io::{self, Read};

const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// RFC 6455 section 5.5 caps control frame payloads so they fit one small frame.
const MAX_CONTROL_PAYLOAD: usize = 125;

/// A complete message from a client; a text one is checked to be UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

/// Why [`Reader::read_message`] failed: the stream ended (no close frame is
/// sent), or the close code to send (RFC 6455 section 7.4.1) and its reason.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io,
    Close(u16, String),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> ReadError {
        ReadError::Io
    }
}

fn protocol(detail: &str) -> ReadError {
    ReadError::Close(1002, format!("websocket protocol error: {detail}"))
}

fn invalid_data(detail: &str) -> ReadError {
    ReadError::Close(1007, format!("invalid websocket data: {detail}"))
}

/// Decodes client frames into [`Message`]s; a data message over `max_message` bytes
/// gets 1009 before its payload is read; control frames between fragments come at once.
#[derive(Debug)]
pub(crate) struct Reader {
    max_message: usize,
    /// Whether the data message being assembled is text, if its first frame has arrived.
    text: Option<bool>,
    data: Vec<u8>,
}

impl Reader {
    pub(crate) fn new(max_message: usize) -> Reader {
        Reader {
            max_message,
            text: None,
            data: Vec::new(),
        }
    }

    /// Reads frames from `r` until a whole message is available, and returns it.
    pub(crate) fn read_message(&mut self, r: &mut impl Read) -> Result<Message, ReadError> {
        loop {
            let mut header = [0; 14];
            r.read_exact(&mut header[..2])?;
            let size = header_size(header[1]);
            r.read_exact(&mut header[2..size])?;
            let (fin, opcode, len) = self.start_frame(&header[..size])?;
            let mask = [0, 1, 2, 3].map(|i| header[size - 4 + i]);
            if opcode & 0x08 != 0 {
                let mut payload = [0; MAX_CONTROL_PAYLOAD];
                let payload = &mut payload[..len];
                r.read_exact(payload)?;
                unmask(payload, mask);
                return match opcode {
                    OP_PING => Ok(Message::Ping(payload.to_vec())),
                    OP_PONG => Ok(Message::Pong(payload.to_vec())),
                    _ => parse_close(payload),
                };
            }
            let start = self.data.len();
            // Memory grows with the bytes that arrive, not with the length claimed.
            if Read::take(&mut *r, len as u64).read_to_end(&mut self.data)? < len {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            unmask(&mut self.data[start..], mask);
            if fin {
                let data = std::mem::take(&mut self.data);
                if self.text.take() == Some(false) {
                    return Ok(Message::Binary(data));
                }
                return String::from_utf8(data)
                    .map(Message::Text)
                    .map_err(|_| invalid_data("text message is not UTF-8"));
            }
        }
    }

    /// Validates a complete masked header: its `fin`, opcode and length.
    fn start_frame(&mut self, header: &[u8]) -> Result<(bool, u8, usize), ReadError> {
        let [b0, b1] = [header[0], header[1]];
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
        if b0 & 0x70 != 0 {
            return Err(protocol("reserved bit set without an extension"));
        }
        if b1 & 0x80 == 0 {
            return Err(protocol("client frame is not masked"));
        }
        let len = match b1 & 0x7F {
            126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
            127 => u64::from_be_bytes([2, 3, 4, 5, 6, 7, 8, 9].map(|i| header[i])),
            n => u64::from(n),
        };
        if len >> 63 != 0 {
            return Err(protocol("payload length has its top bit set"));
        }
        let limit = match opcode {
            OP_CLOSE | OP_PING | OP_PONG if !fin => {
                return Err(protocol("fragmented control frame"))
            }
            OP_CLOSE | OP_PING | OP_PONG if len > MAX_CONTROL_PAYLOAD as u64 => {
                return Err(protocol("control frame payload over 125 bytes"));
            }
            OP_CLOSE | OP_PING | OP_PONG => MAX_CONTROL_PAYLOAD,
            OP_TEXT | OP_BINARY if self.text.is_some() => {
                return Err(protocol("new message before the last one ended"));
            }
            OP_CONTINUATION if self.text.is_none() => {
                return Err(protocol("continuation frame without a message"));
            }
            OP_TEXT | OP_BINARY | OP_CONTINUATION => self.max_message - self.data.len(),
            _ => return Err(protocol("unknown opcode")),
        };
        let len = match usize::try_from(len) {
            Ok(len) if len <= limit => len,
            _ => {
                let why = format!(
                    "websocket message exceeds the {}-byte limit",
                    self.max_message
                );
                return Err(ReadError::Close(1009, why));
            }
        };
        match opcode {
            OP_TEXT => self.text = Some(true),
            OP_BINARY => self.text = Some(false),
            _ => {}
        }
        Ok((fin, opcode, len))
    }
}

/// Total header size, known once the second byte has arrived.
fn header_size(b1: u8) -> usize {
    let extended = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

fn parse_close(payload: &[u8]) -> Result<Message, ReadError> {
    match payload {
        [] => Ok(Message::Close(None)),
        [_] => Err(protocol("close payload of one byte")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            // RFC 6455 section 7.4: codes the registry has not assigned, and those
            // reserved for local use only (1005, 1006, 1015), must not arrive.
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                return Err(protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason)
                .map_err(|_| invalid_data("close reason is not UTF-8"))?;
            Ok(Message::Close(Some((code, reason.to_owned()))))
        }
    }
}

/// Appends a server frame, unmasked, with its length in the shortest form;
/// a control frame with a payload over 125 bytes is refused, and nothing appended.
pub(crate) fn write(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) -> io::Result<()> {
    if opcode & 0x08 != 0 && payload.len() > MAX_CONTROL_PAYLOAD {
        let why = "websocket control frame payload over 125 bytes";
        return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    }
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    Ok(())
}

/// Appends a close frame with status `code` and `reason`, which is cut at a
/// character boundary so the payload fits in 125 bytes.
pub(crate) fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let payload = [&code.to_be_bytes(), &reason.as_bytes()[..end]].concat();
    let _ = write(out, OP_CLOSE, &payload);
}

#[cfg(test)]
#[path = "../../tests/common/ws_client.rs"]
mod ws_client;

#[cfg(test)]
mod tests {
    use super::ws_client::{decode_server_frame, encode_client_frame};
    use super::*;
    use std::io::Cursor;

    const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

    fn read_all(bytes: &[u8], max: usize) -> Result<Vec<Message>, ReadError> {
        let (mut reader, mut cursor) = (Reader::new(max), Cursor::new(bytes));
        let mut messages = Vec::new();
        while (cursor.position() as usize) < bytes.len() {
            messages.push(reader.read_message(&mut cursor)?);
        }
        Ok(messages)
    }

    fn close_code(e: &ReadError) -> u16 {
        match e {
            ReadError::Io => 1006,
            ReadError::Close(code, _) => *code,
        }
    }

    fn close_code_of(bytes: &[u8], max: usize) -> u16 {
        let e = read_all(bytes, max).expect_err("frame should be rejected");
        assert!(!matches!(e, ReadError::Io), "{e:?}");
        close_code(&e)
    }

    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        encode_client_frame(opcode, fin, MASK, payload)
    }

    #[test]
    fn round_trips_every_length_form() {
        for len in [0, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let got = read_all(&frame(OP_BINARY, true, &payload), 1 << 20).unwrap();
            assert_eq!(got, [Message::Binary(payload.clone())], "length {len}");

            let mut out = Vec::new();
            write(&mut out, OP_BINARY, &payload).unwrap();
            let decoded = decode_server_frame(&mut Cursor::new(&out), 1 << 20).unwrap();
            assert_eq!(decoded, (OP_BINARY, true, payload), "length {len}");
        }
        let got = read_all(&frame(OP_TEXT, true, "héllo".as_bytes()), 64).unwrap();
        assert_eq!(got, [Message::Text("héllo".into())]);
    }

    #[test]
    fn server_frames_use_shortest_length_and_no_mask() {
        let mut out = Vec::new();
        write(&mut out, OP_TEXT, b"hi").unwrap();
        assert_eq!(out, [0x81, 0x02, b'h', b'i']);
        out.clear();
        write(&mut out, OP_BINARY, &[0; 126]).unwrap();
        assert_eq!(out[..4], [0x82, 126, 0, 126]);
        out.clear();
        write(&mut out, OP_BINARY, &[0; 65536]).unwrap();
        assert_eq!(out[..10], [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn reassembles_fragments_around_control_frames() {
        let mut bytes = frame(OP_TEXT, false, "h\u{e9}".as_bytes()[..2].as_ref());
        bytes.extend(frame(OP_PING, true, b"p"));
        bytes.extend(frame(OP_CONTINUATION, false, &[0xA9, b'l']));
        bytes.extend(frame(OP_PONG, true, b""));
        bytes.extend(frame(OP_CONTINUATION, true, b"lo"));
        bytes.extend(frame(OP_BINARY, true, b"next"));
        let got = read_all(&bytes, 6).unwrap();
        let want = [
            Message::Ping(b"p".to_vec()),
            Message::Pong(Vec::new()),
            Message::Text("h\u{e9}llo".into()),
            Message::Binary(b"next".to_vec()),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn accepts_non_minimal_lengths() {
        let mut bytes = vec![0x82, 0xFE, 0, 3];
        bytes.extend(MASK);
        bytes.extend([1 ^ MASK[0], 2 ^ MASK[1], 3 ^ MASK[2]]);
        assert_eq!(
            read_all(&bytes, 16).unwrap(),
            [Message::Binary(vec![1, 2, 3])]
        );
    }

    #[test]
    fn rejects_protocol_violations_with_1002() {
        let mut rsv = frame(OP_TEXT, true, b"x");
        rsv[0] |= 0x40;
        let mut unmasked = Vec::new();
        write(&mut unmasked, OP_TEXT, b"x").unwrap();
        let mut huge = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
        huge.extend(MASK);
        let mut interrupted = frame(OP_TEXT, false, b"a");
        interrupted.extend(frame(OP_BINARY, true, b"b"));
        let cases = [
            ("reserved bit", rsv),
            ("unmasked", unmasked),
            ("opcode 3", frame(0x3, true, b"")),
            ("opcode 0xB", frame(0xB, true, b"")),
            ("long ping", frame(OP_PING, true, &[0; 126])),
            ("fragmented ping", frame(OP_PING, false, b"")),
            ("fragmented close", frame(OP_CLOSE, false, b"")),
            ("lone continuation", frame(OP_CONTINUATION, true, b"a")),
            ("new message mid-message", interrupted),
            ("length top bit", huge),
            ("one-byte close", frame(OP_CLOSE, true, &[3])),
        ];
        for (name, bytes) in cases {
            assert_eq!(close_code_of(&bytes, 1024), 1002, "{name}");
        }
    }

    #[test]
    fn checks_close_codes() {
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            let bytes = frame(OP_CLOSE, true, &u16::to_be_bytes(code));
            assert_eq!(close_code_of(&bytes, 16), 1002, "code {code}");
        }
        for code in [1000u16, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend(b"bye");
            let got = read_all(&frame(OP_CLOSE, true, &payload), 16).unwrap();
            assert_eq!(got, [Message::Close(Some((code, "bye".into())))]);
        }
        let got = read_all(&frame(OP_CLOSE, true, b""), 16).unwrap();
        assert_eq!(got, [Message::Close(None)]);
    }

    #[test]
    fn rejects_invalid_utf8_with_1007() {
        assert_eq!(close_code_of(&frame(OP_TEXT, true, &[0xC3]), 16), 1007);
        let mut bytes = frame(OP_TEXT, false, b"ok");
        bytes.extend(frame(OP_CONTINUATION, true, &[0xFF]));
        assert_eq!(close_code_of(&bytes, 16), 1007);
        let close = frame(OP_CLOSE, true, &[0x03, 0xE8, 0xE9]);
        assert_eq!(close_code_of(&close, 16), 1007);
    }

    #[test]
    fn rejects_oversized_messages_with_1009() {
        assert_eq!(close_code_of(&frame(OP_BINARY, true, &[0; 11]), 10), 1009);
        assert!(read_all(&frame(OP_BINARY, true, &[0; 10]), 10).is_ok());
        let mut bytes = frame(OP_TEXT, false, b"123456");
        bytes.extend(frame(OP_CONTINUATION, true, b"78901"));
        assert_eq!(close_code_of(&bytes, 10), 1009);
    }

    #[test]
    fn huge_length_claim_fails_before_allocating() {
        let mut bytes = vec![0x82, 0xFF, 0x40, 0, 0, 0, 0, 0, 0, 0];
        bytes.extend(MASK);
        bytes.extend([0; 16]);
        let mut reader = Reader::new(1 << 20);
        let e = reader.read_message(&mut Cursor::new(&bytes)).unwrap_err();
        assert_eq!(close_code(&e), 1009);
        assert_eq!(reader.data.capacity(), 0);
    }

    #[test]
    fn allocation_follows_received_bytes() {
        let mut bytes = vec![0x82, 0xFF, 0, 0, 0, 0, 0, 0x10, 0, 0];
        bytes.extend(MASK);
        bytes.extend([0; 100]);
        let mut reader = Reader::new(1 << 20);
        let e = reader.read_message(&mut Cursor::new(&bytes)).unwrap_err();
        assert!(matches!(e, ReadError::Io), "{e:?}");
        assert!(reader.data.capacity() <= 16 * 1024);
    }

    #[test]
    fn truncated_stream_is_an_io_error() {
        let whole = frame(OP_BINARY, true, &[7; 300]);
        for cut in [0, 1, 3, 7, 8, 299] {
            let mut input = Cursor::new(&whole[..cut]);
            let e = Reader::new(1024).read_message(&mut input).unwrap_err();
            assert!(matches!(e, ReadError::Io), "cut {cut}: {e:?}");
            assert_eq!(close_code(&e), 1006);
        }
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let reason = "\u{e9}".repeat(70);
        let mut out = Vec::new();
        write_close(&mut out, 1001, &reason);
        let (opcode, fin, payload) = decode_server_frame(&mut Cursor::new(&out), 125).unwrap();
        assert_eq!((opcode, fin, payload.len()), (OP_CLOSE, true, 2 + 122));
        assert_eq!(payload[..2], 1001u16.to_be_bytes());
        assert_eq!(
            std::str::from_utf8(&payload[2..]).unwrap(),
            "\u{e9}".repeat(61)
        );

        out.clear();
        write_close(&mut out, 1000, &"x".repeat(200));
        assert_eq!(out.len(), 2 + 125);
    }

    #[test]
    fn oversized_control_payload_writes_nothing() {
        let mut out = Vec::new();
        let e = write(&mut out, OP_PING, &[0; 126]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(write(&mut out, OP_PONG, &[0; 126]).is_err());
        assert!(out.is_empty());
        write(&mut out, OP_PONG, &[0; 125]).unwrap();
        assert_eq!(out.len(), 127);
    }

    #[test]
    fn decode_server_frame_checks_before_allocating() {
        let bytes = [0x82, 0xFF, 0x40, 0, 0, 0, 0, 0, 0, 0];
        let e = decode_server_frame(&mut Cursor::new(&bytes), 1 << 20).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let masked = frame(OP_TEXT, true, b"x");
        assert!(decode_server_frame(&mut Cursor::new(&masked), 16).is_err());
    }

    /// Checked when the tests compile: types are thread safe.
    const _: () = {
        const fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Reader>();
        assert_send_sync::<ReadError>();
        assert_send_sync::<Message>();
    };
}
