//! The embedding example (`examples/embedded.rs`) as a new user runs it:
//! its router over real HTTP, latchkey under `/auth`, the app's own routes
//! guarded by latchkey's extractors, one OpenAPI document for both.

use latchkey::{ClientInfo, Config, Latchkey};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::helpers::{Api, PASSWORD, Session, set_cookie};

#[allow(dead_code)] // its `main` is the example's, not the test's
#[path = "../../examples/embedded.rs"]
mod example;

struct Embedded {
    /// The app's own routes.
    app: Api,
    /// latchkey's, under `/auth`.
    auth: Api,
    core: Latchkey,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start() -> Embedded {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let config = Config::builder(dir.path())
        .hash_concurrency(2)
        .public_url(format!("http://{address}/auth"))
        .build()
        .expect("config");
    let core = Latchkey::open(config).await.expect("opens");
    let (stop, stopped) = oneshot::channel::<()>();
    let endpoint = example::app(core.clone());
    let config = core.config().clone();
    tokio::spawn(async move {
        latchkey::http::serve_endpoint(listener, endpoint, &config, async move {
            let _ = stopped.await;
        })
        .await
    });
    Embedded {
        app: Api::new(format!("http://{address}")),
        auth: Api::new(format!("http://{address}/auth")),
        core,
        _stop: stop,
        _dir: dir,
    }
}

async fn get_with(api: &Api, path: &str, token: &str) -> reqwest::Response {
    api.client
        .get(api.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn the_example_app_serves_latchkey_under_its_prefix_and_guards_its_own_routes() {
    let it = start().await;
    // Public.
    let stats = it.app.get("/api/stats").await;
    assert_eq!(stats.status(), StatusCode::OK);
    assert_eq!(
        stats.json::<Value>().await.expect("json"),
        json!({"todos": 0})
    );

    // latchkey's flow, under /auth; the cookie's path follows the prefix.
    let registered = it.auth.register("tess", "tess@example.com", PASSWORD).await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let login = it.auth.login("tess@example.com", PASSWORD).await;
    let cookie = set_cookie(&login, "refresh_token").expect("refresh cookie");
    assert!(cookie.contains("Path=/auth/api/auth;"), "{cookie}");
    let tess = Session::from_token_response(login).await;
    let refreshed = it.auth.refresh_with(&tess.refresh_token).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    assert!(
        set_cookie(&refreshed, "refresh_token")
            .expect("rotated cookie")
            .contains("Path=/auth/api/auth;")
    );
    // Not at the root: only under the prefix.
    assert_eq!(
        it.app.login("tess@example.com", PASSWORD).await.status(),
        StatusCode::NOT_FOUND
    );

    // Protected: no token, a JSON 401; with one, the caller's own todos.
    let refused = it.app.get("/api/todos").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.json::<Value>().await.expect("json")["code"],
        "missing_token"
    );
    let added = it
        .app
        .client
        .post(it.app.url("/api/todos"))
        .bearer_auth(&tess.access_token)
        .json(&json!({"title": "water the plants"}))
        .send()
        .await
        .expect("request");
    assert_eq!(added.status(), StatusCode::OK);
    let mine = get_with(&it.app, "/api/todos", &tess.access_token).await;
    assert_eq!(
        mine.json::<Value>().await.expect("json"),
        json!(["water the plants"])
    );
    let whoami = get_with(&it.app, "/whoami", &tess.access_token).await;
    assert_eq!(whoami.status(), StatusCode::OK);
    let text = whoami.text().await.expect("text");
    assert!(
        text.starts_with("tess@example.com") && text.ends_with("signed in with pwd)"),
        "{text}"
    );
    assert_eq!(
        it.app.get("/whoami").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Admin only: a user gets 403, an admin clears.
    let clear = |token: String| {
        let app = it.app.clone();
        async move {
            app.client
                .delete(app.url("/api/todos"))
                .bearer_auth(token)
                .send()
                .await
                .expect("request")
        }
    };
    let forbidden = clear(tess.access_token.clone()).await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        forbidden.json::<Value>().await.expect("json")["code"],
        "forbidden"
    );
    it.core
        .create_user(
            "root",
            "root@example.com",
            PASSWORD,
            &["user", "admin"],
            ClientInfo::default(),
        )
        .await
        .expect("admin");
    let admin =
        Session::from_token_response(it.auth.login("root@example.com", PASSWORD).await).await;
    assert_eq!(
        clear(admin.access_token).await.status(),
        StatusCode::NO_CONTENT
    );
    let stats = it.app.get("/api/stats").await;
    assert_eq!(
        stats.json::<Value>().await.expect("json"),
        json!({"todos": 0})
    );

    // The mailed link points under the mount, and its page is served there.
    it.core.deliver_outbox().await.expect("outbox");
    let folder = it._dir.path().join("outbox-files");
    let mail = std::fs::read_dir(&folder)
        .expect("mail files")
        .filter_map(Result::ok)
        .map(|entry| std::fs::read_to_string(entry.path()).expect("read"))
        .find(|text| text.contains("To: tess@example.com"))
        .expect("tess's verification mail");
    let link = mail
        .lines()
        .find(|line| line.contains("token="))
        .expect("a link")
        .trim()
        .to_owned();
    assert!(link.contains("/auth/account/verify-email?token="), "{link}");
    let page = it.app.client.get(&link).send().await.expect("request");
    assert_eq!(page.status(), StatusCode::OK);
    let token = link.split("token=").nth(1).expect("token");
    let verified = it
        .auth
        .post_json("/api/auth/verify-email", &json!({ "token": token }))
        .await;
    assert_eq!(verified.status(), StatusCode::OK);

    // Logging out revokes the session: the app's routes refuse its token.
    assert_eq!(
        it.auth
            .logout_with(Some(&tess.refresh_token))
            .await
            .status(),
        StatusCode::OK
    );
    let revoked = get_with(&it.app, "/api/todos", &tess.access_token).await;
    assert_eq!(revoked.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_example_app_has_one_document_with_both_apis_and_latchkeys_guard() {
    let it = start().await;
    let spec: Value = it
        .app
        .get("/openapi.json")
        .await
        .json()
        .await
        .expect("json");
    let paths = spec["paths"].as_object().expect("paths");
    for path in [
        "/api/todos",
        "/api/stats",
        "/auth/api/auth/login",
        "/auth/api/auth/refresh",
        "/auth/api/profile/me",
        "/auth/.well-known/jwks.json",
    ] {
        assert!(paths.contains_key(path), "{path} in {:?}", paths.keys());
    }
    assert!(!paths.contains_key("/api/auth/login"));
    assert!(spec["components"]["securitySchemes"]["BearerAuth"].is_object());
    let docs = it.app.get("/docs").await;
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.expect("html").contains("swagger"));

    // The guard covers the app's routes too: JSON errors, the body limit,
    // the security headers, a request id.
    let unknown = it.app.get("/nowhere").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(unknown.headers().contains_key("x-request-id"));
    assert_eq!(unknown.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        unknown.json::<Value>().await.expect("json")["code"],
        "not_found"
    );
    let huge = it
        .app
        .client
        .post(it.app.url("/api/todos"))
        .header("content-type", "application/json")
        .body(vec![b' '; 64 * 1024])
        .send()
        .await
        .expect("request");
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A cross-site form cannot log anyone out.
    let forged = it
        .auth
        .client
        .post(it.auth.url("/api/auth/logout"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("request");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        forged.json::<Value>().await.expect("json")["code"],
        "csrf_rejected"
    );
    // The discovery document names the keys under the prefix.
    let discovery: Value = it
        .auth
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .expect("json");
    let jwks_uri = discovery["jwks_uri"].as_str().expect("jwks_uri");
    assert!(
        jwks_uri.ends_with("/auth/.well-known/jwks.json"),
        "{jwks_uri}"
    );
    let jwks = it.app.client.get(jwks_uri).send().await.expect("request");
    assert_eq!(jwks.status(), StatusCode::OK);
}

#[tokio::test]
async fn latchkey_nested_whole_under_a_prefix_points_its_cookies_and_its_swagger_ui_there() {
    use poem::EndpointExt as _;

    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config::builder(dir.path())
        .hash_concurrency(2)
        .build()
        .expect("config");
    let core = Latchkey::open(config).await.expect("opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (_stop, stopped) = oneshot::channel::<()>();
    let endpoint = poem::Route::new()
        .nest("/id", latchkey::http::app(core.clone()))
        .boxed();
    let config = core.config().clone();
    tokio::spawn(async move {
        latchkey::http::serve_endpoint(listener, endpoint, &config, async move {
            let _ = stopped.await;
        })
        .await
    });
    let auth = Api::new(format!("http://{address}/id"));

    let spec: Value = auth.get("/openapi.json").await.json().await.expect("json");
    assert_eq!(spec["servers"], json!([{"url": "/id"}]));
    let page = auth.get("/docs").await.text().await.expect("html");
    assert!(
        page.contains(r#""url": "/id""#),
        "Swagger UI calls under /id"
    );
    assert_eq!(auth.get("/docs/").await.status(), StatusCode::OK);

    assert_eq!(
        auth.register("nina", "nina@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::CREATED
    );
    let login = auth.login("nina@example.com", PASSWORD).await;
    let cookie = set_cookie(&login, "refresh_token").expect("refresh cookie");
    assert!(cookie.contains("Path=/id/api/auth;"), "{cookie}");
    let device = set_cookie(&login, "latchkey_device").expect("device cookie");
    assert!(device.contains("Path=/id/api/auth/login;"), "{device}");
    let nina = Session::from_token_response(login).await;
    let out = auth.logout_with(Some(&nina.refresh_token)).await;
    assert!(
        set_cookie(&out, "refresh_token")
            .expect("cleared")
            .contains("Path=/id/api/auth;")
    );

    // The standalone server's documents name no server.
    let root: Value = serde_json::from_str(&latchkey::http::spec()).expect("json");
    assert_eq!(root["servers"], json!([]));
}
