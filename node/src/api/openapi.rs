//! The OpenAPI 3 document of `/api/v1`, generated from the handlers'
//! annotations (utoipa) and served at `/api/v1/openapi.json`.
//!
//! Tags used by the authorization matrix test: `admin` (administrators
//! only) and `library-scoped` (the item or library must be visible to the
//! caller); every operation with a `bearer` requirement refuses callers
//! without a token.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    app_passwords, auth, events, folders, hls, items, jobs, libraries, manifest, playlists, segments, sessions, setup,
    status, users,
};

/// The document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Omega API", description = "Omega's REST API: authentication, users, libraries, the catalog and playback."),
    paths(
        setup::state,
        setup::create_admin,
        auth::login,
        auth::refresh,
        auth::logout,
        auth::me,
        auth::create_key,
        auth::revoke_key,
        auth::totp_enroll,
        auth::totp_confirm,
        auth::totp_disable,
        sessions::change_password,
        sessions::sign_out_everywhere,
        app_passwords::list,
        app_passwords::create,
        app_passwords::revoke,
        users::list,
        users::create,
        users::remove,
        users::set_access,
        sessions::reset_password,
        folders::list,
        libraries::list,
        libraries::create,
        libraries::remove,
        libraries::scan,
        libraries::scan_status,
        items::list,
        items::detail,
        items::resume,
        items::stream,
        manifest::manifest,
        manifest::fetch_report,
        items::children,
        hls::playback,
        hls::master,
        hls::file,
        segments::by_hash,
        items::image,
        items::progress,
        items::mark_played,
        items::mark_unplayed,
        items::mark_favorite,
        items::unmark_favorite,
        events::events,
        jobs::create,
        jobs::list,
        jobs::detail,
        jobs::output,
        playlists::list,
        playlists::create,
        playlists::detail,
        playlists::update,
        playlists::remove,
        status::cluster,
        status::store,
        status::p2p,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An access token from /auth/login, or an API key"))
                    .build(),
            ),
        );
    }
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Json<serde_json::Value> {
    Json(served_document().clone())
}

/// The document as served: the handlers' annotations plus what holds for
/// every operation (built once; it never changes while the node runs).
pub fn served_document() -> &'static serde_json::Value {
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        // Serializing the generated document cannot fail: it holds only
        // strings, numbers, maps and lists.
        let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        add_common_answers(&mut document);
        bound_unsigned_integers(&mut document);
        document
    })
}

/// The error answers every handler may give besides its own, added where an
/// operation's annotation leaves them out, so that a client (or
/// schemathesis) finds every status the server sends described: 400 for a
/// malformed parameter or body, 401 without a valid token, 403 for a user
/// on an administrators' route, 413 and 415 for a body too large or not
/// JSON.
fn add_common_answers(document: &mut serde_json::Value) {
    use serde_json::json;
    if let Some(schemas) = document
        .pointer_mut("/components/schemas")
        .and_then(|value| value.as_object_mut())
    {
        schemas.insert(
            "Error".to_owned(),
            json!({
                "type": "object",
                "description": "Every error answer's body.",
                "required": ["error"],
                "properties": {"error": {"type": "string", "description": "What went wrong, in words."}},
            }),
        );
    }
    let Some(paths) = document.get_mut("paths").and_then(|paths| paths.as_object_mut()) else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter(|operation| operation.get("responses").is_some())
    {
        let has_body = operation.get("requestBody").is_some();
        let has_parameters = operation["parameters"].as_array().is_some_and(|all| !all.is_empty());
        let needs_token = operation["security"]
            .as_array()
            .is_some_and(|all| all.iter().any(|requirement| requirement.get("bearer").is_some()));
        let admin_only = operation["tags"]
            .as_array()
            .is_some_and(|tags| tags.iter().any(|tag| tag == "admin"));
        let common = [
            (
                has_body || has_parameters,
                "400",
                "A parameter or the body is malformed or out of range",
            ),
            (needs_token, "401", "No valid token"),
            (admin_only, "403", "The caller is not an administrator"),
            (has_body, "413", "The body is larger than the server takes"),
            (has_body, "415", "The body is not sent as application/json"),
        ];
        let Some(responses) = operation.get_mut("responses").and_then(|value| value.as_object_mut()) else {
            continue;
        };
        for (applies, status, description) in common {
            if applies && !responses.contains_key(status) {
                responses.insert(status.to_owned(), error_answer(description));
            }
        }
        // An answer documented without a body is still a JSON error.
        for (status, answer) in responses.iter_mut() {
            if status.starts_with(['4', '5']) && answer.get("content").is_none() && answer.get("$ref").is_none() {
                answer["content"] = error_answer("")["content"].clone();
            }
        }
    }
}

fn error_answer(description: &str) -> serde_json::Value {
    serde_json::json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

/// Gives every unsigned integer its upper bound (the Rust type's), which
/// utoipa leaves out, and names its format as unsigned (utoipa calls a
/// `u64` `int64`, whose range stops at 2^63 - 1): a number past the bound is
/// refused with a 400, and the document says so.
fn bound_unsigned_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(object) => {
            // `"integer"`, or `["integer", "null"]` for an optional one.
            let integer = match object.get("type") {
                Some(serde_json::Value::Array(kinds)) => kinds.iter().any(|kind| kind == "integer"),
                Some(kind) => kind == "integer",
                None => false,
            };
            let unsigned = integer
                && object.get("minimum").and_then(|minimum| minimum.as_f64()) == Some(0.0)
                && !object.contains_key("maximum");
            if unsigned {
                let (format, maximum) = match object.get("format").and_then(|format| format.as_str()) {
                    Some("int8") => ("uint8", u64::from(u8::MAX)),
                    Some("int16") => ("uint16", u64::from(u16::MAX)),
                    Some("int32") => ("uint32", u64::from(u32::MAX)),
                    // int64, and usize (no format) on the 64-bit targets Omega runs on.
                    _ => ("uint64", u64::MAX),
                };
                object.insert("format".to_owned(), format.into());
                object.insert("maximum".to_owned(), maximum.into());
            }
            object.values_mut().for_each(bound_unsigned_integers);
        }
        serde_json::Value::Array(all) => all.iter_mut().for_each(bound_unsigned_integers),
        _ => {}
    }
}
