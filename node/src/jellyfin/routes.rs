//! The Jellyfin routes: system info, sign-in, users, views, items,
//! images, playback info, streams, session reports, played and favourite
//! marks, each with the legacy `/Users/{userId}/…` twin older clients call.

use std::collections::{HashMap, HashSet};

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use omega_consensus::command::Command;
use omega_consensus::model::{Item, ItemKind, Library, WatchState};
use omega_consensus::state_machine::read;
use omega_transcode::decision::{ClientProfile, Decision};
use serde_json::{Value, json};

use super::dto::{self, ItemContext, TICKS_PER_MS};
use super::{JfRequest, json_response, no_content, streamed};
use crate::api::app_passwords::{AuthFailure, Presented, authenticate};
use crate::api::items::{save_watch, serve_file, serve_image, set_favorite, visible_item};
use crate::api::libraries::can_see;
use crate::api::{ApiError, ApiResult, AppState, Caller};
use crate::tokens::{API_KEY_PREFIX, new_secret, secret_hash};

/// Most items a list answers, whatever `Limit` says.
const LIMIT_MAX: usize = 500;
/// How a Jellyfin device session's API key is labelled: signing out
/// everywhere revokes these keys, not the ones a user made itself.
pub(crate) const SESSION_LABEL: &str = "Jellyfin: ";
/// The Jellyfin server version Omega answers as: what clients check.
const VERSION: &str = "10.10.7";
/// A stop this close to the end counts as played.
const PLAYED_FRACTION: f64 = 0.9;

/// The member `name` of a JSON object, by any case of the name (Jellyfin
/// clients send `username` as well as `Username`).
fn field<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    value
        .as_object()?
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, member)| member)
}

fn server_id(state: &AppState) -> String {
    state.tokens.derived_id("jellyfin server id")
}

fn not_implemented(request: &JfRequest) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "{} /{} is not implemented by Omega",
            request.method,
            request.segments.join("/")
        ),
    )
}

/// Routes `request`.
pub(super) async fn dispatch(state: &AppState, request: &JfRequest) -> ApiResult<Response> {
    let segments: Vec<&str> = request.segments.iter().map(String::as_str).collect();
    let method = &request.method;
    let get = *method == Method::GET || *method == Method::HEAD;
    let post = *method == Method::POST;
    let delete = *method == Method::DELETE;
    // Anonymous routes.
    match segments.as_slice() {
        ["system", "info", "public"] if get => return Ok(public_info(state)),
        ["system", "ping"] if get || post => return Ok((StatusCode::OK, "\"Jellyfin Server\"").into_response()),
        ["users", "public"] if get => return Ok(json_response(StatusCode::OK, json!([]))),
        ["users", "authenticatebyname"] if post => return authenticate_by_name(state, request).await,
        ["items", id, "images", _kind, ..] if get => return image(state, request, id).await,
        _ => {}
    }
    let caller = request.caller(state)?;
    // `/Users/{userId}/…` twins: the user must be the caller (or the
    // caller an administrator), then the route is the same.
    let (segments, user): (Vec<&str>, u64) = match segments.as_slice() {
        ["users", "me"] => (vec!["users", "me"], caller.user.id),
        ["users", user, rest @ ..] if dto::parse_id(user).is_some() => {
            let user = dto::parse_id(user).unwrap_or_default();
            if user != caller.user.id && !caller.is_admin() {
                return Err(ApiError::forbidden("another user's data"));
            }
            let mut twin = Vec::new();
            match rest {
                [] => twin.extend(["users", "me"]),
                ["views"] => twin.push("userviews"),
                ["items", "resume"] => twin.extend(["useritems", "resume"]),
                ["playeditems", id] => twin.extend(["userplayeditems", id]),
                ["favoriteitems", id] => twin.extend(["userfavoriteitems", id]),
                other => twin.extend(other.iter().copied()),
            }
            (twin, user)
        }
        other => (other.to_vec(), caller.user.id),
    };
    let subject = if user == caller.user.id {
        caller.clone()
    } else {
        Caller {
            user: read::user(state.cluster.tables(), user)?.ok_or_else(|| ApiError::not_found("no such user"))?,
        }
    };
    match segments.as_slice() {
        ["system", "info"] if get => Ok(system_info(state)),
        ["users", "me"] if get => Ok(json_response(
            StatusCode::OK,
            dto::user(&subject.user, &server_id(state), subject.is_admin()),
        )),
        ["userviews"] if get => views(state, &subject),
        ["items"] if get => items(state, request, &subject),
        ["items", "latest"] if get => latest(state, request, &subject),
        ["useritems", "resume"] if get => resume(state, request, &subject),
        ["items", "filters"] if get => Ok(json_response(
            StatusCode::OK,
            json!({"Genres": [], "Tags": [], "Years": []}),
        )),
        ["items", id] if get => item(state, &subject, id),
        ["items", id, "playbackinfo"] if get || post => playback_info(state, request, &subject, id).await,
        ["items", id, "file" | "download"] if get => file(state, request, &subject, id).await,
        ["videos", id, stream] if get && stream.starts_with("stream") => {
            video_stream(state, request, &subject, id).await
        }
        ["videos", id, "master.m3u8" | "main.m3u8"] if get => hls_redirect(state, &subject, id),
        ["audio", id, "universal"] if get => audio(state, request, &subject, id).await,
        ["audio", id, stream] if get && stream.starts_with("stream") => audio(state, request, &subject, id).await,
        ["sessions", "playing"] if post => report(state, request, &subject, Report::Start).await,
        ["sessions", "playing", "progress"] if post => report(state, request, &subject, Report::Progress).await,
        ["sessions", "playing", "stopped"] if post => report(state, request, &subject, Report::Stop).await,
        ["sessions", "playing", "ping"] if post => Ok(no_content()),
        ["sessions", "capabilities"] | ["sessions", "capabilities", "full"] if post => Ok(no_content()),
        ["sessions"] if get => Ok(json_response(StatusCode::OK, json!([]))),
        ["sessions", "logout"] if post => logout(state, request).await,
        ["userplayeditems", id] if post || delete => played(state, &subject, id, post).await,
        ["userfavoriteitems", id] if post || delete => favorite(state, &subject, id, post).await,
        ["displaypreferences", _] if get => Ok(json_response(
            StatusCode::OK,
            json!({"Id": "usersettings", "SortBy": "SortName", "SortOrder": "Ascending", "RememberIndexing": false, "RememberSorting": false, "CustomPrefs": {}, "Client": request.param("client").unwrap_or("emby")}),
        )),
        ["branding", "configuration"] if get => Ok(json_response(
            StatusCode::OK,
            json!({"LoginDisclaimer": "", "CustomCss": "", "SplashscreenEnabled": false}),
        )),
        _ => Err(not_implemented(request)),
    }
}

