//! Files beside a media file: Kodi NFO metadata and external subtitles.

use std::io::Read;
use std::path::Path;

/// Subtitle file extensions.
pub const SUBTITLES: &[&str] = &["srt", "ass", "ssa", "vtt", "sub"];
/// Largest NFO read.
const NFO_MAX_BYTES: u64 = 1 << 20;

/// What a Kodi NFO says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Nfo {
    /// `<title>`.
    pub title: Option<String>,
    /// `<year>` (or the year of `<premiered>`).
    pub year: Option<u16>,
    /// `<plot>`.
    pub plot: Option<String>,
}

/// The text of the first `<tag>…</tag>`, entities decoded.
fn element(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    let text = xml[start..end]
        .trim()
        .trim_start_matches("<![CDATA[")
        .trim_end_matches("]]>")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    let text: String = text.chars().take(8192).collect();
    (!text.is_empty()).then_some(text)
}

/// Reads an NFO; `None` when missing or not XML-ish text.
pub fn read_nfo(path: &Path) -> Option<Nfo> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(NFO_MAX_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    if !text.contains('<') {
        return None;
    }
    let year = element(&text, "year")
        .or_else(|| element(&text, "premiered").map(|date| date.chars().take(4).collect()))
        .and_then(|year| year.parse().ok());
    Some(Nfo {
        title: element(&text, "title"),
        year,
        plot: element(&text, "plot"),
    })
}

/// External subtitles beside `file_name` among `siblings` (file names in
/// the same folder): `(language, file name)`; `und` when unnamed.
pub fn subtitles<'a>(file_name: &str, siblings: &'a [String]) -> Vec<(String, &'a str)> {
    let stem = super::naming::stem(file_name);
    siblings
        .iter()
        .filter_map(|sibling| {
            let extension = super::naming::extension(sibling)?;
            if !SUBTITLES.contains(&extension.as_str()) {
                return None;
            }
            let middle = sibling.strip_prefix(stem)?.strip_suffix(&format!(".{extension}"))?;
            let language = match middle {
                "" => "und".to_owned(),
                tagged => tagged.strip_prefix('.')?.split('.').next()?.to_ascii_lowercase(),
            };
            Some((language, sibling.as_str()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfo_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("movie.nfo");
        std::fs::write(
            &path,
            "<?xml version=\"1.0\"?><movie><title>Heat &amp; Dust</title><year>1983</year>\
             <plot><![CDATA[Two women, two eras.]]></plot><actor><title>x</title></actor></movie>",
        )
        .unwrap();
        let nfo = read_nfo(&path).unwrap();
        assert_eq!(nfo.title.as_deref(), Some("Heat & Dust"));
        assert_eq!(nfo.year, Some(1983));
        assert_eq!(nfo.plot.as_deref(), Some("Two women, two eras."));
        std::fs::write(&path, "https://www.imdb.com/title/tt0085664/").unwrap();
        assert_eq!(read_nfo(&path), None);
    }

    #[test]
    fn subtitles_by_language() {
        let siblings: Vec<String> = [
            "Film.mkv",
            "Film.srt",
            "Film.en.srt",
            "Film.fr.forced.ass",
            "Other.srt",
            "Film.nfo",
        ]
        .iter()
        .map(|name| name.to_string())
        .collect();
        let found = subtitles("Film.mkv", &siblings);
        assert_eq!(
            found,
            vec![
                ("und".to_owned(), "Film.srt"),
                ("en".to_owned(), "Film.en.srt"),
                ("fr".to_owned(), "Film.fr.forced.ass")
            ]
        );
    }
}
