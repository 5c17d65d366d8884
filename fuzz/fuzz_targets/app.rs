//! Arbitrary requests through the whole app (router, guard, handlers, core)
//! on a real data directory: no answer may be a 5xx other than 503 for an
//! overloaded hash queue. The first byte picks the route, the next ones the
//! method, and the rest is split into a header value and a body.
#![no_main]

use std::sync::OnceLock;

use poem::http::Method;
use poem::test::TestClient;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    client: TestClient<poem::endpoint::BoxEndpoint<'static>>,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = latchkey::Config {
            limits: latchkey::config::RateLimits::off(),
            hash_concurrency: Some(1),
            ..latchkey::Config::with_data_dir(dir.path())
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let core = runtime
            .block_on(latchkey::Latchkey::open(config))
            .expect("core");
        let endpoint = poem::EndpointExt::boxed(poem::EndpointExt::map_to_response(
            latchkey::http::app(core),
        ));
        Fixture {
            runtime,
            client: TestClient::new(endpoint),
            _dir: dir,
        }
    })
}

const PATHS: &[&str] = &[
    "/api/auth/register",
    "/api/auth/login",
    "/api/auth/refresh",
    "/api/auth/logout",
    "/api/auth/sessions",
    "/api/auth/sessions/x",
    "/api/auth/logout-all",
    "/api/auth/password",
    "/api/profile/me",
    "/api/admin/users",
    "/api/admin/users/x",
    "/api/admin/audit",
    "/.well-known/openid-configuration",
    "/",
];

const METHODS: &[Method] = &[Method::GET, Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [route, method, rest @ ..] = data else {
        return;
    };
    let fixture = fixture();
    let path = PATHS[usize::from(*route) % PATHS.len()];
    let method = METHODS[usize::from(*method) % METHODS.len()].clone();
    let split = rest.iter().position(|byte| *byte == b'\n').unwrap_or(0);
    let (header, body) = rest.split_at(split);
    let mut request = fixture
        .client
        .request(method, path)
        .content_type("application/json")
        .body(body.to_vec());
    if let Ok(value) = poem::http::HeaderValue::from_bytes(header) {
        request = request
            .header("authorization", value.clone())
            .header("cookie", value.clone())
            .header("origin", value);
    }
    let status = fixture.runtime.block_on(request.send()).0.status();
    assert!(
        !status.is_server_error() || status.as_u16() == 503,
        "{path} answered {status}"
    );
});
