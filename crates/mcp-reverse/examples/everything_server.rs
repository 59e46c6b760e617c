//! `everything_server`: every feature the official MCP conformance suite's server scenarios
//! exercise (`@modelcontextprotocol/conformance`, `conformance server`), served through the
//! proxy from behind NAT like any other reverse server.
//!
//! ```text
//! cargo run -p mcp-reverse --example everything_server -- http://127.0.0.1:9000
//! ```
//!
//! `cargo xtask conformance` starts the proxy, this server behind it, and the suite against the
//! proxy's `/mcp`. The names and contents below are the ones the suite's scenarios ask for
//! (each scenario's description states them): tools `test_*` and `json_schema_2020_12_tool`,
//! resources `test://static-text`, `test://static-binary`, `test://watched-resource` and the
//! template `test://template/{id}/data`, prompts `test_*`, completion for the prompt and
//! template arguments. Logging levels, subscriptions, ping and the lifecycle are
//! `mcp_server`'s own.

mod common;

use std::time::Duration;

use clap::Parser;
use mcp_protocol::mcp::client_requests::{CreateMessageParams, ElicitParams, ElicitResult};
use mcp_protocol::mcp::completion::{CompleteParams, CompleteResult, CompletionReference};
use mcp_protocol::mcp::notifications::LoggingLevel;
use mcp_protocol::mcp::prompts::{GetPromptResult, Prompt};
use mcp_protocol::mcp::resources::{Resource, ResourceContents, ResourceTemplate};
use mcp_protocol::mcp::tools::{CallToolResult, Tool};
use mcp_protocol::ErrorObject;
use mcp_server::schemars::JsonSchema;
use mcp_server::{RequestContext, Server, ServerConfig, ToolError};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// A 1×1 red PNG.
const PNG: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A WAV file holding one silent 16-bit sample at 8 kHz.
const WAV: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";
/// The pause between the log messages and progress steps the scenarios expect (~50 ms).
const STEP: Duration = Duration::from_millis(50);

/// The conformance suite's "everything" server, served through a reverse proxy.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    proxy: common::ProxyArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let server = Server::new(ServerConfig::new("everything_server", "1.0.0"));
    register_tools(&server);
    register_resources(&server);
    register_prompts(&server);
    server.set_completion_handler(|params, _ctx| async move { Ok(complete(&params)) });

    common::serve("everything_server", server, args.proxy).await
}

/// Builds a protocol type from JSON written as the suite's scenario text shows it, so the code
/// reads like the specification it meets. The values here are constants: a failure is a bug.
fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a constant of the right shape")
}

/// A tool without arguments.
fn plain_tool(name: &str, description: &str) -> Tool {
    from_json(json!({
        "name": name,
        "description": description,
        "inputSchema": {"type": "object", "properties": {}},
    }))
}

// The tools that take arguments are typed: `register_typed_tool` writes their schema
// (`{"type":"object","properties":{<field>:{"type":"string","description":..}},"required":[..]}`,
// what the suite expects) from these types, in place of `plain_tool`'s empty one.

/// `test_sampling`'s arguments.
#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "mcp_server::schemars")]
struct SamplingArgs {
    /// The prompt to send to the LLM
    prompt: String,
}

/// `test_elicitation`'s arguments.
#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "mcp_server::schemars")]
struct ElicitationArgs {
    /// The message to show the user
    message: String,
}

/// A tool that always returns the same content blocks.
fn fixed(server: &Server, name: &str, description: &str, content: Value) {
    let result: CallToolResult = from_json(json!({ "content": content }));
    server.register_tool(plain_tool(name, description), move |_args, _ctx| {
        let result = result.clone();
        async move { Ok(result) }
    });
}

