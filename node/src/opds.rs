//! OPDS 1.2 at `/opds`, for e-book readers (KOReader, Moon+ Reader,
//! Thorium): a navigation root (all books, recently added, authors,
//! series), paged acquisition feeds whose entries link a cover, a thumbnail
//! and one acquisition per file, and OpenSearch at `/opds/osd`. Readers
//! sign in with HTTP Basic (an app password, or the account password when
//! the account has no TOTP); a bearer token or API key works too. Library
//! access rules are the API's.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use omega_consensus::model::{Item, ItemKind};
use omega_consensus::state_machine::read;
use serde::Deserialize;

use crate::api::app_passwords::{AuthFailure, Presented, authenticate};
use crate::api::items::{serve_file, serve_image, visible_item};
use crate::api::libraries::can_see;
use crate::api::{ApiError, ApiResult, AppState, Caller};
use crate::library::enrich::IMAGE_PRIMARY;
use crate::text::{escape_xml, rfc3339_ms};

/// Entries per page of an acquisition feed.
const PAGE_SIZE: usize = 50;
/// Longest search query.
const QUERY_MAX: usize = 256;

const NAVIGATION: &str = "application/atom+xml;profile=opds-catalog;kind=navigation";
const ACQUISITION: &str = "application/atom+xml;profile=opds-catalog;kind=acquisition";

/// The `/opds` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/opds", get(root))
        .route("/opds/books", get(all_books))
        .route("/opds/new", get(recent))
        .route("/opds/authors", get(authors))
        .route("/opds/authors/{name}", get(by_author))
        .route("/opds/series", get(series))
        .route("/opds/series/{name}", get(in_series))
        .route("/opds/search", get(search))
        .route("/opds/osd", get(open_search))
        .route("/opds/books/{id}/file/{index}", get(file))
        .route("/opds/books/{id}/cover", get(cover))
}

/// The reader, from HTTP Basic or the API's credentials; else 401 with a
/// Basic challenge, so that readers ask for a password.
async fn reader(state: &AppState, parts: &Parts, peer: &SocketAddr) -> ApiResult<Caller> {
    let challenge = |error: ApiError| error.with_challenge("Basic realm=\"Omega\", charset=\"UTF-8\"");
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let Some(basic) = authorization.and_then(|value| value.strip_prefix("Basic ")) else {
        return Caller::from_parts(parts, state).map_err(challenge);
    };
    let decoded = STANDARD
        .decode(basic.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| challenge(ApiError::unauthorized("malformed Basic credentials")))?;
    let (name, password) = decoded
        .split_once(':')
        .ok_or_else(|| challenge(ApiError::unauthorized("malformed Basic credentials")))?;
    match authenticate(
        state,
        name,
        Presented::Plain(password.to_owned()),
        state.client_ip(*peer, &parts.headers),
    )
    .await
    {
        Ok(user) => Ok(Caller { user }),
        Err(AuthFailure::Wrong) => Err(challenge(ApiError::unauthorized("wrong user name or password"))),
        Err(AuthFailure::Limited(wait_ms)) => Err(ApiError::too_many(wait_ms)),
        Err(AuthFailure::Internal(error)) => Err(error),
    }
}

/// Every book the reader may see.
fn books(state: &AppState, caller: &Caller) -> ApiResult<Vec<Item>> {
    let tables = state.cluster.tables();
    let mut books = Vec::new();
    for library in read::libraries(tables)? {
        if !can_see(caller, library.id) {
            continue;
        }
        books.extend(
            read::library_items(tables, library.id)?
                .into_iter()
                .filter(|item| item.fields.kind == ItemKind::Book),
        );
    }
    books.sort_by(|a, b| (&a.fields.sort_title, a.id).cmp(&(&b.fields.sort_title, b.id)));
    Ok(books)
}

/// `?page=`.
#[derive(Debug, Deserialize)]
struct PageQuery {
    page: Option<usize>,
}

/// `?q=&page=`.
#[derive(Debug, Deserialize)]
struct SearchQuery {
    q: Option<String>,
    page: Option<usize>,
}

