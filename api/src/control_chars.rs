//! The one rule for control characters in what clients send, applied at the edge so no layer
//! below (store, logs, projections, SDK parsers) ever sees them.
//!
//! - Identifiers (SDK auth fields, object keys, path segments, query parameters) must hold no
//!   control character at all: U+0000–U+001F, U+007F and U+0080–U+009F.
//! - Free text in JSON bodies (names, labels, variable values, ...) may hold tab, line feed and
//!   carriage return, and no other control character.

use serde_json::Value;

/// Whether `text`, an identifier, holds a control character.
pub fn in_identifier(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// Whether `text`, free text, holds a control character other than tab, LF and CR.
pub fn in_text(text: &str) -> bool {
    text.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

/// The path (`licenses[0].label`, `variables.motd`) of the first string or key in `value`
/// breaking the rule, or `None` when there is none.
pub fn first_in(value: &Value) -> Option<String> {
    find(value, String::new())
}

fn find(value: &Value, path: String) -> Option<String> {
    match value {
        Value::String(text) if in_text(text) => Some(path),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| find(item, format!("{path}[{i}]"))),
        Value::Object(object) => object.iter().find_map(|(key, item)| {
            // The key is echoed in the error, so a hostile one is shown escaped.
            let shown = key.escape_debug().to_string();
            let path = if path.is_empty() { shown } else { format!("{path}.{shown}") };
            if in_identifier(key) {
                Some(path)
            } else {
                find(item, path)
            }
        }),
        _ => None,
    }
}

/// The query parameter or path segment of `uri` whose percent-decoded text holds a control
/// character: `query parameter 'name'` or `path`.
pub fn in_uri(uri: &axum::http::Uri) -> Option<String> {
    if in_identifier(&percent_decoded(uri.path())) {
        return Some("path".into());
    }
    let query = uri.query()?;
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decoded(name);
        let shown = name.escape_debug().to_string();
        (in_identifier(&name) || in_identifier(&percent_decoded(value))).then(|| format!("query parameter '{shown}'"))
    })
}

/// `%XX` escapes decoded (invalid ones kept as they are); invalid UTF-8 is replaced, which
/// cannot hide a control character.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_offending_string_or_key_is_named() {
        assert_eq!(first_in(&json!({ "name": "a\u{0}b" })).as_deref(), Some("name"));
        assert_eq!(
            first_in(&json!({ "licenses": [{}, { "label": "\u{1b}[31m" }] })).as_deref(),
            Some("licenses[1].label")
        );
        assert_eq!(first_in(&json!({ "variables": { "k\u{0}": 1 } })).as_deref(), Some("variables.k\\0"));
        assert_eq!(first_in(&json!({ "v": { "x": "\u{85}" } })).as_deref(), Some("v.x"));
        assert_eq!(first_in(&json!({ "motd": "line 1\r\n\tline 2", "n": 1, "ok": "é ✓" })), None);
        assert!(in_identifier("hw\tid") && !in_text("hw\tid"));
    }

    #[test]
    fn escaped_control_characters_in_uris_are_found() {
        let uri = |s: &str| s.parse::<axum::http::Uri>().unwrap();
        assert_eq!(in_uri(&uri("/v1/licenses/AB%00CD")).as_deref(), Some("path"));
        assert_eq!(in_uri(&uri("/v1/licenses?appId=x&search=a%00")).as_deref(), Some("query parameter 'search'"));
        assert_eq!(in_uri(&uri("/v1/licenses?a%1b=1")).as_deref(), Some("query parameter 'a\\u{1b}'"));
        assert_eq!(in_uri(&uri("/v1/x?q=%C2%85")).as_deref(), Some("query parameter 'q'"));
        assert_eq!(in_uri(&uri("/v1/licenses?search=a%20b%zz&x=%E2%9C%93")), None);
    }
}
