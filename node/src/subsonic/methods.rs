//! The Subsonic methods Omega answers. Browsing reads the music of the
//! caller's libraries ([`Music`]); streams and covers reuse the API's file
//! and image serving; scrobbles and stars write the same watch state and
//! favourites the web app shows.

use std::collections::BTreeMap;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use omega_consensus::command::Command;
use omega_consensus::model::{Item, ItemKind};
use serde_json::{Value, json};

use super::music::{IGNORED_ARTICLES, Music, duration_s, genre, index_letter};
use super::{Answer, Failure, Request};
use crate::api::items::{save_watch, serve_file, serve_image, visible_item};

/// Most entries a list answer holds, whatever is asked.
const LIST_MAX: usize = 500;

/// Runs `method` (without `.view`).
pub(super) async fn dispatch(method: &str, request: Request<'_>) -> Result<Answer, Failure> {
    match method {
        "ping" => Ok(Answer::empty()),
        "getLicense" => Ok(Answer::one(
            "license",
            json!({"valid": true, "email": "", "licenseExpires": "2999-12-31T00:00:00.000Z"}),
        )),
        "getOpenSubsonicExtensions" => Ok(Answer::one(
            "openSubsonicExtensions",
            json!([{"name": "formPost", "versions": [1]}]),
        )),
        "getUser" => get_user(&request),
        "getMusicFolders" => music_folders(&request),
        "getIndexes" => indexes(&request, "indexes"),
        "getArtists" => indexes(&request, "artists"),
        "getArtist" => with_children(&request, ItemKind::Artist, "artist", "album"),
        "getAlbum" => with_children(&request, ItemKind::Album, "album", "song"),
        "getSong" => song(&request),
        "getAlbumList2" | "getAlbumList" => album_list(&request, method),
        "getRandomSongs" => random_songs(&request),
        "getGenres" => genres(&request),
        "search3" | "search2" => search(&request, method),
        "getStarred2" | "getStarred" => starred(&request, method),
        "star" => star(&request, true).await,
        "unstar" => star(&request, false).await,
        "scrobble" => scrobble(&request).await,
        "stream" | "download" => stream(&request).await,
        "getCoverArt" => cover_art(&request).await,
        "getPlaylists" => playlists(&request),
        "getPlaylist" => playlist(&request),
        "createPlaylist" => create_playlist(&request).await,
        "updatePlaylist" => update_playlist(&request).await,
        "deletePlaylist" => delete_playlist(&request).await,
        _ => Err(Failure {
            code: 0,
            message: format!("unknown or unsupported method {method:?}"),
            status: StatusCode::NOT_IMPLEMENTED,
        }),
    }
}

fn load(request: &Request<'_>) -> Result<Music, Failure> {
    let folder = match request.params.get("musicFolderId") {
        None | Some("") => None,
        Some(id) => Some(
            id.parse()
                .map_err(|_| Failure::not_found(&format!("music folder {id}")))?,
        ),
    };
    Music::load(request.state.cluster.tables(), &request.caller, folder)
}

fn get_user(request: &Request<'_>) -> Result<Answer, Failure> {
    let name = request.params.get("username").unwrap_or(&request.caller.user.name);
    if !name.eq_ignore_ascii_case(&request.caller.user.name) && !request.caller.is_admin() {
        return Err(Failure::new(50, "only administrators see other users"));
    }
    let admin = request.caller.is_admin();
    Ok(Answer::one(
        "user",
        json!({
            "username": name, "scrobblingEnabled": true, "adminRole": admin, "settingsRole": true,
            "downloadRole": true, "uploadRole": false, "playlistRole": true, "coverArtRole": false,
            "commentRole": false, "podcastRole": false, "streamRole": true, "jukeboxRole": false,
            "shareRole": false, "videoConversionRole": false,
        }),
    ))
}

