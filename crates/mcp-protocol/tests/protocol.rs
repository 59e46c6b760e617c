//! Every MCP and wire type against example JSON from the spec and the seed document, plus
//! property tests: arbitrary bytes never panic the parser; ids and unknown fields survive.

use mcp_protocol::jsonrpc::{ErrorCode, Message, RequestId, Response};
use mcp_protocol::mcp::client_requests::{
    CreateMessageParams, CreateMessageResult, ElicitAction, ElicitParams, ElicitResult,
    ListRootsResult,
};
use mcp_protocol::mcp::completion::{CompleteParams, CompleteResult, CompletionReference};
use mcp_protocol::mcp::lifecycle::{InitializeParams, InitializeResult, SetLevelParams};
use mcp_protocol::mcp::notifications::{
    CancelledParams, LoggingLevel, LoggingMessageParams, ProgressParams, ResourceUpdatedParams,
};
use mcp_protocol::mcp::prompts::{GetPromptParams, GetPromptResult, ListPromptsResult};
use mcp_protocol::mcp::resources::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, ResourceContents,
    ResourceUriParams,
};
use mcp_protocol::mcp::stateless::{
    CacheScope, DiscoverResult, InputRequiredResult, RequestMeta, ResultType,
};
use mcp_protocol::mcp::tools::{CallToolParams, CallToolResult, ContentBlock, ListToolsResult};
use mcp_protocol::wire::{
    PollItem, RegisterRequest, RegisterResponse, ResponseEnvelope, ResponseStatus,
    ResponseStatusKind, SessionIdKind, WireError, WireErrorCode,
};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// Decodes `value` as `T`, encodes it again, and asserts nothing changed.
fn roundtrip<T: Serialize + DeserializeOwned>(value: Value) -> T {
    let typed: T = serde_json::from_value(value.clone()).expect("decodes");
    assert_eq!(
        serde_json::to_value(&typed).unwrap(),
        value,
        "round trip changed it"
    );
    typed
}

mod lifecycle {
    use super::*;

    #[test]
    fn initialize_request_and_result_from_the_spec() {
        let params: InitializeParams = roundtrip(json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {
                "roots": {"listChanged": true},
                "sampling": {},
                "elicitation": {"form": {}, "url": {}}
            },
            "clientInfo": {"name": "ExampleClient", "title": "Example Client Display Name",
                           "version": "1.0.0", "websiteUrl": "https://example.com"}
        }));
        assert_eq!(params.protocol_version, "2025-11-25");
        assert_eq!(params.capabilities.roots.unwrap().list_changed, Some(true));
        assert_eq!(
            params.client_info.website_url.as_deref(),
            Some("https://example.com")
        );

        let result: InitializeResult = roundtrip(json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {
                "logging": {},
                "prompts": {"listChanged": true},
                "resources": {"subscribe": true, "listChanged": true},
                "tools": {"listChanged": true},
                "completions": {}
            },
            "serverInfo": {"name": "ExampleServer", "title": "Example Server Display Name",
                           "version": "1.0.0"},
            "instructions": "Optional instructions for the client"
        }));
        assert_eq!(result.capabilities.resources.unwrap().subscribe, Some(true));
        assert_eq!(result.server_info.name, "ExampleServer");
    }

    #[test]
    fn seed_client_initialize_2024_11_05() {
        // The seed client sends the oldest version and minimal capabilities.
        let params: InitializeParams = serde_json::from_value(json!({
            "protocolVersion": "2024-11-05",
            "capabilities": {},
            "clientInfo": {"name": "mcp-proxy-client", "version": "1.0.0"}
        }))
        .unwrap();
        assert_eq!(params.protocol_version, "2024-11-05");
    }

    #[test]
    fn set_level() {
        let p: SetLevelParams = roundtrip(json!({"level": "warning"}));
        assert_eq!(p.level, LoggingLevel::Warning);
        assert!(LoggingLevel::Error > LoggingLevel::Warning);
        assert!(serde_json::from_value::<SetLevelParams>(json!({"level": "loud"})).is_err());
    }
}

