//! Whether text is an `http`/`https` address a browser can open as a link.
//!
//! Stored links are rendered into pages and e-mails, and read back by API clients that parse
//! them; text that only starts like an address (`https://[`, `https://a b`) breaks those readers,
//! so it is refused when written. The check follows RFC 3986's shape for these two schemes,
//! without user information (a `user@` before the host is a phishing device, not a need).

use std::net::Ipv6Addr;

/// The shape of a web address as a regular expression, for the OpenAPI document.
pub const WEB_ADDRESS_PATTERN: &str = concat!(
    r"^https?://(\[[0-9A-Fa-f:.]+\]|([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*",
    r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?)(:[0-9]{1,5})?",
    r"([/?#]([!#$&-;=?-\[\]_a-z~]|%[0-9A-Fa-f]{2})*)?$"
);

const MAX_HOST_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// `true` when `url` is `http://` or `https://`, a host (name, IPv4 or bracketed IPv6), an
/// optional port, then an optional path, query and fragment made of URL characters. The same
/// shape as [`WEB_ADDRESS_PATTERN`], plus what a pattern cannot say: a valid IPv6 address, a
/// port up to 65535, a host name of at most 253 characters.
pub fn is_web_address(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
        return false;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    authority_is_valid(authority) && tail_is_valid(tail)
}

fn authority_is_valid(authority: &str) -> bool {
    let (host_ok, port) = match authority.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((inside, after)) => (inside.parse::<Ipv6Addr>().is_ok(), after),
            None => return false,
        },
        None => {
            let end = authority.find(':').unwrap_or(authority.len());
            (host_name_is_valid(&authority[..end]), &authority[end..])
        }
    };
    host_ok && (port.is_empty() || port.strip_prefix(':').is_some_and(port_is_valid))
}

fn port_is_valid(port: &str) -> bool {
    port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n))
}

/// Dot-separated labels of ASCII letters, digits, `-` and `_` (an internationalised name in its
/// `xn--` form), none empty except a final root dot, none starting or ending with `-`. Dotted
/// IPv4 is a special case of this shape.
fn host_name_is_valid(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_LEN
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Path, query and fragment: visible ASCII without the characters RFC 3986 excludes, and every
/// `%` starts a two-digit hex escape (other characters are given percent-encoded).
fn tail_is_valid(tail: &str) -> bool {
    let bytes = tail.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| match b {
        b'%' => bytes.get(i + 1..i + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)),
        b'<' | b'>' | b'"' | b'{' | b'}' | b'|' | b'\\' | b'^' | b'`' => false,
        b => b.is_ascii_graphic(),
    })
}

#[cfg(test)]
mod tests {
    use super::is_web_address;

    #[test]
    fn addresses_a_browser_opens_pass() {
        for good in [
            "https://help.example.com",
            "https://help.example.com/",
            "http://localhost:8080/support?topic=keys#reset",
            "https://192.0.2.7/help",
            "https://[2001:db8::1]/help",
            "https://[::1]:8443",
            "https://example.com./a%20b",
            "https://xn--bcher-kva.example/hilfe",
            "https://example.com?q=1",
        ] {
            assert!(is_web_address(good), "{good}");
        }
    }

    #[test]
    fn text_that_only_starts_like_an_address_is_refused() {
        for bad in [
            "https://",
            "https://[",
            "https://[::1",
            "https://[not-v6]/",
            "https://[::1]x",
            "http://:80",
            "https://example.com:",
            "https://example.com:0",
            "https://example.com:65536",
            "https://example.com:http",
            "https://user@example.com",
            "https://exa mple.com",
            "https://-example.com",
            "https://example..com",
            "https://example.com/a b",
            "https://example.com/<script>",
            "https://example.com/%zz",
            "https://example.com/%4",
            "ftp://example.com",
            "javascript:alert(1)",
            "https://example.com/\u{7}",
            "https://bücher.example",
            "https://example.com/bücher",
        ] {
            assert!(!is_web_address(bad), "{bad}");
        }
        let long_label = format!("https://{}.example", "a".repeat(64));
        assert!(!is_web_address(&long_label));
    }
}
