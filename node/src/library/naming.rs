//! Naming conventions shared by Jellyfin, Plex and Kodi: `Title (Year)`,
//! `Show S01E02`, `Season 01` / `Specials`, `NN Title` for tracks.

/// Video file extensions.
pub const VIDEO: &[&str] = &[
    "mkv", "mp4", "m4v", "avi", "mov", "webm", "ts", "m2ts", "wmv", "mpg", "mpeg",
];
/// Audio file extensions.
pub const AUDIO: &[&str] = &[
    "mp3", "flac", "m4a", "m4b", "ogg", "opus", "wav", "aac", "wma", "alac", "aiff",
];
/// Book file extensions.
pub const BOOK: &[&str] = &["epub", "pdf", "cbz", "cbr", "mobi", "azw3"];
/// Image file extensions.
pub const IMAGE: &[&str] = &["jpg", "jpeg", "png", "heic", "webp", "gif", "tif", "tiff"];

/// The lower-cased extension of `name`, if any.
pub fn extension(name: &str) -> Option<String> {
    let (stem, extension) = name.rsplit_once('.')?;
    (!stem.is_empty()).then(|| extension.to_ascii_lowercase())
}

/// The name without its extension.
pub fn stem(name: &str) -> &str {
    name.rsplit_once('.')
        .filter(|(stem, _)| !stem.is_empty())
        .map_or(name, |(stem, _)| stem)
}

fn is_year(text: &str) -> Option<u16> {
    let year: u16 = text.parse().ok()?;
    (text.len() == 4 && (1880..=2100).contains(&year)).then_some(year)
}

/// Splits `Title (2010)`, `Title.2010.1080p.BluRay` or `Title 2010` into a
/// clean title and a year.
pub fn title_and_year(raw: &str) -> (String, Option<u16>) {
    let trimmed = raw.trim();
    if let Some(open) = trimmed.rfind('(')
        && let Some(year) = trimmed[open + 1..].strip_suffix(')').and_then(is_year)
    {
        return (clean(&trimmed[..open]), Some(year));
    }
    // Scene style: the first year-like token ends the title.
    let tokens: Vec<&str> = trimmed
        .split(['.', ' ', '_'])
        .filter(|token| !token.is_empty())
        .collect();
    for (index, token) in tokens.iter().enumerate().skip(1) {
        let token = token.trim_matches(|character| character == '[' || character == ']');
        if let Some(year) = is_year(token) {
            return (clean(&tokens[..index].join(" ")), Some(year));
        }
    }
    (clean(trimmed), None)
}

/// Replaces dots and underscores used as spaces, and trims.
pub fn clean(raw: &str) -> String {
    let spaced = if raw.contains(' ') {
        raw.to_owned()
    } else {
        raw.replace(['.', '_'], " ")
    };
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A title for sorting: lower case, without a leading article.
pub fn sort_title(title: &str) -> String {
    let lower = title.to_lowercase();
    for article in ["the ", "a ", "an "] {
        if let Some(rest) = lower.strip_prefix(article)
            && !rest.is_empty()
        {
            return rest.to_owned();
        }
    }
    lower
}

/// Season and episode numbers of `S01E02`, `s1e2`, `1x02`; a multi-episode
/// file (`S01E01E02`, `S01E01-E02`) gives its last episode too.
pub fn episode_numbers(name: &str) -> Option<(u32, u32, Option<u32>)> {
    episode_token(name).map(|(season, episode, last, _)| (season, episode, last))
}

/// Words that start a release's tags in a file name (`1080p`, `WEB-DL`,
/// `x264`…): an episode title ends before them.
const RELEASE_TAGS: &[&str] = &[
    "web", "webrip", "web-dl", "webdl", "bluray", "blu-ray", "bdrip", "brrip", "hdtv", "dvdrip", "hdrip", "x264",
    "x265", "h264", "h265", "hevc", "avc", "xvid", "aac", "ac3", "dts", "10bit", "proper", "repack", "internal", "4k",
    "uhd", "hdr", "remux",
];

/// The episode title a file name gives after its `S01E02` (or `1x02`)
/// token, release tags cut off: `Night Harbor - S01E01 - Pilot` gives
/// `Pilot`, `Show.S01E02.The.Key.1080p.WEB` gives `The Key`.
pub fn episode_title(stem: &str) -> Option<String> {
    let (_, _, _, end) = episode_token(stem)?;
    let rest = clean(stem.get(end..)?.trim_start_matches([' ', '-', '.', '_', ':']));
    let words: Vec<&str> = rest
        .split_whitespace()
        .take_while(|word| {
            let lower = word.to_ascii_lowercase();
            let resolution = lower
                .strip_suffix('p')
                .is_some_and(|digits| (3..=4).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()));
            !resolution && !RELEASE_TAGS.contains(&lower.as_str())
        })
        .collect();
    let title = words.join(" ");
    let title = title.trim_matches(|c: char| c == '-' || c.is_whitespace());
    (!title.is_empty()).then(|| title.to_owned())
}

