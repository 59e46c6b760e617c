//! Shared test server, message helpers and an in-memory client that answers the server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mcp_protocol::mcp::client_requests::{CreateMessageParams, ElicitParams, SamplingMessage};
use mcp_protocol::mcp::notifications::LoggingLevel;
use mcp_protocol::mcp::tools::CallToolResult;
use mcp_protocol::{Message, Notification, Request, Response};
use mcp_server::{tool_builder, Outbound, Server, ServerConfig, ToolError};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

/// Every wait in these tests is bounded by this.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// Awaits `f`, failing the test if it takes longer than [`WAIT`].
pub(crate) async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

/// Hooks into the `slow` tool.
#[derive(Clone)]
pub(crate) struct Probes {
    /// Lets one `slow` call finish.
    pub(crate) release: Arc<Notify>,
    /// Receives the request id of each `slow` call as it starts.
    pub(crate) started: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Value>>>,
    /// Receives the request id of each `slow` call whose cancellation token fired.
    pub(crate) cancelled: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Value>>>,
}

impl Probes {
    /// Waits until a `slow` call started.
    pub(crate) async fn started(&self) -> Value {
        within(self.started.lock().await.recv()).await.unwrap()
    }

    /// Waits until a `slow` call's cancellation token fired.
    pub(crate) async fn cancelled(&self) -> Value {
        within(self.cancelled.lock().await.recv()).await.unwrap()
    }
}

/// The server most tests use, with the default configuration.
pub(crate) fn server() -> (Server, Probes) {
    server_with(ServerConfig::new("test-server", "0.0.1").with_instructions("Use the tools."))
}

/// The test server with tools: echo, calculator, fail, panic, slow, progress, sample, ask, roots.
pub(crate) fn server_with(config: ServerConfig) -> (Server, Probes) {
    let server = Server::new(config);
    server.register_tool(
        tool_builder("echo")
            .with_description("Echo back the provided text")
            .with_string_param("text", "Text to echo", true)
            .with_boolean_param("uppercase", "Uppercase it", false),
        |args, _ctx| async move {
            let text = args["text"].as_str().unwrap_or_default().to_owned();
            let upper = args.get("uppercase").and_then(Value::as_bool) == Some(true);
            Ok(CallToolResult::text(if upper {
                text.to_uppercase()
            } else {
                text
            }))
        },
    );
    server.register_tool(
        tool_builder("calculator")
            .with_description("Perform basic arithmetic operations")
            .with_enum_param(
                "operation",
                "The operation",
                ["add", "subtract", "multiply", "divide"],
                true,
            )
            .with_number_param("a", "First operand", true)
            .with_number_param("b", "Second operand", true),
        |args, _ctx| async move {
            let a = args["a"].as_f64().unwrap_or_default();
            let b = args["b"].as_f64().unwrap_or_default();
            let r = match args["operation"].as_str() {
                Some("add") => a + b,
                Some("subtract") => a - b,
                Some("multiply") => a * b,
                _ if b == 0.0 => return Err(ToolError::new("Division by zero")),
                _ => a / b,
            };
            Ok(CallToolResult::text(r.to_string()))
        },
    );
    server.register_tool(tool_builder("fail"), |_args, _ctx| async move {
        Err::<CallToolResult, _>("the disk is full".into())
    });
    server.register_tool(tool_builder("panic"), |_args, _ctx| async move {
        if true {
            panic!("handler bug");
        }
        Ok(CallToolResult::text("unreachable"))
    });

    let release = Arc::new(Notify::new());
    let (started_tx, started_rx) = mpsc::unbounded_channel();
    let (cancelled_tx, cancelled_rx) = mpsc::unbounded_channel();
    let gate = Arc::clone(&release);
    server.register_tool(tool_builder("slow"), move |_args, ctx| {
        let gate = Arc::clone(&gate);
        let started = started_tx.clone();
        let cancelled = cancelled_tx.clone();
        async move {
            let id = serde_json::to_value(ctx.request_id()).unwrap();
            // Work the handler hands off watches the token: it outlives a dropped handler.
            let token = ctx.cancellation_token().clone();
            let watched = id.clone();
            tokio::spawn(async move {
                token.cancelled().await;
                let _ = cancelled.send(watched);
            });
            started.send(id).unwrap();
            gate.notified().await;
            Ok(CallToolResult::text("slow done"))
        }
    });
    server.register_tool(tool_builder("progress"), |_args, ctx| async move {
        let a = ctx.progress(1.0, Some(2.0), Some("half".into()));
        let b = ctx.progress(2.0, Some(2.0), None);
        let debug = ctx.log(LoggingLevel::Debug, "debug detail");
        let warn = ctx.log(LoggingLevel::Warning, json!({"warn": 1}));
        Ok(CallToolResult::text(format!(
            "progress sent: {a} {b}, logs sent: {debug} {warn}"
        )))
    });
    server.register_tool(tool_builder("sample"), |_args, ctx| async move {
        let answer = ctx
            .create_message(CreateMessageParams {
                messages: vec![SamplingMessage::user_text("What is 2+2?")],
                max_tokens: 10,
                ..Default::default()
            })
            .await?;
        Ok(CallToolResult::text(format!(
            "{} said {}",
            answer.model, answer.content["text"]
        )))
    });
    server.register_tool(tool_builder("ask"), |_args, ctx| async move {
        let answer = ctx
            .elicit(ElicitParams {
                message: "Your name?".into(),
                requested_schema: Some(
                    json!({"type":"object","properties":{"name":{"type":"string"}}}),
                ),
                ..Default::default()
            })
            .await?;
        Ok(CallToolResult::text(format!(
            "{:?} {}",
            answer.action,
            Value::Object(answer.content.unwrap_or_default())
        )))
    });
    server.register_tool(tool_builder("roots"), |_args, ctx| async move {
        let roots = ctx.list_roots().await?;
        let uris: Vec<String> = roots.roots.into_iter().map(|r| r.uri).collect();
        Ok(CallToolResult::text(uris.join(",")))
    });

    let probes = Probes {
        release,
        started: Arc::new(tokio::sync::Mutex::new(started_rx)),
        cancelled: Arc::new(tokio::sync::Mutex::new(cancelled_rx)),
    };
    (server, probes)
}