fn music_folders(request: &Request<'_>) -> Result<Answer, Failure> {
    let music = Music::load(request.state.cluster.tables(), &request.caller, None)?;
    let folders: Vec<Value> = music
        .libraries
        .iter()
        .map(|library| json!({"id": library.id, "name": library.name}))
        .collect();
    Ok(Answer::one("musicFolders", json!({ "musicFolder": folders })))
}

/// `getIndexes` and `getArtists`: artists grouped by index letter.
fn indexes(request: &Request<'_>, name: &str) -> Result<Answer, Failure> {
    let music = load(request)?;
    let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for artist in music.of_kind(ItemKind::Artist) {
        groups
            .entry(index_letter(&artist.fields.title))
            .or_default()
            .push(music.artist(artist));
    }
    let index: Vec<Value> = groups
        .into_iter()
        .map(|(letter, artists)| json!({"name": letter, "artist": artists}))
        .collect();
    let last_modified = music.items.values().map(|item| item.updated_ms).max().unwrap_or(0);
    Ok(Answer::one(
        name,
        json!({"ignoredArticles": IGNORED_ARTICLES, "lastModified": last_modified, "index": index}),
    ))
}

/// `getArtist` (with its albums) and `getAlbum` (with its songs).
fn with_children(request: &Request<'_>, kind: ItemKind, name: &str, children: &str) -> Result<Answer, Failure> {
    let music = load(request)?;
    let item = music.get(request.params.require("id")?, kind, name)?;
    let mut value = music.value(item);
    value[children] = Value::Array(
        music
            .children(item.id)
            .into_iter()
            .map(|child| music.value(child))
            .collect(),
    );
    Ok(Answer::one(name, value))
}

fn song(request: &Request<'_>) -> Result<Answer, Failure> {
    let music = load(request)?;
    let track = music.get(request.params.require("id")?, ItemKind::Track, "song")?;
    Ok(Answer::one("song", music.song(track)))
}

/// `size` (default 10) and `offset` of a list, capped.
fn page(request: &Request<'_>, size_name: &str, offset_name: &str, default: usize) -> Result<(usize, usize), Failure> {
    let size = request.params.number(size_name, default)?.min(LIST_MAX);
    let offset = request.params.number(offset_name, 0_usize)?;
    Ok((size, offset))
}

/// A pseudo-random order that changes on every call but needs no state.
fn shuffle<T>(items: &mut [T]) {
    use rand::seq::SliceRandom;
    items.shuffle(&mut rand::rng());
}

fn album_list(request: &Request<'_>, method: &str) -> Result<Answer, Failure> {
    let music = load(request)?;
    let list_type = request.params.require("type")?;
    let (size, offset) = page(request, "size", "offset", 10)?;
    let mut albums = music.of_kind(ItemKind::Album);
    let plays = |album: &Item| -> (u32, u64) {
        music
            .children(album.id)
            .iter()
            .filter_map(|track| music.watch.get(&track.id))
            .fold((0, 0), |(count, last), watch| {
                (count + watch.play_count, last.max(watch.updated_ms))
            })
    };
    match list_type {
        "random" => shuffle(&mut albums),
        "newest" => albums.sort_by_key(|album| std::cmp::Reverse((album.added_ms, album.id))),
        "alphabeticalByName" => {}
        "alphabeticalByArtist" => albums.sort_by_key(|album| {
            let artist = album
                .parent
                .and_then(|id| music.items.get(&id))
                .map(|artist| artist.fields.sort_title.clone());
            (artist, album.fields.sort_title.clone(), album.id)
        }),
        "frequent" | "highest" => {
            albums.retain(|album| plays(album).0 > 0);
            albums.sort_by_key(|album| std::cmp::Reverse((plays(album).0, album.id)));
        }
        "recent" => {
            albums.retain(|album| plays(album).1 > 0);
            albums.sort_by_key(|album| std::cmp::Reverse((plays(album).1, album.id)));
        }
        "starred" => albums.retain(|album| music.favorites.contains_key(&album.id)),
        "byYear" => {
            let from: u16 = request.params.number("fromYear", 0)?;
            let to: u16 = request.params.number("toYear", u16::MAX)?;
            let (low, high) = (from.min(to), from.max(to));
            albums.retain(|album| album.fields.year.is_some_and(|year| (low..=high).contains(&year)));
            albums.sort_by_key(|album| (album.fields.year, album.id));
            if from > to {
                albums.reverse();
            }
        }
        "byGenre" => {
            let wanted = request.params.require("genre")?;
            albums.retain(|album| {
                music
                    .children(album.id)
                    .iter()
                    .any(|track| genre(track).is_some_and(|genre| genre.eq_ignore_ascii_case(wanted)))
            });
        }
        other => return Err(Failure::new(0, format!("unknown list type {other:?}"))),
    }
    let values: Vec<Value> = albums
        .into_iter()
        .skip(offset)
        .take(size)
        .map(|album| music.album(album))
        .collect();
    let name = if method == "getAlbumList" {
        "albumList"
    } else {
        "albumList2"
    };
    Ok(Answer::one(name, json!({ "album": values })))
}

