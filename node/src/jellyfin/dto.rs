//! Jellyfin's shapes: 32-hex ids, ticks of 100 ns, PascalCase JSON with
//! nulls left out, `BaseItemDto`, `UserDto` and `UserItemDataDto`.

use omega_consensus::model::{Item, ItemKind, Library, LibraryKind, User, WatchState};
use serde_json::{Map, Value, json};

use crate::library::enrich::IMAGE_PRIMARY;
use crate::tokens::TokenKey;

/// Ticks (100 ns) per millisecond.
pub(super) const TICKS_PER_MS: u64 = 10_000;

/// An entity id as Jellyfin writes ids: 32 lowercase hex digits.
pub(super) fn id(entity: u64) -> String {
    format!("{entity:032x}")
}

/// An id back from 32 hex digits (or a GUID with dashes, or decimal).
pub(super) fn parse_id(text: &str) -> Option<u64> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() == 32 {
        u128::from_str_radix(&hex, 16)
            .ok()
            .and_then(|value| u64::try_from(value).ok())
    } else {
        text.parse().ok()
    }
}

/// Milliseconds since the epoch as Jellyfin's dates.
pub(super) use crate::text::rfc3339_ms as date;

/// Drops null members, recursively: Jellyfin leaves them out.
pub(super) fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, member)| !member.is_null())
                .map(|(key, member)| (key, without_nulls(member)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// Jellyfin's type name of an item kind.
pub(super) fn type_name(kind: ItemKind) -> &'static str {
    match kind {
        ItemKind::Movie => "Movie",
        ItemKind::Series => "Series",
        ItemKind::Season => "Season",
        ItemKind::Episode => "Episode",
        ItemKind::Artist => "MusicArtist",
        ItemKind::Album => "MusicAlbum",
        ItemKind::Track => "Audio",
        ItemKind::Audiobook => "AudioBook",
        ItemKind::Book => "Book",
        ItemKind::Photo => "Photo",
    }
}

/// The item kind of a Jellyfin type name (case-insensitive).
pub(super) fn kind_of(name: &str) -> Option<ItemKind> {
    ItemKind::ALL
        .into_iter()
        .find(|kind| type_name(*kind).eq_ignore_ascii_case(name))
}

fn media_type(kind: ItemKind) -> Option<&'static str> {
    match kind {
        ItemKind::Movie | ItemKind::Episode => Some("Video"),
        ItemKind::Track | ItemKind::Audiobook => Some("Audio"),
        ItemKind::Book => Some("Book"),
        ItemKind::Photo => Some("Photo"),
        _ => None,
    }
}

/// Jellyfin's collection type of a library kind.
pub(super) fn collection_type(kind: LibraryKind) -> &'static str {
    match kind {
        LibraryKind::Movies => "movies",
        LibraryKind::Shows => "tvshows",
        LibraryKind::Music => "music",
        LibraryKind::Audiobooks => "books",
        LibraryKind::Books => "books",
        LibraryKind::Photos => "photos",
    }
}

/// The unguessable tag of an item's primary image: a signature of the
/// item and the image, so that an image URL works without a token only
/// when its tag is right.
pub(super) fn image_tag(tokens: &TokenKey, item: &Item) -> Option<String> {
    let blob = item.fields.metadata.get(IMAGE_PRIMARY)?;
    Some(tokens.derived_id(&format!("image {} {blob}", item.id)))
}

/// `UserItemDataDto`.
pub(super) fn user_data(item: u64, watch: Option<&WatchState>, favorite: bool, runtime_ms: Option<u64>) -> Value {
    let watch = watch.cloned().unwrap_or_default();
    let percentage = runtime_ms
        .filter(|runtime| *runtime > 0 && watch.position_ms > 0)
        .map(|runtime| (watch.position_ms as f64 / runtime as f64 * 100.0).min(100.0));
    without_nulls(json!({
        "PlaybackPositionTicks": watch.position_ms.saturating_mul(TICKS_PER_MS),
        "PlayCount": watch.play_count,
        "IsFavorite": favorite,
        "Played": watch.played,
        "PlayedPercentage": percentage,
        "LastPlayedDate": (watch.updated_ms > 0).then(|| date(watch.updated_ms)),
        "Key": id(item),
        "ItemId": id(item),
    }))
}

/// What a `BaseItemDto` is built from.
pub(super) struct ItemContext<'a> {
    pub(super) server_id: &'a str,
    pub(super) tokens: &'a TokenKey,
    pub(super) parent: Option<&'a Item>,
    pub(super) grandparent: Option<&'a Item>,
    pub(super) watch: Option<&'a WatchState>,
    pub(super) favorite: bool,
    pub(super) child_count: Option<usize>,
}

fn runtime_ms(item: &Item) -> Option<u64> {
    item.fields.metadata.get("duration_ms").and_then(|ms| ms.parse().ok())
}

