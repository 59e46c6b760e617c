//! Typed tools: arguments parsed into a Rust type, and (feature `schemars`) the tool's input and
//! output schemas written from the same types, so the schema and the parsing cannot drift.
//!
//! `Server::register_typed_tool` takes a handler `|args: MyArgs, ctx| async move { .. }`
//! whose `MyArgs` derives `Deserialize` and `JsonSchema`: the tool's `inputSchema` is
//! `input_schema_for::<MyArgs>()`. A handler that returns [`Structured<T>`] also gets an
//! `outputSchema` from `T` and answers with `structuredContent`.
//! [`crate::Server::register_parsed_tool`] parses the same way but keeps the schema the tool was
//! given (no `schemars` needed).
//!
//! **Bad arguments.** The server checks the arguments against the tool's schema first (see
//! [`crate::schema`]), then parses them with serde; either failure is a result with
//! `isError: true` and the text `Invalid arguments for tool '<name>': <why>`, `<why>` naming
//! the field (`missing required argument 'text'`, `'a' must be a number, got a string`, or
//! serde's `missing field `text`` for what the schema check does not cover).
//!
//! **Unknown arguments** are ignored, as serde ignores unknown fields. A type that says
//! `#[serde(deny_unknown_fields)]` gets `additionalProperties: false` in its schema, and an
//! unknown argument is then refused: `unknown argument 'x'`.
//!
//! **Schema shape.** The JSON Schema 2020-12 dialect (the MCP default), with nested types
//! inlined so the schema reads in one piece; `$schema` and the type's own name (`title`) and
//! doc comment (`description`) are left out (the tool has its own), and an object with no fields
//! still lists `properties: {}`. Field doc comments become the fields' `description`s. A recursive type keeps its `$defs` and `$ref`s, which clients resolve and the server's
//! own check skips (serde still checks the value).

use mcp_protocol::mcp::tools::{CallToolResult, ContentBlock};
use mcp_protocol::mcp::JsonObject;
use serde::de::DeserializeOwned;
use serde::Serialize;
#[cfg(feature = "schemars")]
use serde_json::Value;

use crate::ToolError;

/// A tool's answer as structured content: `T` serialized (a JSON object) becomes the result's
/// `structuredContent`, and its JSON text the one text block older clients read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Structured<T>(pub T);

/// What a typed tool's handler may return: a [`CallToolResult`] as it is, or [`Structured`].
pub trait IntoCallToolResult {
    /// The `tools/call` result.
    fn into_call_tool_result(self) -> Result<CallToolResult, ToolError>;
}

impl IntoCallToolResult for CallToolResult {
    fn into_call_tool_result(self) -> Result<CallToolResult, ToolError> {
        Ok(self)
    }
}

impl<T: Serialize> IntoCallToolResult for Structured<T> {
    fn into_call_tool_result(self) -> Result<CallToolResult, ToolError> {
        let value = serde_json::to_value(&self.0)?;
        Ok(CallToolResult {
            // The spec asks a tool with structured content to send it as text too.
            content: vec![ContentBlock::text(value.to_string())],
            structured_content: Some(value),
            ..Default::default()
        })
    }
}

/// The output schema a handler's return type declares: `T`'s for [`Structured<T>`], none for a
/// plain [`CallToolResult`].
#[cfg(feature = "schemars")]
pub trait ToolOutput: IntoCallToolResult {
    /// The tool's `outputSchema`, if the return type has one.
    fn output_schema() -> Option<Value>;
}

#[cfg(feature = "schemars")]
impl ToolOutput for CallToolResult {
    fn output_schema() -> Option<Value> {
        None
    }
}

#[cfg(feature = "schemars")]
impl<T: Serialize + schemars::JsonSchema> ToolOutput for Structured<T> {
    fn output_schema() -> Option<Value> {
        Some(output_schema_for::<T>())
    }
}

/// The `inputSchema` of a tool whose arguments are `T`: how `T` is deserialized.
#[cfg(feature = "schemars")]
pub fn input_schema_for<T: schemars::JsonSchema>() -> Value {
    schema_for::<T>(schemars::generate::Contract::Deserialize)
}

/// The `outputSchema` of a tool whose structured content is `T`: how `T` is serialized.
#[cfg(feature = "schemars")]
pub fn output_schema_for<T: schemars::JsonSchema>() -> Value {
    schema_for::<T>(schemars::generate::Contract::Serialize)
}

#[cfg(feature = "schemars")]
fn schema_for<T: schemars::JsonSchema>(contract: schemars::generate::Contract) -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| {
            // 2020-12 is MCP's default dialect, so naming it adds nothing.
            s.meta_schema = None;
            // Models and simple clients read one self-contained schema best.
            s.inline_subschemas = true;
            s.contract = contract;
        })
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    if let Some(obj) = schema.as_object_mut() {
        // The Rust type's name and doc comment are for Rust readers; the model reads the
        // tool's own title and description.
        obj.remove("title");
        obj.remove("description");
        // Some clients want `properties` even when there are none (`ToolBuilder` writes it).
        if obj.get("type").and_then(Value::as_str) == Some("object") {
            obj.entry("properties")
                .or_insert_with(|| Value::Object(Default::default()));
        }
    }
    schema
}

/// Parses a tool's arguments into `A`; the error names the field when serde can.
pub(crate) fn parse_arguments<A: DeserializeOwned>(
    tool: &str,
    args: JsonObject,
) -> Result<A, ToolError> {
    serde_json::from_value(serde_json::Value::Object(args))
        .map_err(|e| ToolError::new(format!("Invalid arguments for tool '{tool}': {e}")))
}