/// [`episode_numbers`] and the byte offset just past the token.
fn episode_token(name: &str) -> Option<(u32, u32, Option<u32>, usize)> {
    let lower = name.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let digits = |from: usize| -> (Option<u32>, usize) {
        let end = bytes[from..]
            .iter()
            .position(|byte| !byte.is_ascii_digit())
            .map_or(bytes.len(), |offset| from + offset);
        let value = (end > from && end - from <= 4)
            .then(|| lower[from..end].parse().ok())
            .flatten();
        (value, end)
    };
    for start in 0..bytes.len() {
        let boundary = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        if boundary && bytes[start] == b's' {
            let (Some(season), after_season) = digits(start + 1) else {
                continue;
            };
            if bytes.get(after_season) != Some(&b'e') {
                continue;
            }
            let (Some(episode), mut cursor) = digits(after_season + 1) else {
                continue;
            };
            let mut last = None;
            loop {
                let next = match (bytes.get(cursor), bytes.get(cursor + 1)) {
                    (Some(b'e'), _) => cursor + 1,
                    (Some(b'-'), Some(b'e')) => cursor + 2,
                    _ => break,
                };
                let (Some(value), end) = digits(next) else { break };
                last = Some(value);
                cursor = end;
            }
            return Some((season, episode, last, cursor));
        }
        if boundary
            && bytes[start].is_ascii_digit()
            && let (Some(season), after) = digits(start)
            && bytes.get(after) == Some(&b'x')
            && let (Some(episode), end) = digits(after + 1)
        {
            return Some((season, episode, None, end));
        }
    }
    None
}

/// The season of a folder name: `Season 1`, `Season 01`, `S01`, `Specials`
/// (season 0).
pub fn season_folder(name: &str) -> Option<u32> {
    let lower = name.trim().to_ascii_lowercase();
    if lower == "specials" || lower == "extras" {
        return Some(0);
    }
    let number = lower
        .strip_prefix("season")
        .or_else(|| lower.strip_prefix('s'))?
        .trim_start_matches([' ', '_', '.']);
    number.parse().ok()
}

/// Track number and title of `01 Title`, `01 - Title`, `1. Title`.
pub fn track(stem: &str) -> (Option<u32>, String) {
    let digits: String = stem.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() || digits.len() > 3 {
        return (None, clean(stem));
    }
    let rest = stem[digits.len()..].trim_start_matches([' ', '-', '.', '_']);
    let title = if rest.is_empty() { stem.to_owned() } else { clean(rest) };
    (digits.parse().ok(), title)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_and_years() {
        assert_eq!(title_and_year("Alien (1979)"), ("Alien".into(), Some(1979)));
        assert_eq!(
            title_and_year("Blade.Runner.1982.1080p.BluRay"),
            ("Blade Runner".into(), Some(1982))
        );
        assert_eq!(
            title_and_year("2001 A Space Odyssey (1968)"),
            ("2001 A Space Odyssey".into(), Some(1968))
        );
        assert_eq!(title_and_year("Heat"), ("Heat".into(), None));
        assert_eq!(sort_title("The Matrix"), "matrix");
    }

    #[test]
    fn episode_titles_follow_the_episode_token() {
        assert_eq!(episode_title("Night Harbor - S01E01 - Pilot").as_deref(), Some("Pilot"));
        assert_eq!(
            episode_title("Show.S01E02.The.Key.1080p.WEB.x264").as_deref(),
            Some("The Key")
        );
        assert_eq!(episode_title("Show 1x03 Dark Water").as_deref(), Some("Dark Water"));
        assert_eq!(episode_title("Show S01E02-E03 Two Parts").as_deref(), Some("Two Parts"));
        assert_eq!(episode_title("Show S01E02"), None);
        assert_eq!(episode_title("Show S01E02 - 720p HDTV"), None);
        assert_eq!(episode_title("Show - Zoë S01E04 - Café"), Some("Café".to_owned()));
        assert_eq!(episode_title("No numbers here"), None);
    }

    #[test]
    fn episodes_and_seasons() {
        assert_eq!(episode_numbers("Show S01E02.mkv"), Some((1, 2, None)));
        assert_eq!(episode_numbers("show.s2e10.720p"), Some((2, 10, None)));
        assert_eq!(episode_numbers("Show S01E01E02"), Some((1, 1, Some(2))));
        assert_eq!(episode_numbers("Show S01E01-E03"), Some((1, 1, Some(3))));
        assert_eq!(episode_numbers("Show 3x04"), Some((3, 4, None)));
        assert_eq!(episode_numbers("Series finale"), None);
        assert_eq!(season_folder("Season 01"), Some(1));
        assert_eq!(season_folder("Specials"), Some(0));
        assert_eq!(season_folder("Behind the scenes"), None);
    }

    #[test]
    fn tracks() {
        assert_eq!(track("01 Intro"), (Some(1), "Intro".into()));
        assert_eq!(track("12 - Long Way"), (Some(12), "Long Way".into()));
        assert_eq!(track("Interlude"), (None, "Interlude".into()));
    }
}
