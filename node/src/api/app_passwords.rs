//! App passwords: secrets a user creates for apps whose protocols need a
//! password the server can read back — Subsonic's salted MD5 tokens, and
//! HTTP Basic for OPDS readers. Shown once, stored sealed through Raft (only
//! members hold the key), revocable one by one. An account with TOTP can
//! sign such apps in only with app passwords.
//!
//! `authenticate` checks a user name and a secret for those protocols, with
//! the same failed-login limits as `/auth/login`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use md5::{Digest, Md5};
use omega_consensus::command::Command;
use omega_consensus::model::User;
use omega_consensus::state_machine::read;
use serde::{Deserialize, Serialize};

use super::extract::{Body, PathParam};
use super::{ApiError, ApiResult, AppState, Caller};
use crate::ratelimit::Attempt;

/// Longest label.
const NAME_MAX: usize = 64;

/// An app password as listed (never its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppPasswordView {
    /// Its id.
    pub id: u64,
    /// Its label.
    pub name: String,
    /// Created, milliseconds since the epoch.
    pub created_ms: u64,
}

/// A new app password: the only time its secret is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewAppPassword {
    /// Its id.
    pub id: u64,
    /// Its label.
    pub name: String,
    /// Created, milliseconds since the epoch.
    pub created_ms: u64,
    /// The secret, to type into the app.
    pub password: String,
}

/// `POST /api/v1/auth/app-passwords`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateAppPassword {
    /// A label ("phone", "Symfonium"): 1 to 64 printable characters.
    #[schema(min_length = 1, max_length = 64, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$")]
    pub name: String,
}

/// The caller's app passwords.
#[utoipa::path(get, path = "/api/v1/auth/app-passwords", tag = "auth", security(("bearer" = [])), responses((status = 200, body = [AppPasswordView]), (status = 401)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<AppPasswordView>>> {
    let mut passwords: Vec<AppPasswordView> = read::app_passwords(state.cluster.tables(), caller.user.id)?
        .into_iter()
        .map(|password| AppPasswordView {
            id: password.id,
            name: password.name,
            created_ms: password.created_ms,
        })
        .collect();
    passwords.sort_by_key(|password| (password.created_ms, password.id));
    Ok(Json(passwords))
}

/// Creates an app password for the caller; its secret is in this answer
/// only.
#[utoipa::path(post, path = "/api/v1/auth/app-passwords", tag = "auth", security(("bearer" = [])), request_body = CreateAppPassword, responses((status = 201, body = NewAppPassword), (status = 400), (status = 401), (status = 409, description = "The caller holds as many app passwords as one may")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<CreateAppPassword>,
) -> ApiResult<(StatusCode, Json<NewAppPassword>)> {
    let name = request.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > NAME_MAX || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "an app password's name has 1 to {NAME_MAX} printable characters"
        )));
    }
    // Ids stay below 2^53 so that JavaScript reads them exactly.
    let id = rand::random::<u64>() >> 11;
    let password = new_app_secret();
    let now_ms = state.clock.now_ms();
    state
        .write(Command::PutAppPassword {
            user: caller.user.id,
            id,
            name: name.clone(),
            sealed: state.tokens.seal_app_password(caller.user.id, id, &password),
            now_ms,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(NewAppPassword {
            id,
            name,
            created_ms: now_ms,
            password,
        }),
    ))
}

