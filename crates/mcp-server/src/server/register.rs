//! Registering and removing what the server offers: tools, static resources, resource
//! templates, prompts and the completion handler. Each change is announced to the client
//! sessions as a list change (see `notify`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use mcp_protocol::mcp::completion::CompleteParams;
use mcp_protocol::mcp::prompts::Prompt;
use mcp_protocol::mcp::resources::{Resource, ResourceTemplate};
use mcp_protocol::mcp::tools::{CallToolResult, Tool};
use mcp_protocol::mcp::JsonObject;
use serde::de::DeserializeOwned;

use super::Server;
use crate::context::RequestContext;
use crate::registry::completion::{completion_handler, CompletionHandler, CompletionResult};
use crate::registry::prompts::{prompt_handler, PromptEntry, PromptResult};
use crate::registry::resources::{
    resource_handler, template_handler, ResourceEntry, ResourceResult, TemplateEntry, UriTemplate,
};
use crate::registry::tools::{tool_handler, ToolEntry};
use crate::typed::{parse_arguments, IntoCallToolResult};
use crate::ToolError;

impl Server {
    /// Registers a tool and its handler `|args, ctx| async move { .. }`; a tool registered again
    /// under the same name replaces the earlier one.
    pub fn register_tool<F, Fut>(&self, tool: impl Into<Tool>, handler: F) -> &Self
    where
        F: Fn(JsonObject, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<CallToolResult, ToolError>> + Send + 'static,
    {
        let tool = tool.into();
        let entry = ToolEntry {
            tool: tool.clone(),
            handler: tool_handler(handler),
        };
        if self.inner.tools.insert(tool.name.clone(), entry) {
            tracing::debug!(tool = %tool.name, "tool replaced");
        }
        self.notify_tools_list_changed();
        self
    }

    /// Registers a tool whose arguments are a Rust type: the handler
    /// `|args: MyArgs, ctx| async move { .. }` gets them parsed, and the tool's `inputSchema`
    /// (and, for a [`Structured`](crate::Structured) answer, its `outputSchema`) is written
    /// from the types. See [`crate::typed`] for bad and unknown arguments.
    #[cfg(feature = "schemars")]
    pub fn register_typed_tool<A, R, F, Fut>(&self, tool: impl Into<Tool>, handler: F) -> &Self
    where
        A: DeserializeOwned + schemars::JsonSchema + Send + 'static,
        R: crate::typed::ToolOutput + 'static,
        F: Fn(A, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ToolError>> + Send + 'static,
    {
        let mut tool = tool.into();
        tool.input_schema = crate::typed::input_schema_for::<A>();
        if let Some(schema) = R::output_schema() {
            tool.output_schema = Some(schema);
        }
        self.register_parsed_tool(tool, handler)
    }

    /// Registers a tool whose handler gets its arguments parsed into `A`, under the schema the
    /// tool was given (no `schemars` needed; keeping the two in step is the caller's job).
    pub fn register_parsed_tool<A, R, F, Fut>(&self, tool: impl Into<Tool>, handler: F) -> &Self
    where
        A: DeserializeOwned + Send + 'static,
        R: IntoCallToolResult + 'static,
        F: Fn(A, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ToolError>> + Send + 'static,
    {
        let tool = tool.into();
        let name: Arc<str> = tool.name.as_str().into();
        let handler = Arc::new(handler);
        self.register_tool(tool, move |args, ctx| {
            let parsed = parse_arguments::<A>(&name, args);
            let handler = Arc::clone(&handler);
            async move { handler(parsed?, ctx).await?.into_call_tool_result() }
        })
    }

    /// Removes a tool; `false` if there was none by that name. Sessions are told the list
    /// changed.
    pub fn remove_tool(&self, name: &str) -> bool {
        let removed = self.inner.tools.remove(name);
        if removed {
            self.notify_tools_list_changed();
        }
        removed
    }

    /// Every registered tool, in registration order.
    pub fn tools(&self) -> Vec<Tool> {
        self.inner
            .tools
            .page(None, usize::MAX, |e| e.tool.clone())
            .map(|(tools, _)| tools)
            .unwrap_or_default()
    }

    /// Registers a static resource and its handler `|uri, ctx| async move { .. }`.
    pub fn register_resource<F, Fut>(&self, resource: Resource, handler: F) -> &Self
    where
        F: Fn(String, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ResourceResult> + Send + 'static,
    {
        let key = resource.uri.clone();
        let entry = ResourceEntry {
            resource,
            handler: resource_handler(handler),
        };
        self.inner.resources.insert(key, entry);
        self.notify_resources_list_changed();
        self
    }

    /// Removes a static resource; `false` if there was none with that URI. Sessions are told
    /// the list changed.
    pub fn remove_resource(&self, uri: &str) -> bool {
        let removed = self.inner.resources.remove(uri);
        if removed {
            self.notify_resources_list_changed();
        }
        removed
    }

    /// Registers a resource template and its handler `|uri, variables, ctx| async move { .. }`,
    /// called for a `resources/read` of a URI that no static resource has and the template fits.
    pub fn register_resource_template<F, Fut>(
        &self,
        template: ResourceTemplate,
        handler: F,
    ) -> &Self
    where
        F: Fn(String, BTreeMap<String, String>, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ResourceResult> + Send + 'static,
    {
        let key = template.uri_template.clone();
        let entry = TemplateEntry {
            pattern: Arc::new(UriTemplate::parse(&template.uri_template)),
            template,
            handler: template_handler(handler),
        };
        self.inner.templates.insert(key, entry);
        self.notify_resources_list_changed();
        self
    }

    /// Registers a prompt and its handler `|arguments, ctx| async move { .. }`.
    pub fn register_prompt<F, Fut>(&self, prompt: impl Into<Prompt>, handler: F) -> &Self
    where
        F: Fn(BTreeMap<String, String>, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = PromptResult> + Send + 'static,
    {
        let prompt = prompt.into();
        let key = prompt.name.clone();
        let entry = PromptEntry {
            prompt,
            handler: prompt_handler(handler),
        };
        self.inner.prompts.insert(key, entry);
        self.notify_prompts_list_changed();
        self
    }

    /// Removes a prompt; `false` if there was none by that name. Sessions are told the list
    /// changed.
    pub fn remove_prompt(&self, name: &str) -> bool {
        let removed = self.inner.prompts.remove(name);
        if removed {
            self.notify_prompts_list_changed();
        }
        removed
    }

    /// Sets the `completion/complete` handler (and so offers the `completions` capability).
    pub fn set_completion_handler<F, Fut>(&self, handler: F) -> &Self
    where
        F: Fn(CompleteParams, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CompletionResult> + Send + 'static,
    {
        *self
            .inner
            .completion
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(completion_handler(handler));
        self
    }

    pub(super) fn completion_handler(&self) -> Option<CompletionHandler> {
        self.inner
            .completion
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
