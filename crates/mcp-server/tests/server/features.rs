//! Resources (static and templates), prompts and completion.

use mcp_protocol::mcp::completion::{CompleteResult, Completion};
use mcp_protocol::mcp::prompts::{GetPromptResult, PromptMessage};
use mcp_protocol::mcp::resources::{
    Resource, ResourceContents, ResourceTemplate, TextResourceContents,
};
use mcp_protocol::mcp::tools::ContentBlock;
use mcp_protocol::mcp::Role;
use mcp_protocol::{ErrorCode, ErrorObject};
use mcp_server::{prompt_builder, Server, ServerConfig};
use serde_json::json;

use crate::common::*;

fn text_contents(uri: &str, text: &str) -> ResourceContents {
    ResourceContents::Text(TextResourceContents {
        uri: uri.to_owned(),
        mime_type: Some("text/plain".into()),
        text: text.to_owned(),
        meta: None,
    })
}

fn featured() -> Server {
    let server = Server::new(ServerConfig::new("f", "1").with_page_size(1));
    server.register_resource(
        Resource {
            uri: "memo://readme".into(),
            name: "readme".into(),
            ..Default::default()
        },
        |uri, _ctx| async move { Ok(vec![text_contents(&uri, "read me")]) },
    );
    server.register_resource(
        Resource {
            uri: "memo://secret".into(),
            name: "secret".into(),
            ..Default::default()
        },
        |_uri, _ctx| async move { Err(ErrorObject::new(ErrorCode::RESOURCE_NOT_FOUND, "gone")) },
    );
    server.register_resource_template(
        ResourceTemplate {
            uri_template: "weather://{city}/today".into(),
            name: "weather".into(),
            ..Default::default()
        },
        |uri, vars, _ctx| async move {
            Ok(vec![text_contents(
                &uri,
                &format!("sunny in {}", vars["city"]),
            )])
        },
    );
    server.register_prompt(
        prompt_builder("greet")
            .with_description("Greets someone")
            .with_argument("name", "Who", true)
            .with_argument("tone", "How", false),
        |args, _ctx| async move {
            Ok(GetPromptResult {
                description: None,
                messages: vec![PromptMessage {
                    role: Role::User,
                    content: ContentBlock::text(format!("Say hello to {}", args["name"])),
                }],
                ..Default::default()
            })
        },
    );
    server.register_prompt(prompt_builder("broken"), |_args, _ctx| async move {
        if true {
            panic!("prompt bug");
        }
        Ok(GetPromptResult::default())
    });
    server
}

#[tokio::test]
async fn capabilities_follow_what_is_registered() {
    let server = featured();
    let caps = server.capabilities();
    assert!(caps.tools.is_none());
    assert!(caps.resources.is_some());
    assert!(caps.prompts.is_some());
    assert!(caps.completions.is_none());
    server.set_completion_handler(|_p, _c| async { Ok(CompleteResult::default()) });
    assert!(server.capabilities().completions.is_some());
}

#[tokio::test]
async fn resources_list_and_templates_list_paginate() {
    let server = featured();
    let r = ask(&server, None, req(1, "resources/list", json!({}))).await;
    assert_eq!(ok(&r)["resources"][0]["uri"], "memo://readme");
    let cursor = ok(&r)["nextCursor"].as_str().unwrap().to_owned();
    let r = ask(
        &server,
        None,
        req(2, "resources/list", json!({"cursor": cursor})),
    )
    .await;
    assert_eq!(ok(&r)["resources"][0]["uri"], "memo://secret");
    assert!(ok(&r).get("nextCursor").is_none());
    let r = ask(&server, None, req(3, "resources/templates/list", json!({}))).await;
    assert_eq!(
        ok(&r)["resourceTemplates"][0]["uriTemplate"],
        "weather://{city}/today"
    );
}

#[tokio::test]
async fn resources_read_static_template_and_errors() {
    let server = featured();
    let r = ask(
        &server,
        None,
        req(1, "resources/read", json!({"uri": "memo://readme"})),
    )
    .await;
    assert_eq!(ok(&r)["contents"][0]["text"], "read me");
    let r = ask(
        &server,
        None,
        req(2, "resources/read", json!({"uri": "weather://paris/today"})),
    )
    .await;
    assert_eq!(ok(&r)["contents"][0]["text"], "sunny in paris");
    assert_eq!(ok(&r)["contents"][0]["uri"], "weather://paris/today");

    let r = ask(
        &server,
        None,
        req(3, "resources/read", json!({"uri": "memo://nothing"})),
    )
    .await;
    assert_eq!(err_code(&r), -32002);
    assert_eq!(
        r.as_error().unwrap().data,
        Some(json!({"uri": "memo://nothing"}))
    );
    let r = ask(
        &server,
        None,
        req(4, "resources/read", json!({"uri": "memo://secret"})),
    )
    .await;
    assert_eq!(err_code(&r), -32002);
    let r = ask(&server, None, req(5, "resources/read", json!({}))).await;
    assert_eq!(err_code(&r), -32602);
}

#[tokio::test]
async fn prompts_list_and_get() {
    let server = featured();
    let r = ask(&server, None, req(1, "prompts/list", json!({}))).await;
    let prompt = &ok(&r)["prompts"][0];
    assert_eq!(prompt["name"], "greet");
    assert_eq!(
        prompt["arguments"][0],
        json!({"name": "name", "description": "Who", "required": true})
    );
    let r = ask(
        &server,
        None,
        req(
            2,
            "prompts/get",
            json!({"name": "greet", "arguments": {"name": "Ada"}}),
        ),
    )
    .await;
    assert_eq!(ok(&r)["messages"][0]["content"]["text"], "Say hello to Ada");
    assert_eq!(ok(&r)["messages"][0]["role"], "user");
}

#[tokio::test]
async fn prompt_errors() {
    let server = featured();
    let r = ask(
        &server,
        None,
        req(1, "prompts/get", json!({"name": "nope"})),
    )
    .await;
    assert_eq!(err_code(&r), -32602);
    let r = ask(
        &server,
        None,
        req(2, "prompts/get", json!({"name": "greet"})),
    )
    .await;
    assert_eq!(err_code(&r), -32602);
    assert!(r.as_error().unwrap().message.contains("'name'"));
    let r = ask(
        &server,
        None,
        req(3, "prompts/get", json!({"name": "broken"})),
    )
    .await;
    assert_eq!(err_code(&r), -32603);
    assert!(!r.as_error().unwrap().message.contains("prompt bug"));
}

#[tokio::test]
async fn completion_is_served_when_a_handler_is_set() {
    let server = featured();
    let params = json!({
        "ref": {"type": "ref/prompt", "name": "greet"},
        "argument": {"name": "name", "value": "A"}
    });
    let r = ask(&server, None, req(1, "completion/complete", params.clone())).await;
    assert_eq!(err_code(&r), -32601);
    server.set_completion_handler(|p, _ctx| async move {
        let values = ["Ada", "Alan", "Grace"]
            .iter()
            .filter(|v| v.starts_with(&p.argument.value))
            .map(|v| v.to_string())
            .collect();
        Ok(CompleteResult {
            completion: Completion {
                values,
                ..Default::default()
            },
            ..Default::default()
        })
    });
    let r = ask(&server, None, req(2, "completion/complete", params)).await;
    assert_eq!(ok(&r)["completion"]["values"], json!(["Ada", "Alan"]));
    let r = ask(
        &server,
        None,
        req(3, "completion/complete", json!({"ref": {}})),
    )
    .await;
    assert_eq!(err_code(&r), -32602);
}
