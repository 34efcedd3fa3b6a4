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
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
