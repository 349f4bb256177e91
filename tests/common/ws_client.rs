//! The client role of RFC 6455 framing, which the server never plays: tests use it to talk
//! to the server's WebSocket, and `src/ws/frame.rs` includes this file for its unit tests.

use std::io::{self, Read};

/// Encodes one masked client-to-server frame.
///
/// `opcode` keeps only its low 4 bits, so the reserved bits are always clear. Nothing
/// is validated: tests use this to build invalid frames too.
pub fn encode_client_frame(opcode: u8, fin: bool, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(if fin { 0x80 } else { 0 } | (opcode & 0x0F));
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&len.to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads one unmasked server-to-client frame as `(opcode, fin, payload)`.
///
/// # Errors
///
/// `InvalidData` when the frame is masked, sets a reserved bit, or has a payload over
/// `max` bytes (checked before allocating), and any error from `r`.
pub fn decode_server_frame<R: Read + ?Sized>(
    r: &mut R,
    max: usize,
) -> io::Result<(u8, bool, Vec<u8>)> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
    let mut head = [0; 2];
    r.read_exact(&mut head)?;
    if head[0] & 0x70 != 0 || head[1] & 0x80 != 0 {
        return Err(invalid(format!("bad server frame header {head:02x?}")));
    }
    let len = match head[1] & 0x7F {
        126 => {
            let mut bytes = [0; 2];
            r.read_exact(&mut bytes)?;
            u64::from(u16::from_be_bytes(bytes))
        }
        127 => {
            let mut bytes = [0; 8];
            r.read_exact(&mut bytes)?;
            u64::from_be_bytes(bytes)
        }
        n => u64::from(n),
    };
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= max)
        .ok_or_else(|| invalid(format!("server frame of {len} bytes exceeds {max}")))?;
    let mut payload = vec![0; len];
    r.read_exact(&mut payload)?;
    Ok((head[0] & 0x0F, head[0] & 0x80 != 0, payload))
}