mod tools {
    use super::*;

    #[test]
    fn list_result_from_the_spec() {
        let r: ListToolsResult = roundtrip(json!({
            "tools": [{
                "name": "get_weather",
                "title": "Weather Information Provider",
                "description": "Get current weather information for a location",
                "inputSchema": {"type": "object",
                    "properties": {"location": {"type": "string", "description": "City name or zip code"}},
                    "required": ["location"]},
                "icons": [{"src": "https://example.com/weather-icon.png",
                           "mimeType": "image/png", "sizes": ["48x48"]}],
                "annotations": {"readOnlyHint": true}
            }],
            "nextCursor": "next-page-cursor"
        }));
        assert_eq!(r.tools[0].name, "get_weather");
        assert_eq!(
            r.tools[0].annotations.as_ref().unwrap().read_only_hint,
            Some(true)
        );
        assert_eq!(r.next_cursor.as_deref(), Some("next-page-cursor"));
    }

    #[test]
    fn list_result_2026_with_caching_hints() {
        let r: ListToolsResult = roundtrip(json!({
            "tools": [], "resultType": "complete", "ttlMs": 60000, "cacheScope": "public"
        }));
        assert_eq!(r.ttl_ms, Some(60000));
        assert_eq!(r.cache_scope, Some(CacheScope::Public));
        assert_eq!(r.result_type, Some(ResultType::complete()));
    }

    #[test]
    fn call_params_from_the_seed_client() {
        let p: CallToolParams = roundtrip(json!({
            "name": "echo",
            "arguments": {"text": "Hello from reverse proxy!", "uppercase": true}
        }));
        assert_eq!(p.arguments.unwrap()["uppercase"], json!(true));
    }

    #[test]
    fn every_content_block_kind() {
        let r: CallToolResult = roundtrip(json!({
            "content": [
                {"type": "text", "text": "Current time: Tue Nov 11 12:34:56 2025"},
                {"type": "image", "data": "aGk=", "mimeType": "image/png"},
                {"type": "audio", "data": "aGk=", "mimeType": "audio/wav"},
                {"type": "resource_link", "uri": "file:///project/src/main.rs", "name": "main.rs",
                 "description": "Primary entry point", "mimeType": "text/x-rust"},
                {"type": "resource", "resource": {"uri": "file:///a.txt", "mimeType": "text/plain",
                 "text": "hello"}, "annotations": {"audience": ["user", "assistant"], "priority": 0.5}},
                {"type": "resource", "resource": {"uri": "file:///a.bin", "blob": "AAE="}}
            ],
            "structuredContent": {"temperature": 22.5},
            "isError": false
        }));
        assert_eq!(r.content.len(), 6);
        assert_eq!(
            r.content[0].as_text(),
            Some("Current time: Tue Nov 11 12:34:56 2025")
        );
        assert!(matches!(r.content[1], ContentBlock::Image(_)));
        assert!(matches!(r.content[2], ContentBlock::Audio(_)));
        assert!(matches!(r.content[3], ContentBlock::ResourceLink(_)));
        let ContentBlock::Resource(blob) = &r.content[5] else {
            panic!()
        };
        assert!(matches!(blob.resource, ResourceContents::Blob(_)));
        assert!(!r.is_error());
    }

    #[test]
    fn error_result_helper() {
        let r = CallToolResult::error("Division by zero");
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"content": [{"type": "text", "text": "Division by zero"}], "isError": true})
        );
    }

    #[test]
    fn unknown_content_type_is_rejected_not_panicked() {
        let e = serde_json::from_value::<CallToolResult>(json!({"content": [{"type": "video"}]}));
        assert!(e.is_err());
    }
}

mod resources_prompts_completion {
    use super::*;

