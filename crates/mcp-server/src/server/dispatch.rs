//! A request's method served from the registries: lists paged, tools called (arguments checked
//! against their schema first), resources read (static, then templates), prompts filled in,
//! completions. A handler that panics fails its request, never the server.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use mcp_protocol::mcp::completion::CompleteParams;
use mcp_protocol::mcp::prompts::{GetPromptParams, ListPromptsResult};
use mcp_protocol::mcp::resources::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, ResourceUriParams,
};
use mcp_protocol::mcp::tools::{CallToolParams, CallToolResult, ListToolsResult};
use mcp_protocol::mcp::{empty_result, methods, PaginatedParams};
use mcp_protocol::{ErrorCode, ErrorObject, Request};
use serde_json::{json, Value};

use super::{to_value, Era, Server};
use crate::context::RequestContext;
use crate::registry::resources::ResourceResult;
use crate::registry::BoxFuture;
use crate::schema;

impl Server {
    pub(super) async fn dispatch(
        &self,
        request: Request,
        ctx: RequestContext,
        era: Era,
    ) -> Result<Value, ErrorObject> {
        let page_size = self.inner.config.page_size;
        match request.method.as_str() {
            methods::PING => Ok(empty_result()),
            methods::SERVER_DISCOVER => to_value(self.discover()),
            methods::TOOLS_LIST => {
                let params: PaginatedParams = request.params_as()?;
                let (tools, next_cursor) =
                    self.inner
                        .tools
                        .page(params.cursor.as_deref(), page_size, |e| e.tool.clone())?;
                to_value(ListToolsResult {
                    tools,
                    next_cursor,
                    ..Default::default()
                })
            }
            methods::TOOLS_CALL => self.call_tool(&request, ctx).await,
            methods::RESOURCES_LIST => {
                let params: PaginatedParams = request.params_as()?;
                let (resources, next_cursor) =
                    self.inner
                        .resources
                        .page(params.cursor.as_deref(), page_size, |e| e.resource.clone())?;
                to_value(ListResourcesResult {
                    resources,
                    next_cursor,
                    ..Default::default()
                })
            }
            methods::RESOURCES_TEMPLATES_LIST => {
                let params: PaginatedParams = request.params_as()?;
                let (resource_templates, next_cursor) =
                    self.inner
                        .templates
                        .page(params.cursor.as_deref(), page_size, |e| e.template.clone())?;
                to_value(ListResourceTemplatesResult {
                    resource_templates,
                    next_cursor,
                    ..Default::default()
                })
            }
            methods::RESOURCES_READ => self.read_resource(&request, ctx).await,
            methods::PROMPTS_LIST => {
                let params: PaginatedParams = request.params_as()?;
                let (prompts, next_cursor) =
                    self.inner
                        .prompts
                        .page(params.cursor.as_deref(), page_size, |e| e.prompt.clone())?;
                to_value(ListPromptsResult {
                    prompts,
                    next_cursor,
                    ..Default::default()
                })
            }
            methods::PROMPTS_GET => self.get_prompt(&request, ctx).await,
            methods::COMPLETION_COMPLETE => {
                let Some(handler) = self.completion_handler() else {
                    return Err(ErrorObject::method_not_found(&request.method));
                };
                let params: CompleteParams = request.params_as()?;
                let result = guarded(|| handler(params, ctx)).await.map_err(|panic| {
                    tracing::error!("completion handler panicked: {panic}");
                    ErrorObject::internal_error("the completion handler failed")
                })??;
                to_value(result)
            }
            // Handshake-era methods a stateless request cannot use.
            methods::INITIALIZE
            | methods::LOGGING_SET_LEVEL
            | methods::RESOURCES_SUBSCRIBE
            | methods::RESOURCES_UNSUBSCRIBE
            | methods::NOTIFICATION_INITIALIZED
                if era == Era::Stateless =>
            {
                Err(ErrorObject::method_not_found(&request.method))
            }
            other => Err(ErrorObject::method_not_found(other)),
        }
    }

    async fn call_tool(
        &self,
        request: &Request,
        ctx: RequestContext,
    ) -> Result<Value, ErrorObject> {
        let params: CallToolParams = request.params_as()?;
        let Some(entry) = self.inner.tools.get(&params.name) else {
            return Err(ErrorObject::invalid_params(format!(
                "unknown tool: {}",
                params.name
            )));
        };
        let args = params.arguments.unwrap_or_default();
        if let Err(why) = schema::validate_arguments(&entry.tool.input_schema, &args) {
            // The 2025-11-25 rule: input validation failures are tool errors the model can read.
            return to_value(CallToolResult::error(format!(
                "Invalid arguments for tool '{}': {why}",
                params.name
            )));
        }
        let handler = entry.handler;
        let result = match guarded(|| handler(args, ctx)).await {
            Ok(Ok(result)) => result,
            Ok(Err(error)) => CallToolResult::error(error.message()),
            Err(panic) => {
                tracing::error!(tool = %params.name, "tool handler panicked: {panic}");
                CallToolResult::error(format!(
                    "Tool '{}' failed with an internal error",
                    params.name
                ))
            }
        };
        to_value(result)
    }

    async fn read_resource(
        &self,
        request: &Request,
        ctx: RequestContext,
    ) -> Result<Value, ErrorObject> {
        let params: ResourceUriParams = request.params_as()?;
        let uri = params.uri;
        let run: Box<dyn FnOnce() -> BoxFuture<'static, ResourceResult> + Send> =
            if let Some(entry) = self.inner.resources.get(&uri) {
                let uri = uri.clone();
                Box::new(move || (entry.handler)(uri, ctx))
            } else if let Some((entry, vars)) =
                self.inner.templates.find_map(|e| e.pattern.matches(&uri))
            {
                let uri = uri.clone();
                Box::new(move || (entry.handler)(uri, vars, ctx))
            } else {
                return Err(
                    ErrorObject::new(ErrorCode::RESOURCE_NOT_FOUND, "Resource not found")
                        .with_data(json!({"uri": uri})),
                );
            };
        let contents = guarded(run).await.map_err(|panic| {
            tracing::error!(%uri, "resource handler panicked: {panic}");
            ErrorObject::internal_error("the resource handler failed")
        })??;
        to_value(ReadResourceResult {
            contents,
            ..Default::default()
        })
    }

    async fn get_prompt(
        &self,
        request: &Request,
        ctx: RequestContext,
    ) -> Result<Value, ErrorObject> {
        let params: GetPromptParams = request.params_as()?;
        let Some(entry) = self.inner.prompts.get(&params.name) else {
            return Err(ErrorObject::invalid_params(format!(
                "unknown prompt: {}",
                params.name
            )));
        };
        let args = params.arguments.unwrap_or_default();
        if let Some(missing) = entry.missing_argument(&args) {
            return Err(ErrorObject::invalid_params(format!(
                "missing required argument '{missing}' of prompt '{}'",
                params.name
            )));
        }
        let handler = entry.handler;
        let result = guarded(|| handler(args, ctx)).await.map_err(|panic| {
            tracing::error!(prompt = %params.name, "prompt handler panicked: {panic}");
            ErrorObject::internal_error("the prompt handler failed")
        })??;
        to_value(result)
    }
}

/// Runs a handler, turning a panic (while building its future or while polling it) into `Err`
/// with the panic's message, so one bad handler cannot take the server down.
async fn guarded<T>(start: impl FnOnce() -> BoxFuture<'static, T>) -> Result<T, String> {
    let future = std::panic::catch_unwind(AssertUnwindSafe(start)).map_err(panic_message)?;
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(panic_message)
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
