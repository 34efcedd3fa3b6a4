//! Authentication through the HTTP API of a real node: login, tokens,
//! refresh rotation, logout, API keys, TOTP, rate limiting, JSON errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Server;
use serde_json::{Value, json};

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

    // Users: the administrator creates one, naming it `username` as at
    // login (the older `name` is accepted too); names are unique; users are
    // not administrators.
    let (code, bob) = server.request(
        "POST",
        "/api/v1/users",
        Some(&access),
        Some(&json!({ "username": "bob", "password": "bob-password" })),
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

fn refresh(server: &Server, token: &str) -> (u16, serde_json::Value) {
    server.request(
        "POST",
        "/api/v1/auth/refresh",
        None,
        Some(&json!({ "refresh_token": token })),
    )
}

fn login_tokens(server: &Server, username: &str, password: &str) -> serde_json::Value {
    let (code, body) = server.request(
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&json!({ "username": username, "password": password })),
    );
    assert_eq!(code, 200, "{body}");
    body
}

/// Goal (hardening): a refresh token is consumed once, atomically. Clients
/// racing with one token: one wins, the others get 401, and the reuse
/// revokes the winner's sign-in too. Failed before the fix: every racer got
/// 200 and a working token family.
#[test]
fn a_refresh_token_is_consumed_once_and_reuse_revokes_its_sign_in() {
    let server = Server::start(&[]);
    for racers in [2, 8] {
        let tokens = login_tokens(&server, "admin", "admin-password");
        let presented = tokens["refresh_token"].as_str().unwrap().to_owned();
        let answers: Vec<(u16, serde_json::Value)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..racers)
                .map(|_| scope.spawn(|| refresh(&server, &presented)))
                .collect();
            handles.into_iter().map(|handle| handle.join().unwrap()).collect()
        });
        let winners: Vec<&serde_json::Value> = answers
            .iter()
            .filter(|(code, _)| *code == 200)
            .map(|(_, body)| body)
            .collect();
        assert_eq!(winners.len(), 1, "{answers:?}");
        assert_eq!(
            answers.iter().filter(|(code, _)| *code == 401).count(),
            racers - 1,
            "{answers:?}"
        );
        let (code, body) = refresh(&server, winners[0]["refresh_token"].as_str().unwrap());
        assert_eq!(code, 401, "the winner's family is revoked by the reuse: {body}");
    }
    // Without a race, rotation goes on as before, many times over.
    let mut token = login_tokens(&server, "admin", "admin-password")["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..70 {
        let (code, body) = refresh(&server, &token);
        assert_eq!(code, 200, "{body}");
        token = body["refresh_token"].as_str().unwrap().to_owned();
    }
}

/// Goal (hardening): failed sign-ins count per (name, address) and per
/// address, so a stranger cannot lock a user's apps out; behind a trusted
/// proxy the address is X-Forwarded-For's; Retry-After is in seconds on
/// every protocol. Failed before the fix: the stranger's five Subsonic
/// failures locked the user out everywhere, and OPDS and Jellyfin said
/// Retry-After: 60000.
#[test]
fn a_stranger_cannot_lock_a_user_out_and_retry_after_is_in_seconds() {
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("omega.toml");
    std::fs::write(&config, "[http]\ntrusted_proxies = [\"127.0.0.1\"]\n").unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let stranger = "X-Forwarded-For: 198.51.100.7\r\n";
    let household = "X-Forwarded-For: 192.168.1.20\r\n";
    let basic = |password: &str| {
        use base64::Engine as _;
        format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(format!("admin:{password}"))
        )
    };
    // Five wrong Subsonic passwords from the stranger.
    for _ in 0..5 {
        let (code, body) = server.raw("GET", "/rest/ping?u=admin&p=guess&f=json&v=1.16.1&c=t", stranger, None);
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["subsonic-response"]["status"], "failed", "{body}");
    }
    // The stranger is now limited, on every protocol, in seconds.
    let head = common::http_raw(
        server.http_port,
        "GET",
        "/opds",
        &format!("{stranger}{}", basic("guess")),
        b"",
    )
    .1;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    let retry_after: u64 = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("retry-after:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {head}"));
    assert!((1..=60).contains(&retry_after), "{head}");
    let (_, head, _) = common::http_raw(
        server.http_port,
        "POST",
        "/Users/AuthenticateByName",
        &format!("{stranger}Content-Type: application/json\r\n"),
        br#"{"Username":"admin","Pw":"guess"}"#,
    );
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(
        head.to_ascii_lowercase().lines().any(|line| {
            line.strip_prefix("retry-after:")
                .and_then(|value| value.trim().parse::<u64>().ok())
                .is_some_and(|seconds| (1..=60).contains(&seconds))
        }),
        "{head}"
    );
    // The user, from home, signs in everywhere with the right password.
    let (code, body) = server.raw(
        "GET",
        "/rest/ping?u=admin&p=admin-password&f=json&v=1.16.1&c=t",
        household,
        None,
    );
    assert_eq!(
        (code, &body["subsonic-response"]["status"]),
        (200, &json!("ok")),
        "{body}"
    );
    let (code, _, _) = common::http_raw(
        server.http_port,
        "GET",
        "/opds",
        &format!("{household}{}", basic("admin-password")),
        b"",
    );
    assert_eq!(code, 200);
    let (code, body) = server.raw(
        "POST",
        "/api/v1/auth/login",
        household,
        Some(&json!({ "username": "admin", "password": "admin-password" }).to_string()),
    );
    assert_eq!(code, 200, "{body}");
    // A forwarded address from an untrusted peer is not believed: the
    // limit of 127.0.0.1 itself is untouched by the stranger's failures.
    let (code, body) = server.request(
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&json!({ "username": "admin", "password": "admin-password" })),
    );
    assert_eq!(code, 200, "{body}");
}

