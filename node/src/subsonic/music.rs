//! The catalog's music as Subsonic sees it: the artists, albums and tracks
//! of the music libraries a user may see, and their Subsonic JSON
//! (`ArtistID3`, `AlbumID3`, `Child`). Ids are the catalog's ids, as text.

use std::collections::HashMap;

use omega_consensus::model::{Favorite, Item, ItemKind, Library, LibraryKind, WatchState};
use omega_consensus::state_machine::read;
use serde_json::{Map, Value, json};

use super::Failure;
use crate::api::Caller;
use crate::api::libraries::can_see;
use crate::library::enrich::IMAGE_PRIMARY;
use crate::text::rfc3339_ms;

/// The music a user may see (optionally of one library).
pub(super) struct Music {
    /// Music libraries, by id.
    pub(super) libraries: Vec<Library>,
    /// Every artist, album and track, by id.
    pub(super) items: HashMap<u64, Item>,
    /// The user's watch states, by item.
    pub(super) watch: HashMap<u64, WatchState>,
    /// The user's favourites, by item.
    pub(super) favorites: HashMap<u64, Favorite>,
}

impl Music {
    /// Loads the music of the libraries `caller` may see; only `folder`'s
    /// when given.
    pub(super) fn load(tables: &omega_consensus::Db, caller: &Caller, folder: Option<u64>) -> Result<Music, Failure> {
        let libraries: Vec<Library> = read::libraries(tables)?
            .into_iter()
            .filter(|library| library.kind == LibraryKind::Music && can_see(caller, library.id))
            .filter(|library| folder.is_none_or(|id| id == library.id))
            .collect();
        if let Some(id) = folder
            && libraries.is_empty()
        {
            return Err(Failure::not_found(&format!("music folder {id}")));
        }
        let mut items = HashMap::new();
        for library in &libraries {
            for item in read::library_items(tables, library.id)? {
                if matches!(item.fields.kind, ItemKind::Artist | ItemKind::Album | ItemKind::Track) {
                    items.insert(item.id, item);
                }
            }
        }
        let watch = read::watch_states(tables, caller.user.id)?.into_iter().collect();
        let favorites = read::favorites(tables, caller.user.id)?.into_iter().collect();
        Ok(Music {
            libraries,
            items,
            watch,
            favorites,
        })
    }

    /// Items of `kind`, in title order.
    pub(super) fn of_kind(&self, kind: ItemKind) -> Vec<&Item> {
        let mut items: Vec<&Item> = self.items.values().filter(|item| item.fields.kind == kind).collect();
        items.sort_by(|a, b| (&a.fields.sort_title, a.id).cmp(&(&b.fields.sort_title, b.id)));
        items
    }

    /// The children of `parent`, by number then title.
    pub(super) fn children(&self, parent: u64) -> Vec<&Item> {
        let mut items: Vec<&Item> = self.items.values().filter(|item| item.parent == Some(parent)).collect();
        items.sort_by(|a, b| {
            (disc(a), a.fields.index.unwrap_or(u32::MAX), &a.fields.sort_title, a.id).cmp(&(
                disc(b),
                b.fields.index.unwrap_or(u32::MAX),
                &b.fields.sort_title,
                b.id,
            ))
        });
        items
    }

    /// The item `id` if it is of `kind`.
    pub(super) fn get(&self, id: &str, kind: ItemKind, what: &str) -> Result<&Item, Failure> {
        id.parse::<u64>()
            .ok()
            .and_then(|id| self.items.get(&id))
            .filter(|item| item.fields.kind == kind)
            .ok_or_else(|| Failure::not_found(what))
    }

    fn parent(&self, item: &Item) -> Option<&Item> {
        item.parent.and_then(|id| self.items.get(&id))
    }

    /// An item whose image stands for `item`: its own, else its parent's.
    fn cover(&self, item: &Item) -> Option<String> {
        if item.fields.metadata.contains_key(IMAGE_PRIMARY) {
            return Some(item.id.to_string());
        }
        self.parent(item)
            .filter(|parent| parent.fields.metadata.contains_key(IMAGE_PRIMARY))
            .map(|parent| parent.id.to_string())
    }

    fn marks(&self, item: &Item, object: &mut Map<String, Value>) {
        if let Some(favorite) = self.favorites.get(&item.id) {
            object.insert("starred".into(), Value::String(rfc3339_ms(favorite.since_ms)));
        }
        if let Some(watch) = self.watch.get(&item.id) {
            object.insert("playCount".into(), json!(watch.play_count));
            if watch.play_count > 0 {
                object.insert("played".into(), Value::String(rfc3339_ms(watch.updated_ms)));
            }
        }
    }

    /// `ArtistID3`, `AlbumID3` or `Child`, by the item's kind.
    pub(super) fn value(&self, item: &Item) -> Value {
        match item.fields.kind {
            ItemKind::Artist => self.artist(item),
            ItemKind::Album => self.album(item),
            _ => self.song(item),
        }
    }

    /// `ArtistID3`.
    pub(super) fn artist(&self, artist: &Item) -> Value {
        let mut object = Map::new();
        object.insert("id".into(), Value::String(artist.id.to_string()));
        object.insert("name".into(), Value::String(artist.fields.title.clone()));
        object.insert("albumCount".into(), json!(self.children(artist.id).len()));
        if let Some(cover) = self.cover(artist) {
            object.insert("coverArt".into(), Value::String(cover));
        }
        self.marks(artist, &mut object);
        Value::Object(object)
    }

