//! Text written into other formats, shared by the client protocols:
//! XML-escaped strings (Subsonic's XML, OPDS's Atom) and RFC 3339 times
//! (Subsonic, Jellyfin, OPDS).

/// Appends `text` to `out`, escaped for XML text and attribute values; XML
/// 1.0 cannot hold other control characters, so they are dropped.
pub fn escape_xml_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
}

/// `text`, escaped for XML.
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_xml_into(&mut out, text);
    out
}

/// Milliseconds since the epoch as RFC 3339 in UTC, with milliseconds
/// (`2026-11-26T17:45:21.123Z`).
pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_drops_control_characters() {
        assert_eq!(escape_xml("a<b>&\"c'\u{1}\n"), "a&lt;b&gt;&amp;&quot;c&apos;\n");
        assert_eq!(rfc3339_ms(1_000), "1970-01-01T00:00:01.000Z");
    }
}