/// Goal (hardening): a node answers /healthz and /readyz only once a client
/// can do what it came for (the OMEGA_ADMIN_* administrator signs in, the
/// control socket answers), and /api/v1/setup never lets a stranger in
/// beside the unattended administrator. Failed before the fix: /healthz
/// said ok while sign-in answered 401, and a setup in the window made a
/// second administrator.
#[test]
fn health_waits_for_start_up_and_setup_stays_closed_beside_the_unattended_admin() {
    let server = Server::spawn(&[], true);
    let started = std::time::Instant::now();
    let mut setups = 0;
    loop {
        let (code, body) = server.request(
            "POST",
            "/api/v1/setup",
            None,
            Some(&json!({ "username": "intruder", "password": "intruder-password" })),
        );
        assert_ne!(code, 201, "a stranger became an administrator: {body}");
        if code != 0 {
            setups += 1;
        }
        if server.request("GET", "/healthz", None, None).0 == 200 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{}",
            server.log()
        );
    }
    // The moment /healthz says ok, a client can sign in and an operator can
    // use the control socket.
    let login = server.request(
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&json!({ "username": "admin", "password": "admin-password" })),
    );
    assert_eq!(login.0, 200, "{}", login.1);
    let token = common::omega(&server.data_dir(), &["cluster", "token"]);
    assert!(token.status.success(), "{}", String::from_utf8_lossy(&token.stderr));
    assert!(setups > 0, "setup was never tried during start-up");
    let (code, state) = server.request("GET", "/api/v1/setup", None, None);
    assert_eq!((code, &state["needed"]), (200, &json!(false)));
    let (code, users) = server.request("GET", "/api/v1/users", login.1["access_token"].as_str(), None);
    assert_eq!((code, users.as_array().map(Vec::len)), (200, Some(1)), "{users}");
}

/// Goal (hardening): the data directory (CA key, catalog, RocksDB,
/// snapshots) is owner-only, and so is every file the node writes there.
/// Failed before the fix: the directory was 0755 and RocksDB's files 0644.
#[test]
fn the_data_directory_is_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let server = Server::start(&[]);
    let mode = std::fs::metadata(server.data_dir()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    let mut files = 0;
    for entry in walkdir::WalkDir::new(server.data_dir())
        .into_iter()
        .filter_map(Result::ok)
    {
        let mode = entry.metadata().unwrap().permissions().mode();
        if entry.file_type().is_file() {
            files += 1;
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", entry.path().display());
        }
    }
    assert!(files > 5, "only {files} files");
}

/// True once the peer closed `stream` (EOF or reset) before `deadline`;
/// bytes it sends first (an error status) are read past.
async fn closed_by_peer(stream: &mut tokio::net::TcpStream, deadline: std::time::Instant) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buffer = [0_u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// Goal (hardening): a connection that stalls in its headers is closed at
/// the header deadline, and one address holds at most its share of the
/// node's connections, so a stranger's 200 stalled connections neither
/// exhaust the node's file descriptors nor stop another client. Failed
/// before the fix: stalled connections were never closed (about 20,000
/// exhausted the file limit).
#[test]
fn stalled_connections_are_closed_and_capped_per_address() {
    use tokio::io::AsyncWriteExt as _;
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("omega.toml");
    std::fs::write(
        &config,
        "[http]\nheader_timeout_secs = 1\nconnections_per_address = 50\n",
    )
    .unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let node = std::net::SocketAddr::from(([127, 0, 0, 1], server.http_port));
        let mut stalled = Vec::new();
        for _ in 0..200 {
            // From another loopback address than the test's own client.
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let mut stream = socket.connect(node).await.unwrap();
            let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: omega\r\n").await;
            stalled.push(stream);
        }
        // Another client is served meanwhile.
        let (code, body) = server.request("GET", "/healthz", None, None);
        assert_eq!(code, 200, "{body}");
        // Every stalled connection is closed by the node: those past the
        // cap at once, the others at the header deadline.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        for (index, stream) in stalled.iter_mut().enumerate() {
            assert!(
                closed_by_peer(stream, deadline).await,
                "stalled connection {index} is still open after 5 s"
            );
        }
    });
    let (code, metrics) = server.request("GET", "/metrics", None, None);
    assert_eq!(code, 200);
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains("omega_http_connections_refused_total{reason=\"address\"}"),
        "{metrics}"
    );
}