/// `/System/Info/Public`: who this server is, for anyone.
fn public_fields(state: &AppState) -> serde_json::Map<String, Value> {
    let mut fields = serde_json::Map::new();
    for (key, value) in [
        ("LocalAddress", json!("")),
        ("ServerName", json!("Omega")),
        ("Version", json!(VERSION)),
        ("ProductName", json!("Jellyfin Server")),
        ("OperatingSystem", json!(std::env::consts::OS)),
        ("Id", json!(server_id(state))),
        ("StartupWizardCompleted", json!(true)),
    ] {
        fields.insert(key.into(), value);
    }
    fields
}

fn public_info(state: &AppState) -> Response {
    json_response(StatusCode::OK, Value::Object(public_fields(state)))
}

/// `/System/Info`: the public fields and what signed-in clients check.
fn system_info(state: &AppState) -> Response {
    let mut fields = public_fields(state);
    for (key, value) in [
        ("HasPendingRestart", json!(false)),
        ("IsShuttingDown", json!(false)),
        ("SupportsLibraryMonitor", json!(true)),
        ("CanSelfRestart", json!(false)),
        ("CanLaunchWebBrowser", json!(false)),
        ("HasUpdateAvailable", json!(false)),
        ("TranscodingTempPath", json!("")),
        ("WebSocketPortNumber", json!(0)),
        ("CompletedInstallations", json!([])),
        ("EncoderLocation", json!("System")),
        ("SystemArchitecture", json!(std::env::consts::ARCH)),
    ] {
        fields.insert(key.into(), value);
    }
    json_response(StatusCode::OK, Value::Object(fields))
}

