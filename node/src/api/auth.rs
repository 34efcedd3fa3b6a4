//! Authentication: passwords (argon2id), access tokens of 15 minutes,
//! rotating refresh tokens, API keys, TOTP second factor, and failed-login
//! rate limiting by user name and by client address.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use omega_consensus::command::{Command, Response};
use omega_consensus::model::{Role, User};
use omega_consensus::state_machine::read;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::extract::Body;
use super::{ApiError, ApiResult, AppState};
use crate::auth::{hash_password, verify_password};
use crate::ratelimit::Attempt;
use crate::tokens::{ACCESS_TTL_MS, API_KEY_PREFIX, REFRESH_PREFIX, REFRESH_TTL_MS, new_secret, secret_hash};
use crate::totp;

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user, as this node has it.
    pub user: User,
}

impl Caller {
    /// True for administrators.
    pub fn is_admin(&self) -> bool {
        self.user.roles.contains(&Role::Admin)
    }

    /// Refuses non-administrators with 403.
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("administrators only"))
        }
    }

    /// The caller named by the request's bearer token or API key header.
    pub fn from_parts(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
        let token = bearer(parts).ok_or_else(|| ApiError::unauthorized("sign in first"))?;
        Caller::from_token(state, token)
    }

    /// The caller an access token or API key names.
    pub fn from_token(state: &AppState, token: &str) -> Result<Caller, ApiError> {
        let tables = state.cluster.tables();
        // Local reads: a token is checked against what this node applied,
        // at most a replication delay behind.
        let user_id = if token.starts_with(API_KEY_PREFIX) {
            read::api_key(tables, &secret_hash(token))?.map(|key| key.user)
        } else {
            match state.tokens.check_access(token, state.clock.now_ms()) {
                // Refused once its user signed out everywhere after it was
                // issued (tokens live ACCESS_TTL_MS from their issue).
                Some(claims) => {
                    let issued_ms = claims.expires_ms.saturating_sub(ACCESS_TTL_MS);
                    let signed_out = read::signed_out_at(tables, claims.user)?;
                    signed_out.is_none_or(|at| issued_ms >= at).then_some(claims.user)
                }
                None => None,
            }
        };
        let user = match user_id {
            Some(id) => read::user(tables, id)?,
            None => None,
        };
        user.map(|user| Caller { user })
            .ok_or_else(|| ApiError::unauthorized("the token is invalid or expired"))
    }
}

/// An authenticated administrator: refuses others with 403 before the body
/// is read, so no admin route does any work for them.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Admin, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require_admin()?;
        Ok(Admin(caller))
    }
}

pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then_some(token.trim());
    }
    parts.headers.get("x-api-key").and_then(|value| value.to_str().ok())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        Caller::from_parts(parts, state)
    }
}

/// `POST /api/v1/auth/login`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Current TOTP code, for users with a second factor.
    pub totp: Option<String>,
}

/// Tokens handed out by login and refresh.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// Bearer token for API calls, valid `expires_in` seconds.
    pub access_token: String,
    /// Trades for a new pair at `/auth/refresh`; revoked by `/auth/logout`.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds the access token stays valid.
    pub expires_in: u64,
    /// Who signed in.
    pub user: UserView,
}

/// A user as the API shows it (never its hash or secrets).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Administrator.
    pub admin: bool,
    /// Has a TOTP second factor.
    pub totp: bool,
    /// `null` for every library, else the ids it may see.
    pub libraries: Option<Vec<u64>>,
}

impl From<&User> for UserView {
    fn from(user: &User) -> UserView {
        UserView {
            id: user.id,
            name: user.name.clone(),
            admin: user.roles.contains(&Role::Admin),
            totp: user.totp_secret.is_some(),
            libraries: match &user.library_access {
                omega_consensus::model::LibraryAccess::All => None,
                omega_consensus::model::LibraryAccess::Only(ids) => Some(ids.iter().copied().collect()),
            },
        }
    }
}

/// A hash to verify against when the user does not exist, so that timing
/// does not tell which names exist.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("omega decoy password").unwrap_or_default())
}

pub(crate) async fn check_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false)
}

pub(crate) async fn issue_tokens(state: &AppState, user: &User) -> ApiResult<TokenResponse> {
    let now_ms = state.clock.now_ms();
    let (refresh_token, hash) = new_secret(REFRESH_PREFIX);
    state
        .write(Command::PutRefreshToken {
            hash,
            user: user.id,
            expires_ms: now_ms.saturating_add(REFRESH_TTL_MS),
        })
        .await?;
    Ok(token_response(state, user, refresh_token, now_ms))
}