fn random_songs(request: &Request<'_>) -> Result<Answer, Failure> {
    let music = load(request)?;
    let (size, _) = page(request, "size", "offset", 10)?;
    let wanted_genre = request.params.get("genre");
    let from: u16 = request.params.number("fromYear", 0)?;
    let to: u16 = request.params.number("toYear", u16::MAX)?;
    let mut tracks: Vec<&Item> = music
        .of_kind(ItemKind::Track)
        .into_iter()
        .filter(|track| wanted_genre.is_none_or(|wanted| genre(track).is_some_and(|g| g.eq_ignore_ascii_case(wanted))))
        .filter(|track| {
            let year = track.fields.year.or_else(|| {
                track
                    .parent
                    .and_then(|id| music.items.get(&id))
                    .and_then(|album| album.fields.year)
            });
            (from == 0 && to == u16::MAX) || year.is_some_and(|year| year >= from && year <= to)
        })
        .collect();
    shuffle(&mut tracks);
    let songs: Vec<Value> = tracks.into_iter().take(size).map(|track| music.song(track)).collect();
    Ok(Answer::one("randomSongs", json!({ "song": songs })))
}

fn genres(request: &Request<'_>) -> Result<Answer, Failure> {
    let music = load(request)?;
    let mut counts: BTreeMap<String, (usize, std::collections::BTreeSet<u64>)> = BTreeMap::new();
    for track in music.of_kind(ItemKind::Track) {
        if let Some(name) = genre(track) {
            let entry = counts.entry(name.to_owned()).or_default();
            entry.0 += 1;
            if let Some(album) = track.parent {
                entry.1.insert(album);
            }
        }
    }
    let genres: Vec<Value> = counts
        .into_iter()
        .map(|(name, (songs, albums))| json!({"value": name, "songCount": songs, "albumCount": albums.len()}))
        .collect();
    Ok(Answer::one("genres", json!({ "genre": genres })))
}

/// `search3` (and `search2`): artists, albums and songs whose names hold
/// the query; an empty query (or `""`) lists everything, as clients that
/// sync a whole library ask.
fn search(request: &Request<'_>, method: &str) -> Result<Answer, Failure> {
    let music = load(request)?;
    let query = request.params.get("query").unwrap_or_default().trim().trim_matches('"');
    let query = crate::text::search_fold(query);
    let hit = |item: &Item| query.is_empty() || crate::text::search_matches(&item.fields.title, &query);
    let mut result = serde_json::Map::new();
    for (kind, name, count, offset) in [
        (ItemKind::Artist, "artist", "artistCount", "artistOffset"),
        (ItemKind::Album, "album", "albumCount", "albumOffset"),
        (ItemKind::Track, "song", "songCount", "songOffset"),
    ] {
        let (size, skip) = page(request, count, offset, 20)?;
        let values: Vec<Value> = music
            .of_kind(kind)
            .into_iter()
            .filter(|item| hit(item))
            .skip(skip)
            .take(size)
            .map(|item| music.value(item))
            .collect();
        result.insert(name.into(), Value::Array(values));
    }
    let name = if method == "search2" {
        "searchResult2"
    } else {
        "searchResult3"
    };
    Ok(Answer::one(name, Value::Object(result)))
}

