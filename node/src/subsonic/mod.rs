//! The Subsonic API (1.16.1, with OpenSubsonic's extensions) at
//! `/rest/{method}` and `/rest/{method}.view`, for the music apps people
//! already use (Symfonium, DSub, Feishin, play:Sub). Parameters come from
//! the query or a POST form; answers are JSON (`f=json`) or XML, and
//! errors are Subsonic's envelope with its codes. Sign-in is per request:
//! `u` with `t`+`s` (MD5 of an app password and the salt) or `p` (plain or
//! `enc:` hex; an app password, or the account password when the account has
//! no TOTP). Library access rules are the API's.
//!
//! - [`xml`]: one answer, two encodings.
//! - [`music`]: the catalog's music as Subsonic sees it, and its JSON.
//! - [`methods`]: the methods.

mod methods;
mod music;
mod xml;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Map, Value, json};

use crate::api::app_passwords::{AuthFailure, Presented, authenticate};
use crate::api::{AppState, Caller};

/// The Subsonic API version Omega speaks.
pub const API_VERSION: &str = "1.16.1";
/// Longest request body read for form parameters.
const FORM_MAX: usize = 64 * 1024;
/// Most parameters in one request.
const PARAMS_MAX: usize = 256;

/// The `/rest` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/rest/{method}", get(handle).post(handle).fallback(not_a_method))
        // Whatever else a client asks for under /rest answers in Subsonic's
        // envelope too, never the web app's page or the API's JSON.
        .route("/rest", any(not_a_method))
        .route("/rest/", any(not_a_method))
        .route("/rest/{method}/{*rest}", any(not_a_method))
}

/// A request's parameters, in order, repeated names kept.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>, form: Option<&[u8]>) -> Params {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for source in [query.map(str::as_bytes), form].into_iter().flatten() {
            pairs.extend(
                url::form_urlencoded::parse(source)
                    .take(PARAMS_MAX)
                    .map(|(key, value)| (key.into_owned(), value.into_owned())),
            );
        }
        pairs.truncate(PARAMS_MAX);
        Params(pairs)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// The value of `name`, or error 10.
    pub fn require(&self, name: &str) -> Result<&str, Failure> {
        self.get(name)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| Failure::new(10, format!("required parameter {name} is missing")))
    }

    /// `name` as a number, `default` when absent, error 0 when malformed.
    pub fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, Failure> {
        match self.get(name) {
            None | Some("") => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| Failure::new(0, format!("parameter {name} is not a number: {text:?}"))),
        }
    }
}

/// A Subsonic error: its code, message, and the HTTP status it goes with.
#[derive(Debug)]
pub struct Failure {
    pub(super) code: u32,
    pub(super) message: String,
    pub(super) status: StatusCode,
}

impl Failure {
    /// An error answered with HTTP 200, as Subsonic clients expect.
    pub fn new(code: u32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            status: StatusCode::OK,
        }
    }

    /// Error 70: the thing asked for does not exist (or is not visible).
    pub fn not_found(what: &str) -> Failure {
        Failure::new(70, format!("{what} not found"))
    }

    /// Error 0 for a failure of the node itself.
    pub fn internal(error: impl std::fmt::Display) -> Failure {
        tracing::error!(%error, "subsonic request failed");
        Failure::new(0, "internal error")
    }
}

impl From<crate::api::ApiError> for Failure {
    fn from(error: crate::api::ApiError) -> Failure {
        match error.status() {
            StatusCode::NOT_FOUND => Failure::new(70, error.message().to_owned()),
            StatusCode::FORBIDDEN => Failure::new(50, error.message().to_owned()),
            StatusCode::SERVICE_UNAVAILABLE => Failure {
                code: 0,
                message: error.message().to_owned(),
                status: StatusCode::SERVICE_UNAVAILABLE,
            },
            _ => Failure::new(0, error.message().to_owned()),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Failure {
        Failure::internal(error)
    }
}

/// What a method answers: a payload for the envelope, or bytes of its own
/// (a stream, a cover).
#[derive(Debug)]
pub enum Answer {
    /// Members added to `subsonic-response`.
    Payload(Map<String, Value>),
    /// A response as it is.
    Raw(Response),
}

impl Answer {
    /// The envelope with one member.
    pub fn one(name: &str, value: Value) -> Answer {
        let mut payload = Map::new();
        payload.insert(name.into(), value);
        Answer::Payload(payload)
    }

    /// The envelope alone (`ping`, `scrobble`, `star`).
    pub fn empty() -> Answer {
        Answer::Payload(Map::new())
    }
}

/// What a method gets.
#[derive(Debug)]
pub struct Request<'a> {
    /// Shared state.
    pub state: &'a AppState,
    /// The signed-in user.
    pub caller: Caller,
    /// Its parameters.
    pub params: &'a Params,
    /// Its headers (Range, If-None-Match).
    pub headers: &'a HeaderMap,
    /// Its connection's zero-copy queue, for file answers.
    pub zero_copy: Option<&'a crate::zero_copy::ZeroCopy>,
}

/// The answer's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Xml,
}

