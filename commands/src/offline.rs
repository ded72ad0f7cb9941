//! `.authforge` offline license files (armored, Ed25519-signed) and `.authforge-request`
//! activation requests, in the format the official SDKs read and write.

use base64::{engine::general_purpose::STANDARD, Engine};
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use thiserror::Error;

const LICENSE_BEGIN: &str = "-----BEGIN AUTHFORGE LICENSE-----";
const LICENSE_END: &str = "-----END AUTHFORGE LICENSE-----";
const SIGNATURE_BEGIN: &str = "-----BEGIN AUTHFORGE SIGNATURE-----";
const SIGNATURE_END: &str = "-----END AUTHFORGE SIGNATURE-----";
const REQUEST_BEGIN: &str = "-----BEGIN AUTHFORGE ACTIVATION REQUEST-----";
const REQUEST_END: &str = "-----END AUTHFORGE ACTIVATION REQUEST-----";
const WRAP: usize = 64;
pub const MAX_REQUEST_HWID_CHARS: usize = 256;

/// Which machines a file is valid on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum HwidBinding {
    Bound { hwids: Vec<String> },
    Any,
}

/// The signed payload, serialised in the canonical field order the SDKs expect.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LicenseFilePayload {
    pub v: u8,
    pub typ: &'static str,
    pub app_id: String,
    pub license_key: String,
    pub jti: String,
    pub kid: String,
    pub issued_at: String,
    /// `None` is written as an explicit `null`: a lifetime file.
    pub expires_at: Option<String>,
    pub hwid: HwidBinding,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub license_expires_at: Option<String>,
    pub license_variables: Map<String, Value>,
    pub app_variables: Map<String, Value>,
}

impl LicenseFilePayload {
    pub const TYPE: &'static str = "authforge-license";
}

fn wrapped(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / WRAP + 1);
    for chunk in text.as_bytes().chunks(WRAP) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Signs the payload (Ed25519 over its base64 text) and armors it.
pub fn render_license_file(payload: &LicenseFilePayload, signer: &SigningKey) -> String {
    let json = serde_json::to_string(payload).unwrap_or_default();
    let body = STANDARD.encode(json);
    let signature = STANDARD.encode(signer.sign(body.as_bytes()).to_bytes());
    let expires = payload.expires_at.as_deref().unwrap_or("never");
    format!(
        "{LICENSE_BEGIN}\nVersion: 1\nApp-Id: {}\nLicense: {}\nKey-Id: {}\nExpires-At: {expires}\n\n{}{LICENSE_END}\n\
         {SIGNATURE_BEGIN}\n{}{SIGNATURE_END}\n",
        payload.app_id,
        payload.license_key,
        payload.kid,
        wrapped(&body),
        wrapped(&signature),
    )
}

