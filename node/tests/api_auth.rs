//! Authentication through the HTTP API of a real node: login, tokens,
//! refresh rotation, logout, API keys, TOTP, rate limiting, JSON errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Server;
use serde_json::json;

#[test]
fn login_refresh_keys_totp_and_refusals() {
    let server = Server::start(&[]);

    // Nothing without a token; errors are JSON.
    let (code, body) = server.request("GET", "/api/v1/auth/me", None, None);
    assert_eq!(code, 401);
    assert!(body["error"].is_string(), "{body}");
    let (code, _) = server.request("GET", "/api/v1/auth/me", Some("omega_at_forged"), None);
    assert_eq!(code, 401);

    // The administrator from OMEGA_ADMIN_USER signs in.
    let (code, _) = server.request(
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&json!({ "username": "admin", "password": "wrong" })),
    );
    assert_eq!(code, 401);
    let (code, tokens) = server.request(
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&json!({ "username": "ADMIN", "password": "admin-password" })),
    );
    assert_eq!(code, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let (code, me) = server.request("GET", "/api/v1/auth/me", Some(&access), None);
    assert_eq!(
        (code, me["name"].as_str(), me["admin"].as_bool()),
        (200, Some("admin"), Some(true))
    );

    // Users: the administrator creates one; names are unique; users are
    // not administrators.
    let (code, bob) = server.request(
        "POST",
        "/api/v1/users",
        Some(&access),
        Some(&json!({ "name": "bob", "password": "bob-password" })),
    );
    assert_eq!(code, 201, "{bob}");
    let (code, _) = server.request(
        "POST",
        "/api/v1/users",
        Some(&access),
        Some(&json!({ "name": "Bob", "password": "x" })),
    );
    assert_eq!(code, 409);
    let bob_access = server.login("bob", "bob-password");
    let (code, _) = server.request("GET", "/api/v1/users", Some(&bob_access), None);
    assert_eq!(code, 403);
    let (code, users) = server.request("GET", "/api/v1/users", Some(&access), None);
    assert_eq!((code, users.as_array().map(Vec::len)), (200, Some(2)));

    // Refresh rotates: the old refresh token stops working; logout revokes.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (code, renewed) = server.request(
        "POST",
        "/api/v1/auth/refresh",
        None,
        Some(&json!({ "refresh_token": refresh })),
    );
    assert_eq!(code, 200, "{renewed}");
    let (code, _) = server.request(
        "POST",
        "/api/v1/auth/refresh",
        None,
        Some(&json!({ "refresh_token": refresh })),
    );
    assert_eq!(code, 401);
    let renewed_refresh = renewed["refresh_token"].as_str().unwrap();
    let (code, _) = server.request(
        "POST",
        "/api/v1/auth/logout",
        None,
        Some(&json!({ "refresh_token": renewed_refresh })),
    );
    assert_eq!(code, 204);
    let (code, _) = server.request(
        "POST",
        "/api/v1/auth/refresh",
        None,
        Some(&json!({ "refresh_token": renewed_refresh })),
    );
    assert_eq!(code, 401);

    // API keys work as bearer tokens and as X-Api-Key, until revoked.
    let (code, key) = server.request(
        "POST",
        "/api/v1/auth/keys",
        Some(&bob_access),
        Some(&json!({ "name": "tv" })),
    );
    assert_eq!(code, 201, "{key}");
    let key = key["key"].as_str().unwrap().to_owned();
    let (code, me) = server.raw("GET", "/api/v1/auth/me", &format!("X-Api-Key: {key}\r\n"), None);
    assert_eq!((code, me["name"].as_str()), (200, Some("bob")));
    let (code, _) = server.request(
        "POST",
        "/api/v1/auth/keys/revoke",
        Some(&key),
        Some(&json!({ "key": key })),
    );
    assert_eq!(code, 204);
    let (code, _) = server.request("GET", "/api/v1/auth/me", Some(&key), None);
    assert_eq!(code, 401);

    // TOTP: enrol, confirm with a code; then login needs one.
    let (code, enrolment) = server.request("POST", "/api/v1/auth/totp/enroll", Some(&bob_access), None);
    assert_eq!(code, 200, "{enrolment}");
    assert!(
        enrolment["uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/Omega:bob?")
    );
    let secret = omega_node::totp::base32_decode(enrolment["secret"].as_str().unwrap()).unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let (code, _) = server.request(
        "POST",
        "/api/v1/auth/totp/confirm",
        Some(&bob_access),
        Some(&json!({ "ticket": enrolment["ticket"], "code": "000000x" })),
    );
    assert_eq!(code, 400);
    let (code, body) = server.request(
        "POST",
        "/api/v1/auth/totp/confirm",
        Some(&bob_access),
        Some(&json!({ "ticket": enrolment["ticket"], "code": omega_node::totp::code(&secret, now()) })),
    );
    assert_eq!(code, 204, "{body}");
    let (code, body) = server.request(
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&json!({ "username": "bob", "password": "bob-password" })),
    );
    assert_eq!((code, body["totp_required"].as_bool()), (401, Some(true)), "{body}");
    let (code, body) = server.request(
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&json!({ "username": "bob", "password": "bob-password", "totp": omega_node::totp::code(&secret, now()) })),
    );
    assert_eq!(code, 200, "{body}");

    // Failed logins are rate limited per user name.
    for _ in 0..5 {
        let (code, _) = server.request(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(&json!({ "username": "nobody", "password": "guess" })),
        );
        assert_eq!(code, 401);
    }
    let head = server.head(
        "POST",
        "/api/v1/auth/login",
        Some(&json!({ "username": "nobody", "password": "guess" })),
    );
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");

    // Bad input: JSON errors with the right status; the server goes on.
    let (code, body) = server.raw("POST", "/api/v1/auth/login", "", Some("{not json"));
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let (code, body) = server.request("GET", "/api/v1/no/such/thing", Some(&access), None);
    assert_eq!((code, body["error"].is_string()), (404, true));
    let (code, body) = server.request("PUT", "/api/v1/auth/login", None, None);
    assert_eq!((code, body["error"].is_string()), (405, true));
    let (code, body) = server.request("DELETE", "/api/v1/users/not-a-number", Some(&access), None);
    assert_eq!((code, body["error"].is_string()), (400, true));
    let (code, _) = server.request("GET", "/api/v1/auth/me", Some(&access), None);
    assert_eq!(code, 200);

    // Prometheus metrics: requests by route template, and Raft's state.
    let (code, metrics) = server.request("GET", "/metrics", None, None);
    let text = metrics.as_str().unwrap_or_default();
    assert_eq!(code, 200);
    assert!(
        text.contains("omega_http_requests_total{method=\"POST\",route=\"/api/v1/auth/login\",status=\"200\"}"),
        "{text}"
    );
    assert!(text.contains("omega_raft_is_leader 1"), "{text}");
    assert!(text.contains("omega_http_request_duration_seconds_bucket"), "{text}");
}

/// Goal: a node started without an administrator asks for one; the first
/// setup creates it and signs it in; every later setup is refused.
#[test]
fn first_run_setup_creates_one_administrator() {
    let server = Server::start_with(&[], false);
    let (code, state) = server.request("GET", "/api/v1/setup", None, None);
    assert_eq!((code, &state["needed"]), (200, &json!(true)), "{state}");
    let (code, body) = server.request(
        "POST",
        "/api/v1/setup",
        None,
        Some(&json!({"username": "owner", "password": "correct horse battery"})),
    );
    assert_eq!(code, 201, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let (code, me) = server.request("GET", "/api/v1/auth/me", Some(token), None);
    assert_eq!(code, 200, "{me}");
    assert_eq!(me["name"], "owner");
    let (code, state) = server.request("GET", "/api/v1/setup", None, None);
    assert_eq!((code, &state["needed"]), (200, &json!(false)));
    let (code, body) = server.request(
        "POST",
        "/api/v1/setup",
        None,
        Some(&json!({"username": "intruder", "password": "correct horse battery"})),
    );
    assert_eq!(code, 409, "{body}");
    assert!(!server.login("owner", "correct horse battery").is_empty());
}