fn starred(request: &Request<'_>, method: &str) -> Result<Answer, Failure> {
    let music = load(request)?;
    let mut result = serde_json::Map::new();
    for (kind, name) in [
        (ItemKind::Artist, "artist"),
        (ItemKind::Album, "album"),
        (ItemKind::Track, "song"),
    ] {
        let values: Vec<Value> = music
            .of_kind(kind)
            .into_iter()
            .filter(|item| music.favorites.contains_key(&item.id))
            .map(|item| music.value(item))
            .collect();
        result.insert(name.into(), Value::Array(values));
    }
    let name = if method == "getStarred" { "starred" } else { "starred2" };
    Ok(Answer::one(name, Value::Object(result)))
}

/// The item `id` names, if the caller may see it.
fn visible(request: &Request<'_>, id: &str) -> Result<Item, Failure> {
    let id: u64 = id.parse().map_err(|_| Failure::not_found(&format!("item {id}")))?;
    Ok(visible_item(request.state, &request.caller, id)?)
}

/// `star`/`unstar`: `id`, `albumId` and `artistId`, each repeatable.
async fn star(request: &Request<'_>, favorite: bool) -> Result<Answer, Failure> {
    let ids: Vec<&str> = ["id", "albumId", "artistId"]
        .iter()
        .flat_map(|name| request.params.all(name))
        .collect();
    if ids.is_empty() {
        return Err(Failure::new(
            10,
            "required parameter id, albumId or artistId is missing",
        ));
    }
    for id in ids.into_iter().take(LIST_MAX) {
        let item = visible(request, id)?;
        request
            .state
            .write(Command::SetFavorite {
                user: request.caller.user.id,
                item: item.id,
                favorite,
                now_ms: request.state.clock.now_ms(),
            })
            .await?;
    }
    Ok(Answer::empty())
}

/// `scrobble`: a submission (the default) counts a play, in the same watch
/// state as everywhere else; `submission=false` ("now playing") only tells
/// the caller's other devices, through the events.
async fn scrobble(request: &Request<'_>) -> Result<Answer, Failure> {
    let ids = request.params.all("id");
    if ids.is_empty() {
        return Err(Failure::new(10, "required parameter id is missing"));
    }
    let submission = !request
        .params
        .get("submission")
        .is_some_and(|value| value.eq_ignore_ascii_case("false"));
    for id in ids.into_iter().take(LIST_MAX) {
        let item = visible(request, id)?;
        if submission {
            let _ = save_watch(request.state, &request.caller, item.id, |watch| {
                watch.played = true;
                watch.play_count = watch.play_count.saturating_add(1);
                watch.position_ms = 0;
            })
            .await?;
        } else {
            request.state.events.publish(crate::events::Event::Playback {
                user: request.caller.user.id,
                item: item.id,
                position_ms: 0,
                played: false,
            });
        }
    }
    Ok(Answer::empty())
}