/// `POST /Users/AuthenticateByName` (`{"Username","Pw"}`, any case): an
/// API key named after the client and device, as the `AccessToken`.
async fn authenticate_by_name(state: &AppState, request: &JfRequest) -> ApiResult<Response> {
    let body = request.json()?;
    let text = |name: &str| field(&body, name).and_then(Value::as_str).map(str::to_owned);
    let name = text("Username").ok_or_else(|| ApiError::bad_request("Username is required"))?;
    let password = text("Pw").or_else(|| text("Password")).unwrap_or_default();
    let address = request.peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |peer| {
        state.client_ip(peer, &request.headers)
    });
    let user = match authenticate(state, &name, Presented::Plain(password), address).await {
        Ok(user) => user,
        Err(AuthFailure::Wrong) => return Err(ApiError::unauthorized("wrong user name or password")),
        Err(AuthFailure::Limited(wait_ms)) => return Err(ApiError::too_many(wait_ms)),
        Err(AuthFailure::Internal(error)) => return Err(error),
    };
    let fields = request.authorization();
    let client = fields
        .get("client")
        .cloned()
        .unwrap_or_else(|| "Jellyfin client".into());
    let device = fields.get("device").cloned().unwrap_or_else(|| "unknown device".into());
    let device_id = fields.get("deviceid").cloned().unwrap_or_default();
    let (token, hash) = new_secret(API_KEY_PREFIX);
    let label: String = format!("{SESSION_LABEL}{client} on {device} ({device_id})")
        .chars()
        .take(128)
        .collect();
    // One token per device, as Jellyfin keeps one session per device: a
    // new sign-in from it revokes the ones before (and keys stay bounded).
    for (old, key) in read::api_keys_of(state.cluster.tables(), user.id)? {
        if key.name == label {
            state.write(Command::RevokeApiKey { hash: old }).await?;
        }
    }
    state
        .write(Command::PutApiKey {
            hash,
            user: user.id,
            name: label,
            now_ms: state.clock.now_ms(),
        })
        .await?;
    let caller = Caller { user };
    let server = server_id(state);
    let user_dto = dto::user(&caller.user, &server, caller.is_admin());
    Ok(json_response(
        StatusCode::OK,
        json!({
            "User": user_dto,
            "SessionInfo": {
                "Id": dto::id(u64::from_be_bytes(hash[..8].try_into().unwrap_or([0; 8]))),
                "UserId": dto::id(caller.user.id),
                "UserName": caller.user.name,
                "Client": client,
                "DeviceName": device,
                "DeviceId": device_id,
                "ApplicationVersion": fields.get("version"),
                "IsActive": true,
                "SupportsRemoteControl": false,
                "PlayableMediaTypes": ["Audio", "Video"],
                "ServerId": server,
                "LastActivityDate": dto::date(state.clock.now_ms()),
            },
            "AccessToken": token,
            "ServerId": server,
        }),
    ))
}

/// `POST /Sessions/Logout`: the sign-in's API key stops working.
async fn logout(state: &AppState, request: &JfRequest) -> ApiResult<Response> {
    if let Some(token) = request.token().filter(|token| token.starts_with(API_KEY_PREFIX)) {
        let hash = secret_hash(&token);
        if read::api_key(state.cluster.tables(), &hash)?.is_some() {
            state.write(Command::RevokeApiKey { hash }).await?;
        }
    }
    Ok(no_content())
}

/// The libraries `caller` may see.
fn visible_libraries(state: &AppState, caller: &Caller) -> ApiResult<Vec<Library>> {
    Ok(read::libraries(state.cluster.tables())?
        .into_iter()
        .filter(|library| can_see(caller, library.id))
        .collect())
}

fn views(state: &AppState, caller: &Caller) -> ApiResult<Response> {
    let server = server_id(state);
    let views: Vec<Value> = visible_libraries(state, caller)?
        .iter()
        .map(|library| dto::view(library, &server))
        .collect();
    let total = views.len();
    Ok(json_response(
        StatusCode::OK,
        json!({"Items": views, "TotalRecordCount": total, "StartIndex": 0}),
    ))
}

/// Everything a list of items is built from, loaded once per request.
struct Catalog {
    items: HashMap<u64, Item>,
    watch: HashMap<u64, WatchState>,
    favorites: HashSet<u64>,
}

impl Catalog {
    fn load(state: &AppState, caller: &Caller, library: Option<u64>) -> ApiResult<Catalog> {
        let tables = state.cluster.tables();
        let mut items = HashMap::new();
        for visible in visible_libraries(state, caller)? {
            if library.is_some_and(|id| id != visible.id) {
                continue;
            }
            for item in read::library_items(tables, visible.id)? {
                items.insert(item.id, item);
            }
        }
        Ok(Catalog {
            items,
            watch: read::watch_states(tables, caller.user.id)?.into_iter().collect(),
            favorites: read::favorites(tables, caller.user.id)?
                .into_iter()
                .map(|(item, _)| item)
                .collect(),
        })
    }