/// A request message.
pub(crate) fn req(id: i64, method: &str, params: Value) -> Message {
    Message::Request(Request::new(id, method, Some(params)))
}

/// A notification message.
pub(crate) fn note(method: &str, params: Value) -> Message {
    Message::Notification(Notification::new(method, Some(params)))
}

/// A `tools/call` request.
pub(crate) fn call_tool(id: i64, name: &str, arguments: Value) -> Message {
    req(
        id,
        "tools/call",
        json!({"name": name, "arguments": arguments}),
    )
}

/// Sends a request with no outbound channel and returns the response.
pub(crate) async fn ask(server: &Server, session: Option<&str>, message: Message) -> Response {
    within(server.handle(session, message, Outbound::none()))
        .await
        .expect("a request gets a response")
}

/// The result of a successful response.
pub(crate) fn ok(response: &Response) -> &Value {
    response
        .as_result()
        .unwrap_or_else(|| panic!("expected a result, got {response:?}"))
}

/// The error code of a failed response.
pub(crate) fn err_code(response: &Response) -> i32 {
    response
        .as_error()
        .unwrap_or_else(|| panic!("expected an error, got {response:?}"))
        .code
        .0
}

/// The first text block of a tool result.
pub(crate) fn text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap()
}

/// Starts a session with `initialize` (declaring `capabilities`) and `notifications/initialized`.
pub(crate) async fn init(server: &Server, session: &str, capabilities: Value) -> Value {
    let r = ask(
        server,
        Some(session),
        req(
            0,
            "initialize",
            json!({
                "protocolVersion": "2025-11-25",
                "capabilities": capabilities,
                "clientInfo": {"name": "test-client", "version": "1"}
            }),
        ),
    )
    .await;
    let result = ok(&r).clone();
    let none = server
        .handle(
            Some(session),
            note("notifications/initialized", json!({})),
            Outbound::none(),
        )
        .await;
    assert!(none.is_none());
    result
}

/// An in-memory client transport: collects what the server sends during one request and
/// answers the server's requests with `answer(method, params)`.
pub(crate) struct Client {
    /// What the server sent, in order (requests and notifications).
    pub(crate) seen: Arc<std::sync::Mutex<Vec<Message>>>,
    /// How many messages `seen` holds, to wait on.
    count: tokio::sync::watch::Receiver<usize>,
    outbound: Outbound,
}

impl Client {
    /// A client of `session` answering requests with `answer` (`Err` → a JSON-RPC error answer).
    pub(crate) fn new(
        server: &Server,
        session: Option<&str>,
        answer: impl Fn(&str, &Value) -> Result<Value, mcp_protocol::ErrorObject> + Send + 'static,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let (count_tx, count) = tokio::sync::watch::channel(0);
        let server = server.clone();
        let session = session.map(str::to_owned);
        tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                let n = {
                    let mut log = log.lock().unwrap();
                    log.push(message.clone());
                    log.len()
                };
                count_tx.send_replace(n);
                if let Message::Request(r) = message {
                    let params = r.params.clone().unwrap_or_default();
                    let response = match answer(&r.method, &params) {
                        Ok(v) => Response::success(r.id, v),
                        Err(e) => Response::error(Some(r.id), e),
                    };
                    let none = server
                        .handle(
                            session.as_deref(),
                            Message::Response(response),
                            Outbound::none(),
                        )
                        .await;
                    assert!(none.is_none());
                }
            }
        });
        Client {
            seen,
            count,
            outbound: Outbound::channel(tx),
        }
    }

    /// The outbound handle to pass to `Server::handle`.
    pub(crate) fn outbound(&self) -> Outbound {
        self.outbound.clone()
    }

    /// Waits until the client has seen `n` messages, and returns them all.
    pub(crate) async fn messages(&self, n: usize) -> Vec<Message> {
        let mut count = self.count.clone();
        within(count.wait_for(|c| *c >= n)).await.unwrap();
        self.seen.lock().unwrap().clone()
    }

    /// The methods of what the server sent so far.
    pub(crate) fn methods(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| m.method().map(str::to_owned))
            .collect()
    }
}