/// `stream` and `download`: the file as it is (Range, ETag). A
/// `maxBitRate` below the file's, or a `format` other than `raw` and the
/// file's own, is transcoded on the fly to MP3 or Opus.
async fn stream(request: &Request<'_>) -> Result<Answer, Failure> {
    let item = visible(request, request.params.require("id")?)?;
    let max_kbps: u64 = request.params.number("maxBitRate", 0)?;
    let format = request.params.get("format").unwrap_or("raw");
    let path = item
        .fields
        .media
        .first()
        .map(|media| media.path.as_str())
        .unwrap_or_default();
    let own = crate::library::naming::extension(path).unwrap_or_default();
    let source_kbps = item
        .fields
        .metadata
        .get("bit_rate")
        .and_then(|rate| rate.parse::<u64>().ok())
        .map(|rate| rate / 1000);
    let too_fast = max_kbps > 0 && source_kbps.is_none_or(|rate| rate > max_kbps);
    let other_format = format != "raw" && !format.eq_ignore_ascii_case(&own);
    if !too_fast && !other_format {
        return Ok(Answer::Raw(
            serve_file(request.state, &item, request.headers, request.zero_copy).await?,
        ));
    }
    let codec = match format {
        "opus" | "ogg" => omega_transcode::audio::AudioFormat::Opus,
        _ => omega_transcode::audio::AudioFormat::Mp3,
    };
    let kbps = if max_kbps > 0 { max_kbps } else { 192 }.clamp(32, 320);
    let offset_s: u64 = request.params.number("timeOffset", 0)?;
    let media = crate::api::items::local_media(request.state, &item)?;
    let transcoder = request
        .state
        .transcoder
        .clone()
        .ok_or_else(|| Failure::new(0, "transcoding is off on this node"))?;
    let body = transcoder.audio_body(std::path::Path::new(&media.path), codec, kbps, offset_s)?;
    let estimated = duration_s(&item).saturating_sub(offset_s) * kbps * 1000 / 8;
    let mut response = (
        [
            (header::CONTENT_TYPE, codec.content_type().to_owned()),
            (
                header::HeaderName::from_static("x-content-duration"),
                duration_s(&item).to_string(),
            ),
            (
                header::HeaderName::from_static("x-expected-content-length"),
                estimated.to_string(),
            ),
        ],
        body,
    )
        .into_response();
    *response.status_mut() = StatusCode::OK;
    Ok(Answer::Raw(response))
}

/// `getCoverArt`: an item's image, or its album's.
async fn cover_art(request: &Request<'_>) -> Result<Answer, Failure> {
    let item = visible(request, request.params.require("id")?)?;
    let with_image = if item.fields.metadata.contains_key(crate::library::enrich::IMAGE_PRIMARY) {
        item
    } else {
        let parent = item.parent.ok_or_else(|| Failure::not_found("cover art"))?;
        visible_item(request.state, &request.caller, parent)?
    };
    Ok(Answer::Raw(
        serve_image(request.state, &with_image, request.headers).await?,
    ))
}

/// A Subsonic `Playlist` (songs the caller may see), with its entries when
/// `with_entries`.
fn playlist_value(
    request: &Request<'_>,
    music: &Music,
    playlist: &omega_consensus::model::Playlist,
    with_entries: bool,
) -> Result<Value, Failure> {
    let view = crate::api::playlists::view(request.state, &request.caller, playlist)?;
    let songs: Vec<&Item> = playlist
        .items
        .iter()
        .filter_map(|id| music.items.get(id))
        .filter(|item| item.fields.kind == ItemKind::Track)
        .collect();
    let mut value = json!({
        "id": playlist.id.to_string(),
        "name": playlist.name,
        "owner": view.owner_name,
        "public": playlist.public,
        "songCount": songs.len(),
        "duration": songs.iter().map(|song| duration_s(song)).sum::<u64>(),
        "created": crate::text::rfc3339_ms(playlist.created_ms),
        "changed": crate::text::rfc3339_ms(playlist.updated_ms),
    });
    if let Some(cover) = songs.first().and_then(|song| music.song(song).get("coverArt").cloned()) {
        value["coverArt"] = cover;
    }
    if with_entries {
        value["entry"] = Value::Array(songs.iter().map(|song| music.song(song)).collect());
    }
    Ok(value)
}

fn playlists(request: &Request<'_>) -> Result<Answer, Failure> {
    let music = load(request)?;
    let values = crate::api::playlists::visible_playlists(request.state, &request.caller)?
        .iter()
        .map(|playlist| playlist_value(request, &music, playlist, false))
        .collect::<Result<Vec<_>, Failure>>()?;
    Ok(Answer::one("playlists", json!({ "playlist": values })))
}