/// `BaseItemDto` of a catalog item.
pub(super) fn base_item(item: &Item, context: &ItemContext<'_>) -> Value {
    let metadata = &item.fields.metadata;
    let kind = item.fields.kind;
    let mut dto = Map::new();
    let mut put = |key: &str, value: Value| {
        if !value.is_null() {
            dto.insert(key.into(), value);
        }
    };
    put("Name", json!(item.fields.title));
    put("SortName", json!(item.fields.sort_title));
    put("ServerId", json!(context.server_id));
    put("Id", json!(id(item.id)));
    put("Type", json!(type_name(kind)));
    put(
        "IsFolder",
        json!(matches!(
            kind,
            ItemKind::Series | ItemKind::Season | ItemKind::Artist | ItemKind::Album
        )),
    );
    put("MediaType", json!(media_type(kind).unwrap_or("Unknown")));
    put(
        "ParentId",
        json!(item.parent.map(id).unwrap_or_else(|| id(item.fields.library))),
    );
    put("IndexNumber", json!(item.fields.index));
    put("ProductionYear", json!(item.fields.year));
    put("DateCreated", json!(date(item.added_ms)));
    put("Overview", json!(metadata.get("overview")));
    put(
        "RunTimeTicks",
        json!(runtime_ms(item).map(|ms| ms.saturating_mul(TICKS_PER_MS))),
    );
    put(
        "Container",
        json!(
            item.fields
                .media
                .first()
                .and_then(|media| crate::library::naming::extension(&media.path))
        ),
    );
    if let Some(year) = item.fields.year {
        put("PremiereDate", json!(format!("{year:04}-01-01T00:00:00.0000000Z")));
    }
    match kind {
        ItemKind::Episode => {
            if let Some(season) = context.parent {
                put("SeasonId", json!(id(season.id)));
                put("SeasonName", json!(season.fields.title));
                put("ParentIndexNumber", json!(season.fields.index));
            }
            if let Some(series) = context.grandparent {
                put("SeriesId", json!(id(series.id)));
                put("SeriesName", json!(series.fields.title));
            }
        }
        ItemKind::Season => {
            if let Some(series) = context.parent {
                put("SeriesId", json!(id(series.id)));
                put("SeriesName", json!(series.fields.title));
            }
        }
        ItemKind::Track => {
            if let Some(album) = context.parent {
                put("AlbumId", json!(id(album.id)));
                put("Album", json!(album.fields.title));
            }
            let artist = metadata
                .get("tag_artist")
                .cloned()
                .or_else(|| context.grandparent.map(|artist| artist.fields.title.clone()));
            put("Artists", json!(artist.iter().collect::<Vec<_>>()));
            if let Some(artist) = context.grandparent {
                put("AlbumArtist", json!(artist.fields.title));
                put(
                    "ArtistItems",
                    json!([{"Name": artist.fields.title, "Id": id(artist.id)}]),
                );
            }
        }
        ItemKind::Album => {
            if let Some(artist) = context.parent {
                put("AlbumArtist", json!(artist.fields.title));
                put("Artists", json!([artist.fields.title]));
                put(
                    "AlbumArtists",
                    json!([{"Name": artist.fields.title, "Id": id(artist.id)}]),
                );
            }
        }
        _ => {}
    }
    put("ChildCount", json!(context.child_count));
    let mut images = Map::new();
    if let Some(tag) = image_tag(context.tokens, item) {
        images.insert("Primary".into(), json!(tag));
    }
    put("ImageTags", Value::Object(images));
    put("BackdropImageTags", json!([]));
    put(
        "UserData",
        user_data(item.id, context.watch, context.favorite, runtime_ms(item)),
    );
    Value::Object(dto)
}

/// A library as a view (`CollectionFolder`).
pub(super) fn view(library: &Library, server_id: &str) -> Value {
    json!({
        "Name": library.name,
        "ServerId": server_id,
        "Id": id(library.id),
        "Type": "CollectionFolder",
        "CollectionType": collection_type(library.kind),
        "IsFolder": true,
        "DateCreated": date(library.created_ms),
        "ImageTags": {},
        "BackdropImageTags": [],
    })
}

/// `UserDto`.
pub(super) fn user(user: &User, server_id: &str, admin: bool) -> Value {
    let all_folders = matches!(user.library_access, omega_consensus::model::LibraryAccess::All);
    let folders: Vec<String> = match &user.library_access {
        omega_consensus::model::LibraryAccess::All => Vec::new(),
        omega_consensus::model::LibraryAccess::Only(ids) => ids.iter().map(|library| id(*library)).collect(),
    };
    json!({
        "Name": user.name,
        "ServerId": server_id,
        "Id": id(user.id),
        "HasPassword": true,
        "HasConfiguredPassword": true,
        "HasConfiguredEasyPassword": false,
        "EnableAutoLogin": false,
        "Configuration": {
            "PlayDefaultAudioTrack": true,
            "SubtitleMode": "Default",
            "HidePlayedInLatest": true,
            "RememberAudioSelections": true,
            "RememberSubtitleSelections": true,
            "EnableNextEpisodeAutoPlay": true,
            "OrderedViews": [],
            "LatestItemsExcludes": [],
            "MyMediaExcludes": [],
            "GroupedFolders": [],
        },
        "Policy": {
            "IsAdministrator": admin,
            "IsHidden": true,
            "IsDisabled": false,
            "EnableAllFolders": all_folders,
            "EnabledFolders": folders,
            "EnableMediaPlayback": true,
            "EnableAudioPlaybackTranscoding": true,
            "EnableVideoPlaybackTranscoding": true,
            "EnablePlaybackRemuxing": true,
            "EnableContentDownloading": true,
            "EnableRemoteAccess": true,
            "EnableUserPreferenceAccess": true,
            "AuthenticationProviderId": "Omega",
            "PasswordResetProviderId": "Omega",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_hex_digits_both_ways() {
        assert_eq!(id(255), "000000000000000000000000000000ff");
        assert_eq!(parse_id("000000000000000000000000000000ff"), Some(255));
        assert_eq!(parse_id("00000000-0000-0000-0000-0000000000FF"), Some(255));
        assert_eq!(parse_id("255"), Some(255));
        assert_eq!(parse_id("ffffffffffffffffffffffffffffffff"), None, "over 64 bits");
        assert_eq!(parse_id("zz"), None);
        assert_eq!(kind_of("musicalbum"), Some(ItemKind::Album));
        let cleaned = without_nulls(json!({"A": null, "B": {"C": null, "D": 1}}));
        assert_eq!(cleaned, json!({"B": {"D": 1}}));
    }
}