/// Revokes one of the caller's app passwords.
#[utoipa::path(delete, path = "/api/v1/auth/app-passwords/{id}", tag = "auth", security(("bearer" = [])), params(("id" = u64, Path, description = "Its id")), responses((status = 204), (status = 401), (status = 404)))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<u64>,
) -> ApiResult<StatusCode> {
    state
        .write(Command::RevokeAppPassword {
            user: caller.user.id,
            id,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Five groups of four letters and digits (100 bits), easy to type on
/// a phone: no `0/o`, `1/l`.
fn new_app_secret() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let bytes: [u8; 20] = rand::random();
    let letters: Vec<char> = bytes
        .iter()
        .map(|byte| char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]))
        .collect();
    letters
        .chunks(4)
        .map(|group| group.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// A secret as a protocol presents it.
#[derive(Debug, Clone)]
pub enum Presented {
    /// The password itself (Subsonic `p=`, HTTP Basic).
    Plain(String),
    /// Subsonic's token: hex MD5 of the password followed by `salt`.
    SaltedMd5 {
        /// The token, hex.
        token: String,
        /// The salt.
        salt: String,
    },
}

/// Why a protocol's sign-in failed.
#[derive(Debug)]
pub enum AuthFailure {
    /// Wrong name or secret.
    Wrong,
    /// Too many failures: wait this many milliseconds.
    Limited(u64),
    /// The node could not read its state.
    Internal(ApiError),
}

/// Checks `name` and a secret for a protocol that has no tokens of its
/// own: an app password of the user (plain or as a salted MD5), or the
/// account password given plainly when the account has no TOTP. Failures
/// count towards the same limits as `/auth/login`.
pub async fn authenticate(
    state: &AppState,
    name: &str,
    presented: Presented,
    address: std::net::IpAddr,
) -> Result<User, AuthFailure> {
    let now_ms = state.clock.now_ms();
    let attempt = Attempt::new(name, address);
    if let Some(wait) = state.limiter.retry_after(attempt, now_ms) {
        return Err(AuthFailure::Limited(wait));
    }
    let tables = state.cluster.tables();
    let user = read::user_by_name(tables, name).map_err(|error| AuthFailure::Internal(error.into()))?;
    let mut accepted = false;
    if let Some(user) = &user {
        let passwords = read::app_passwords(tables, user.id).map_err(|error| AuthFailure::Internal(error.into()))?;
        accepted = passwords.iter().any(|password| {
            state
                .tokens
                .open_app_password(user.id, password.id, &password.sealed)
                .is_some_and(|secret| matches(&secret, &presented))
        });
        if !accepted
            && user.totp_secret.is_none()
            && let Presented::Plain(plain) = &presented
        {
            // Readers present the password on every request: argon2 runs
            // once per PasswordCache::TTL.
            accepted = state.passwords.recently_verified(user.id, &user.password_hash, plain);
            if !accepted {
                accepted = super::auth::check_password(plain.clone(), user.password_hash.clone()).await;
                if accepted {
                    state.passwords.verified(user.id, &user.password_hash, plain);
                }
            }
        }
    }
    match user.filter(|_| accepted) {
        Some(user) => {
            state.limiter.succeeded(attempt);
            Ok(user)
        }
        None => {
            state.limiter.failed(attempt, now_ms);
            Err(AuthFailure::Wrong)
        }
    }
}

/// Whether `secret` is what was presented, compared in constant time.
fn matches(secret: &str, presented: &Presented) -> bool {
    match presented {
        Presented::Plain(plain) => blake3::hash(plain.as_bytes()) == blake3::hash(secret.as_bytes()),
        Presented::SaltedMd5 { token, salt } => {
            let digest = Md5::new()
                .chain_update(secret.as_bytes())
                .chain_update(salt.as_bytes())
                .finalize();
            let expected = hex::encode(digest);
            // blake3::Hash compares in constant time.
            blake3::hash(expected.as_bytes()) == blake3::hash(token.to_ascii_lowercase().as_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_plainly_or_as_salted_md5() {
        // Subsonic's documented example: md5("sesame" + "c19b2d").
        let token = Presented::SaltedMd5 {
            token: "26719A1196D2A940705A59634EB18EAB".into(),
            salt: "c19b2d".into(),
        };
        assert!(matches("sesame", &token));
        assert!(!matches("sesamE", &token));
        assert!(matches("sesame", &Presented::Plain("sesame".into())));
        assert!(!matches("sesame", &Presented::Plain("sesam".into())));
        let secret = new_app_secret();
        assert_eq!(secret.len(), 24);
        assert_eq!(secret.split('-').count(), 5);
    }
}