    /// `AlbumID3`.
    pub(super) fn album(&self, album: &Item) -> Value {
        let tracks = self.children(album.id);
        let mut object = Map::new();
        object.insert("id".into(), Value::String(album.id.to_string()));
        object.insert("name".into(), Value::String(album.fields.title.clone()));
        object.insert("songCount".into(), json!(tracks.len()));
        let duration: u64 = tracks.iter().map(|track| duration_s(track)).sum();
        object.insert("duration".into(), json!(duration));
        object.insert("created".into(), Value::String(rfc3339_ms(album.added_ms)));
        if let Some(artist) = self.parent(album) {
            object.insert("artist".into(), Value::String(artist.fields.title.clone()));
            object.insert("artistId".into(), Value::String(artist.id.to_string()));
        }
        if let Some(year) = album.fields.year {
            object.insert("year".into(), json!(year));
        }
        if let Some(genre) = tracks.iter().find_map(|track| genre(track)) {
            object.insert("genre".into(), Value::String(genre.to_owned()));
        }
        if let Some(cover) = self.cover(album) {
            object.insert("coverArt".into(), Value::String(cover));
        }
        self.marks(album, &mut object);
        Value::Object(object)
    }

    /// `Child` for a track.
    pub(super) fn song(&self, track: &Item) -> Value {
        let album = self.parent(track);
        let artist = album.and_then(|album| self.parent(album));
        let metadata = &track.fields.metadata;
        let media = track.fields.media.first();
        let path = media.map(|media| media.path.as_str()).unwrap_or_default();
        let suffix = crate::library::naming::extension(path).unwrap_or_default();
        let mut object = Map::new();
        object.insert("id".into(), Value::String(track.id.to_string()));
        object.insert("isDir".into(), Value::Bool(false));
        object.insert("isVideo".into(), Value::Bool(false));
        object.insert("type".into(), Value::String("music".into()));
        object.insert("mediaType".into(), Value::String("song".into()));
        object.insert("title".into(), Value::String(track.fields.title.clone()));
        object.insert("duration".into(), json!(duration_s(track)));
        object.insert("created".into(), Value::String(rfc3339_ms(track.added_ms)));
        object.insert(
            "contentType".into(),
            Value::String(crate::api::items::mime(path).into()),
        );
        object.insert("suffix".into(), Value::String(suffix.clone()));
        if let Some(media) = media {
            object.insert("size".into(), json!(media.size));
        }
        if let Some(rate) = metadata.get("bit_rate").and_then(|rate| rate.parse::<u64>().ok()) {
            object.insert("bitRate".into(), json!(rate / 1000));
        }
        if let Some(number) = track.fields.index {
            object.insert("track".into(), json!(number));
        }
        if let Some(year) = track.fields.year.or(album.and_then(|album| album.fields.year)) {
            object.insert("year".into(), json!(year));
        }
        if let Some(genre) = genre(track) {
            object.insert("genre".into(), Value::String(genre.to_owned()));
        }
        if let Some(disc) = disc(track) {
            object.insert("discNumber".into(), json!(disc));
        }
        let file_name = std::path::Path::new(path)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("{}.{suffix}", track.fields.title));
        let mut shown_path = Vec::new();
        if let Some(album) = album {
            object.insert("parent".into(), Value::String(album.id.to_string()));
            object.insert("album".into(), Value::String(album.fields.title.clone()));
            object.insert("albumId".into(), Value::String(album.id.to_string()));
        }
        let artist_name = metadata
            .get("tag_artist")
            .cloned()
            .or_else(|| artist.map(|artist| artist.fields.title.clone()));
        if let Some(name) = &artist_name {
            object.insert("artist".into(), Value::String(name.clone()));
        }
        if let Some(artist) = artist {
            object.insert("artistId".into(), Value::String(artist.id.to_string()));
            shown_path.push(artist.fields.title.clone());
        }
        if let Some(album) = album {
            shown_path.push(album.fields.title.clone());
        }
        shown_path.push(file_name);
        // Where it sits in the library, never the node's own path.
        object.insert("path".into(), Value::String(shown_path.join("/")));
        if let Some(cover) = self.cover(track) {
            object.insert("coverArt".into(), Value::String(cover));
        }
        self.marks(track, &mut object);
        Value::Object(object)
    }
}

/// Duration in whole seconds.
pub(super) fn duration_s(item: &Item) -> u64 {
    item.fields
        .metadata
        .get("duration_ms")
        .and_then(|ms| ms.parse::<u64>().ok())
        .map_or(0, |ms| (ms + 500) / 1000)
}

/// The genre tag (the first of a list).
pub(super) fn genre(item: &Item) -> Option<&str> {
    item.fields
        .metadata
        .get("tag_genre")
        .map(|genre| genre.split([';', '/']).next().unwrap_or(genre).trim())
        .filter(|genre| !genre.is_empty())
}

fn disc(item: &Item) -> Option<u32> {
    item.fields
        .metadata
        .get("tag_disc")
        .and_then(|disc| disc.split('/').next()?.trim().parse().ok())
}

/// The index letter of a name: its first letter, upper case, after an
/// ignored article; `#` for anything else.
pub(super) fn index_letter(name: &str) -> String {
    let trimmed = IGNORED_ARTICLES
        .split(' ')
        .find_map(|article| name.strip_prefix(article).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or(name);
    match trimmed.chars().next() {
        Some(c) if c.is_alphabetic() => c.to_uppercase().collect(),
        _ => "#".into(),
    }
}

/// Articles ignored when indexing artists.
pub(super) const IGNORED_ARTICLES: &str = "The El La Los Las Le Les";
