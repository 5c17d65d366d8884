//! A small todo app that embeds latchkey: latchkey's routes under `/auth`,
//! the app's own operations guarded by latchkey's extractors, one OpenAPI
//! document and one Swagger UI for both, and the sweeper stopped with the
//! server.
//!
//! ```text
//! cargo run --example embedded          # http://127.0.0.1:3000/docs
//! ```
//!
//! - `GET /api/stats`: public.
//! - `GET /api/todos`, `POST /api/todos`: the caller's own todos (a
//!   latchkey access token as `Authorization: Bearer …`).
//! - `DELETE /api/todos`: role `admin` only; clears everyone's.
//! - `GET /whoami`: a plain poem handler, guarded the same way.
//! - `POST /auth/api/auth/register`, `…/login`, `…/refresh`, `…/logout` and
//!   the rest of latchkey's API; the refresh cookie's path is
//!   `/auth/api/auth`.
//! - `GET /auth/account/verify-email?token=…` and the other pages that the
//!   links in latchkey's mails open (without `SMTP_URL`, the mails are files
//!   in `./todo-data/outbox-files/`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use latchkey::http::{Admin, AuthUser, Guard, Mount, RequireRole, SignedIn};
use latchkey::{Config, Latchkey};
use poem::{Endpoint, EndpointExt, Route, get, handler};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, OpenApiService};

/// Where latchkey's routes go in this app.
pub struct AuthAt;

impl Mount for AuthAt {
    const PATH: &'static str = "/auth";
}

/// Every operation of the app, latchkey's included: one document.
pub type Apis = (TodoApi, latchkey::http::Api<AuthAt>);

/// The todos, by user id (in memory: it is an example).
#[derive(Default, Clone)]
pub struct TodoApi {
    todos: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

/// A todo to add.
#[derive(Object)]
pub struct NewTodo {
    /// What to do.
    title: String,
}

/// Counts anyone may see.
#[derive(Object)]
pub struct Stats {
    /// Todos of every user.
    todos: u64,
}

/// The answer to an administrator's clearing.
#[derive(ApiResponse)]
pub enum Cleared {
    /// Every todo is gone.
    #[oai(status = 204)]
    Done,
}

impl TodoApi {
    fn todos(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.todos
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[OpenApi]
impl TodoApi {
    /// How many todos there are (public)
    #[oai(path = "/api/stats", method = "get")]
    async fn stats(&self) -> Json<Stats> {
        let todos = self.todos().values().map(Vec::len).sum::<usize>();
        Json(Stats {
            todos: todos as u64,
        })
    }

    /// My todos
    #[oai(path = "/api/todos", method = "get")]
    async fn list(&self, user: AuthUser) -> Json<Vec<String>> {
        Json(
            self.todos()
                .get(user.user_id())
                .cloned()
                .unwrap_or_default(),
        )
    }

    /// Add a todo
    #[oai(path = "/api/todos", method = "post")]
    async fn add(&self, user: AuthUser, todo: Json<NewTodo>) -> Json<Vec<String>> {
        let mut todos = self.todos();
        let mine = todos.entry(user.user_id().to_owned()).or_default();
        mine.push(todo.0.title);
        Json(mine.clone())
    }

    /// Clear every user's todos (admins only)
    #[oai(path = "/api/todos", method = "delete")]
    async fn clear(&self, _admin: RequireRole<Admin>) -> Cleared {
        self.todos().clear();
        Cleared::Done
    }
}

/// A plain poem handler, guarded by latchkey too. `amr` says how the
/// session signed in (`user.multi_factor()` asks for more than a password).
#[handler]
fn whoami(SignedIn(user): SignedIn) -> String {
    format!(
        "{} (roles: {}; signed in with {})",
        user.email(),
        user.roles().join(", "),
        user.amr().join("+")
    )
}

/// The whole app: the app's operations and latchkey's in one OpenAPI
/// service, Swagger UI at `/docs`, the document at `/openapi.json`, all
/// behind latchkey's guard (JSON errors, body limit, CSRF and CORS checks,
/// security headers, request ids, logs and metrics).
pub fn app(core: Latchkey) -> impl Endpoint {
    let service = OpenApiService::new(
        (TodoApi::default(), latchkey::http::Api::<AuthAt>::default()),
        "Todos",
        "1.0",
    );
    Route::new()
        .nest("/docs", service.swagger_ui())
        .at("/openapi.json", service.spec_endpoint())
        .at("/whoami", get(whoami))
        // The pages that mailed links open (verify, reset, confirm).
        .nest("/auth/account", latchkey::http::account_pages())
        .nest("/", service)
        .with(Guard::new(core).routes::<Apis>())
}

#[allow(dead_code)] // the test includes this file for `app`
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let config = Config::builder("./todo-data")
        .access_ttl(std::time::Duration::from_secs(10 * 60))
        // Links in mails: <public-url>/account/…, under the mount.
        .public_url("http://127.0.0.1:3000/auth")
        .build()?;
    let core = Latchkey::open(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("todos on http://127.0.0.1:3000/docs");

    // The sweeper and the mail sender run until their own signal: sent once
    // the server stops.
    let (stop_background, background_stopped) = tokio::sync::oneshot::channel::<()>();
    let background = tokio::spawn(latchkey::run_background(core.clone(), async move {
        let _ = background_stopped.await;
    }));
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    // latchkey's connection limits and timeouts, for the app's routes too.
    latchkey::http::serve_endpoint(listener, app(core.clone()), core.config(), shutdown).await?;
    let _ = stop_background.send(());
    background.await?;
    core.flush()?;
    Ok(())
}
