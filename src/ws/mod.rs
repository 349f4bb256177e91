//! The server role of WebSocket version 13 (RFC 6455): the accept key and
//! framing; the HTTP layer checks the upgrade and answers `101`. No
//! extensions (reserved bits are rejected: compression needs a dependency,
//! and inflating lets a small frame become a large allocation), and no
//! subprotocols (each route speaks one message format).

mod base64;
pub mod frame;
mod sha1;

/// The GUID that RFC 6455 section 1.3 appends to the client's key before hashing.
const HANDSHAKE_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value answering a client's `Sec-WebSocket-Key`.
pub(crate) fn accept_key(client_key: &str) -> String {
    let mut input = String::with_capacity(client_key.len() + HANDSHAKE_GUID.len());
    input.push_str(client_key);
    input.push_str(HANDSHAKE_GUID);
    base64::encode(&sha1::digest(input.as_bytes()))
}

/// Whether `key` is base64 text of exactly 16 bytes, as every conforming
/// client sends; anything else, surrounding whitespace included, is refused.
pub(crate) fn valid_client_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    if bytes.len() != 24 || !bytes.ends_with(b"==") {
        return false;
    }
    // 22 characters carry 132 bits; 16 bytes use 128, so the last 4 must be zero.
    bytes[..22].iter().all(|&c| base64::sextet(c).is_some())
        && base64::sextet(bytes[21]).is_some_and(|v| v & 0x0F == 0)
}

#[cfg(test)]
mod tests {
    use super::{accept_key, base64, valid_client_key};

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
        assert!(valid_client_key(&base64::encode(&[0xFF; 16])));
        assert!(valid_client_key(&base64::encode(&[0x00; 16])));
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
        assert!(!valid_client_key(&base64::encode(&[1; 17])));
        assert!(!valid_client_key(&base64::encode(&[1; 18])));
        assert!(!valid_client_key(&base64::encode(&[1; 15])));
    }
}