/// What a customer's machine sent to be activated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationRequest {
    pub app_id: String,
    pub hwid: String,
    pub created_at: String,
    pub machine_name: Option<String>,
    pub os: Option<String>,
    pub sdk: Option<String>,
    pub license_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ActivationRequestError {
    #[error("this is a license file, not an activation request")]
    LicenseFileGiven,
    #[error("no activation request armor found")]
    BadArmor,
    #[error("the activation request is truncated")]
    Truncated,
    #[error("the activation request's checksum does not match its body")]
    ChecksumMismatch,
    #[error("the activation request's payload is malformed: {0}")]
    MalformedPayload(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRequest {
    v: Value,
    typ: String,
    app_id: String,
    hwid: String,
    created_at: String,
    machine_name: Option<String>,
    os: Option<String>,
    sdk: Option<String>,
    license_key: Option<String>,
}

/// A line without surrounding whitespace or a byte-order mark (which may sit wherever an editor
/// or mail client started the pasted part).
fn clean(line: &str) -> &str {
    line.trim().trim_start_matches('\u{feff}').trim()
}

/// Parses a `.authforge-request`, tolerating a BOM, CRLF, re-wrapping and text around it.
pub fn parse_activation_request(text: &str) -> Result<ActivationRequest, ActivationRequestError> {
    use ActivationRequestError as E;
    let mut lines = text.lines().map(clean);
    if !lines.by_ref().any(|l| l == REQUEST_BEGIN) {
        return Err(if text.lines().any(|l| clean(l) == LICENSE_BEGIN) { E::LicenseFileGiven } else { E::BadArmor });
    }
    let mut checksum = None;
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').filter(|(n, _)| !n.is_empty()).ok_or(E::BadArmor)?;
        if name.trim().eq_ignore_ascii_case("Checksum") {
            checksum = Some(value.trim().to_ascii_lowercase());
        }
    }
    let mut body = String::new();
    let mut ended = false;
    for line in lines {
        if line == REQUEST_END {
            ended = true;
            break;
        }
        body.extend(line.chars().filter(|c| !c.is_whitespace()));
    }
    if !ended || body.is_empty() {
        return Err(E::Truncated);
    }
    let digest = hex::encode(Sha256::digest(body.as_bytes()));
    if checksum.as_deref() != Some(&digest[..16]) {
        return Err(E::ChecksumMismatch);
    }
    let json = STANDARD.decode(&body).map_err(|_| E::Truncated)?;
    let raw: RawRequest = serde_json::from_slice(&json).map_err(|e| E::MalformedPayload(e.to_string()))?;
    if raw.v != 1 || raw.typ != "authforge-activation-request" {
        return Err(E::MalformedPayload("not a version 1 activation request".into()));
    }
    if raw.hwid.is_empty() || raw.hwid.chars().count() > MAX_REQUEST_HWID_CHARS {
        return Err(E::MalformedPayload(format!("hwid must be 1 to {MAX_REQUEST_HWID_CHARS} characters")));
    }
    Ok(ActivationRequest {
        app_id: raw.app_id,
        hwid: raw.hwid,
        created_at: raw.created_at,
        machine_name: raw.machine_name,
        os: raw.os,
        sdk: raw.sdk,
        license_key: raw.license_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier;

    fn payload() -> LicenseFilePayload {
        LicenseFilePayload {
            v: 1,
            typ: LicenseFilePayload::TYPE,
            app_id: "app".into(),
            license_key: "AAAA-BBBB-CCCC-DDDD".into(),
            jti: "jti".into(),
            kid: "k1".into(),
            issued_at: "2026-01-01T00:00:00.000Z".into(),
            expires_at: None,
            hwid: HwidBinding::Bound { hwids: vec!["m1".into()] },
            label: None,
            license_expires_at: None,
            license_variables: Map::new(),
            app_variables: Map::new(),
        }
    }

    #[test]
    fn license_files_are_armored_and_signed_over_the_base64_text() {
        let signer = SigningKey::from_bytes(&[9; 32]);
        let file = render_license_file(&payload(), &signer);
        assert!(file.starts_with(LICENSE_BEGIN) && file.ends_with(&format!("{SIGNATURE_END}\n")));
        assert!(file.contains("Expires-At: never"));
        let section = |begin: &str, end: &str| -> String {
            let start = file.find(begin).unwrap() + begin.len();
            let stop = file.find(end).unwrap();
            let text = &file[start..stop];
            let text = text.rsplit("\n\n").next().unwrap();
            text.split_whitespace().collect()
        };
        let body = section(LICENSE_BEGIN, LICENSE_END);
        let signature = STANDARD.decode(section(SIGNATURE_BEGIN, SIGNATURE_END)).unwrap();
        let signature = ed25519_dalek::Signature::from_slice(&signature).unwrap();
        signer.verifying_key().verify(body.as_bytes(), &signature).unwrap();
        let json = String::from_utf8(STANDARD.decode(&body).unwrap()).unwrap();
        assert!(json.starts_with(r#"{"v":1,"typ":"authforge-license","appId":"app","licenseKey":"#), "{json}");
        assert!(json.contains(r#""expiresAt":null,"hwid":{"mode":"bound","hwids":["m1"]}"#), "{json}");
        assert!(!json.contains("label"), "an absent label is left out");
    }

    fn request(json: &str, tamper_checksum: bool) -> String {
        let body = STANDARD.encode(json);
        let mut checksum = hex::encode(Sha256::digest(body.as_bytes()))[..16].to_string();
        if tamper_checksum {
            checksum = "0".repeat(16);
        }
        format!("Hi, please activate me:\r\n\u{feff}{REQUEST_BEGIN}\r\nVersion: 1\r\nApp-Id: app\r\nChecksum: {checksum}\r\n\r\n{}{REQUEST_END}\r\nthanks", wrapped(&body).replace('\n', "\r\n"))
    }

    const GOOD: &str = r#"{"v":1,"typ":"authforge-activation-request","appId":"app","hwid":"abc","createdAt":"2026-01-01T00:00:00.000Z","sdk":"rust/2.0.0"}"#;

    #[test]
    fn activation_requests_parse_through_mail_noise() {
        let parsed = parse_activation_request(&request(GOOD, false)).unwrap();
        assert_eq!(
            (parsed.app_id.as_str(), parsed.hwid.as_str(), parsed.sdk.as_deref()),
            ("app", "abc", Some("rust/2.0.0"))
        );
    }

    #[test]
    fn damaged_activation_requests_are_refused_with_a_reason() {
        assert_eq!(parse_activation_request(&request(GOOD, true)), Err(ActivationRequestError::ChecksumMismatch));
        let truncated = request(GOOD, false).replace(REQUEST_END, "");
        assert_eq!(parse_activation_request(&truncated), Err(ActivationRequestError::Truncated));
        assert_eq!(parse_activation_request("hello"), Err(ActivationRequestError::BadArmor));
        let file = render_license_file(&payload(), &SigningKey::from_bytes(&[1; 32]));
        assert_eq!(parse_activation_request(&file), Err(ActivationRequestError::LicenseFileGiven));
        let wrong = GOOD.replace(r#""v":1"#, r#""v":true"#);
        assert!(matches!(
            parse_activation_request(&request(&wrong, false)),
            Err(ActivationRequestError::MalformedPayload(_))
        ));
    }
}