    #[test]
    fn resources() {
        let r: ListResourcesResult = roundtrip(json!({
            "resources": [{"uri": "file:///project/src/main.rs", "name": "main.rs",
                "title": "Rust Software Application Main File", "description": "Primary entry point",
                "mimeType": "text/x-rust", "size": 1024}],
            "nextCursor": "n"
        }));
        assert_eq!(r.resources[0].size, Some(1024));
        let t: ListResourceTemplatesResult = roundtrip(json!({
            "resourceTemplates": [{"uriTemplate": "file:///{path}", "name": "Project Files",
                "mimeType": "application/octet-stream"}]
        }));
        assert_eq!(t.resource_templates[0].uri_template, "file:///{path}");
        let p: ResourceUriParams = roundtrip(json!({"uri": "file:///project/src/main.rs"}));
        assert_eq!(p.uri, "file:///project/src/main.rs");
        let read: ReadResourceResult = roundtrip(json!({
            "contents": [{"uri": "file:///project/src/main.rs", "mimeType": "text/x-rust",
                "text": "fn main() {}"}]
        }));
        assert!(matches!(read.contents[0], ResourceContents::Text(_)));
    }

    #[test]
    fn prompts() {
        let l: ListPromptsResult = roundtrip(json!({
            "prompts": [{"name": "code_review", "title": "Request Code Review",
                "description": "Asks the LLM to analyze code quality",
                "arguments": [{"name": "code", "description": "The code to review", "required": true}]}]
        }));
        assert_eq!(
            l.prompts[0].arguments.as_ref().unwrap()[0].required,
            Some(true)
        );
        let g: GetPromptParams = roundtrip(json!({"name": "code_review",
            "arguments": {"code": "def hello():\n    print('world')"}}));
        assert_eq!(
            g.arguments.unwrap()["code"],
            "def hello():\n    print('world')"
        );
        let r: GetPromptResult = roundtrip(json!({
            "description": "Code review prompt",
            "messages": [{"role": "user", "content": {"type": "text", "text": "Please review"}}]
        }));
        assert_eq!(r.messages.len(), 1);
    }

    #[test]
    fn completion() {
        let p: CompleteParams = roundtrip(json!({
            "ref": {"type": "ref/prompt", "name": "code_review"},
            "argument": {"name": "language", "value": "py"},
            "context": {"arguments": {"framework": "flask"}}
        }));
        assert_eq!(
            p.reference,
            CompletionReference::Prompt {
                name: "code_review".into()
            }
        );
        let _: CompleteParams = roundtrip(json!({
            "ref": {"type": "ref/resource", "uri": "file:///{path}"},
            "argument": {"name": "path", "value": "sr"}
        }));
        let r: CompleteResult = roundtrip(json!({
            "completion": {"values": ["python", "pytorch", "pyside"], "total": 10, "hasMore": true}
        }));
        assert_eq!(r.completion.has_more, Some(true));
    }
}

mod notifications_and_client_requests {
    use super::*;

    #[test]
    fn notifications() {
        let c: CancelledParams =
            roundtrip(json!({"requestId": "123", "reason": "User requested cancellation"}));
        assert_eq!(c.request_id, Some(RequestId::from("123")));
        let p: ProgressParams = roundtrip(json!({"progressToken": "abc123", "progress": 50.0,
            "total": 100.0, "message": "Reticulating splines..."}));
        assert_eq!(p.total, Some(100.0));
        let m: LoggingMessageParams = roundtrip(json!({"level": "error", "logger": "database",
            "data": {"error": "Connection failed", "details": {"host": "localhost", "port": 5432}}}));
        assert_eq!(m.level, LoggingLevel::Error);
        let u: ResourceUpdatedParams = roundtrip(json!({"uri": "file:///project/src/main.rs"}));
        assert_eq!(u.uri, "file:///project/src/main.rs");
    }