/// A Jellyfin app's sign-in: its access token.
fn jellyfin_sign_in(server: &Server, user: &str, password: &str) -> String {
    let (code, _, body) = common::http_raw(
        server.http_port,
        "POST",
        "/Users/AuthenticateByName",
        "Content-Type: application/json\r\nX-Emby-Authorization: MediaBrowser Client=\"Test\", Device=\"Phone\", DeviceId=\"p1\", Version=\"1\"\r\n",
        format!(r#"{{"Username":"{user}","Pw":"{password}"}}"#).as_bytes(),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body).unwrap();
    body["AccessToken"].as_str().unwrap().to_owned()
}

/// The status of `GET /Users/Me` for a Jellyfin token.
fn jellyfin_me(server: &Server, token: &str) -> u16 {
    common::http_raw(
        server.http_port,
        "GET",
        "/Users/Me",
        &format!("X-Emby-Token: {token}\r\n"),
        b"",
    )
    .0
}

/// Goal (hardening, item 13): a password change (own, with the current
/// password) and an administrator's reset end every sign-in of the user:
/// browsers' access and refresh tokens and Jellyfin apps' sessions; the
/// changing client gets new tokens; "sign out everywhere" ends them all.
/// Failed before: none of these routes existed.
#[test]
fn a_password_change_a_reset_and_sign_out_everywhere_end_every_sign_in() {
    let server = Server::start(&[]);
    let admin = server.login("admin", "admin-password");
    let (code, _) = server.request(
        "POST",
        "/api/v1/users",
        Some(&admin),
        Some(&json!({ "username": "carol", "password": "carol-password-1" })),
    );
    assert_eq!(code, 201);
    let sign_in = |password: &str| {
        let (code, body) = server.request(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(&json!({ "username": "carol", "password": password })),
        );
        (code, body)
    };
    let (_, laptop) = sign_in("carol-password-1");
    let (_, phone) = sign_in("carol-password-1");
    let tv = jellyfin_sign_in(&server, "carol", "carol-password-1");
    let access = |session: &Value| session["access_token"].as_str().unwrap().to_owned();
    let me = |token: &str| server.request("GET", "/api/v1/auth/me", Some(token), None).0;
    assert_eq!(
        (me(&access(&laptop)), me(&access(&phone)), jellyfin_me(&server, &tv)),
        (200, 200, 200)
    );

    // A wrong current password changes nothing.
    let change = |token: &str, current: &str, new: &str| {
        server.request(
            "POST",
            "/api/v1/auth/password",
            Some(token),
            Some(&json!({ "current_password": current, "new_password": new })),
        )
    };
    let (code, _) = change(&access(&laptop), "not-it", "carol-password-2");
    assert_eq!(code, 401);
    assert_eq!(me(&access(&phone)), 200);

    // The change: the laptop gets new tokens, every other sign-in ends.
    let (code, renewed) = change(&access(&laptop), "carol-password-1", "carol-password-2");
    assert_eq!(code, 200, "{renewed}");
    assert_eq!(me(&access(&renewed)), 200);
    assert_eq!(me(&access(&laptop)), 401, "the old access token");
    assert_eq!(me(&access(&phone)), 401);
    assert_eq!(jellyfin_me(&server, &tv), 401, "the Jellyfin app's session");
    let refresh = |session: &Value| {
        server
            .request(
                "POST",
                "/api/v1/auth/refresh",
                None,
                Some(&json!({ "refresh_token": session["refresh_token"] })),
            )
            .0
    };
    assert_eq!(refresh(&phone), 401);
    assert_eq!(sign_in("carol-password-1").0, 401);
    let (code, again) = sign_in("carol-password-2");
    assert_eq!(code, 200);

    // Sign out everywhere: this sign-in too.
    let (code, _) = server.request("POST", "/api/v1/auth/sign-out-everywhere", Some(&access(&again)), None);
    assert_eq!(code, 204);
    assert_eq!((me(&access(&again)), me(&access(&renewed))), (401, 401));
    assert_eq!((refresh(&again), refresh(&renewed)), (401, 401));

    // An administrator's reset: carol signs in with the new password only.
    let (_, later) = sign_in("carol-password-2");
    let carol = later["user"]["id"].as_u64().unwrap();
    let reset = |token: &str, password: &str| {
        server
            .request(
                "PUT",
                &format!("/api/v1/users/{carol}/password"),
                Some(token),
                Some(&json!({ "password": password })),
            )
            .0
    };
    assert_eq!(reset(&access(&later), "carol-password-3"), 403, "administrators only");
    assert_eq!(reset(&admin, "carol-password-3"), 204);
    assert_eq!(me(&access(&later)), 401);
    assert_eq!(sign_in("carol-password-2").0, 401);
    assert_eq!(sign_in("carol-password-3").0, 200);
    assert_eq!(me(&admin), 200, "the administrator's own sign-in goes on");
}
