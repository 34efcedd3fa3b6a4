//! The authorization matrix, generated from the OpenAPI document: every
//! operation that needs a token refuses callers without one (401); every
//! administrators' operation refuses a user (403); every library-scoped
//! operation hides what the user may not see (404). Bodies are built from
//! the schemas (every required field, harmless values), so refusals come
//! from the rules, not from malformed input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Server, tiny_clip};
use serde_json::{Map, Value, json};

/// A value for `schema`: every required property, harmless contents.
fn sample(schema: &Value, components: &Value) -> Value {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap();
        return sample(&components["schemas"][name], components);
    }
    if let Some(first) = schema["oneOf"]
        .as_array()
        .or(schema["allOf"].as_array())
        .and_then(|all| all.first())
    {
        return sample(first, components);
    }
    let kind = match &schema["type"] {
        Value::Array(kinds) => kinds
            .iter()
            .find(|kind| *kind != "null")
            .cloned()
            .unwrap_or(Value::Null),
        other => other.clone(),
    };
    match kind.as_str() {
        Some("object") => {
            let mut object = Map::new();
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap();
                object.insert(name.to_owned(), sample(&schema["properties"][name], components));
            }
            Value::Object(object)
        }
        Some("array") => json!([]),
        Some("integer" | "number") => json!(1),
        Some("boolean") => json!(false),
        Some("string") => json!("matrix"),
        _ => Value::Null,
    }
}

#[test]
fn every_route_refuses_who_it_must() {
    let media = tempfile::tempdir().unwrap();
    let movies = media.path().join("movies");
    std::fs::create_dir_all(&movies).unwrap();
    let film = movies.join("Matrix (1999).mkv");
    tiny_clip(&film);
    let server = Server::start(&["--media", &format!("{}:movies", movies.display())]);
    let admin = server.login("admin", "admin-password");
    let item = server.first_item(&admin, "movie");
    let (_, libraries) = server.request("GET", "/api/v1/libraries", Some(&admin), None);
    let library = libraries[0]["id"].as_u64().unwrap();
    // A user who may see no library.
    let (code, user) = server.request(
        "POST",
        "/api/v1/users",
        Some(&admin),
        Some(&json!({ "name": "viewer", "password": "viewer-password", "libraries": [] })),
    );
    assert_eq!(code, 201);
    let viewer = server.login("viewer", "viewer-password");

    let (code, document) = server.request("GET", "/api/v1/openapi.json", None, None);
    assert_eq!(code, 200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let components = &document["components"];
    let mut checked = 0;
    for (template, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let tags: Vec<&str> = operation["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let id = if template.contains("/libraries/") {
                library
            } else if template.contains("/users/") {
                user["id"].as_u64().unwrap()
            } else {
                item
            };
            let path = template.replace("{id}", &id.to_string());
            let body = operation["requestBody"]["content"]["application/json"]["schema"]
                .as_object()
                .map(|schema| sample(&Value::Object(schema.clone()), components));
            let method = method.to_uppercase();
            let secured = operation["security"]
                .as_array()
                .is_some_and(|security| !security.is_empty());
            if secured {
                let (code, answer) = server.request(&method, &path, None, body.as_ref());
                assert_eq!(code, 401, "{method} {path} without a token: {answer}");
                assert!(answer["error"].is_string(), "{method} {path}: {answer}");
                let (code, _) = server.request(&method, &path, Some("omega_at_forged.token"), body.as_ref());
                assert_eq!(code, 401, "{method} {path} with a forged token");
                checked += 1;
            }
            if tags.contains(&"admin") {
                let (code, answer) = server.request(&method, &path, Some(&viewer), body.as_ref());
                assert_eq!(code, 403, "{method} {path} as a user: {answer}");
                checked += 1;
            } else if tags.contains(&"library-scoped") {
                let (code, answer) = server.request(&method, &path, Some(&viewer), body.as_ref());
                assert_eq!(code, 404, "{method} {path} outside the user's libraries: {answer}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "only {checked} checks: is the document complete?");
    // The item is still there and the admin still sees it: nothing above
    // had an effect.
    let (code, _) = server.request("GET", &format!("/api/v1/items/{item}"), Some(&admin), None);
    assert_eq!(code, 200);
}