fn playlist_id(request: &Request<'_>, name: &str) -> Result<u64, Failure> {
    let text = request.params.require(name)?;
    text.parse()
        .map_err(|_| Failure::not_found(&format!("playlist {text}")))
}

fn playlist(request: &Request<'_>) -> Result<Answer, Failure> {
    let music = load(request)?;
    let id = playlist_id(request, "id")?;
    let playlist = crate::api::playlists::visible_playlist(request.state, &request.caller, id)?;
    Ok(Answer::one(
        "playlist",
        playlist_value(request, &music, &playlist, true)?,
    ))
}

/// Song ids of `name` (repeatable), each visible to the caller.
fn song_ids(request: &Request<'_>, name: &str) -> Result<Vec<u64>, Failure> {
    request
        .params
        .all(name)
        .into_iter()
        .take(omega_consensus::model::PLAYLIST_ITEMS_MAX)
        .map(|id| visible(request, id).map(|item| item.id))
        .collect()
}

/// `createPlaylist`: `name` and `songId`s; with `playlistId`, replaces
/// that playlist's songs instead.
async fn create_playlist(request: &Request<'_>) -> Result<Answer, Failure> {
    let songs = song_ids(request, "songId")?;
    let now_ms = request.state.clock.now_ms();
    let id = if request.params.get("playlistId").is_some() {
        let id = playlist_id(request, "playlistId")?;
        request
            .state
            .write(Command::UpdatePlaylist {
                id,
                owner: request.caller.user.id,
                name: request.params.get("name").map(str::to_owned),
                items: Some(songs),
                public: None,
                now_ms,
            })
            .await?;
        id
    } else {
        let name = request.params.require("name")?.to_owned();
        match request
            .state
            .write(Command::CreatePlaylist {
                owner: request.caller.user.id,
                name,
                items: songs,
                public: false,
                now_ms,
            })
            .await?
        {
            omega_consensus::command::Response::Created(id) => id,
            other => return Err(Failure::internal(format!("CreatePlaylist answered {other:?}"))),
        }
    };
    let music = load(request)?;
    let playlist = crate::api::playlists::visible_playlist(request.state, &request.caller, id)?;
    Ok(Answer::one(
        "playlist",
        playlist_value(request, &music, &playlist, true)?,
    ))
}

/// `updatePlaylist`: name, comment (ignored), public, songs to add (at
/// the end) and song indexes to remove.
async fn update_playlist(request: &Request<'_>) -> Result<Answer, Failure> {
    let id = playlist_id(request, "playlistId")?;
    let playlist = crate::api::playlists::visible_playlist(request.state, &request.caller, id)?;
    if playlist.owner != request.caller.user.id {
        return Err(Failure::new(50, "only its owner changes a playlist"));
    }
    let mut remove: Vec<usize> = Vec::new();
    for index in request.params.all("songIndexToRemove") {
        remove.push(
            index
                .parse()
                .map_err(|_| Failure::new(0, format!("songIndexToRemove {index:?} is not a number")))?,
        );
    }
    let mut items: Vec<u64> = playlist
        .items
        .iter()
        .enumerate()
        .filter(|(index, _)| !remove.contains(index))
        .map(|(_, id)| *id)
        .collect();
    items.extend(song_ids(request, "songIdToAdd")?);
    let public = request
        .params
        .get("public")
        .map(|value| value.eq_ignore_ascii_case("true"));
    request
        .state
        .write(Command::UpdatePlaylist {
            id,
            owner: request.caller.user.id,
            name: request.params.get("name").map(str::to_owned),
            items: Some(items),
            public,
            now_ms: request.state.clock.now_ms(),
        })
        .await?;
    Ok(Answer::empty())
}

async fn delete_playlist(request: &Request<'_>) -> Result<Answer, Failure> {
    let id = playlist_id(request, "id")?;
    request
        .state
        .write(Command::DeletePlaylist {
            id,
            owner: request.caller.user.id,
        })
        .await?;
    Ok(Answer::empty())
}
