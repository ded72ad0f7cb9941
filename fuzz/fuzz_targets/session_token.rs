//! Session tokens: any string opens to nothing unless this key minted it, a minted token opens
//! to exactly its claims, and any one changed character makes it open to nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use licensd_api::auth::token::{hwid_digest, Claims, TokenKey};

fn key() -> &'static TokenKey {
    static KEY: std::sync::OnceLock<TokenKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| TokenKey::new([7; 32]))
}

fn number(bytes: &[u8]) -> i64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
    i64::from_le_bytes(buf)
}

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    // Forging needs the key: random text never opens.
    assert_eq!(key().open(&text), None, "an unminted token opened: {text:?}");

    let parts: Vec<&str> = text.splitn(4, '\u{1f}').collect();
    let field = |i: usize| parts.get(i).copied().unwrap_or_default().to_string();
    let claims = Claims {
        exp: number(input),
        expires_in: number(input.get(8..).unwrap_or_default()),
        app: field(0),
        lic: field(1),
        hw: hwid_digest(&field(2)),
        ttl: number(input.get(16..).unwrap_or_default()),
        iat: number(input.get(24..).unwrap_or_default()),
    };
    let token = key().mint(&claims);
    assert_eq!(key().open(&token), Some(claims), "a minted token opens to its claims");

    let position = input.len() % token.len();
    let mut tampered: Vec<char> = token.chars().collect();
    tampered[position] = if tampered[position] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    assert_eq!(key().open(&tampered), None, "a token changed at {position} still opened");
});