async fn handle(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    zero_copy: Option<axum::Extension<crate::zero_copy::ZeroCopy>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    let form = (is_form && body.len() <= FORM_MAX).then_some(&body[..]);
    let params = Params::parse(query.as_deref(), form);
    let format = match params.get("f") {
        Some("json") => Format::Json,
        _ => Format::Xml,
    };
    let method = method.strip_suffix(".view").unwrap_or(&method).to_owned();
    let outcome = async {
        let caller = sign_in(&state, &params, state.client_ip(peer, &headers)).await?;
        let request = Request {
            state: &state,
            caller,
            params: &params,
            headers: &headers,
            zero_copy: zero_copy.as_ref().map(|axum::Extension(zero_copy)| zero_copy),
        };
        methods::dispatch(&method, request).await
    }
    .await;
    metrics::counter!("omega_subsonic_requests_total", "ok" => if outcome.is_ok() { "true" } else { "false" })
        .increment(1);
    match outcome {
        Ok(Answer::Raw(response)) => response,
        Ok(Answer::Payload(payload)) => envelope(format, StatusCode::OK, true, payload),
        Err(failure) => {
            let mut payload = Map::new();
            payload.insert(
                "error".into(),
                json!({"code": failure.code, "message": failure.message}),
            );
            envelope(format, failure.status, false, payload)
        }
    }
}

/// A path under `/rest` that names no method, or a method other than GET
/// and POST: Subsonic's error 0, in the format asked for.
async fn not_a_method(method: axum::http::Method, uri: axum::http::Uri, RawQuery(query): RawQuery) -> Response {
    let params = Params::parse(query.as_deref(), None);
    let format = match params.get("f") {
        Some("json") => Format::Json,
        _ => Format::Xml,
    };
    let mut payload = Map::new();
    payload.insert(
        "error".into(),
        json!({"code": 0, "message": format!("{method} {} is not a Subsonic method (GET or POST /rest/NAME)", uri.path())}),
    );
    let status = if method == axum::http::Method::GET || method == axum::http::Method::POST {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::METHOD_NOT_ALLOWED
    };
    envelope(format, status, false, payload)
}

/// The user named by `u`, checked against `t`+`s` or `p`.
async fn sign_in(state: &AppState, params: &Params, address: std::net::IpAddr) -> Result<Caller, Failure> {
    if params.get("apiKey").is_some() {
        return Err(Failure::new(
            42,
            "API keys are not supported here: use u with t and s, or p",
        ));
    }
    // No credentials at all is a sign-in failure (40), like a wrong one.
    let name = params
        .get("u")
        .filter(|name| !name.is_empty())
        .ok_or_else(|| Failure::new(40, "sign in: u with t and s, or with p"))?;
    let presented = match (params.get("t"), params.get("s"), params.get("p")) {
        (Some(token), Some(salt), _) => Presented::SaltedMd5 {
            token: token.to_owned(),
            salt: salt.to_owned(),
        },
        (_, _, Some(password)) => Presented::Plain(match password.strip_prefix("enc:") {
            Some(encoded) => hex::decode(encoded)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| Failure::new(40, "wrong username or password"))?,
            None => password.to_owned(),
        }),
        _ => return Err(Failure::new(40, "sign in: t and s, or p")),
    };
    match authenticate(state, name, presented, address).await {
        Ok(user) => Ok(Caller { user }),
        Err(AuthFailure::Wrong) => Err(Failure::new(40, "wrong username or password")),
        Err(AuthFailure::Limited(wait_ms)) => Err(Failure::new(
            40,
            format!(
                "too many failed sign-ins: try again in {} s",
                wait_ms.div_ceil(1000).max(1)
            ),
        )),
        Err(AuthFailure::Internal(error)) => Err(error.into()),
    }
}

/// The `subsonic-response` envelope around `payload`.
fn envelope(format: Format, status: StatusCode, ok: bool, payload: Map<String, Value>) -> Response {
    let mut root = Map::new();
    root.insert("status".into(), Value::String(if ok { "ok" } else { "failed" }.into()));
    root.insert("version".into(), Value::String(API_VERSION.into()));
    root.insert("type".into(), Value::String("omega".into()));
    root.insert("serverVersion".into(), Value::String(env!("CARGO_PKG_VERSION").into()));
    root.insert("openSubsonic".into(), Value::Bool(true));
    root.extend(payload);
    match format {
        Format::Json => {
            let body = json!({ "subsonic-response": Value::Object(root) }).to_string();
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Format::Xml => (
            status,
            [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
            xml::document(&root),
        )
            .into_response(),
    }
}
