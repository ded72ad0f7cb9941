use crate::DomainError;
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub ::uuid::Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(::uuid::Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                ::uuid::Uuid::parse_str(s.trim()).map(Self)
            }
        }
    };
}
pub(crate) use uuid_id;

uuid_id!(
    /// A merchant account: owns apps, API keys and a credit balance.
    AccountId
);
uuid_id!(
    /// An application protected by licensd (public; embedded in the merchant's binary).
    AppId
);
uuid_id!(
    /// A Developer API key's public identifier (the secret part is never stored).
    ApiKeyId
);

/// The 32 symbols a license key is written in: A–Z without I and O, digits 2–9.
pub const LICENSE_KEY_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// Characters in a license key.
const LICENSE_KEY_LEN: usize = 19;

/// Which bytes are in [`LICENSE_KEY_ALPHABET`], by byte: a key is parsed for every license
/// event a replay applies, and searching the alphabet per character (`contains`, a `memchr`
/// call each) was a sixth of a rebuild's applying thread (BENCHMARKS.md, issue 15).
const IN_LICENSE_KEY_ALPHABET: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < LICENSE_KEY_ALPHABET.len() {
        table[LICENSE_KEY_ALPHABET[i] as usize] = true;
        i += 1;
    }
    table
};

/// A license key in the form `XXXX-XXXX-XXXX-XXXX`. Kept inline (no heap allocation): the
/// in-memory model holds one per license, twice.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct LicenseKey([u8; LICENSE_KEY_LEN]);

/// Parsed from the text in place (through `String` every key read from the log was copied
/// into an allocation of its own first).
impl<'de> Deserialize<'de> for LicenseKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Key;
        impl serde::de::Visitor<'_> for Key {
            type Value = LicenseKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a license key")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<LicenseKey, E> {
                LicenseKey::parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Key)
    }
}

impl LicenseKey {
    /// Parses user input; surrounding whitespace is ignored and lower case is accepted.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let trimmed = input.trim().as_bytes();
        let mut key = [0u8; LICENSE_KEY_LEN];
        if trimmed.len() != LICENSE_KEY_LEN {
            return Err(DomainError::InvalidLicenseKey);
        }
        for (i, (slot, b)) in key.iter_mut().zip(trimmed).enumerate() {
            let b = b.to_ascii_uppercase();
            let valid = if i % 5 == 4 { b == b'-' } else { IN_LICENSE_KEY_ALPHABET[usize::from(b)] };
            if !valid {
                return Err(DomainError::InvalidLicenseKey);
            }
            *slot = b;
        }
        Ok(Self(key))
    }

    /// Builds a key from 16 random bytes (5 bits of each are used: 80 bits of entropy).
    pub fn from_random(bytes: [u8; 16]) -> Self {
        let mut key = [b'-'; LICENSE_KEY_LEN];
        for (i, b) in bytes.iter().enumerate() {
            key[i + i / 4] = LICENSE_KEY_ALPHABET[(b & 31) as usize];
        }
        Self(key)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII from the alphabet and '-' is ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for LicenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LicenseKey").field(&self.as_str()).finish()
    }
}

impl fmt::Display for LicenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for LicenseKey {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<LicenseKey> for String {
    fn from(k: LicenseKey) -> Self {
        k.as_str().to_string()
    }
}

/// A secret encrypted with the deployment's master key. The domain only carries it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(pub String);

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealed(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back() {
        for seed in 0u8..=255 {
            let key = LicenseKey::from_random([seed.wrapping_mul(7); 16].map(|b| b ^ seed));
            assert_eq!(LicenseKey::parse(key.as_str()), Ok(key));
        }
    }

    #[test]
    fn the_alphabet_table_holds_exactly_the_alphabet() {
        for b in 0..=255u8 {
            assert_eq!(IN_LICENSE_KEY_ALPHABET[usize::from(b)], LICENSE_KEY_ALPHABET.contains(&b), "{b}");
        }
    }

    #[test]
    fn keys_decode_from_json_text_and_refuse_bad_ones() {
        let key: LicenseKey = serde_json::from_str("\"a3k9-bfwx-7np2-qhdt\"").unwrap();
        assert_eq!(serde_json::to_string(&key).unwrap(), "\"A3K9-BFWX-7NP2-QHDT\"");
        let escaped: LicenseKey = serde_json::from_str("\"A3K9-BFWX-7NP2-QHD\\u0054\"").unwrap();
        assert_eq!(escaped, key);
        let bad = serde_json::from_str::<LicenseKey>("\"I3K9-BFWX-7NP2-QHDT\"").unwrap_err();
        assert!(bad.to_string().contains("license key"), "{bad}");
        assert!(serde_json::from_str::<LicenseKey>("7").is_err());
    }

    #[test]
    fn parse_accepts_lower_case_and_whitespace() {
        let key = LicenseKey::parse("  a3k9-bfwx-7np2-qhdt ").unwrap();
        assert_eq!(key.as_str(), "A3K9-BFWX-7NP2-QHDT");
    }

    #[test]
    fn parse_rejects_ambiguous_symbols_and_bad_shapes() {
        for bad in [
            "A3K9-BFWX-7NP2-QHD",   // short
            "A3K9-BFWX-7NP2-QHDTX", // long
            "I3K9-BFWX-7NP2-QHDT",  // I is excluded
            "O3K9-BFWX-7NP2-QHDT",  // O is excluded
            "13K9-BFWX-7NP2-QHDT",  // 1 is excluded
            "03K9-BFWX-7NP2-QHDT",  // 0 is excluded
            "A3K9BBFWX-7NP2-QHDT",  // separator missing
            "",
        ] {
            assert_eq!(LicenseKey::parse(bad), Err(DomainError::InvalidLicenseKey), "{bad}");
        }
    }
}
