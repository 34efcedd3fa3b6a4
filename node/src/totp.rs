//! TOTP (RFC 6238): HMAC-SHA1, 30-second steps, 6 digits, as every
//! authenticator app expects. One step of clock skew either way is accepted.

use ring::hmac;

const STEP_SECONDS: u64 = 30;
const DIGITS: u32 = 6;

/// The code for time step `counter`.
fn code_at(secret: &[u8], counter: u64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = hmac::sign(&key, &counter.to_be_bytes());
    let bytes = mac.as_ref();
    let offset = usize::from(bytes[bytes.len() - 1] & 0x0f);
    let value = u32::from_be_bytes([
        bytes[offset] & 0x7f,
        bytes[offset + 1],
        bytes[offset + 2],
        bytes[offset + 3],
    ]);
    value % 10_u32.pow(DIGITS)
}

/// The current code, for tests and tools.
pub fn code(secret: &[u8], now_ms: u64) -> String {
    format!("{:06}", code_at(secret, now_ms / 1000 / STEP_SECONDS))
}

/// Checks `given` against the codes of the previous, current and next step.
pub fn verify(secret: &[u8], given: &str, now_ms: u64) -> bool {
    let Ok(given) = given.trim().parse::<u32>() else {
        return false;
    };
    let step = now_ms / 1000 / STEP_SECONDS;
    [step.saturating_sub(1), step, step + 1]
        .into_iter()
        .any(|counter| code_at(secret, counter) == given)
}

/// The `otpauth://` URI authenticator apps import (as a QR code).
pub fn uri(secret: &[u8], user: &str) -> String {
    let label: String = user
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect();
    format!(
        "otpauth://totp/Omega:{label}?secret={}&issuer=Omega&algorithm=SHA1&digits=6&period=30",
        base32(secret)
    )
}

/// RFC 4648 base32 without padding.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0_u32, 0_u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes RFC 4648 base32 (no padding, case-insensitive); `None` on any
/// other character.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0_u32, 0_u32);
    for character in text.trim_end_matches('=').chars() {
        let value = match character.to_ascii_uppercase() {
            letter @ 'A'..='Z' => letter as u32 - 'A' as u32,
            digit @ '2'..='7' => digit as u32 - '2' as u32 + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA1, truncated to 6 digits.
    #[test]
    fn matches_the_rfc_vectors() {
        let secret = b"12345678901234567890";
        for (seconds, expected) in [
            (59_u64, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(code(secret, seconds * 1000), expected);
            assert!(verify(secret, expected, seconds * 1000));
        }
        assert!(!verify(secret, "000000", 59_000));
        assert!(!verify(secret, "not a code", 59_000));
    }

    #[test]
    fn base32_matches_rfc_4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b""), "");
        assert_eq!(base32_decode("MZXW6YTBOI").unwrap(), b"foobar");
        assert_eq!(base32_decode("mzxw6ytboi").unwrap(), b"foobar");
        assert!(base32_decode("not base32!").is_none());
    }
}