    fn dto(&self, state: &AppState, server: &str, item: &Item) -> Value {
        let parent = item.parent.and_then(|id| self.items.get(&id));
        let grandparent = parent
            .and_then(|parent| parent.parent)
            .and_then(|id| self.items.get(&id));
        let child_count = matches!(
            item.fields.kind,
            ItemKind::Series | ItemKind::Season | ItemKind::Artist | ItemKind::Album
        )
        .then(|| {
            self.items
                .values()
                .filter(|child| child.parent == Some(item.id))
                .count()
        });
        dto::base_item(
            item,
            &ItemContext {
                server_id: server,
                tokens: &state.tokens,
                parent,
                grandparent,
                watch: self.watch.get(&item.id),
                favorite: self.favorites.contains(&item.id),
                child_count,
            },
        )
    }

    fn descendants(&self, root: u64) -> HashSet<u64> {
        let mut found = HashSet::new();
        let mut frontier = vec![root];
        while let Some(parent) = frontier.pop() {
            for item in self.items.values().filter(|item| item.parent == Some(parent)) {
                if found.insert(item.id) {
                    frontier.push(item.id);
                }
            }
        }
        found
    }
}

fn media_type_matches(kind: ItemKind, wanted: &str) -> bool {
    let media = match kind {
        ItemKind::Movie | ItemKind::Episode => "video",
        ItemKind::Track | ItemKind::Audiobook => "audio",
        ItemKind::Book => "book",
        ItemKind::Photo => "photo",
        _ => "",
    };
    wanted.split(',').any(|want| want.trim().eq_ignore_ascii_case(media))
}

/// `GET /Items` (and `/Users/{id}/Items`).
fn items(state: &AppState, request: &JfRequest, caller: &Caller) -> ApiResult<Response> {
    // Paging is checked first, whatever the answer turns out to be.
    request.number::<usize>("startindex")?;
    request.number::<usize>("limit")?;
    let recursive = request.flag("recursive").unwrap_or(false);
    let parent = match request.param("parentid") {
        Some(text) => {
            Some(dto::parse_id(text).ok_or_else(|| ApiError::bad_request(format!("ParentId {text:?} is not an id")))?)
        }
        None => None,
    };
    let ids: Option<Vec<u64>> = match request.param("ids") {
        Some(list) => Some(
            list.split(',')
                .map(|text| {
                    dto::parse_id(text.trim()).ok_or_else(|| ApiError::bad_request(format!("{text:?} is not an id")))
                })
                .collect::<ApiResult<Vec<u64>>>()?,
        ),
        None => None,
    };
    // The root without recursion: the user's views, as Jellyfin answers.
    if parent.is_none() && ids.is_none() && !recursive && request.param("searchterm").is_none() {
        return views(state, caller);
    }
    let libraries = visible_libraries(state, caller)?;
    let parent_library = parent.filter(|id| libraries.iter().any(|library| library.id == *id));
    let catalog = Catalog::load(state, caller, parent_library)?;
    if let Some(id) = parent
        && parent_library.is_none()
        && !catalog.items.contains_key(&id)
    {
        return Err(ApiError::not_found("no such parent"));
    }
    let kinds: Option<Vec<ItemKind>> = request
        .param("includeitemtypes")
        .map(|list| list.split(',').filter_map(|name| dto::kind_of(name.trim())).collect());
    let excluded: Vec<ItemKind> = request
        .param("excludeitemtypes")
        .map(|list| list.split(',').filter_map(|name| dto::kind_of(name.trim())).collect())
        .unwrap_or_default();
    let under = match (parent, parent_library) {
        (Some(id), None) if recursive => Some(catalog.descendants(id)),
        _ => None,
    };
    let filters = request.param("filters").unwrap_or_default().to_ascii_lowercase();
    let search = request.param("searchterm").map(crate::text::search_fold);
    let played_filter = request.flag("isplayed");
    let favorite_filter = request.flag("isfavorite");
    let mut selected: Vec<&Item> = catalog
        .items
        .values()
        .filter(|item| match &ids {
            Some(ids) => ids.contains(&item.id),
            None => true,
        })
        .filter(|item| match (parent, parent_library, &under) {
            (_, _, Some(under)) => under.contains(&item.id),
            (Some(_), Some(_), None) => recursive || item.parent.is_none(),
            (Some(id), None, None) => item.parent == Some(id),
            (None, _, _) => ids.is_some() || recursive || search.is_some(),
        })
        .filter(|item| kinds.as_ref().is_none_or(|kinds| kinds.contains(&item.fields.kind)))
        .filter(|item| !excluded.contains(&item.fields.kind))
        .filter(|item| {
            request
                .param("mediatypes")
                .is_none_or(|wanted| media_type_matches(item.fields.kind, wanted))
        })
        .filter(|item| {
            search
                .as_ref()
                .is_none_or(|needle| crate::text::search_matches(&item.fields.title, needle))
        })
        .filter(|item| {
            let watch = catalog.watch.get(&item.id);
            let played = watch.is_some_and(|watch| watch.played);
            let resumable = watch.is_some_and(|watch| watch.position_ms > 0);
            let favorite = catalog.favorites.contains(&item.id);
            (!filters.contains("isplayed") || played)
                && (!filters.contains("isunplayed") || !played)
                && (!filters.contains("isfavorite") || favorite)
                && (!filters.contains("isresumable") || resumable)
                && played_filter.is_none_or(|wanted| wanted == played)
                && favorite_filter.is_none_or(|wanted| wanted == favorite)
        })
        .collect();
    sort(&mut selected, request, &catalog)?;
    page(state, request, &catalog, selected)
}

