//! Prompts: the [`PromptBuilder`] and the registry of prompt handlers.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use mcp_protocol::mcp::prompts::{GetPromptResult, Prompt, PromptArgument};
use mcp_protocol::ErrorObject;

use super::{BoxFuture, Ordered};
use crate::RequestContext;

/// What a prompt handler returns: the filled-in messages, or a JSON-RPC error.
pub type PromptResult = Result<GetPromptResult, ErrorObject>;

/// A stored prompt handler: `(arguments, ctx)`.
pub(crate) type PromptHandler = Arc<
    dyn Fn(BTreeMap<String, String>, RequestContext) -> BoxFuture<'static, PromptResult>
        + Send
        + Sync,
>;

/// Boxes a prompt handler.
pub(crate) fn prompt_handler<F, Fut>(handler: F) -> PromptHandler
where
    F: Fn(BTreeMap<String, String>, RequestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = PromptResult> + Send + 'static,
{
    Arc::new(move |args, ctx| Box::pin(handler(args, ctx)))
}

/// A registered prompt.
#[derive(Clone)]
pub(crate) struct PromptEntry {
    pub(crate) prompt: Prompt,
    pub(crate) handler: PromptHandler,
}

impl PromptEntry {
    /// The first required argument missing from `args`.
    pub(crate) fn missing_argument(&self, args: &BTreeMap<String, String>) -> Option<&str> {
        self.prompt
            .arguments
            .iter()
            .flatten()
            .find(|a| a.required == Some(true) && !args.contains_key(&a.name))
            .map(|a| a.name.as_str())
    }
}

/// The prompts of a server.
pub(crate) type PromptRegistry = Ordered<PromptEntry>;

/// Starts describing a prompt named `name`.
pub fn prompt_builder(name: impl Into<String>) -> PromptBuilder {
    PromptBuilder {
        prompt: Prompt {
            name: name.into(),
            ..Default::default()
        },
    }
}

/// Describes a prompt: name, description and arguments.
#[derive(Clone, Debug)]
pub struct PromptBuilder {
    prompt: Prompt,
}

impl PromptBuilder {
    /// What the prompt is for.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.prompt.description = Some(description.into());
        self
    }

    /// The display name.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.prompt.title = Some(title.into());
        self
    }

    /// An argument (prompt arguments are strings).
    pub fn with_argument(
        mut self,
        name: impl Into<String>,
        description: impl Into<String>,
        required: bool,
    ) -> Self {
        self.prompt
            .arguments
            .get_or_insert_with(Vec::new)
            .push(PromptArgument {
                name: name.into(),
                title: None,
                description: Some(description.into()),
                required: Some(required),
            });
        self
    }

    /// The prompt.
    pub fn build(self) -> Prompt {
        self.prompt
    }
}

impl From<PromptBuilder> for Prompt {
    fn from(b: PromptBuilder) -> Prompt {
        b.build()
    }
}