    #[test]
    fn sampling() {
        let p: CreateMessageParams = roundtrip(json!({
            "messages": [{"role": "user", "content": {"type": "text", "text": "What is the capital of France?"}}],
            "modelPreferences": {"hints": [{"name": "claude-3-sonnet"}], "intelligencePriority": 0.8},
            "systemPrompt": "You are a helpful assistant.",
            "maxTokens": 100
        }));
        assert_eq!(p.max_tokens, 100);
        let r: CreateMessageResult = roundtrip(json!({
            "role": "assistant", "content": {"type": "text", "text": "The capital of France is Paris."},
            "model": "claude-3-sonnet-20240307", "stopReason": "endTurn"
        }));
        assert_eq!(r.model, "claude-3-sonnet-20240307");
    }

    #[test]
    fn elicitation_and_roots() {
        let p: ElicitParams = roundtrip(json!({
            "mode": "form",
            "message": "Please provide your GitHub username",
            "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
        }));
        assert_eq!(p.mode.as_deref(), Some("form"));
        let r: ElicitResult =
            roundtrip(json!({"action": "accept", "content": {"name": "octocat"}}));
        assert_eq!(r.action, ElicitAction::Accept);
        let roots: ListRootsResult = roundtrip(
            json!({"roots": [{"uri": "file:///home/user/projects/myproject", "name": "My Project"}]}),
        );
        assert_eq!(roots.roots[0].name.as_deref(), Some("My Project"));
    }
}

mod stateless_era {
    use super::*;

    #[test]
    fn request_meta() {
        let params = json!({"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "c", "version": "1"},
            "io.modelcontextprotocol/logLevel": "info",
            "progressToken": 7,
            "traceparent": "00-abc-def-01"
        }});
        assert_eq!(
            RequestMeta::protocol_version_of(Some(&params)),
            Some("2026-07-28")
        );
        assert_eq!(RequestMeta::protocol_version_of(Some(&json!({}))), None);
        assert_eq!(RequestMeta::protocol_version_of(None), None);
        let meta: RequestMeta = roundtrip(params["_meta"].clone());
        assert_eq!(meta.log_level, Some(LoggingLevel::Info));
        assert_eq!(meta.extra["traceparent"], "00-abc-def-01");
    }

    #[test]
    fn discover_result() {
        let d: DiscoverResult = roundtrip(json!({
            "supportedVersions": ["2025-11-25", "2026-07-28"],
            "capabilities": {"tools": {}},
            "instructions": "Use the tools.",
            "resultType": "complete",
            "ttlMs": 300000,
            "cacheScope": "public",
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "s", "version": "1.0.0"}}
        }));
        assert_eq!(d.supported_versions.len(), 2);
        assert_eq!(d.cache_scope, CacheScope::Public);
    }

    #[test]
    fn input_required_result() {
        let r: InputRequiredResult = roundtrip(json!({
            "resultType": "input_required",
            "inputRequests": {"confirm": {"method": "elicitation/create",
                "params": {"mode": "form", "message": "Sure?", "requestedSchema": {"type": "object", "properties": {}}}}},
            "requestState": "opaque-state"
        }));
        assert_eq!(r.result_type, ResultType::input_required());
        assert_eq!(r.request_state.as_deref(), Some("opaque-state"));
    }
}

mod wire {
    use super::*;

    #[test]
    fn seed_register_roundtrip_and_answer() {
        let r: RegisterRequest = roundtrip(json!({"type": "mcp_server", "timestamp": 1234567890}));
        assert!(!r.is_modern());
        assert_eq!(r.timestamp, Some(1234567890.into()));
        // Informational only: a float or a huge tick count is not an error.
        let r: RegisterRequest = roundtrip(json!({"type": "mcp_server", "timestamp": 1.5}));
        assert!(r.timestamp.is_some());
        let a: RegisterResponse = roundtrip(json!({
            "session_id": "abc123...", "poll_endpoint": "/poll", "response_endpoint": "/response"
        }));
        assert_eq!(a.poll_endpoint, "/poll");
    }