/// The answer to a sign-in or a refresh: a new access token for `user`
/// beside its new `refresh_token`.
fn token_response(state: &AppState, user: &User, refresh_token: String, now_ms: u64) -> TokenResponse {
    let (access_token, _) = state.tokens.access_token(user.id, now_ms);
    TokenResponse {
        access_token,
        refresh_token,
        token_type: "Bearer",
        expires_in: ACCESS_TTL_MS / 1000,
        user: UserView::from(user),
    }
}

/// Signs in with a user name and password (and a TOTP code when enrolled).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest, responses((status = 200, body = TokenResponse), (status = 401, description = "Wrong credentials or TOTP code"), (status = 429, description = "Too many failures")))]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    Body(request): Body<LoginRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let now_ms = state.clock.now_ms();
    let attempt = Attempt::new(&request.username, state.client_ip(peer, &headers));
    if let Some(wait) = state.limiter.retry_after(attempt, now_ms) {
        return Err(ApiError::too_many(wait));
    }
    let user = read::user_by_name(state.cluster.tables(), &request.username)?;
    let hash = user
        .as_ref()
        .map_or_else(|| decoy_hash().to_owned(), |user| user.password_hash.clone());
    let password_ok = check_password(request.password, hash).await;
    let Some(user) = user.filter(|_| password_ok) else {
        state.limiter.failed(attempt, now_ms);
        return Err(ApiError::unauthorized("wrong user name or password"));
    };
    if let Some(secret) = totp_secret(&state, &user)? {
        match request.totp.as_deref() {
            None => {
                return Err(ApiError::unauthorized("a TOTP code is required").with(json!({ "totp_required": true })));
            }
            Some(code) if !totp::verify(&secret, code, now_ms) => {
                state.limiter.failed(attempt, now_ms);
                return Err(ApiError::unauthorized("wrong TOTP code").with(json!({ "totp_required": true })));
            }
            Some(_) => {}
        }
    }
    state.limiter.succeeded(attempt);
    Ok(Json(issue_tokens(&state, &user).await?))
}

/// A refresh token in a body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RefreshRequest {
    /// The refresh token.
    pub refresh_token: String,
}

/// Trades a refresh token for a new access and refresh token in one
/// replicated step: the old one stops working, so a stolen token works once
/// at most, and a token presented again after it was traded (by a thief or
/// by the user it was stolen from) revokes every token of its sign-in.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest, responses((status = 200, body = TokenResponse), (status = 401, description = "Invalid, expired or reused (the sign-in is then revoked)")))]
pub async fn refresh(
    State(state): State<AppState>,
    Body(request): Body<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let now_ms = state.clock.now_ms();
    let (refresh_token, new_hash) = new_secret(REFRESH_PREFIX);
    let command = Command::RotateRefreshToken {
        old: secret_hash(&request.refresh_token),
        new: new_hash,
        expires_ms: now_ms.saturating_add(REFRESH_TTL_MS),
        now_ms,
    };
    let user_id = match state.cluster.write(command).await? {
        Response::Rotated { user } => user,
        Response::FamilyRevoked => {
            tracing::warn!("a refresh token was used twice; its sign-in is revoked");
            return Err(ApiError::unauthorized(
                "the refresh token was already used: this sign-in is revoked; sign in again",
            ));
        }
        Response::Rejected(_) => return Err(ApiError::unauthorized("the refresh token is invalid or expired")),
        other => return Err(ApiError::internal(format!("unexpected answer {other:?}"))),
    };
    // Applied through Raft, so this node has the user as of the rotation.
    let user = read::user(state.cluster.tables(), user_id)?
        .ok_or_else(|| ApiError::unauthorized("the user no longer exists"))?;
    Ok(Json(token_response(&state, &user, refresh_token, now_ms)))
}

/// Revokes a refresh token.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshRequest, responses((status = 204)))]
pub async fn logout(State(state): State<AppState>, Body(request): Body<RefreshRequest>) -> ApiResult<StatusCode> {
    state
        .write(Command::RevokeRefreshToken {
            hash: secret_hash(&request.refresh_token),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth", security(("bearer" = [])), responses((status = 200, body = UserView), (status = 401)))]
pub async fn me(caller: Caller) -> Json<UserView> {
    Json(UserView::from(&caller.user))
}

/// `POST /api/v1/auth/keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct KeyRequest {
    /// A label (the app it is for): 1 to 128 characters, not all blank.
    #[schema(min_length = 1, max_length = 128, pattern = "\\S")]
    pub name: String,
}

/// Creates an API key for the caller; the key is shown once.
#[utoipa::path(post, path = "/api/v1/auth/keys", tag = "auth", security(("bearer" = [])), request_body = KeyRequest, responses((status = 201), (status = 401), (status = 409, description = "The caller holds as many API keys as one may")))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<KeyRequest>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    if request.name.trim().is_empty() || request.name.chars().count() > 128 {
        return Err(ApiError::bad_request(
            "a key name is 1 to 128 characters, not all blank",
        ));
    }
    let (key, hash) = new_secret(API_KEY_PREFIX);
    state
        .write(Command::PutApiKey {
            hash,
            user: caller.user.id,
            name: request.name.clone(),
            now_ms: state.clock.now_ms(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "key": key, "name": request.name }))))
}