fn sort(items: &mut Vec<&Item>, request: &JfRequest, catalog: &Catalog) -> ApiResult<()> {
    let by = request
        .param("sortby")
        .unwrap_or("SortName")
        .split(',')
        .next()
        .unwrap_or("SortName")
        .trim()
        .to_ascii_lowercase();
    let descending = request.param("sortorder").is_some_and(|order| {
        order
            .split(',')
            .next()
            .is_some_and(|first| first.trim().eq_ignore_ascii_case("descending"))
    });
    items.sort_by(|a, b| (&a.fields.sort_title, a.id).cmp(&(&b.fields.sort_title, b.id)));
    match by.as_str() {
        "sortname" | "name" | "albumartist" | "artist" | "album" => {}
        "datecreated" => items.sort_by_key(|item| (item.added_ms, item.id)),
        "productionyear" | "premieredate" => items.sort_by_key(|item| (item.fields.year, item.id)),
        "indexnumber" | "parentindexnumber" => items.sort_by_key(|item| {
            let season = item
                .parent
                .and_then(|id| catalog.items.get(&id))
                .and_then(|parent| parent.fields.index);
            (season, item.fields.index, item.id)
        }),
        "dateplayed" => items.sort_by_key(|item| catalog.watch.get(&item.id).map_or(0, |watch| watch.updated_ms)),
        "playcount" => items.sort_by_key(|item| catalog.watch.get(&item.id).map_or(0, |watch| watch.play_count)),
        "runtime" => items.sort_by_key(|item| {
            item.fields
                .metadata
                .get("duration_ms")
                .and_then(|ms| ms.parse::<u64>().ok())
                .unwrap_or(0)
        }),
        "random" => {
            use rand::seq::SliceRandom;
            items.shuffle(&mut rand::rng());
        }
        other => return Err(ApiError::bad_request(format!("cannot sort by {other:?}"))),
    }
    if descending {
        items.reverse();
    }
    Ok(())
}

/// A page of `items` as `{Items, TotalRecordCount, StartIndex}`.
fn page(state: &AppState, request: &JfRequest, catalog: &Catalog, items: Vec<&Item>) -> ApiResult<Response> {
    let start: usize = request.number("startindex")?.unwrap_or(0);
    let limit: usize = request.number::<usize>("limit")?.unwrap_or(LIMIT_MAX).min(LIMIT_MAX);
    let server = server_id(state);
    let total = items.len();
    let page: Vec<Value> = items
        .into_iter()
        .skip(start)
        .take(limit)
        .map(|item| catalog.dto(state, &server, item))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        json!({"Items": page, "TotalRecordCount": total, "StartIndex": start}),
    ))
}

/// `GET /Items/Latest`: a bare list, newest first, top-level items (and
/// albums rather than their tracks).
fn latest(state: &AppState, request: &JfRequest, caller: &Caller) -> ApiResult<Response> {
    let library = match request.param("parentid") {
        Some(text) => Some(dto::parse_id(text).ok_or_else(|| ApiError::bad_request("ParentId is not an id"))?),
        None => None,
    };
    let catalog = Catalog::load(state, caller, library)?;
    let kinds: Option<Vec<ItemKind>> = request
        .param("includeitemtypes")
        .map(|list| list.split(',').filter_map(|name| dto::kind_of(name.trim())).collect());
    let limit: usize = request.number::<usize>("limit")?.unwrap_or(20).min(LIMIT_MAX);
    let mut items: Vec<&Item> = catalog
        .items
        .values()
        .filter(|item| match &kinds {
            Some(kinds) => kinds.contains(&item.fields.kind),
            None => matches!(
                item.fields.kind,
                ItemKind::Movie
                    | ItemKind::Series
                    | ItemKind::Album
                    | ItemKind::Audiobook
                    | ItemKind::Book
                    | ItemKind::Photo
            ),
        })
        .collect();
    items.sort_by_key(|item| std::cmp::Reverse((item.added_ms, item.id)));
    let server = server_id(state);
    let list: Vec<Value> = items
        .into_iter()
        .take(limit)
        .map(|item| catalog.dto(state, &server, item))
        .collect();
    Ok(json_response(StatusCode::OK, Value::Array(list)))
}

