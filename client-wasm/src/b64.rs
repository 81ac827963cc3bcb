//! Standard base64 (RFC 4648 §4, with padding), as the coordinator's `base64` crate reads and
//! writes it: outputs, challenge states and saved resume points travel this way. Written here
//! because the crate's general engine was 2.5% of the browser client's gzipped download (budget:
//! 150 KB); tested against that crate byte for byte.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `bytes` as base64 text.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i) & 63) as usize]
            } else {
                b'='
            });
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Not base64: a character outside the alphabet, a bad length, or misplaced padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid base64")]
pub struct Invalid;

fn value(c: u8) -> Result<u32, Invalid> {
    Ok(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return Err(Invalid),
    }
    .into())
}

/// The bytes `text` encodes (canonical padded base64 only, as [`encode`] writes it).
pub fn decode(text: &str) -> Result<Vec<u8>, Invalid> {
    let t = text.as_bytes();
    if !t.len().is_multiple_of(4) {
        return Err(Invalid);
    }
    let mut out = Vec::with_capacity(t.len() / 4 * 3);
    let quads = t.len() / 4;
    for (q, c) in t.chunks(4).enumerate() {
        let pad = c.iter().rev().take_while(|&&x| x == b'=').count();
        if pad > 2 || (pad > 0 && q + 1 != quads) {
            return Err(Invalid);
        }
        let mut n = 0u32;
        for &x in &c[..4 - pad] {
            n = n << 6 | value(x)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        // Bits past the last byte must be zero, as in canonical encodings.
        if bytes[3 - pad..].iter().any(|&b| b != 0) {
            return Err(Invalid);
        }
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use proptest::prelude::*;

    const STD: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    #[test]
    fn rfc_4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(decode(coded).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn malformed_text_is_refused() {
        for bad in [
            "Zg=", "Zg===", "Z===", "Zh==", "Zm9v!A==", "Zg==Zg==", "=AAA", "A=AA",
        ] {
            assert_eq!(decode(bad), Err(Invalid), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_base64_crate(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let coded = encode(&bytes);
            prop_assert_eq!(&coded, &STD.encode(&bytes));
            prop_assert_eq!(decode(&coded).unwrap(), bytes);
        }

        #[test]
        fn decodes_exactly_what_the_crate_accepts(text in "[A-Za-z0-9+/=]{0,24}") {
            prop_assert_eq!(decode(&text).ok(), STD.decode(&text).ok());
        }
    }
}
