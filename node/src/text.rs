//! Text written into other formats, shared by the client protocols:
//! XML-escaped strings (Subsonic's XML, OPDS's Atom) and RFC 3339 times
//! (Subsonic, Jellyfin, OPDS); and the one way every protocol's search
//! compares text ([`search_fold`]).

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

/// `text` as searches compare it: compatibility-decomposed (NFKD), with
/// combining marks dropped, lower case, so that "zoe" finds "Zoë", "umit"
/// "Ümit" and "ﬁlm" (a ligature) "film".
pub fn search_fold(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization as _;
    use unicode_normalization::char::is_combining_mark;
    text.nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether `text` holds `folded_needle` (already [`search_fold`]ed).
pub fn search_matches(text: &str, folded_needle: &str) -> bool {
    search_fold(text).contains(folded_needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_ignore_accents_case_and_ligatures() {
        let needle = search_fold("zoe");
        assert!(search_matches("Zoë & Ümit", &needle));
        assert!(search_matches("ZOË", &needle));
        assert!(search_matches("Zoë & Ümit", &search_fold("ümit")));
        assert!(search_matches("Zoë & Ümit", &search_fold("UMIT")));
        assert!(search_matches("The ﬁlm", &search_fold("film")));
        assert!(search_matches("Amélie", &search_fold("amélie")));
        assert!(!search_matches("Zed", &needle));
    }

    #[test]
    fn escapes_markup_and_drops_control_characters() {
        assert_eq!(escape_xml("a<b>&\"c'\u{1}\n"), "a&lt;b&gt;&amp;&quot;c&apos;\n");
        assert_eq!(rfc3339_ms(1_000), "1970-01-01T00:00:01.000Z");
    }
}