/// `GET /UserItems/Resume`: started, unfinished video and audio, latest first.
fn resume(state: &AppState, request: &JfRequest, caller: &Caller) -> ApiResult<Response> {
    let catalog = Catalog::load(state, caller, None)?;
    let mut items: Vec<&Item> = catalog
        .items
        .values()
        .filter(|item| catalog.watch.get(&item.id).is_some_and(|watch| watch.position_ms > 0))
        .filter(|item| {
            request
                .param("mediatypes")
                .is_none_or(|wanted| media_type_matches(item.fields.kind, wanted))
        })
        .collect();
    items.sort_by_key(|item| std::cmp::Reverse(catalog.watch.get(&item.id).map_or(0, |watch| watch.updated_ms)));
    page(state, request, &catalog, items)
}

fn parse_item(text: &str) -> ApiResult<u64> {
    dto::parse_id(text).ok_or_else(|| ApiError::not_found(format!("{text:?} is not an item id")))
}

fn item(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Response> {
    let id = parse_item(id)?;
    // A library id names its view.
    if let Some(library) = visible_libraries(state, caller)?
        .into_iter()
        .find(|library| library.id == id)
    {
        return Ok(json_response(StatusCode::OK, dto::view(&library, &server_id(state))));
    }
    let item = visible_item(state, caller, id)?;
    let catalog = Catalog::load(state, caller, Some(item.fields.library))?;
    Ok(json_response(
        StatusCode::OK,
        catalog.dto(state, &server_id(state), &item),
    ))
}

/// `GET /Items/{id}/Images/{type}`: with a valid `tag` (as `ImageTags`
/// gives) or a token; otherwise 401.
async fn image(state: &AppState, request: &JfRequest, id: &str) -> ApiResult<Response> {
    let id = parse_item(id)?;
    let item = read::item(state.cluster.tables(), id)?.ok_or_else(|| ApiError::not_found("no such item"))?;
    let tag_ok = request
        .param("tag")
        .zip(dto::image_tag(&state.tokens, &item))
        .is_some_and(|(given, expected)| blake3::hash(given.as_bytes()) == blake3::hash(expected.as_bytes()));
    if !tag_ok {
        let caller = request.caller(state)?;
        visible_item(state, &caller, id)?;
    }
    serve_image(state, &item, &request.headers).await
}

/// The client's profile, from a `DeviceProfile`'s direct-play profiles and
/// `MaxStreamingBitrate`; a browser's when it sends none.
fn client_profile(body: &Value, request: &JfRequest) -> ClientProfile {
    let mut profile = ClientProfile::browser();
    if let Some(direct) = field(body, "DeviceProfile")
        .and_then(|device| field(device, "DirectPlayProfiles"))
        .and_then(Value::as_array)
    {
        let mut containers = Vec::new();
        let mut video = Vec::new();
        let mut audio = Vec::new();
        for entry in direct {
            for (name, list) in [
                ("Container", &mut containers),
                ("VideoCodec", &mut video),
                ("AudioCodec", &mut audio),
            ] {
                if let Some(text) = field(entry, name).and_then(Value::as_str) {
                    list.extend(
                        text.split(',')
                            .map(|item| item.trim().to_ascii_lowercase())
                            .filter(|item| !item.is_empty()),
                    );
                }
            }
        }
        profile.containers = containers;
        profile.video_codecs = video;
        profile.audio_codecs = audio;
    }
    let bitrate = field(body, "MaxStreamingBitrate")
        .and_then(Value::as_u64)
        .or_else(|| request.param("maxstreamingbitrate").and_then(|text| text.parse().ok()));
    profile.max_bitrate = bitrate.filter(|rate| *rate > 0);
    profile
}

/// `POST /Items/{id}/PlaybackInfo`: one media source, direct or through
/// Omega's HLS (remux or transcode), with its streams.
async fn playback_info(state: &AppState, request: &JfRequest, caller: &Caller, id: &str) -> ApiResult<Response> {
    let id = parse_item(id)?;
    let body = request.json()?;
    let source = crate::api::hls::source(state, caller, id).await?;
    let media = crate::api::items::local_media(state, &source.item)?;
    let extension = crate::library::naming::extension(&media.path).unwrap_or_default();
    let decision = source.decide(&client_profile(&body, request)).await;
    let direct = matches!(decision, Decision::DirectPlay);
    let token = request.token().unwrap_or_default();
    let mut streams = Vec::new();
    if let Some(video) = &source.info.video {
        streams.push(json!({
            "Type": "Video", "Index": video.index, "Codec": video.codec, "Width": video.width,
            "Height": video.height, "RealFrameRate": video.fps, "BitRate": video.bit_rate,
            "Profile": video.profile, "IsDefault": true, "IsExternal": false,
        }));
    }
    let default_audio = source.info.main_audio().map(|audio| audio.index);
    for audio in &source.info.audio {
        streams.push(json!({
            "Type": "Audio", "Index": audio.index, "Codec": audio.codec, "Channels": audio.channels,
            "Language": audio.language, "IsDefault": Some(audio.index) == default_audio, "IsExternal": false,
        }));
    }
    for subtitle in &source.info.subtitles {
        streams.push(json!({
            "Type": "Subtitle", "Index": subtitle.index, "Codec": subtitle.codec, "Language": subtitle.language,
            "IsTextSubtitleStream": subtitle.text, "IsDefault": false, "IsExternal": false,
        }));
    }
    let hex = dto::id(id);
    let mut source_info = json!({
        "Id": hex, "Protocol": "File", "Type": "Default", "Container": extension, "Size": media.size,
        "Name": source.item.fields.title, "IsRemote": false,
        "RunTimeTicks": ((source.info.duration_s * 1000.0) as u64).saturating_mul(TICKS_PER_MS),
        "SupportsDirectPlay": direct, "SupportsDirectStream": direct, "SupportsTranscoding": true,
        "Bitrate": source.info.bit_rate, "DefaultAudioStreamIndex": default_audio,
        "MediaStreams": streams, "ETag": source.id,
    });
    if !direct {
        let reason = match &decision {
            Decision::Remux { .. } => "ContainerNotSupported",
            _ => "VideoCodecNotSupported",
        };
        source_info["TranscodingUrl"] = json!(format!("/Videos/{hex}/master.m3u8?MediaSourceId={hex}&ApiKey={token}"));
        source_info["TranscodingSubProtocol"] = json!("hls");
        source_info["TranscodingContainer"] = json!("mp4");
        source_info["TranscodeReasons"] = json!([reason]);
    }
    Ok(json_response(
        StatusCode::OK,
        json!({"MediaSources": [source_info], "PlaySessionId": dto::id(rand::random::<u64>())}),
    ))
}

/// `/Videos/{id}/master.m3u8`: Omega's own HLS, with a stream token in the
/// URLs inside, so the player needs no headers.
fn hls_redirect(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Response> {
    let id = parse_item(id)?;
    visible_item(state, caller, id)?;
    let token = state.tokens.stream_token(caller.user.id, id, state.clock.now_ms());
    let location = format!("/api/v1/items/{id}/hls/master.m3u8?t={token}");
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `/Items/{id}/File` and `/Download`: the file as it is.
async fn file(state: &AppState, request: &JfRequest, caller: &Caller, id: &str) -> ApiResult<Response> {
    let item = visible_item(state, caller, parse_item(id)?)?;
    serve_file(state, &item, &request.headers, request.zero_copy.as_ref()).await
}

/// `/Videos/{id}/stream[.ext]`: `static=true` is the file; otherwise the
/// file when the client plays it, else Omega's HLS.
async fn video_stream(state: &AppState, request: &JfRequest, caller: &Caller, id: &str) -> ApiResult<Response> {
    let item = visible_item(state, caller, parse_item(id)?)?;
    if request.flag("static").unwrap_or(false) {
        return serve_file(state, &item, &request.headers, request.zero_copy.as_ref()).await;
    }
    let container = request.param("container").map(str::to_ascii_lowercase);
    let own = item
        .fields
        .media
        .first()
        .and_then(|media| crate::library::naming::extension(&media.path))
        .unwrap_or_default();
    if container
        .as_deref()
        .is_none_or(|wanted| wanted.split(',').any(|c| c.trim() == own))
    {
        return serve_file(state, &item, &request.headers, request.zero_copy.as_ref()).await;
    }
    hls_redirect(state, caller, &item.id.to_string())
}

/// `/Audio/{id}/universal` and `/Audio/{id}/stream`: the file when its
/// container is among the client's (or `static=true`), else MP3 or Opus
/// made on the fly at `MaxStreamingBitrate`.
async fn audio(state: &AppState, request: &JfRequest, caller: &Caller, id: &str) -> ApiResult<Response> {
    let item = visible_item(state, caller, parse_item(id)?)?;
    let media = crate::api::items::local_media(state, &item)?;
    let own = crate::library::naming::extension(&media.path).unwrap_or_default();
    let containers = request.param("container").map(str::to_ascii_lowercase);
    let plays_own = containers.as_deref().is_none_or(|list| {
        list.split(',')
            .any(|container| container.split('|').next().unwrap_or_default().trim() == own)
    });
    let max_bps: Option<u64> = request
        .number::<u64>("maxstreamingbitrate")?
        .or(request.number::<u64>("audiobitrate")?)
        .filter(|rate| *rate > 0);
    let source_bps = item
        .fields
        .metadata
        .get("bit_rate")
        .and_then(|rate| rate.parse::<u64>().ok());
    let too_fast = max_bps.is_some_and(|max| source_bps.is_none_or(|rate| rate > max));
    if request.flag("static").unwrap_or(false) || (plays_own && !too_fast) {
        return serve_file(state, &item, &request.headers, request.zero_copy.as_ref()).await;
    }
    let wants_opus = request
        .param("audiocodec")
        .or(request.param("transcodingcontainer"))
        .is_some_and(|codec| codec.contains("opus") || codec.contains("ogg"));
    let format = if wants_opus {
        omega_transcode::audio::AudioFormat::Opus
    } else {
        omega_transcode::audio::AudioFormat::Mp3
    };
    let kbps = max_bps.map_or(192, |bps| bps / 1000).clamp(32, 320);
    let transcoder = state
        .transcoder
        .clone()
        .ok_or_else(|| ApiError::not_found("transcoding is off on this node"))?;
    let body = transcoder.audio_body(std::path::Path::new(&media.path), format, kbps, 0)?;
    Ok(streamed(format.content_type(), body))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    Start,
    Progress,
    Stop,
}

/// `POST /Sessions/Playing[/Progress|/Stopped]`: the position goes into the
/// same watch state the web app shows; a stop near the end counts a play.
async fn report(state: &AppState, request: &JfRequest, caller: &Caller, kind: Report) -> ApiResult<Response> {
    let body = request.json()?;
    let id = field(&body, "ItemId")
        .and_then(Value::as_str)
        .and_then(dto::parse_id)
        .ok_or_else(|| ApiError::bad_request("ItemId is required"))?;
    let item = visible_item(state, caller, id)?;
    let position_ms = field(&body, "PositionTicks").and_then(Value::as_u64).unwrap_or(0) / TICKS_PER_MS;
    let runtime_ms = item
        .fields
        .metadata
        .get("duration_ms")
        .and_then(|ms| ms.parse::<u64>().ok())
        .unwrap_or(0);
    let finished = kind == Report::Stop && runtime_ms > 0 && position_ms as f64 >= runtime_ms as f64 * PLAYED_FRACTION;
    let _ = save_watch(state, caller, id, |watch| {
        if finished {
            watch.played = true;
            watch.play_count = watch.play_count.saturating_add(1);
            watch.position_ms = 0;
        } else {
            watch.position_ms = position_ms;
        }
    })
    .await?;
    Ok(no_content())
}

async fn played(state: &AppState, caller: &Caller, id: &str, played: bool) -> ApiResult<Response> {
    let id = parse_item(id)?;
    visible_item(state, caller, id)?;
    let data = save_watch(state, caller, id, |watch| {
        watch.played = played;
        watch.position_ms = 0;
        if played {
            watch.play_count = watch.play_count.saturating_add(1);
        }
    })
    .await?;
    let watch = read::watch_state(state.cluster.tables(), caller.user.id, id)?;
    Ok(json_response(
        StatusCode::OK,
        dto::user_data(id, watch.as_ref(), data.favorite, None),
    ))
}

async fn favorite(state: &AppState, caller: &Caller, id: &str, favorite: bool) -> ApiResult<Response> {
    let id = parse_item(id)?;
    let _ = set_favorite(state, caller, id, favorite).await?;
    let watch = read::watch_state(state.cluster.tables(), caller.user.id, id)?;
    Ok(json_response(
        StatusCode::OK,
        dto::user_data(id, watch.as_ref(), favorite, None),
    ))
}