/// A path segment, percent-encoded.
fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The start of a feed: its id, title, self link and the links every feed
/// has (start, search).
fn feed_head(id: &str, title: &str, self_href: &str, kind: &str, updated_ms: u64) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\" xmlns:dc=\"http://purl.org/dc/terms/\" xmlns:opds=\"http://opds-spec.org/2010/catalog\" xmlns:opensearch=\"http://a9.com/-/spec/opensearch/1.1/\">\n<id>urn:omega:opds:{}</id>\n<title>{}</title>\n<updated>{}</updated>\n<author><name>Omega</name></author>\n<link rel=\"self\" href=\"{}\" type=\"{kind}\"/>\n<link rel=\"start\" href=\"/opds\" type=\"{NAVIGATION}\"/>\n<link rel=\"search\" href=\"/opds/osd\" type=\"application/opensearchdescription+xml\"/>\n",
        escape_xml(id),
        escape_xml(title),
        rfc3339_ms(updated_ms),
        escape_xml(self_href),
    )
}

fn atom(body: String, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// A navigation feed of `(title, summary, href, kind)` entries, updated
/// `now`.
fn navigation(
    now: u64,
    id: &str,
    title: &str,
    self_href: &str,
    entries: &[(String, String, String, &str)],
) -> Response {
    let mut out = feed_head(id, title, self_href, NAVIGATION, now);
    for (title, summary, href, kind) in entries {
        let _ = write!(
            out,
            "<entry>\n<title>{}</title>\n<id>urn:omega:opds:{}</id>\n<updated>{}</updated>\n<content type=\"text\">{}</content>\n<link rel=\"subsection\" href=\"{}\" type=\"{kind}\"/>\n</entry>\n",
            escape_xml(title),
            escape_xml(href),
            rfc3339_ms(now),
            escape_xml(summary),
            escape_xml(href),
        );
    }
    out.push_str("</feed>\n");
    atom(out, NAVIGATION)
}

/// A page of an acquisition feed: entries with cover, thumbnail and one
/// acquisition link per file, and first/previous/next/last links; updated
/// when its newest book changed (`now` when it has none).
fn acquisition(now: u64, id: &str, title: &str, base: &str, books: &[Item], page: usize) -> Response {
    let pages = books.len().div_ceil(PAGE_SIZE).max(1);
    let page = page.min(pages - 1);
    let join = if base.contains('?') { '&' } else { '?' };
    let href = |page: usize| format!("{base}{join}page={page}");
    let updated = books.iter().map(|book| book.updated_ms).max().unwrap_or(now);
    let mut out = feed_head(id, title, &href(page), ACQUISITION, updated);
    let _ = writeln!(
        out,
        "<link rel=\"first\" href=\"{}\" type=\"{ACQUISITION}\"/>",
        escape_xml(&href(0))
    );
    let _ = writeln!(
        out,
        "<link rel=\"last\" href=\"{}\" type=\"{ACQUISITION}\"/>",
        escape_xml(&href(pages - 1))
    );
    if page > 0 {
        let _ = writeln!(
            out,
            "<link rel=\"previous\" href=\"{}\" type=\"{ACQUISITION}\"/>",
            escape_xml(&href(page - 1))
        );
    }
    if page + 1 < pages {
        let _ = writeln!(
            out,
            "<link rel=\"next\" href=\"{}\" type=\"{ACQUISITION}\"/>",
            escape_xml(&href(page + 1))
        );
    }
    let _ = writeln!(
        out,
        "<opensearch:totalResults>{}</opensearch:totalResults>\n<opensearch:itemsPerPage>{PAGE_SIZE}</opensearch:itemsPerPage>\n<opensearch:startIndex>{}</opensearch:startIndex>",
        books.len(),
        page * PAGE_SIZE + 1
    );
    for book in books.iter().skip(page * PAGE_SIZE).take(PAGE_SIZE) {
        entry(&mut out, book);
    }
    out.push_str("</feed>\n");
    atom(out, ACQUISITION)
}

fn entry(out: &mut String, book: &Item) {
    let metadata = &book.fields.metadata;
    let _ = write!(
        out,
        "<entry>\n<title>{}</title>\n<id>urn:omega:item:{}</id>\n<updated>{}</updated>\n",
        escape_xml(&book.fields.title),
        book.id,
        rfc3339_ms(book.updated_ms),
    );
    if let Some(author) = metadata.get("author") {
        let _ = writeln!(out, "<author><name>{}</name></author>", escape_xml(author));
    }
    for (key, element) in [("language", "dc:language"), ("published", "dc:issued")] {
        if let Some(value) = metadata.get(key) {
            let _ = writeln!(out, "<{element}>{}</{element}>", escape_xml(value));
        }
    }
    let mut summary = metadata.get("overview").cloned().unwrap_or_default();
    if let Some(series) = metadata.get("series") {
        let number = metadata
            .get("series_number")
            .map(|n| format!(" #{n}"))
            .unwrap_or_default();
        summary = format!("{series}{number}. {summary}").trim().to_owned();
    }
    if !summary.is_empty() {
        let _ = writeln!(out, "<summary>{}</summary>", escape_xml(&summary));
    }
    if metadata.contains_key(IMAGE_PRIMARY) {
        for rel in ["http://opds-spec.org/image", "http://opds-spec.org/image/thumbnail"] {
            let _ = writeln!(
                out,
                "<link rel=\"{rel}\" href=\"/opds/books/{}/cover\" type=\"image/jpeg\"/>",
                book.id
            );
        }
    }
    for (index, media) in book.fields.media.iter().enumerate() {
        let _ = writeln!(
            out,
            "<link rel=\"http://opds-spec.org/acquisition\" href=\"/opds/books/{}/file/{index}\" type=\"{}\" length=\"{}\"/>",
            book.id,
            crate::api::items::mime(&media.path),
            media.size,
        );
    }
    out.push_str("</entry>\n");
}

async fn root(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    parts: Parts,
) -> ApiResult<Response> {
    let caller = reader(&state, &parts, &peer).await?;
    let count = books(&state, &caller)?.len();
    let entries = [
        (
            "All books".to_owned(),
            format!("{count} books, by title"),
            "/opds/books".to_owned(),
            ACQUISITION,
        ),
        (
            "Recently added".to_owned(),
            "The newest books first".to_owned(),
            "/opds/new".to_owned(),
            ACQUISITION,
        ),
        (
            "Authors".to_owned(),
            "Books by author".to_owned(),
            "/opds/authors".to_owned(),
            NAVIGATION,
        ),
        (
            "Series".to_owned(),
            "Books by series, in order".to_owned(),
            "/opds/series".to_owned(),
            NAVIGATION,
        ),
    ];
    Ok(navigation(state.clock.now_ms(), "root", "Omega", "/opds", &entries))
}

async fn all_books(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<PageQuery>,
    parts: Parts,
) -> ApiResult<Response> {
    let caller = reader(&state, &parts, &peer).await?;
    let books = books(&state, &caller)?;
    Ok(acquisition(
        state.clock.now_ms(),
        "books",
        "All books",
        "/opds/books",
        &books,
        query.page.unwrap_or(0),
    ))
}

async fn recent(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<PageQuery>,
    parts: Parts,
) -> ApiResult<Response> {
    let caller = reader(&state, &parts, &peer).await?;
    let mut books = books(&state, &caller)?;
    books.sort_by_key(|book| std::cmp::Reverse((book.added_ms, book.id)));
    Ok(acquisition(
        state.clock.now_ms(),
        "new",
        "Recently added",
        "/opds/new",
        &books,
        query.page.unwrap_or(0),
    ))
}

/// Books grouped by a metadata value (author, series).
fn grouped(books: &[Item], key: &str) -> BTreeMap<String, usize> {
    let mut groups = BTreeMap::new();
    for book in books {
        if let Some(value) = book.fields.metadata.get(key) {
            *groups.entry(value.clone()).or_insert(0) += 1;
        }
    }
    groups
}

/// A navigation feed with one entry per value of `key` (author, series),
/// each leading to its books under `/opds/{path}/{value}`.
async fn groups_feed(
    state: &AppState,
    parts: &Parts,
    peer: &SocketAddr,
    key: &str,
    path: &str,
    title: &str,
) -> ApiResult<Response> {
    let caller = reader(state, parts, peer).await?;
    let entries: Vec<_> = grouped(&books(state, &caller)?, key)
        .into_iter()
        .map(|(name, count)| {
            let href = format!("/opds/{path}/{}", segment(&name));
            (name, format!("{count} books"), href, ACQUISITION)
        })
        .collect();
    Ok(navigation(
        state.clock.now_ms(),
        path,
        title,
        &format!("/opds/{path}"),
        &entries,
    ))
}

/// The books whose `key` is `name`, as a paged acquisition feed; `order`
/// sorts them first.
async fn group_feed(
    state: &AppState,
    parts: &Parts,
    peer: &SocketAddr,
    (key, path): (&str, &str),
    name: &str,
    page: usize,
    order: impl FnOnce(&mut Vec<Item>),
) -> ApiResult<Response> {
    let caller = reader(state, parts, peer).await?;
    let mut books: Vec<Item> = books(state, &caller)?
        .into_iter()
        .filter(|book| book.fields.metadata.get(key).map(String::as_str) == Some(name))
        .collect();
    order(&mut books);
    let base = format!("/opds/{path}/{}", segment(name));
    Ok(acquisition(
        state.clock.now_ms(),
        &format!("{key}:{name}"),
        name,
        &base,
        &books,
        page,
    ))
}

async fn authors(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    parts: Parts,
) -> ApiResult<Response> {
    groups_feed(&state, &parts, &peer, "author", "authors", "Authors").await
}

async fn by_author(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    Query(query): Query<PageQuery>,
    parts: Parts,
) -> ApiResult<Response> {
    let page = query.page.unwrap_or(0);
    group_feed(&state, &parts, &peer, ("author", "authors"), &name, page, |_| {}).await
}

async fn series(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    parts: Parts,
) -> ApiResult<Response> {
    groups_feed(&state, &parts, &peer, "series", "series", "Series").await
}

async fn in_series(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    Query(query): Query<PageQuery>,
    parts: Parts,
) -> ApiResult<Response> {
    let number = |book: &Item| {
        book.fields
            .metadata
            .get("series_number")
            .and_then(|number| number.parse::<f64>().ok())
            .unwrap_or(f64::MAX)
    };
    let page = query.page.unwrap_or(0);
    group_feed(&state, &parts, &peer, ("series", "series"), &name, page, |books| {
        books.sort_by(|a, b| number(a).total_cmp(&number(b)));
    })
    .await
}

async fn search(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<SearchQuery>,
    parts: Parts,
) -> ApiResult<Response> {
    let caller = reader(&state, &parts, &peer).await?;
    let needle = query.q.unwrap_or_default();
    if needle.chars().count() > QUERY_MAX {
        return Err(ApiError::bad_request(format!(
            "a search has at most {QUERY_MAX} characters"
        )));
    }
    let needle = needle.trim().to_lowercase();
    let folded = crate::text::search_fold(&needle);
    let books: Vec<Item> = books(&state, &caller)?
        .into_iter()
        .filter(|book| {
            crate::text::search_matches(&book.fields.title, &folded)
                || book
                    .fields
                    .metadata
                    .get("author")
                    .is_some_and(|author| crate::text::search_matches(author, &folded))
        })
        .collect();
    let base = format!("/opds/search?q={}", segment(&needle));
    Ok(acquisition(
        state.clock.now_ms(),
        "search",
        &format!("Search: {needle}"),
        &base,
        &books,
        query.page.unwrap_or(0),
    ))
}

/// The OpenSearch description readers use to build search URLs.
async fn open_search(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    parts: Parts,
) -> ApiResult<Response> {
    reader(&state, &parts, &peer).await?;
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<OpenSearchDescription xmlns=\"http://a9.com/-/spec/opensearch/1.1/\">\n<ShortName>Omega</ShortName>\n<Description>Search Omega's books by title or author</Description>\n<InputEncoding>UTF-8</InputEncoding>\n<OutputEncoding>UTF-8</OutputEncoding>\n<Url type=\"{ACQUISITION}\" template=\"/opds/search?q={{searchTerms}}\"/>\n</OpenSearchDescription>\n"
    );
    Ok(([(header::CONTENT_TYPE, "application/opensearchdescription+xml")], body).into_response())
}

/// A visible book.
fn book(state: &AppState, caller: &Caller, id: u64) -> ApiResult<Item> {
    visible_item(state, caller, id).and_then(|item| {
        if item.fields.kind == ItemKind::Book {
            Ok(item)
        } else {
            Err(ApiError::not_found("no such book"))
        }
    })
}

async fn file(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((id, index)): Path<(u64, usize)>,
    parts: Parts,
) -> ApiResult<Response> {
    let caller = reader(&state, &parts, &peer).await?;
    let mut book = book(&state, &caller, id)?;
    let media = book
        .fields
        .media
        .get(index)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("book {id} has no file {index}")))?;
    let name = std::path::Path::new(&media.path)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    book.fields.media = vec![media];
    let mut response = serve_file(&state, &book, &parts.headers, parts.extensions.get()).await?;
    // Readers name the download after this.
    let disposition = format!("attachment; filename*=UTF-8''{}", segment(&name));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

async fn cover(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<u64>,
    parts: Parts,
) -> ApiResult<Response> {
    let caller = reader(&state, &parts, &peer).await?;
    let book = book(&state, &caller, id)?;
    serve_image(&state, &book, &parts.headers).await
}
