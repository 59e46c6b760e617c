//! Tools: the [`ToolBuilder`] that writes a tool's JSON Schema, and the registry of handlers.

use std::future::Future;
use std::sync::Arc;

use mcp_protocol::mcp::tools::{CallToolResult, Tool, ToolAnnotations};
use mcp_protocol::mcp::JsonObject;
use serde_json::{json, Map, Value};

use super::{BoxFuture, Ordered};
use crate::{RequestContext, ToolError};

/// A stored tool handler.
pub(crate) type ToolHandler = Arc<
    dyn Fn(JsonObject, RequestContext) -> BoxFuture<'static, Result<CallToolResult, ToolError>>
        + Send
        + Sync,
>;

/// Boxes a closure `|args, ctx| async move { .. }` into a [`ToolHandler`].
pub(crate) fn tool_handler<F, Fut>(handler: F) -> ToolHandler
where
    F: Fn(JsonObject, RequestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<CallToolResult, ToolError>> + Send + 'static,
{
    Arc::new(move |args, ctx| Box::pin(handler(args, ctx)))
}

/// A registered tool.
#[derive(Clone)]
pub(crate) struct ToolEntry {
    pub(crate) tool: Tool,
    pub(crate) handler: ToolHandler,
}

/// The tools of a server.
pub(crate) type ToolRegistry = Ordered<ToolEntry>;

/// Starts describing a tool named `name` (the seed's `tool_builder("echo")`).
pub fn tool_builder(name: impl Into<String>) -> ToolBuilder {
    ToolBuilder::new(name)
}

/// Describes a tool: name, description and typed parameters, from which [`ToolBuilder::build`]
/// writes the `inputSchema` (`{"type":"object","properties":{..},"required":[..]}`).
#[derive(Clone, Debug)]
pub struct ToolBuilder {
    tool: Tool,
    properties: Map<String, Value>,
    required: Vec<String>,
    additional_properties: Option<bool>,
}

impl ToolBuilder {
    /// A tool named `name`, with no parameters yet.
    pub fn new(name: impl Into<String>) -> Self {
        ToolBuilder {
            tool: Tool {
                name: name.into(),
                ..Default::default()
            },
            properties: Map::new(),
            required: Vec::new(),
            additional_properties: None,
        }
    }

    /// What the tool does, for the model.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.tool.description = Some(description.into());
        self
    }

    /// The display name.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.tool.title = Some(title.into());
        self
    }

    /// A parameter with any JSON Schema (a `description` is added when given and absent).
    pub fn with_param(
        mut self,
        name: impl Into<String>,
        description: &str,
        mut schema: Value,
        required: bool,
    ) -> Self {
        let name = name.into();
        if let Some(obj) = schema.as_object_mut() {
            if !description.is_empty() && !obj.contains_key("description") {
                obj.insert("description".into(), description.into());
            }
        }
        self.properties.insert(name.clone(), schema);
        self.required.retain(|r| *r != name);
        if required {
            self.required.push(name);
        }
        self
    }

    /// A string parameter.
    pub fn with_string_param(
        self,
        name: impl Into<String>,
        description: &str,
        required: bool,
    ) -> Self {
        self.with_param(name, description, json!({"type": "string"}), required)
    }

    /// A number parameter (integers and floats).
    pub fn with_number_param(
        self,
        name: impl Into<String>,
        description: &str,
        required: bool,
    ) -> Self {
        self.with_param(name, description, json!({"type": "number"}), required)
    }

    /// An integer parameter.
    pub fn with_integer_param(
        self,
        name: impl Into<String>,
        description: &str,
        required: bool,
    ) -> Self {
        self.with_param(name, description, json!({"type": "integer"}), required)
    }

    /// A boolean parameter.
    pub fn with_boolean_param(
        self,
        name: impl Into<String>,
        description: &str,
        required: bool,
    ) -> Self {
        self.with_param(name, description, json!({"type": "boolean"}), required)
    }

    /// A string parameter that must be one of `values`.
    pub fn with_enum_param<I, S>(
        self,
        name: impl Into<String>,
        description: &str,
        values: I,
        required: bool,
    ) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let values: Vec<Value> = values
            .into_iter()
            .map(|v| Value::String(v.into()))
            .collect();
        self.with_param(
            name,
            description,
            json!({"type": "string", "enum": values}),
            required,
        )
    }

    /// An array parameter whose items have the JSON type `item_type` (`"string"`, `"number"`..).
    pub fn with_array_param(
        self,
        name: impl Into<String>,
        description: &str,
        item_type: &str,
        required: bool,
    ) -> Self {
        self.with_param(
            name,
            description,
            json!({"type": "array", "items": {"type": item_type}}),
            required,
        )
    }

    /// Rejects arguments that are not declared parameters (`additionalProperties: false`).
    pub fn deny_unknown_params(mut self) -> Self {
        self.additional_properties = Some(false);
        self
    }

    /// The JSON Schema of the tool's `structuredContent`.
    pub fn with_output_schema(mut self, schema: Value) -> Self {
        self.tool.output_schema = Some(schema);
        self
    }

    /// Behaviour hints (read-only, destructive, idempotent, open world).
    pub fn with_annotations(mut self, annotations: ToolAnnotations) -> Self {
        self.tool.annotations = Some(annotations);
        self
    }

    /// The tool, with its `inputSchema` written.
    pub fn build(self) -> Tool {
        let mut schema = Map::new();
        schema.insert("type".into(), "object".into());
        schema.insert("properties".into(), Value::Object(self.properties));
        if !self.required.is_empty() {
            schema.insert("required".into(), json!(self.required));
        }
        if let Some(extra) = self.additional_properties {
            schema.insert("additionalProperties".into(), extra.into());
        }
        Tool {
            input_schema: Value::Object(schema),
            ..self.tool
        }
    }
}