/// `POST /api/v1/auth/keys/revoke`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RevokeKeyRequest {
    /// The key.
    pub key: String,
}

/// Revokes one of the caller's API keys (administrators: anyone's).
#[utoipa::path(post, path = "/api/v1/auth/keys/revoke", tag = "auth", security(("bearer" = [])), request_body = RevokeKeyRequest, responses((status = 204), (status = 404)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<RevokeKeyRequest>,
) -> ApiResult<StatusCode> {
    let hash = secret_hash(&request.key);
    let key = read::api_key(state.cluster.tables(), &hash)?.ok_or_else(|| ApiError::not_found("no such key"))?;
    if key.user != caller.user.id && !caller.is_admin() {
        return Err(ApiError::not_found("no such key"));
    }
    state.write(Command::RevokeApiKey { hash }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts TOTP enrolment: a new secret (shown as base32 and an otpauth URI)
/// and a ticket to confirm it with a first code.
#[utoipa::path(post, path = "/api/v1/auth/totp/enroll", tag = "auth", security(("bearer" = [])), responses((status = 200), (status = 401)))]
pub async fn totp_enroll(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<serde_json::Value>> {
    let secret: [u8; 20] = rand::random();
    let ticket = state
        .tokens
        .enrolment_ticket(caller.user.id, &secret, state.clock.now_ms());
    Ok(Json(json!({
        "secret": totp::base32(&secret),
        "uri": totp::uri(&secret, &caller.user.name),
        "ticket": ticket,
    })))
}

/// `POST /api/v1/auth/totp/confirm`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TotpConfirm {
    /// From `/auth/totp/enroll`.
    pub ticket: String,
    /// The authenticator's current code.
    pub code: String,
}

/// Finishes enrolment: from now on login asks for a code.
#[utoipa::path(post, path = "/api/v1/auth/totp/confirm", tag = "auth", security(("bearer" = [])), request_body = TotpConfirm, responses((status = 204), (status = 400)))]
pub async fn totp_confirm(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<TotpConfirm>,
) -> ApiResult<StatusCode> {
    let now_ms = state.clock.now_ms();
    let secret = state
        .tokens
        .check_enrolment(&request.ticket, caller.user.id, now_ms)
        .ok_or_else(|| ApiError::bad_request("the enrolment ticket is invalid or expired"))?;
    if !totp::verify(&secret, &request.code, now_ms) {
        return Err(ApiError::bad_request("wrong TOTP code"));
    }
    let sealed = state.tokens.seal_totp_secret(caller.user.id, &secret);
    set_totp(&state, caller.user.id, Some(sealed)).await
}

/// The TOTP secret of `user`, opened (it is stored sealed); `None` when no
/// second factor is enrolled.
fn totp_secret(state: &AppState, user: &User) -> ApiResult<Option<Vec<u8>>> {
    let Some(stored) = &user.totp_secret else {
        return Ok(None);
    };
    state
        .tokens
        .open_totp_secret(user.id, stored)
        .map(Some)
        .ok_or_else(|| ApiError::internal(format!("the TOTP secret of user {} does not open", user.id)))
}

/// Stores (or, with `None`, removes) a user's sealed TOTP secret.
async fn set_totp(state: &AppState, user: u64, secret: Option<Vec<u8>>) -> ApiResult<StatusCode> {
    state
        .write(Command::UpdateUser {
            id: user,
            password_hash: None,
            roles: None,
            library_access: None,
            totp_secret: Some(secret),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/auth/totp/disable`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TotpCode {
    /// The authenticator's current code.
    pub code: String,
}

/// Removes the caller's second factor (a current code proves possession).
#[utoipa::path(post, path = "/api/v1/auth/totp/disable", tag = "auth", security(("bearer" = [])), request_body = TotpCode, responses((status = 204), (status = 400)))]
pub async fn totp_disable(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<TotpCode>,
) -> ApiResult<StatusCode> {
    let secret =
        totp_secret(&state, &caller.user)?.ok_or_else(|| ApiError::bad_request("no second factor is enrolled"))?;
    if !totp::verify(&secret, &request.code, state.clock.now_ms()) {
        return Err(ApiError::bad_request("wrong TOTP code"));
    }
    set_totp(&state, caller.user.id, None).await
}
