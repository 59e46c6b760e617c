//! A tool talks back to its client through the tunnel: progress and log messages arrive before
//! the answer; sampling and elicitation requests are answered by the client's `on_request`.

use std::sync::{Arc, Mutex};

use mcp_client::{request_handler, text_of, ClientOptions};
use mcp_protocol::mcp::tools::CallToolResult;
use mcp_protocol::ErrorObject;
use serde_json::{json, Value};

use crate::common::{client, recording, Stack};

#[tokio::test]
async fn progress_and_a_log_message_arrive_before_the_answer() {
    let stack = Stack::start().await;
    let (options, notes) = recording();
    let client = client(&stack.proxy.mcp(), options).await;

    let result: CallToolResult = client
        .request_as(
            "tools/call",
            Some(json!({"name": "progress", "arguments": {"steps": 3},
                        "_meta": {"progressToken": "tok-1"}})),
        )
        .await
        .unwrap();
    // Everything the handler sent was delivered before the call returned.
    assert_eq!(text_of(&result), "done after 3 steps");
    let notes = notes.lock().unwrap().clone();
    let methods: Vec<_> = notes.iter().map(|n| n.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "notifications/message",
            "notifications/progress",
            "notifications/progress",
            "notifications/progress"
        ]
    );
    let log = notes[0].params.clone().unwrap();
    assert_eq!(log["level"], "info");
    assert_eq!(log["data"], "progress tool working");
    for (n, note) in notes[1..].iter().enumerate() {
        let p = note.params.clone().unwrap();
        assert_eq!(p["progressToken"], "tok-1");
        assert_eq!(p["progress"], json!(n as f64 + 1.0));
        assert_eq!(p["total"], json!(3.0));
    }

    // Without a progress token, the tool sends no progress.
    let (options, notes) = recording();
    let quiet = crate::common::client(&stack.proxy.mcp(), options).await;
    quiet
        .call_tool("progress", json!({"steps": 2}))
        .await
        .unwrap();
    let methods: Vec<_> = notes
        .lock()
        .unwrap()
        .iter()
        .map(|n| n.method.clone())
        .collect();
    assert_eq!(methods, ["notifications/message"]);
    stack.stop().await;
}

#[tokio::test]
async fn a_sampling_request_is_answered_by_the_client() {
    let stack = Stack::start().await;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    let options = ClientOptions {
        on_request: Some(request_handler(move |method, params: Option<Value>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((method.clone(), params.clone()));
                let prompt = params.as_ref().unwrap()["messages"][0]["content"]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                Ok(json!({"role": "assistant", "model": "test-model",
                          "content": {"type": "text", "text": format!("the model says: {prompt}")}}))
            }
        })),
        capabilities: serde_json::from_value(json!({"sampling": {}})).unwrap(),
        ..ClientOptions::default()
    };
    let client = client(&stack.proxy.mcp(), options).await;
    let result = client
        .call_tool("sample", json!({"prompt": "what is 6 x 7?"}))
        .await
        .unwrap();
    assert!(!result.is_error(), "{result:?}");
    assert_eq!(text_of(&result), "the model says: what is 6 x 7?");
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].0, "sampling/createMessage");
    assert_eq!(asked[0].1.as_ref().unwrap()["maxTokens"], 100);

    // A client that did not declare sampling is not asked: the tool fails, nothing hangs.
    let plain = crate::common::client(&stack.proxy.mcp(), ClientOptions::default()).await;
    let refused = plain
        .call_tool("sample", json!({"prompt": "hi"}))
        .await
        .unwrap();
    assert!(refused.is_error(), "{refused:?}");
    stack.stop().await;
}

#[tokio::test]
async fn an_elicitation_is_answered_by_the_client() {
    let stack = Stack::start().await;
    let options = ClientOptions {
        on_request: Some(request_handler(
            |method, params: Option<Value>| async move {
                if method != "elicitation/create" {
                    return Err(ErrorObject::method_not_found(&method));
                }
                let params = params.unwrap_or_default();
                assert_eq!(params["message"], "who are you?");
                assert_eq!(
                    params["requestedSchema"]["properties"]["name"]["type"],
                    "string"
                );
                Ok(json!({"action": "accept", "content": {"name": "Ada"}}))
            },
        )),
        capabilities: serde_json::from_value(json!({"elicitation": {}})).unwrap(),
        ..ClientOptions::default()
    };
    let client = client(&stack.proxy.mcp(), options).await;
    let result = client
        .call_tool("elicit", json!({"message": "who are you?"}))
        .await
        .unwrap();
    assert!(!result.is_error(), "{result:?}");
    let answer: Value = serde_json::from_str(&text_of(&result)).unwrap();
    assert_eq!(
        answer,
        json!({"action": "accept", "content": {"name": "Ada"}})
    );

    // The client's error answer reaches the tool as a failure.
    let declining = crate::common::client(
        &stack.proxy.mcp(),
        ClientOptions {
            on_request: Some(request_handler(|_m, _p| async move {
                Err(ErrorObject::internal_error("the user walked away"))
            })),
            capabilities: serde_json::from_value(json!({"elicitation": {}})).unwrap(),
            ..ClientOptions::default()
        },
    )
    .await;
    let failed = declining
        .call_tool("elicit", json!({"message": "who are you?"}))
        .await
        .unwrap();
    assert!(failed.is_error(), "{failed:?}");
    stack.stop().await;
}