impl From<ToolBuilder> for Tool {
    fn from(b: ToolBuilder) -> Tool {
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_writes_the_input_schema() {
        let tool = tool_builder("calculator")
            .with_description("Perform basic arithmetic operations")
            .with_enum_param("operation", "What to do", ["add", "subtract"], true)
            .with_number_param("a", "First operand", true)
            .with_number_param("b", "Second operand", true)
            .with_boolean_param("verbose", "Explain", false)
            .with_array_param("tags", "Labels", "string", false)
            .build();
        let v = serde_json::to_value(&tool).unwrap();
        assert_eq!(v["name"], "calculator");
        assert_eq!(v["description"], "Perform basic arithmetic operations");
        let schema = &v["inputSchema"];
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["required"], json!(["operation", "a", "b"]));
        assert_eq!(
            schema["properties"]["operation"],
            json!({"type": "string", "enum": ["add", "subtract"], "description": "What to do"})
        );
        assert_eq!(
            schema["properties"]["a"],
            json!({"type": "number", "description": "First operand"})
        );
        assert_eq!(schema["properties"]["verbose"]["type"], "boolean");
        assert_eq!(
            schema["properties"]["tags"]["items"],
            json!({"type": "string"})
        );
        assert!(schema.get("additionalProperties").is_none());
    }

    #[test]
    fn a_tool_without_params_is_an_empty_object_schema() {
        let tool = tool_builder("now").deny_unknown_params().build();
        assert_eq!(
            tool.input_schema,
            json!({"type": "object", "properties": {}, "additionalProperties": false})
        );
    }

    #[test]
    fn redeclaring_a_param_updates_required() {
        let tool = tool_builder("t")
            .with_string_param("x", "", true)
            .with_string_param("x", "", false)
            .build();
        assert!(tool.input_schema.get("required").is_none());
        assert_eq!(
            tool.input_schema["properties"]["x"],
            json!({"type": "string"})
        );
    }
}
