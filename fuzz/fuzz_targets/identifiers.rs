//! Identifiers typed by people and SDKs: license keys (the SDK field and every `/licenses/{key}`
//! path) and e-mail addresses (portal, license email). Accepted ones are canonical and stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use licensd_commands::normalize_email;
use licensd_domain::LicenseKey;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else { return };
    if let Ok(key) = LicenseKey::parse(text) {
        let canonical = key.to_string();
        assert_eq!(canonical, text.trim().to_ascii_uppercase());
        assert_eq!(LicenseKey::parse(&canonical).ok(), Some(key), "a canonical key parses to itself");
    }
    if let Ok(email) = normalize_email(text) {
        assert_eq!(normalize_email(&email).ok(), Some(email.clone()), "normalizing is idempotent");
        assert!(email.contains('@') && !email.chars().any(char::is_whitespace), "{email:?}");
    }
});
