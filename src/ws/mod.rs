//! The server role of WebSocket 13 (RFC 6455): the accept key and framing; the HTTP
//! layer checks the upgrade. No extensions (compression needs a dependency, and
//! inflating lets a small frame become a large allocation), no subprotocols (each
//! route speaks one format). Base64 is standard with padding (RFC 4648 section 4).

pub mod frame;
mod sha1;

/// The GUID that RFC 6455 section 1.3 appends to the client's key before hashing.
const HANDSHAKE_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value answering a client's `Sec-WebSocket-Key`.
pub(crate) fn accept_key(client_key: &str) -> String {
    encode(&sha1::digest(
        format!("{client_key}{HANDSHAKE_GUID}").as_bytes(),
    ))
}

/// Whether `key` is base64 text of exactly 16 bytes, as every conforming
/// client sends; anything else, surrounding whitespace included, is refused.
pub(crate) fn valid_client_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    if bytes.len() != 24 || !bytes.ends_with(b"==") {
        return false;
    }
    // 22 characters carry 132 bits; 16 bytes use 128, so the last 4 must be zero.
    bytes[..22].iter().all(|&c| sextet(c).is_some())
        && sextet(bytes[21]).is_some_and(|v| v & 0x0F == 0)
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn encode(data: &[u8]) -> String {
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

/// The 6-bit value of a standard-alphabet character, or `None` for any other byte (including `=`).
fn sextet(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|i| i as u8)
}

#[cfg(test)]
mod tests {
    use super::{accept_key, encode, sextet, valid_client_key, ALPHABET};

    #[test]
    fn rfc6455_sample_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accepts_keys_of_sixteen_bytes() {
        assert!(valid_client_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(valid_client_key(&encode(&[0xFF; 16])));
        assert!(valid_client_key(&encode(&[0x00; 16])));
        assert!(valid_client_key("ab+/AAAAAAAAAAAAAAAAAA=="));
    }

    #[test]
    fn rejects_malformed_keys() {
        let bad = [
            "",
            "dGhlIHNhbXBsZSBub25jZQ=",
            "dGhlIHNhbXBsZSBub25jZQ===",
            " dGhlIHNhbXBsZSBub25jZQ==",
            "dGhlIHNhbXBsZSBub25jZQ== ",
            "dGhlIHNhbXBsZSBub25jZ===",
            "dGhlIHNhbXBsZSBub25jZQAA",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25j\r\n==",
            "dGhlIHNhbXBsZSBub2-_ZQ==",
            "dGhlIHNhbXBsZSBub25jé==",
        ];
        for key in bad {
            assert!(!valid_client_key(key), "{key:?}");
        }
        // 17 bytes and 15 bytes encode with a single `=` or none at 24 characters.
        assert!(!valid_client_key(&encode(&[1; 17])));
        assert!(!valid_client_key(&encode(&[1; 18])));
        assert!(!valid_client_key(&encode(&[1; 15])));
    }

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