    #[test]
    fn modern_register() {
        let r: RegisterRequest = roundtrip(json!({
            "type": "mcp_server", "name": "alpha",
            "capabilities": {"client_sessions": true, "server_messages": true, "held_polls": 4,
                "protocol_versions": ["2025-11-25", "2026-07-28"]}
        }));
        assert!(r.is_modern());
        let caps = r.capabilities.unwrap();
        assert_eq!(caps.held_polls, 4);
        assert!(caps.client_sessions && caps.server_messages);
        // Absent fields of capabilities default rather than fail.
        let r: RegisterRequest = serde_json::from_value(json!({"capabilities": {}})).unwrap();
        assert_eq!(r.kind, "mcp_server");
        assert_eq!(r.capabilities.unwrap().held_polls, 0);
    }

    #[test]
    fn seed_poll_item() {
        let v = json!({"request_id": "req789", "request": {"jsonrpc": "2.0", "id": 1,
            "method": "tools/call", "params": {"name": "echo"}}});
        let item: PollItem = serde_json::from_value(v.clone()).unwrap();
        let PollItem::Request(r) = &item else {
            panic!("a request item")
        };
        assert_eq!(r.request_id, "req789");
        assert!(matches!(
            Message::parse(r.request.get().as_bytes()),
            Ok(Message::Request(_))
        ));
        assert_eq!(serde_json::to_value(&item).unwrap(), v);
    }

