//! The Meta tag: `GET /` (is latchkey running), `GET /healthz` (is the
//! process up) and `GET /readyz` (can it serve: the store takes writes and
//! the keys are loaded), for load balancers and orchestrators.

use poem::web::Data;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use super::error::{ErrorBody, ErrorJson};
use crate::service::Latchkey;

/// The Meta operations.
#[derive(Default)]
pub(super) struct MetaApi;

/// A health answer.
#[derive(Object)]
#[oai(read_only_all)]
struct Status {
    /// `ok` (the process is up) or `ready` (it can serve).
    status: &'static str,
}

#[derive(ApiResponse)]
enum HealthResponse {
    /// The process is up.
    #[oai(status = 200)]
    Ok(Json<Status>),
}

#[derive(ApiResponse)]
enum ReadyResponse {
    /// The store takes writes and the keys are loaded.
    #[oai(status = 200)]
    Ready(Json<Status>),
    /// `not_ready`: the message says why (a full or failing disk, the
    /// database being reopened).
    #[oai(status = 503)]
    NotReady(
        ErrorJson,
        /// Seconds before asking again.
        #[oai(header = "Retry-After")]
        u64,
    ),
}

#[OpenApi(tag = "ApiTags::Meta")]
impl MetaApi {
    /// Is it running
    ///
    /// Always `JWT Auth API running`.
    #[oai(path = "/", method = "get")]
    async fn index(&self) -> PlainText<&'static str> {
        PlainText("JWT Auth API running")
    }

    /// Liveness
    ///
    /// 200 `{"status":"ok"}` while the process answers at all.
    #[oai(path = "/healthz", method = "get")]
    async fn healthz(&self) -> HealthResponse {
        HealthResponse::Ok(Json(Status { status: "ok" }))
    }

    /// Readiness
    ///
    /// 200 `{"status":"ready"}` when the store takes writes (open, with room
    /// on its disk) and the signing keys are loaded; otherwise 503
    /// `not_ready` with the reason. Take the instance out of rotation while
    /// it answers 503.
    #[oai(path = "/readyz", method = "get")]
    async fn readyz(&self, core: Data<&Latchkey>) -> ReadyResponse {
        match core.ready().await {
            Ok(()) => ReadyResponse::Ready(Json(Status { status: "ready" })),
            Err(reason) => ReadyResponse::NotReady(
                ErrorJson(ErrorBody::new("not_ready", reason.to_string())),
                super::error::STORAGE_RETRY_AFTER,
            ),
        }
    }
}