fn register_tools(server: &Server) {
    fixed(
        server,
        "test_simple_text",
        "Returns simple text content",
        json!([{"type": "text", "text": "This is a simple text response for testing."}]),
    );
    fixed(
        server,
        "test_image_content",
        "Returns image content (a 1x1 PNG)",
        json!([{"type": "image", "data": PNG, "mimeType": "image/png"}]),
    );
    fixed(
        server,
        "test_audio_content",
        "Returns audio content (a tiny WAV)",
        json!([{"type": "audio", "data": WAV, "mimeType": "audio/wav"}]),
    );
    fixed(
        server,
        "test_embedded_resource",
        "Returns an embedded resource",
        json!([{"type": "resource", "resource": {
            "uri": "test://embedded-resource",
            "mimeType": "text/plain",
            "text": "This is an embedded resource content.",
        }}]),
    );
    fixed(
        server,
        "test_multiple_content_types",
        "Returns text, image and resource content together",
        json!([
            {"type": "text", "text": "Multiple content types test:"},
            {"type": "image", "data": PNG, "mimeType": "image/png"},
            {"type": "resource", "resource": {
                "uri": "test://mixed-content-resource",
                "mimeType": "application/json",
                "text": json!({"test": "data", "value": 123}).to_string(),
            }},
        ]),
    );
    server.register_tool(
        plain_tool("test_error_handling", "Always fails, with isError: true"),
        |_args, _ctx| async move {
            Err::<CallToolResult, _>(ToolError::new(
                "This tool intentionally returns an error for testing",
            ))
        },
    );
    server.register_tool(
        plain_tool(
            "test_tool_with_logging",
            "Sends three info log messages while it runs",
        ),
        |_args, ctx| async move {
            ctx.log(LoggingLevel::Info, "Tool execution started");
            tokio::time::sleep(STEP).await;
            ctx.log(LoggingLevel::Info, "Tool processing data");
            tokio::time::sleep(STEP).await;
            ctx.log(LoggingLevel::Info, "Tool execution completed");
            Ok(CallToolResult::text(
                "Tool with logging executed successfully",
            ))
        },
    );
    server.register_tool(
        plain_tool(
            "test_tool_with_progress",
            "Reports progress 0, 50 and 100 of 100 when given a progress token",
        ),
        |_args, ctx| async move {
            for (i, step) in [0.0, 50.0, 100.0].into_iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(STEP).await;
                }
                ctx.progress(
                    step,
                    Some(100.0),
                    Some(format!("Completed step {step} of 100")),
                );
            }
            let token = ctx
                .progress_token()
                .map_or("none".to_owned(), Value::to_string);
            Ok(CallToolResult::text(format!(
                "Progress reported with token {token}"
            )))
        },
    );
    // SEP-1699's test asks the server to close the request's SSE stream mid-call and answer on
    // the client's reconnection. The stream a client sees belongs to the proxy, which resumes
    // it by itself (Last-Event-ID); a server behind it has no stream to close, so this tool
    // answers after a pause in which the client could have reconnected.
    server.register_tool(
        plain_tool(
            "test_reconnection",
            "Answers after a pause (SEP-1699 reconnection test; the proxy owns the stream)",
        ),
        |_args, _ctx| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(CallToolResult::text(
                "Reconnection test completed successfully.",
            ))
        },
    );
    server.register_typed_tool(
        plain_tool(
            "test_sampling",
            "Asks the client's model to answer a prompt (sampling/createMessage)",
        ),
        |SamplingArgs { prompt }, ctx| async move { sample(&prompt, &ctx).await },
    );
    server.register_typed_tool(
        plain_tool(
            "test_elicitation",
            "Asks the user for a username and an email (elicitation/create)",
        ),
        |ElicitationArgs { message }, ctx| async move {
            let schema = json!({
                "type": "object",
                "properties": {
                    "username": {"type": "string", "description": "User's response"},
                    "email": {"type": "string", "description": "User's email address"},
                },
                "required": ["username", "email"],
            });
            let answer = elicit(&ctx, &message, schema).await?;
            Ok(CallToolResult::text(format!("User response: {answer}")))
        },
    );
    server.register_tool(
        plain_tool(
            "test_elicitation_sep1034_defaults",
            "Elicits a form whose fields all have default values (SEP-1034)",
        ),
        |_args, ctx| async move {
            let schema = json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "User name", "default": "John Doe"},
                    "age": {"type": "integer", "description": "User age", "default": 30},
                    "score": {"type": "number", "description": "User score", "default": 95.5},
                    "status": {
                        "type": "string",
                        "description": "User status",
                        "enum": ["active", "inactive", "pending"],
                        "default": "active",
                    },
                    "verified": {
                        "type": "boolean",
                        "description": "Verification status",
                        "default": true,
                    },
                },
                "required": [],
            });
            let message = "Please review and update the form fields with defaults";
            let answer = elicit(&ctx, message, schema).await?;
            Ok(CallToolResult::text(format!(
                "Elicitation completed: {answer}"
            )))
        },
    );
    server.register_tool(
        plain_tool(
            "test_elicitation_sep1330_enums",
            "Elicits a form with the five enum variants (SEP-1330)",
        ),
        |_args, ctx| async move {
            let titled = |titles: [&str; 3]| {
                titles
                    .iter()
                    .enumerate()
                    .map(|(i, title)| json!({"const": format!("value{}", i + 1), "title": title}))
                    .collect::<Vec<_>>()
            };
            let schema = json!({
                "type": "object",
                "properties": {
                    "untitledSingle": {
                        "type": "string",
                        "description": "Select one option",
                        "enum": ["option1", "option2", "option3"],
                    },
                    "titledSingle": {
                        "type": "string",
                        "description": "Select one option with titles",
                        "oneOf": titled(["First Option", "Second Option", "Third Option"]),
                    },
                    "legacyEnum": {
                        "type": "string",
                        "description": "Select one option (legacy)",
                        "enum": ["opt1", "opt2", "opt3"],
                        "enumNames": ["Option One", "Option Two", "Option Three"],
                    },
                    "untitledMulti": {
                        "type": "array",
                        "description": "Select multiple options",
                        "minItems": 1,
                        "maxItems": 3,
                        "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                    },
                    "titledMulti": {
                        "type": "array",
                        "description": "Select multiple options with titles",
                        "minItems": 1,
                        "maxItems": 3,
                        "items": {
                            "anyOf": titled(["First Choice", "Second Choice", "Third Choice"]),
                        },
                    },
                },
                "required": [],
            });
            let message = "Please select options from the enum fields";
            let answer = elicit(&ctx, message, schema).await?;
            Ok(CallToolResult::text(format!(
                "Elicitation completed: {answer}"
            )))
        },
    );
    // SEP-1613: the input schema is listed exactly as written ($schema, $defs,
    // additionalProperties kept); arguments are checked against what mcp_server understands.
    let schema_tool: Tool = from_json(json!({
        "name": "json_schema_2020_12_tool",
        "description": "Tool with JSON Schema 2020-12 features",
        "inputSchema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": {
                "address": {
                    "type": "object",
                    "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
                },
            },
            "properties": {
                "name": {"type": "string"},
                "address": {"$ref": "#/$defs/address"},
            },
            "additionalProperties": false,
        },
    }));
    server.register_tool(schema_tool, |args, _ctx| async move {
        Ok(CallToolResult::text(format!(
            "JSON Schema 2020-12 tool called with: {}",
            Value::Object(args)
        )))
    });
}