    #[test]
    fn modern_poll_items() {
        let v = json!({"request_id": "r1", "request": {"jsonrpc": "2.0", "method": "notifications/initialized"},
            "client_session": "cs1", "headers": {"Mcp-Method": "tools/call"}});
        let item: PollItem = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&item).unwrap(), v);

        let v = json!({"kind": "reply", "request_id": "r2", "client_session": "cs1",
            "message": {"jsonrpc": "2.0", "id": 0, "result": {"roots": []}}});
        let item: PollItem = serde_json::from_value(v.clone()).unwrap();
        assert!(matches!(item, PollItem::Reply(_)));
        assert_eq!(serde_json::to_value(&item).unwrap(), v);

        let v = json!({"kind": "session_closed", "client_session": "cs1"});
        let item: PollItem = serde_json::from_value(v.clone()).unwrap();
        assert!(matches!(item, PollItem::SessionClosed(_)));
        assert_eq!(serde_json::to_value(&item).unwrap(), v);

        assert!(serde_json::from_value::<PollItem>(json!({"kind": "bogus"})).is_err());
        assert!(serde_json::from_value::<PollItem>(json!({"request_id": "x"})).is_err());
    }

    #[test]
    fn a_request_item_names_who_calls() {
        let v = json!({"request_id": "r1", "request": {"jsonrpc": "2.0", "id": 1, "method": "ping"},
            "identity": {"issuer": "https://id.example", "subject": "alice",
                         "client_id": "claude", "scopes": ["mcp:tools", "files:read"]}});
        let item: PollItem = serde_json::from_value(v.clone()).unwrap();
        let PollItem::Request(r) = &item else {
            panic!("a request item")
        };
        let who = r.identity.as_ref().unwrap();
        assert_eq!(who.issuer, "https://id.example");
        assert_eq!(who.subject.as_deref(), Some("alice"));
        assert_eq!(who.client_id.as_deref(), Some("claude"));
        assert_eq!(who.scopes, ["mcp:tools", "files:read"]);
        assert_eq!(serde_json::to_value(&item).unwrap(), v);
        // Only the issuer is always there.
        let v = json!({"request_id": "r1", "request": {"jsonrpc": "2.0", "method": "x"},
            "identity": {"issuer": "https://id.example"}});
        let item: PollItem = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&item).unwrap(), v);
    }

    #[test]
    fn response_envelopes() {
        let v =
            json!({"request_id": "req789", "response": {"jsonrpc": "2.0", "id": 1, "result": {}}});
        let e: ResponseEnvelope = serde_json::from_value(v.clone()).unwrap();
        assert!(matches!(e, ResponseEnvelope::Final { .. }));
        assert!(!e.is_null_response());
        assert_eq!(serde_json::to_value(&e).unwrap(), v);

        // The seed posts `response: null` after a notification: a final answer, not an error.
        let v = json!({"request_id": "req1", "response": null});
        let e: ResponseEnvelope = serde_json::from_value(v.clone()).unwrap();
        assert!(e.is_null_response());
        assert_eq!(serde_json::to_value(&e).unwrap(), v);

        let v = json!({"request_id": "r", "message": {"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": 1, "progress": 1}}});
        let e: ResponseEnvelope = serde_json::from_value(v.clone()).unwrap();
        assert!(matches!(e, ResponseEnvelope::Interim { .. }));
        assert_eq!(serde_json::to_value(&e).unwrap(), v);

        let v = json!({"client_session": "cs", "message": {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}});
        let e: ResponseEnvelope = serde_json::from_value(v.clone()).unwrap();
        assert!(matches!(e, ResponseEnvelope::Session { .. }));
        assert_eq!(serde_json::to_value(&e).unwrap(), v);

        for bad in [
            json!({}),
            json!({"request_id": "r"}),
            json!({"request_id": "r", "response": 1, "message": 2}),
            json!({"message": {}}),
        ] {
            assert!(
                serde_json::from_value::<ResponseEnvelope>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn statuses_and_errors() {
        let s: ResponseStatus = roundtrip(json!({"status": "duplicate"}));
        assert_eq!(s.status, ResponseStatusKind::Duplicate);
        let _: ResponseStatus = roundtrip(json!({"status": "ignored"}));
        let e: WireError =
            roundtrip(json!({"error": "unknown_request", "message": "no such request"}));
        assert_eq!(e.error, WireErrorCode::UnknownRequest);
        let e: WireError = serde_json::from_value(json!({"error": "from_the_future"})).unwrap();
        assert_eq!(e.error, WireErrorCode::Other);
    }

    #[test]
    fn session_id_kinds() {
        assert_eq!(
            SessionIdKind::of("0123456789abcdef0123456789abcdef"),
            Some(SessionIdKind::Legacy)
        );
        assert_eq!(
            SessionIdKind::of("m-0123456789abcdef0123456789abcdef"),
            Some(SessionIdKind::Modern)
        );
        for bad in [
            "",
            "abc123",
            "0123456789ABCDEF0123456789ABCDEF",
            "m-",
            "m-xyz",
            "0123456789abcdef0123456789abcdef0",
            "../../etc/passwd",
        ] {
            assert_eq!(SessionIdKind::of(bad), None, "{bad}");
        }
    }

    #[test]
    fn pool_names() {
        use mcp_protocol::wire::is_valid_pool_name;
        assert!(is_valid_pool_name("alpha"));
        assert!(is_valid_pool_name("a.b_c-9"));
        assert!(is_valid_pool_name(&"x".repeat(64)));
        assert!(!is_valid_pool_name(""));
        assert!(!is_valid_pool_name(&"x".repeat(65)));
        assert!(!is_valid_pool_name("a/b"));
        assert!(!is_valid_pool_name("é"));
    }
}

mod seed_walkthrough {
    use super::*;

    /// The exact messages the seed's client sends, in order, classified as the seed needs.
    #[test]
    fn seed_client_messages_classify() {
        let msgs = [
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2024-11-05",
                "capabilities": {}, "clientInfo": {"name": "proxy-client", "version": "1.0.0"}}}),
            json!({"jsonrpc": "2.0", "id": 2, "method": "notifications/initialized", "params": {}}),
            json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}}),
            json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "calculator",
                "arguments": {"operation": "add", "a": 15, "b": 27}}}),
            json!({"jsonrpc": "2.0", "id": 5, "method": "ping", "params": {}}),
        ];
        for m in msgs {
            let parsed = Message::parse(m.to_string().as_bytes()).unwrap();
            assert!(matches!(parsed, Message::Request(_)), "{m}");
            assert_eq!(serde_json::to_value(&parsed).unwrap(), m);
        }
    }

    #[test]
    fn error_response_for_malformed_json_is_standard() {
        let e = Message::parse(b"{\"jsonrpc\": \"2.0\", ")
            .unwrap_err()
            .to_response();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["error"]["code"], json!(ErrorCode::PARSE_ERROR.0));
        assert!(v["id"].is_null());
        let back: Response = serde_json::from_value(v).unwrap();
        assert!(back.as_error().is_some());
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "[a-z0-9 _./-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_id() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Message::parse(&bytes);
        let _ = serde_json::from_slice::<PollItem>(&bytes);
        let _ = serde_json::from_slice::<ResponseEnvelope>(&bytes);
        let _ = serde_json::from_slice::<RegisterRequest>(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        let text = v.to_string();
        if let Err(e) = Message::parse(text.as_bytes()) {
            // Every failure maps to a well-formed error response.
            let r = serde_json::to_value(e.to_response()).unwrap();
            prop_assert!(r["error"]["code"].is_i64());
        }
    }

    #[test]
    fn ids_survive_the_round_trip(id in arb_id(), method in "[a-z/_]{1,20}", params in arb_json()) {
        let mut obj = json!({"jsonrpc": "2.0", "id": id.clone(), "method": method});
        if params.is_object() {
            obj["params"] = params;
        }
        let text = obj.to_string();
        let parsed = Message::parse(text.as_bytes()).unwrap();
        prop_assert_eq!(serde_json::to_value(parsed.id()).unwrap(), id.clone());
        prop_assert_eq!(serde_json::to_value(&parsed).unwrap(), obj);
        let answer = Response::success(parsed.id().unwrap().clone(), json!({}));
        prop_assert_eq!(serde_json::to_value(&answer).unwrap()["id"].clone(), id);
    }

    #[test]
    fn unknown_fields_survive(key in "x_[a-z]{1,8}", value in arb_json()) {
        let mut tool = json!({"name": "t", "inputSchema": {"type": "object"}});
        tool[&key] = value.clone();
        let typed: mcp_protocol::mcp::tools::Tool = serde_json::from_value(tool.clone()).unwrap();
        prop_assert_eq!(serde_json::to_value(&typed).unwrap(), tool);

        let mut init = json!({"protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "c", "version": "1"}});
        init[&key] = value.clone();
        init["capabilities"][&key] = value;
        let typed: InitializeParams = serde_json::from_value(init.clone()).unwrap();
        prop_assert_eq!(serde_json::to_value(&typed).unwrap(), init);
    }
}

#[test]
fn a_registration_declares_a_bounded_version_list() {
    use mcp_protocol::wire::{RegisterRequest, MAX_PROTOCOL_VERSIONS, MAX_PROTOCOL_VERSION_LEN};
    let ok: Vec<String> = (0..MAX_PROTOCOL_VERSIONS)
        .map(|i| format!("v{i}"))
        .collect();
    let body = serde_json::json!({"type":"mcp_server","capabilities":{"protocol_versions": ok}});
    let req: RegisterRequest = serde_json::from_value(body).unwrap();
    assert_eq!(
        req.capabilities.unwrap().protocol_versions.len(),
        MAX_PROTOCOL_VERSIONS
    );

    let too_many: Vec<String> = (0..=MAX_PROTOCOL_VERSIONS)
        .map(|i| format!("v{i}"))
        .collect();
    let body =
        serde_json::json!({"type":"mcp_server","capabilities":{"protocol_versions": too_many}});
    let e = serde_json::from_value::<RegisterRequest>(body).unwrap_err();
    assert!(e.to_string().contains("more than 16 entries"), "{e}");

    let long = "x".repeat(MAX_PROTOCOL_VERSION_LEN + 1);
    let body =
        serde_json::json!({"type":"mcp_server","capabilities":{"protocol_versions": [long]}});
    let e = serde_json::from_value::<RegisterRequest>(body).unwrap_err();
    assert!(e.to_string().contains("longer than 32 bytes"), "{e}");
}
