//! Offline activation: a pasted `.authforge-request` is parsed without panicking whatever it
//! holds, and one whose armor and checksum are right is judged on its JSON alone. License files
//! rendered from any field values carry a signature that verifies over a payload that decodes
//! back to those values.
#![no_main]

use base64::{engine::general_purpose::STANDARD, Engine};
use ed25519_dalek::{Signature, SigningKey, Verifier};
use libfuzzer_sys::fuzz_target;
use licensd_commands::offline::{
    parse_activation_request, render_license_file, HwidBinding, LicenseFilePayload, MAX_REQUEST_HWID_CHARS,
};
use sha2::{Digest, Sha256};

/// An activation request armored as the SDKs write it around `json`.
fn armored(json: &[u8]) -> String {
    let body = STANDARD.encode(json);
    let checksum = &hex::encode(Sha256::digest(body.as_bytes()))[..16];
    format!(
        "-----BEGIN AUTHFORGE ACTIVATION REQUEST-----\nVersion: 1\nChecksum: {checksum}\n\n{body}\n\
         -----END AUTHFORGE ACTIVATION REQUEST-----\n"
    )
}

/// The lines between `begin` and `end`, joined.
fn section(file: &str, begin: &str, end: &str) -> String {
    let start = file.find(begin).expect("begin marker") + begin.len();
    let stop = file[start..].find(end).expect("end marker") + start;
    file[start..stop].lines().filter(|l| !l.contains(':') && !l.is_empty()).collect()
}

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let _ = parse_activation_request(&text);

    if let Ok(request) = parse_activation_request(&armored(input)) {
        let hwid_chars = request.hwid.chars().count();
        assert!((1..=MAX_REQUEST_HWID_CHARS).contains(&hwid_chars), "accepted a {hwid_chars}-character hwid");
        let json: serde_json::Value = serde_json::from_slice(input).expect("accepted JSON");
        assert_eq!(json["appId"].as_str(), Some(request.app_id.as_str()));
    }

    let fields: Vec<&str> = text.splitn(4, '\n').collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or_default().to_string();
    let signer = SigningKey::from_bytes(&[9; 32]);
    let payload = LicenseFilePayload {
        v: 1,
        typ: LicenseFilePayload::TYPE,
        app_id: field(0),
        license_key: field(1),
        jti: "jti".into(),
        kid: "k1".into(),
        issued_at: "2026-01-01T00:00:00.000Z".into(),
        expires_at: None,
        hwid: HwidBinding::Bound { hwids: vec![field(2)] },
        label: Some(field(3)),
        license_expires_at: None,
        license_variables: Default::default(),
        app_variables: Default::default(),
    };
    let file = render_license_file(&payload, &signer);
    let body = section(&file, "-----BEGIN AUTHFORGE LICENSE-----", "-----END AUTHFORGE LICENSE-----");
    let signature = STANDARD
        .decode(section(&file, "-----BEGIN AUTHFORGE SIGNATURE-----", "-----END AUTHFORGE SIGNATURE-----"))
        .expect("signature is base64");
    let signature = Signature::from_slice(&signature).expect("64-byte signature");
    signer.verifying_key().verify(body.as_bytes(), &signature).expect("the signature verifies");
    let decoded: serde_json::Value = serde_json::from_slice(&STANDARD.decode(&body).expect("base64")).expect("JSON");
    assert_eq!(decoded, serde_json::to_value(&payload).expect("payload JSON"));
});
