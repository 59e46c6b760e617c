//! Per-session state through the tunnel: `logging/setLevel`, and the messages a server sends a
//! session outside any request (list changes, resource updates) on its GET stream.

use std::sync::Arc;

use mcp_protocol::mcp::notifications::LoggingLevel;
use mcp_protocol::mcp::resources::Resource;
use serde_json::json;

use crate::common::{client, recording, wait_for, Notes, Stack};

/// The methods of the notifications recorded so far.
fn methods(notes: &Notes) -> Vec<String> {
    notes
        .lock()
        .unwrap()
        .iter()
        .map(|n| n.method.clone())
        .collect()
}

#[tokio::test]
async fn logging_set_level_is_honoured_per_session() {
    let stack = Stack::start().await;
    let (options, quiet_notes) = recording();
    let quiet = client(&stack.proxy.mcp(), options).await;
    let (options, chatty_notes) = recording();
    let chatty = client(&stack.proxy.mcp(), options).await;
    quiet
        .request("logging/setLevel", Some(json!({"level": "error"})))
        .await
        .unwrap();

    let call = json!({"name": "progress", "arguments": {"steps": 1},
                      "_meta": {"progressToken": 1}});
    quiet
        .request("tools/call", Some(call.clone()))
        .await
        .unwrap();
    chatty.request("tools/call", Some(call)).await.unwrap();
    // The info log line reached only the session that did not raise its level.
    assert_eq!(methods(&quiet_notes), ["notifications/progress"]);
    assert_eq!(
        methods(&chatty_notes),
        ["notifications/message", "notifications/progress"]
    );

    // The same filter applies to the server's own log lines, sent on each GET stream.
    let quiet = Arc::new(quiet);
    let chatty = Arc::new(chatty);
    let mut listeners = Vec::new();
    for c in [&quiet, &chatty] {
        let stream = c.open_stream().await.unwrap();
        let c = c.clone();
        listeners.push(tokio::spawn(async move { c.listen(stream).await }));
    }
    assert_eq!(
        stack
            .server
            .log(LoggingLevel::Warning, None, "disk nearly full"),
        1
    );
    assert_eq!(stack.server.log(LoggingLevel::Error, None, "disk full"), 2);
    wait_for("the error line on both streams", || {
        methods(&quiet_notes).len() == 2 && methods(&chatty_notes).len() == 4
    })
    .await;
    let lines = |notes: &Notes, skip: usize| -> Vec<String> {
        notes.lock().unwrap()[skip..]
            .iter()
            .map(|n| {
                n.params.as_ref().unwrap()["data"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(lines(&chatty_notes, 2), ["disk nearly full", "disk full"]);
    assert_eq!(lines(&quiet_notes, 1), ["disk full"]);
    for l in listeners {
        l.abort();
    }
    stack.stop().await;
}

#[tokio::test]
async fn list_changes_and_subscribed_resource_updates_arrive_on_the_get_stream() {
    let stack = Stack::start().await;
    let uri = "test://status";
    stack.server.register_resource(
        Resource {
            uri: uri.to_owned(),
            name: "status".to_owned(),
            ..Resource::default()
        },
        |_uri, _ctx| async move { Ok(Vec::new()) },
    );
    let (options, notes) = recording();
    let client = Arc::new(client(&stack.proxy.mcp(), options).await);
    let stream = client.open_stream().await.unwrap();
    let listener = {
        let client = client.clone();
        tokio::spawn(async move { client.listen(stream).await })
    };

    // Nobody is subscribed yet: an update reaches no session.
    assert_eq!(stack.server.notify_resource_updated(uri), 0);
    client
        .request("resources/subscribe", Some(json!({"uri": uri})))
        .await
        .unwrap();
    assert_eq!(stack.server.notify_tools_list_changed(), 1);
    assert_eq!(stack.server.notify_resource_updated(uri), 1);
    client
        .request("resources/unsubscribe", Some(json!({"uri": uri})))
        .await
        .unwrap();
    assert_eq!(stack.server.notify_resource_updated(uri), 0);
    assert_eq!(stack.server.notify_prompts_list_changed(), 1);

    // Session messages are posted in order, so the last one marks the end.
    wait_for("the prompts list change", || {
        methods(&notes)
            .last()
            .is_some_and(|m| m == "notifications/prompts/list_changed")
    })
    .await;
    assert_eq!(
        methods(&notes),
        [
            "notifications/tools/list_changed",
            "notifications/resources/updated",
            "notifications/prompts/list_changed"
        ]
    );
    assert_eq!(
        notes.lock().unwrap()[1].params.as_ref().unwrap()["uri"],
        uri
    );
    listener.abort();
    stack.stop().await;
}
