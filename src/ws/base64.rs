//! Base64 with the standard alphabet and padding (RFC 4648 section 4), as
//! far as the WebSocket handshake needs it.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(crate) fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        // n input bytes fill n + 1 output characters; the rest of the 4 is padding.
        for i in 0..4 {
            if i <= chunk.len() {
                let index = (group >> (18 - 6 * i)) & 0x3F;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The 6-bit value of a standard-alphabet character, or `None` for any other byte
/// (including `=`).
pub(crate) fn sextet(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|i| i as u8)
}

#[cfg(test)]
mod tests {
    use super::{encode, sextet, ALPHABET};

    #[test]
    fn rfc4648_vectors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(encode(input), want);
        }
    }

    #[test]
    fn high_values_use_plus_and_slash() {
        assert_eq!(encode(&[0xFB, 0xFF]), "+/8=");
        assert_eq!(encode(&[0xFF; 3]), "////");
        assert_eq!(encode(&[0x00; 3]), "AAAA");
    }

    #[test]
    fn sextet_inverts_the_alphabet() {
        for (value, &c) in ALPHABET.iter().enumerate() {
            assert_eq!(sextet(c), Some(value as u8));
        }
        for c in [b'=', b' ', b'-', b'_', b'\r', b'\n', 0, 0xFF] {
            assert_eq!(sextet(c), None, "byte {c:#x}");
        }
    }
}
