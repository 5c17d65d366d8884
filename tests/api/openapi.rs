//! The spec is generated from the code, checked in, and served.

use reqwest::StatusCode;

use crate::helpers::spawn_app;

fn checked_in() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"))
        .expect("openapi.json")
}

#[test]
fn the_checked_in_openapi_json_is_what_the_code_generates() {
    let generated = latchkey::http::spec();
    assert!(
        checked_in().trim_end() == generated.trim_end(),
        "openapi.json is stale: run `cargo run -- openapi > openapi.json`"
    );
}

#[tokio::test]
async fn the_served_spec_is_the_checked_in_one() {
    let app = spawn_app().await;
    let served = app.get("/openapi.json").await;
    assert_eq!(served.status(), StatusCode::OK);
    let served: serde_json::Value = served.json().await.expect("json");
    let file: serde_json::Value = serde_json::from_str(&checked_in()).expect("json");
    assert_eq!(served, file);
}

#[test]
fn the_spec_documents_every_operation_its_errors_and_the_bearer_scheme() {
    let spec: serde_json::Value = serde_json::from_str(&latchkey::http::spec()).expect("json");
    let expected = [
        ("/", "get", vec!["200"]),
        (
            "/api/auth/register",
            "post",
            vec!["201", "400", "409", "429", "500"],
        ),
        (
            "/api/auth/login",
            "post",
            vec!["200", "400", "401", "429", "500"],
        ),
        (
            "/api/auth/refresh",
            "post",
            vec!["200", "401", "403", "429", "500"],
        ),
        ("/api/auth/logout", "post", vec!["200", "403", "500"]),
        ("/api/profile/me", "get", vec!["200", "401", "500"]),
        (
            "/api/profile/me",
            "delete",
            vec!["204", "400", "401", "403", "429"],
        ),
        ("/api/auth/sessions", "get", vec!["200", "401"]),
        (
            "/api/auth/sessions/{id}",
            "delete",
            vec!["204", "401", "404"],
        ),
        ("/api/auth/logout-all", "post", vec!["200", "401"]),
        (
            "/api/auth/password",
            "post",
            vec!["200", "400", "401", "429"],
        ),
        ("/api/admin/users", "get", vec!["200", "401", "403"]),
        (
            "/api/admin/users/{id}",
            "get",
            vec!["200", "401", "403", "404"],
        ),
        (
            "/api/admin/users/{id}",
            "patch",
            vec!["200", "400", "401", "403", "404"],
        ),
        (
            "/api/admin/users/{id}/revoke-sessions",
            "post",
            vec!["200", "401", "403", "404"],
        ),
        ("/api/admin/audit", "get", vec!["200", "401", "403"]),
    ];
    for (path, method, statuses) in expected {
        let operation = &spec["paths"][path][method];
        assert!(
            operation["summary"].is_string(),
            "{method} {path} has a summary"
        );
        for status in statuses {
            assert!(
                operation["responses"][status].is_object(),
                "{method} {path} documents {status}"
            );
        }
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["BearerAuth"]["scheme"],
        "bearer"
    );
    for (path, method) in [
        ("/api/profile/me", "get"),
        ("/api/auth/sessions", "get"),
        ("/api/auth/password", "post"),
        ("/api/admin/users", "get"),
    ] {
        let security = spec["paths"][path][method]["security"].to_string();
        assert!(
            security.contains("BearerAuth"),
            "{method} {path}: {security}"
        );
    }
    let refresh_params = spec["paths"]["/api/auth/refresh"]["post"]["parameters"].to_string();
    assert!(refresh_params.contains("refresh_token") && refresh_params.contains("cookie"));
}

#[test]
fn tags_are_listed_in_the_order_people_use_them_and_each_operation_once() {
    let spec: serde_json::Value = serde_json::from_str(&latchkey::http::spec()).expect("json");
    let tags: Vec<&str> = spec["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|tag| tag["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        tags,
        [
            "Auth",
            "SecondFactors",
            "Passkeys",
            "Profile",
            "Sessions",
            "Account",
            "Recovery",
            "Admin",
            "Discovery",
            "Meta"
        ]
    );
    // Profile reads /api/profile/me and Account deletes it: both are listed.
    let me = &spec["paths"]["/api/profile/me"];
    assert_eq!(me["get"]["tags"], serde_json::json!(["Profile"]));
    assert_eq!(me["delete"]["tags"], serde_json::json!(["Account"]));
    // The document's text has each path once (a JSON reader keeps only the
    // last of two equal keys).
    let text = latchkey::http::spec();
    assert_eq!(text.matches("\"/api/profile/me\"").count(), 1);
    let operations: usize = spec["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|path| path.as_object().expect("operations").len())
        .sum();
    assert_eq!(operations, 38);
}

#[tokio::test]
async fn swagger_ui_is_served_at_docs() {
    let app = spawn_app().await;
    let response = app.get("/docs").await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.expect("html");
    assert!(
        html.contains("swagger-ui"),
        "{}",
        &html[..html.len().min(200)]
    );
    // It shows the document as served, tags in order.
    let auth = html.find("\"name\": \"Auth\"").expect("Auth tag");
    let account = html.find("\"name\": \"Account\"").expect("Account tag");
    assert!(auth < account, "Auth is listed before Account");
}
