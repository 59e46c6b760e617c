//! The optional `completion/complete` handler.

use std::future::Future;
use std::sync::Arc;

use mcp_protocol::mcp::completion::{CompleteParams, CompleteResult};
use mcp_protocol::ErrorObject;

use super::BoxFuture;
use crate::RequestContext;

/// What a completion handler returns.
pub type CompletionResult = Result<CompleteResult, ErrorObject>;

/// A stored completion handler.
pub(crate) type CompletionHandler = Arc<
    dyn Fn(CompleteParams, RequestContext) -> BoxFuture<'static, CompletionResult> + Send + Sync,
>;

/// Boxes a completion handler.
pub(crate) fn completion_handler<F, Fut>(handler: F) -> CompletionHandler
where
    F: Fn(CompleteParams, RequestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = CompletionResult> + Send + 'static,
{
    Arc::new(move |params, ctx| Box::pin(handler(params, ctx)))
}
