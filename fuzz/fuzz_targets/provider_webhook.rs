//! Provider webhooks: payloads of either provider normalize or are refused without panicking;
//! any `Stripe-Signature` / `X-Signature` header is judged without panicking; a correctly signed
//! delivery is accepted exactly when its timestamp is within the tolerance, whatever the time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use licensd_domain::commerce::Provider;
use licensd_workers::commerce::normalize::normalize;
use licensd_workers::commerce::signature::{
    lemon_signature_header, stripe_signature_header, verify_lemon, verify_stripe,
};

const SECRET: &str = "whsec_fuzz";
const TOLERANCE: i64 = 300;
const NOW: i64 = 1_790_000_000;

fuzz_target!(|input: &[u8]| {
    for provider in [Provider::Stripe, Provider::Lemon] {
        if let Ok(inbound) = normalize(provider, input) {
            let chars = inbound.external_id.chars().count();
            assert!((1..=200).contains(&chars), "accepted a {chars}-character event id");
        }
    }

    // The input as a header over an empty body, and as a body under its own first line.
    let text = String::from_utf8_lossy(input);
    let (header, body) = text.split_once('\n').unwrap_or((&text, ""));
    let _ = verify_stripe(header, body.as_bytes(), SECRET, NOW, TOLERANCE);
    let _ = verify_lemon(header, body.as_bytes(), SECRET);

    let mut stamp = [0u8; 8];
    let n = input.len().min(8);
    stamp[..n].copy_from_slice(&input[..n]);
    let timestamp = i64::from_le_bytes(stamp);
    for t in [timestamp, NOW.wrapping_add(timestamp % 1000)] {
        let signed = stripe_signature_header(input, SECRET, t);
        let fresh = NOW.checked_sub(t).is_some_and(|age| age.unsigned_abs() <= TOLERANCE as u64);
        assert_eq!(verify_stripe(&signed, input, SECRET, NOW, TOLERANCE).is_ok(), fresh, "timestamp {t}");
    }
    assert!(verify_lemon(&lemon_signature_header(input, SECRET), input, SECRET).is_ok());
    assert!(verify_lemon(&lemon_signature_header(input, "another"), input, SECRET).is_err());
});
