//! Artwork: posters, covers and thumbnails. Each item's primary image is a
//! JPEG of at most [`THUMBNAIL_WIDTH`] pixels across, made by ffmpeg from a
//! folder image (`poster.jpg`, `cover.jpg`, …), a cover embedded in the
//! file, a photo itself, or a frame of a video, and kept in the store.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use omega_consensus::model::ItemKind;

/// Widest thumbnail made.
pub const THUMBNAIL_WIDTH: u32 = 640;
/// ffmpeg runs at most this long per image.
const DEADLINE: Duration = Duration::from_secs(30);
/// Largest image kept.
const IMAGE_MAX_BYTES: u64 = 16 << 20;

/// Folder images that name an item's art, best first, by the kind of item
/// the folder holds (Jellyfin's and Kodi's names).
pub fn folder_names(kind: ItemKind) -> &'static [&'static str] {
    match kind {
        ItemKind::Movie | ItemKind::Series => &["poster", "folder", "cover", "default", "movie", "show"],
        ItemKind::Album | ItemKind::Audiobook => &["cover", "folder", "front", "album", "albumart"],
        ItemKind::Season => &["poster", "folder", "cover"],
        _ => &[],
    }
}

/// The images among a folder's file names, as (lowercase stem, name).
pub fn images(names: &[String]) -> Vec<(String, String)> {
    names
        .iter()
        .filter(|name| {
            super::naming::extension(name)
                .is_some_and(|extension| matches!(extension.as_str(), "jpg" | "jpeg" | "png" | "webp"))
        })
        .map(|name| (super::naming::stem(name).to_lowercase(), name.clone()))
        .collect()
}

/// The folder image among `images` (from [`images`]) for an item of
/// `kind`, or `<stem>-poster.jpg` / `<stem>.jpg` beside a video file.
/// `generic`: the folder belongs to this item alone, so `folder.jpg` and
/// the like name its art.
pub fn find_in_folder(
    kind: ItemKind,
    folder: &Path,
    images: &[(String, String)],
    stem: Option<&str>,
    generic: bool,
) -> Option<PathBuf> {
    if images.is_empty() {
        return None;
    }
    let mut wanted: Vec<String> = Vec::new();
    if let Some(stem) = stem {
        wanted.push(format!("{}-poster", stem.to_lowercase()));
        wanted.push(stem.to_lowercase());
    }
    if generic {
        wanted.extend(folder_names(kind).iter().map(|name| (*name).to_owned()));
    }
    wanted.iter().find_map(|want| {
        images
            .iter()
            .find(|(image_stem, _)| image_stem == want)
            .map(|(_, name)| folder.join(name))
    })
}

/// Where an item's art comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An image file (folder art, a photo).
    Image(PathBuf),
    /// The cover embedded in an audio file.
    Embedded(PathBuf),
    /// A frame of a video, `at_ms` in.
    Frame {
        /// The video.
        path: PathBuf,
        /// Where.
        at_ms: u64,
    },
}

/// Makes a JPEG thumbnail from `source` with ffmpeg.
pub fn thumbnail(source: &Source) -> Result<Vec<u8>, String> {
    let mut command = Command::new("ffmpeg");
    command.args(["-v", "error", "-nostdin"]);
    let path = match source {
        Source::Image(path) | Source::Embedded(path) => path,
        Source::Frame { path, at_ms } => {
            command.args(["-ss", &format!("{}.{:03}", at_ms / 1000, at_ms % 1000)]);
            path
        }
    };
    command
        .arg("-i")
        .arg(path)
        .args(["-map", "0:v:0", "-frames:v", "1", "-vf"])
        .arg(format!("scale='min({THUMBNAIL_WIDTH},iw)':-2"))
        .args(["-c:v", "mjpeg", "-q:v", "4", "-f", "image2pipe", "pipe:1"]);
    let bytes = super::subprocess::run(command, DEADLINE, IMAGE_MAX_BYTES)?;
    if bytes.len() < 4 || !bytes.starts_with(&[0xff, 0xd8]) {
        return Err("ffmpeg made no image".into());
    }
    Ok(bytes)
}

/// Where in a video its thumbnail frame is taken: a tenth of the way in,
/// at most five minutes (past intros, before spoilers).
pub fn frame_time_ms(duration_ms: Option<u64>) -> u64 {
    duration_ms.map_or(0, |duration| (duration / 10).min(300_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_art_prefers_the_file_own_poster() {
        let names: Vec<String> = ["Alien (1979).mkv", "folder.jpg", "alien (1979)-poster.JPG", "notes.txt"]
            .iter()
            .map(|name| (*name).to_owned())
            .collect();
        let siblings = images(&names);
        let found = find_in_folder(ItemKind::Movie, Path::new("/m"), &siblings, Some("Alien (1979)"), true);
        assert_eq!(found, Some(PathBuf::from("/m/alien (1979)-poster.JPG")));
        let found = find_in_folder(ItemKind::Album, Path::new("/a"), &siblings, None, true);
        assert_eq!(found, Some(PathBuf::from("/a/folder.jpg")));
        assert_eq!(
            find_in_folder(ItemKind::Album, Path::new("/a"), &siblings, None, false),
            None
        );
        assert_eq!(
            find_in_folder(ItemKind::Track, Path::new("/a"), &siblings, None, true),
            None
        );
    }

    #[test]
    fn frames_are_taken_early() {
        assert_eq!(frame_time_ms(None), 0);
        assert_eq!(frame_time_ms(Some(60_000)), 6_000);
        assert_eq!(frame_time_ms(Some(7_200_000)), 300_000);
    }
}