/// `test_sampling`: one `sampling/createMessage` round trip through the proxy.
async fn sample(prompt: &str, ctx: &RequestContext) -> Result<CallToolResult, ToolError> {
    let params: CreateMessageParams = from_json(json!({
        "messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
        "maxTokens": 100,
    }));
    let result = ctx.create_message(params).await?;
    let result = serde_json::to_value(result)?;
    let text = result["content"]["text"].as_str().unwrap_or("(no text)");
    Ok(CallToolResult::text(format!("LLM response: {text}")))
}

/// One `elicitation/create` round trip in form mode; says what the user did, as
/// `action=<action>, content=<json>`.
async fn elicit(ctx: &RequestContext, message: &str, schema: Value) -> Result<String, ToolError> {
    let params = ElicitParams {
        mode: Some("form".to_owned()),
        message: message.to_owned(),
        requested_schema: Some(schema),
        ..Default::default()
    };
    let ElicitResult { action, content } = ctx.elicit(params).await?;
    let action = serde_json::to_value(action)?;
    let content = Value::Object(content.unwrap_or_default());
    Ok(format!(
        "action={}, content={content}",
        action.as_str().unwrap_or_default()
    ))
}

fn register_resources(server: &Server) {
    let text_resource = |uri: &'static str, name: &str, description: &str, text: &'static str| {
        let resource: Resource = from_json(json!({
            "uri": uri, "name": name, "description": description, "mimeType": "text/plain",
        }));
        server.register_resource(resource, move |_uri, _ctx| async move {
            Ok(vec![from_json::<ResourceContents>(json!({
                "uri": uri, "mimeType": "text/plain", "text": text,
            }))])
        });
    };
    text_resource(
        "test://static-text",
        "static-text",
        "A static text resource",
        "This is the content of the static text resource.",
    );
    // Subscriptions are mcp_server's: `resources/subscribe` records the session's interest and
    // `Server::notify_resource_updated` would reach it through the proxy.
    text_resource(
        "test://watched-resource",
        "watched-resource",
        "A resource to subscribe to",
        "Watched resource content",
    );
    let binary: Resource = from_json(json!({
        "uri": "test://static-binary",
        "name": "static-binary",
        "description": "A static binary resource (a 1x1 PNG)",
        "mimeType": "image/png",
    }));
    server.register_resource(binary, |_uri, _ctx| async move {
        Ok(vec![from_json::<ResourceContents>(json!({
            "uri": "test://static-binary", "mimeType": "image/png", "blob": PNG,
        }))])
    });
    let template: ResourceTemplate = from_json(json!({
        "uriTemplate": "test://template/{id}/data",
        "name": "template",
        "description": "A resource template with parameter substitution",
        "mimeType": "application/json",
    }));
    server.register_resource_template(template, |uri, vars, _ctx| async move {
        let id = vars.get("id").cloned().unwrap_or_default();
        let data = json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")});
        Ok(vec![from_json::<ResourceContents>(json!({
            "uri": uri, "mimeType": "application/json", "text": data.to_string(),
        }))])
    });
}

