//! Music grouped by its tags: when a track's tags name an album artist or
//! album that its folders do not, the tags win (as in Jellyfin and
//! Navidrome), so that a compilation in one folder or an album split over
//! folders groups as its tags say. Parents left without tracks are dropped.

use std::collections::{BTreeMap, BTreeSet};

use omega_consensus::model::{ItemKind, ItemWrite};

use super::enrich::IMAGE_PRIMARY;
use super::naming;

/// The artist and album keys of a library's music, as the planner forms them.
pub fn artist_key(library: u64, artist: &str) -> String {
    format!("artist:{library}:{}", artist.to_lowercase())
}

/// The key of `album` by the artist whose key is `artist_key`.
pub fn album_key(artist_key: &str, album: &str) -> String {
    format!("{artist_key}/album:{}", album.to_lowercase())
}

fn tag<'a>(item: &'a ItemWrite, name: &str) -> Option<&'a str> {
    item.metadata
        .get(name)
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
}

/// Re-parents tracks by their tags; creates the artists and albums they
/// name; drops artists and albums left empty. Parents stay before children.
pub fn group_by_tags(items: &mut Vec<ItemWrite>) {
    let mut parents: BTreeMap<String, ItemWrite> = BTreeMap::new();
    let mut tracks = Vec::new();
    let mut others = Vec::new();
    for item in items.drain(..) {
        match item.kind {
            ItemKind::Artist | ItemKind::Album => {
                parents.insert(item.key.clone(), item);
            }
            ItemKind::Track => tracks.push(item),
            _ => others.push(item),
        }
    }
    for track in &mut tracks {
        let Some(old_album) = track.parent_key.clone() else {
            continue;
        };
        let old = parents.get(&old_album).cloned();
        let artist_name = tag(track, "tag_album_artist")
            .or_else(|| tag(track, "tag_artist"))
            .map(str::to_owned);
        let album_name = tag(track, "tag_album").map(str::to_owned);
        if let Some(number) = tag(track, "tag_track").and_then(|text| text.split('/').next()?.trim().parse().ok())
            && track.index.is_none()
        {
            track.index = Some(number);
        }
        let (Some(artist_name), Some(album_name)) = (artist_name, album_name) else {
            continue;
        };
        let library = track.library;
        let new_artist = artist_key(library, &artist_name);
        let new_album = album_key(&new_artist, &album_name);
        if new_album == old_album {
            continue;
        }
        parents.entry(new_artist.clone()).or_insert_with(|| {
            let title = naming::clean(&artist_name);
            parent(track, new_artist.clone(), ItemKind::Artist, None, title)
        });
        let album = parents.entry(new_album.clone()).or_insert_with(|| {
            let mut album = parent(
                track,
                new_album.clone(),
                ItemKind::Album,
                Some(new_artist.clone()),
                album_name.clone(),
            );
            album.year = tag(track, "tag_date")
                .and_then(|date| date.get(..4)?.parse().ok())
                .or_else(|| old.as_ref().and_then(|old| old.year));
            album
        });
        // The folder's cover is still this album's cover.
        if !album.metadata.contains_key(IMAGE_PRIMARY)
            && let Some(image) = old.as_ref().and_then(|old| old.metadata.get(IMAGE_PRIMARY))
        {
            album.metadata.insert(IMAGE_PRIMARY.into(), image.clone());
        }
        track.parent_key = Some(new_album);
    }
    // Keep parents that still have children.
    let used_albums: BTreeSet<&str> = tracks.iter().filter_map(|track| track.parent_key.as_deref()).collect();
    let used_artists: BTreeSet<String> = parents
        .values()
        .filter(|item| item.kind == ItemKind::Album && used_albums.contains(item.key.as_str()))
        .filter_map(|album| album.parent_key.clone())
        .collect();
    let kept: Vec<ItemWrite> = parents
        .into_values()
        .filter(|item| match item.kind {
            ItemKind::Album => used_albums.contains(item.key.as_str()),
            _ => used_artists.contains(&item.key),
        })
        .collect();
    let (artists, albums): (Vec<ItemWrite>, Vec<ItemWrite>) =
        kept.into_iter().partition(|item| item.kind == ItemKind::Artist);
    items.extend(artists);
    items.extend(albums);
    items.extend(others);
    items.extend(tracks);
}

fn parent(track: &ItemWrite, key: String, kind: ItemKind, parent_key: Option<String>, title: String) -> ItemWrite {
    super::scan::new_item(track.library, key, kind, parent_key, title)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(key: &str, album: &str, tags: &[(&str, &str)]) -> ItemWrite {
        let mut item = crate::library::scan::new_item(1, key.into(), ItemKind::Track, Some(album.into()), key.into());
        item.metadata = tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        item
    }

    #[test]
    fn tags_regroup_a_compilation_folder() {
        let folder_artist = artist_key(1, "various");
        let folder_album = album_key(&folder_artist, "mix");
        let mut planned_album = parent(
            &track("x", "y", &[]),
            folder_album.clone(),
            ItemKind::Album,
            Some(folder_artist.clone()),
            "Mix".into(),
        );
        planned_album.metadata.insert(IMAGE_PRIMARY.into(), "cover".into());
        let mut items = vec![
            parent(
                &track("x", "y", &[]),
                folder_artist.clone(),
                ItemKind::Artist,
                None,
                "Various".into(),
            ),
            planned_album,
            track(
                "a",
                &folder_album,
                &[
                    ("tag_artist", "Ada"),
                    ("tag_album", "Night Songs"),
                    ("tag_track", "2/9"),
                ],
            ),
            track(
                "b",
                &folder_album,
                &[
                    ("tag_album_artist", "Ada"),
                    ("tag_artist", "Ada feat. Bo"),
                    ("tag_album", "Night Songs"),
                ],
            ),
        ];
        group_by_tags(&mut items);
        let kinds: Vec<ItemKind> = items.iter().map(|item| item.kind).collect();
        assert_eq!(
            kinds,
            [ItemKind::Artist, ItemKind::Album, ItemKind::Track, ItemKind::Track]
        );
        assert_eq!(items[0].title, "Ada");
        assert_eq!(items[1].title, "Night Songs");
        assert_eq!(items[1].metadata.get(IMAGE_PRIMARY).map(String::as_str), Some("cover"));
        assert!(
            items[2..]
                .iter()
                .all(|track| track.parent_key.as_deref() == Some(items[1].key.as_str()))
        );
        assert_eq!(items[2].index, Some(2));
    }

    #[test]
    fn tracks_without_tags_keep_their_folders() {
        let artist = artist_key(1, "nova");
        let album = album_key(&artist, "first");
        let mut items = vec![
            parent(
                &track("x", "y", &[]),
                artist.clone(),
                ItemKind::Artist,
                None,
                "Nova".into(),
            ),
            parent(
                &track("x", "y", &[]),
                album.clone(),
                ItemKind::Album,
                Some(artist),
                "First".into(),
            ),
            track("a", &album, &[]),
        ];
        let before = items.clone();
        group_by_tags(&mut items);
        assert_eq!(items, before);
    }
}
