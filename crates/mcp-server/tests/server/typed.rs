//! Typed tools: schemas written from the argument and output types, arguments parsed into
//! them, and the `isError` result for a wrong type, a missing field and an unknown field.

use mcp_protocol::mcp::tools::CallToolResult;
use mcp_server::{tool_builder, Server, ServerConfig, Structured};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::common::*;

/// Where to send the parcel.
#[derive(Debug, Deserialize, JsonSchema)]
struct Address {
    /// Street and number.
    street: String,
    /// The city, if known.
    city: Option<String>,
}

/// How fast.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Speed {
    Standard,
    Express,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct Ship {
    /// Where to.
    to: Address,
    /// How fast.
    speed: Speed,
    /// How many parcels (default 1).
    count: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Strict {
    /// Any text.
    text: String,
}

#[derive(Debug, Serialize, JsonSchema)]
struct Receipt {
    /// The tracking number.
    tracking: String,
    parcels: u32,
}

fn typed_server() -> Server {
    let server = Server::new(ServerConfig::new("typed", "1"));
    server.register_typed_tool(
        tool_builder("ship").with_description("Ship parcels"),
        |args: Ship, _ctx| async move {
            let parcels = args.count.unwrap_or(1);
            let city = args.to.city.unwrap_or_else(|| "?".into());
            Ok(Structured(Receipt {
                tracking: format!("{:?}-{}-{city}", args.speed, args.to.street),
                parcels,
            }))
        },
    );
    server.register_typed_tool(tool_builder("strict"), |args: Strict, _ctx| async move {
        Ok(CallToolResult::text(args.text))
    });
    server
}

async fn list(server: &Server) -> Value {
    let r = ask(server, None, req(1, "tools/list", json!({}))).await;
    ok(&r)["tools"].clone()
}

#[tokio::test]
async fn the_schemas_come_from_nested_structs_enums_and_optional_fields() {
    let tools = list(&typed_server()).await;
    let ship = &tools[0];
    assert_eq!(ship["name"], "ship");
    assert_eq!(ship["description"], "Ship parcels");
    assert_eq!(
        ship["inputSchema"],
        json!({
            "type": "object",
            "properties": {
                "to": {
                    "description": "Where to.",
                    "type": "object",
                    "properties": {
                        "street": {"description": "Street and number.", "type": "string"},
                        "city": {"description": "The city, if known.", "type": ["string", "null"]},
                    },
                    "required": ["street"],
                },
                "speed": {
                    "description": "How fast.",
                    "type": "string",
                    "enum": ["standard", "express"],
                },
                "count": {
                    "description": "How many parcels (default 1).",
                    "type": ["integer", "null"],
                    "format": "uint32",
                    "minimum": 0,
                },
            },
            "required": ["to", "speed"],
        })
    );
    assert_eq!(
        ship["outputSchema"],
        json!({
            "type": "object",
            "properties": {
                "tracking": {"description": "The tracking number.", "type": "string"},
                "parcels": {"type": "integer", "format": "uint32", "minimum": 0},
            },
            "required": ["tracking", "parcels"],
        })
    );
    let strict = &tools[1];
    assert_eq!(strict["inputSchema"]["additionalProperties"], false);
    assert!(strict.get("outputSchema").is_none());
}

/// Calls `tool` with `args` and returns the result's text, asserting `isError` is `is_error`.
async fn call(server: &Server, tool: &str, args: Value, is_error: bool) -> String {
    let r = ask(server, None, call_tool(1, tool, args.clone())).await;
    let result = ok(&r);
    assert_eq!(
        result["isError"] == true,
        is_error,
        "{tool} {args}: {result}"
    );
    text(result).to_owned()
}

#[tokio::test]
async fn the_handler_gets_the_parsed_value_and_answers_with_structured_content() {
    let server = typed_server();
    let args = json!({"to": {"street": "Main 1", "city": "Oslo"}, "speed": "express", "count": 2});
    let r = ask(&server, None, call_tool(1, "ship", args)).await;
    let result = ok(&r);
    assert_eq!(
        result["structuredContent"],
        json!({"tracking": "Express-Main 1-Oslo", "parcels": 2})
    );
    let text: Value = serde_json::from_str(text(result)).unwrap();
    assert_eq!(text, result["structuredContent"], "the same JSON as text");
    assert!(result.get("isError").is_none());
}

#[tokio::test]
async fn bad_arguments_are_is_error_results_naming_the_field() {
    let server = typed_server();
    let cases = [
        // A wrong type, nested.
        (
            json!({"to": {"street": 5}, "speed": "express"}),
            "Invalid arguments for tool 'ship': 'to.street' must be a string, got an integer",
        ),
        // A missing field.
        (
            json!({"speed": "express"}),
            "Invalid arguments for tool 'ship': missing required argument 'to'",
        ),
        // An enum value the type does not have.
        (
            json!({"to": {"street": "x"}, "speed": "teleport"}),
            "Invalid arguments for tool 'ship': 'speed' must be one of \"standard\", \"express\", got \"teleport\"",
        ),
    ];
    for (args, expected) in cases {
        assert_eq!(call(&server, "ship", args, true).await, expected);
    }
}

#[tokio::test]
async fn unknown_arguments_are_ignored_unless_the_type_denies_them() {
    let server = typed_server();
    let args = json!({"to": {"street": "x", "floor": 3}, "speed": "standard", "gift": true});
    assert!(call(&server, "ship", args, false)
        .await
        .contains("Standard-x-?"));
    assert_eq!(
        call(&server, "strict", json!({"text": "a", "x": 1}), true).await,
        "Invalid arguments for tool 'strict': unknown argument 'x'"
    );
    assert_eq!(
        call(&server, "strict", json!({"text": "a"}), false).await,
        "a"
    );
}

#[tokio::test]
async fn a_parsed_tool_keeps_its_schema_and_serde_names_the_field() {
    let server = Server::new(ServerConfig::new("parsed", "1"));
    // An open schema: only serde checks the arguments.
    server.register_parsed_tool(tool_builder("loose"), |args: Strict, _ctx| async move {
        Ok(CallToolResult::text(args.text))
    });
    let tools = list(&server).await;
    assert_eq!(
        tools[0]["inputSchema"],
        json!({"type": "object", "properties": {}})
    );
    assert_eq!(
        call(&server, "loose", json!({}), true).await,
        "Invalid arguments for tool 'loose': missing field `text`"
    );
    assert_eq!(
        call(&server, "loose", json!({"text": 1}), true).await,
        "Invalid arguments for tool 'loose': invalid type: integer `1`, expected a string"
    );
    assert_eq!(
        call(&server, "loose", json!({"text": "a", "x": 1}), true).await,
        "Invalid arguments for tool 'loose': unknown field `x`, expected `text`"
    );
}