fn register_prompts(server: &Server) {
    let messages = |messages: Value| -> Result<GetPromptResult, ErrorObject> {
        Ok(from_json(json!({ "messages": messages })))
    };
    let simple: Prompt = from_json(json!({
        "name": "test_simple_prompt",
        "description": "A simple prompt without arguments",
    }));
    server.register_prompt(simple, move |_args, _ctx| async move {
        messages(json!([{"role": "user", "content": {
            "type": "text", "text": "This is a simple prompt for testing.",
        }}]))
    });
    let with_args: Prompt = from_json(json!({
        "name": "test_prompt_with_arguments",
        "description": "A prompt with two required arguments",
        "arguments": [
            {"name": "arg1", "description": "First test argument", "required": true},
            {"name": "arg2", "description": "Second test argument", "required": true},
        ],
    }));
    server.register_prompt(with_args, move |args, _ctx| async move {
        let arg = |name: &str| args.get(name).cloned().unwrap_or_default();
        let text = format!(
            "Prompt with arguments: arg1='{}', arg2='{}'",
            arg("arg1"),
            arg("arg2")
        );
        messages(json!([{"role": "user", "content": {"type": "text", "text": text}}]))
    });
    let embedded: Prompt = from_json(json!({
        "name": "test_prompt_with_embedded_resource",
        "description": "A prompt that embeds a resource",
        "arguments": [
            {"name": "resourceUri", "description": "URI of the resource to embed", "required": true},
        ],
    }));
    server.register_prompt(embedded, move |args, _ctx| async move {
        let uri = args.get("resourceUri").cloned().unwrap_or_default();
        messages(json!([
            {"role": "user", "content": {"type": "resource", "resource": {
                "uri": uri,
                "mimeType": "text/plain",
                "text": "Embedded resource content for testing.",
            }}},
            {"role": "user", "content": {
                "type": "text", "text": "Please process the embedded resource above.",
            }},
        ]))
    });
    let image: Prompt = from_json(json!({
        "name": "test_prompt_with_image",
        "description": "A prompt that includes an image",
    }));
    server.register_prompt(image, move |_args, _ctx| async move {
        messages(json!([
            {"role": "user", "content": {"type": "image", "data": PNG, "mimeType": "image/png"}},
            {"role": "user", "content": {"type": "text", "text": "Please analyze the image above."}},
        ]))
    });
}

/// Suggestions for the arguments of `test_prompt_with_arguments` and of the template's `{id}`,
/// those starting with what was typed.
fn complete(params: &CompleteParams) -> CompleteResult {
    let candidates: &[&str] = match (&params.reference, params.argument.name.as_str()) {
        (CompletionReference::Prompt { name }, "arg1" | "arg2")
            if name == "test_prompt_with_arguments" =>
        {
            &["paris", "park", "party", "test", "testValue1", "testValue2"]
        }
        (CompletionReference::Resource { uri }, "id") if uri == "test://template/{id}/data" => {
            &["1", "2", "3", "123"]
        }
        _ => &[],
    };
    let values: Vec<String> = candidates
        .iter()
        .filter(|c| c.starts_with(params.argument.value.as_str()))
        .map(|c| (*c).to_owned())
        .collect();
    from_json(json!({
        "completion": {"values": values, "total": values.len(), "hasMore": false},
    }))
}
