//! The Meta tag, `GET /`: is latchkey running.

use poem_openapi::OpenApi;
use poem_openapi::payload::PlainText;

use super::ApiTags;

/// The Meta operations.
#[derive(Default)]
pub(super) struct MetaApi;

#[OpenApi(tag = "ApiTags::Meta")]
impl MetaApi {
    /// Is it running
    ///
    /// Always `JWT Auth API running`.
    #[oai(path = "/", method = "get")]
    async fn index(&self) -> PlainText<&'static str> {
        PlainText("JWT Auth API running")
    }
}
