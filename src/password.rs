//! New passwords for reactivated users, drawn from the operating system's CSPRNG.
//!
//! Each character is uniform over a 62-symbol alphanumeric alphabet: random bytes
//! of 248 or more are rejected (248 = 4 × 62), so `byte % 62` has no modulo bias.
//! Alphanumeric only, so a password survives CSV, spreadsheets, e-mail and being
//! read aloud by a help desk without quoting or escaping.
//!
//! The random bytes a password is drawn from are wiped once it is made, and
//! `wipe_field` wipes the copy in a request body once the request is done:
//! a password's clear text must not outlive the request that sets it.

use anyhow::Context;
use zeroize::Zeroize;

pub const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub const MIN_LENGTH: usize = 12;
/// Synapse refuses passwords longer than 512 characters.
pub const MAX_LENGTH: usize = 512;
/// The largest multiple of 62 that fits in a byte's range.
const REJECT_FROM: u8 = 248;

/// Generates a password of `length` alphanumeric characters.
pub fn generate(length: usize) -> anyhow::Result<String> {
    generate_with(length, |buf| {
        getrandom::fill(buf).map_err(|e| anyhow::anyhow!("{e}"))
    })
    .context("reading the operating system's random number generator")
}

/// The generator with its byte source as a parameter, so tests can drive it.
pub(crate) fn generate_with(
    length: usize,
    mut fill: impl FnMut(&mut [u8]) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    // Exactly `length`: the string never grows, so no copy is left behind.
    let mut out = String::with_capacity(length);
    // A few spare bytes cover the expected 3 % of rejections in one draw.
    let mut buf = zeroize::Zeroizing::new(vec![0u8; length + length / 16 + 8]);
    while out.len() < length {
        fill(&mut buf)?;
        for &b in buf.iter() {
            if b < REJECT_FROM {
                out.push(ALPHABET[usize::from(b % 62)] as char);
                if out.len() == length {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// Wipes the string at `key` of a JSON request body (a password), once the
/// request that carried it has its answer.
pub fn wipe_field(body: &mut serde_json::Value, key: &str) {
    if let Some(serde_json::Value::String(s)) = body.get_mut(key) {
        s.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_and_alphabet() {
        for len in [MIN_LENGTH, 24, 100, MAX_LENGTH] {
            let p = generate(len).unwrap();
            assert_eq!(p.len(), len);
            assert!(p.bytes().all(|b| ALPHABET.contains(&b)), "{p}");
        }
    }

    #[test]
    fn request_bodies_are_wiped() {
        let mut body = serde_json::json!({"deactivated": false, "password": "secret-pw"});
        wipe_field(&mut body, "password");
        assert_eq!(body["password"], "");
        assert_eq!(body["deactivated"], false);
        wipe_field(&mut body, "absent");
    }

    #[test]
    fn passwords_differ() {
        let a = generate(24).unwrap();
        let b = generate(24).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn rejected_bytes_are_skipped() {
        // A source that yields only bytes at or above 248 first, then 0..: the
        // rejected ones must not produce characters.
        let mut calls = 0;
        let p = generate_with(4, |buf| {
            calls += 1;
            let v = if calls == 1 { 250 } else { 63 };
            buf.fill(v);
            Ok(())
        })
        .unwrap();
        assert_eq!(p, "BBBB"); // 63 % 62 == 1 → 'B'
        assert_eq!(calls, 2);
    }

    #[test]
    fn every_byte_value_maps_without_bias() {
        // Feed each byte value exactly once, from 255 down to 0, so the eight
        // values that must be rejected come first: every symbol must then come
        // out exactly four times (248 / 62). A plain `% 62` would take 255..8
        // and give symbols 0..7 a fifth turn.
        let mut counts = [0usize; 62];
        let mut fed = false;
        let p = generate_with(248, |buf| {
            assert!(!fed, "all 256 values fit in one draw");
            fed = true;
            for (i, b) in buf.iter_mut().enumerate() {
                *b = 255 - (i % 256) as u8;
            }
            Ok(())
        })
        .unwrap();
        for b in p.bytes() {
            counts[ALPHABET.iter().position(|&a| a == b).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&c| c == 4), "{counts:?}");
    }

    #[test]
    fn uniform_over_many_draws() {
        // Chi-square test over 62 symbols (61 degrees of freedom) for 620,000
        // characters. The 99.99th percentile of chi²(61) is about 112; a plain
        // `% 62` over raw bytes lands near 4,000 at this sample size.
        let mut counts = [0u64; 62];
        let n = 10_000;
        for _ in 0..n {
            for b in generate(62).unwrap().bytes() {
                counts[ALPHABET.iter().position(|&a| a == b).unwrap()] += 1;
            }
        }
        let expected = (n * 62) as f64 / 62.0;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 112.0, "chi² = {chi2}, counts = {counts:?}");
    }
}
