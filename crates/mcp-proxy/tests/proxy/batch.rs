//! Several items per poll answer (`poll_items`): granted at registration, a batch of what is
//! queued when the poll is answered, bounded by count and by bytes, handed over as a whole;
//! the seed's one-item shape for everyone who did not ask; several answers in one post.

use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::common::{
    client, echo, health, leave, poll, post, respond, test_config, wait_until, Proxy,
};

/// Registers with `capabilities`; the register answer.
async fn register_with(http: &reqwest::Client, proxy: &Proxy, capabilities: Value) -> Value {
    let body = json!({"type": "mcp_server", "capabilities": capabilities});
    let (status, v) = post(http, &proxy.url("/register"), body).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// `n` clients calling `echo` on `/message`, each waiting for its answer; returns once the
/// proxy holds all of them.
async fn callers(
    http: &reqwest::Client,
    proxy: &Proxy,
    n: usize,
    text: &str,
) -> Vec<JoinHandle<(u16, Value)>> {
    let calls = (0..n)
        .map(|i| {
            let (http, url) = (http.clone(), proxy.url("/message"));
            let text = format!("{text}{i}");
            tokio::spawn(async move { post(&http, &url, echo(json!(i), &text)).await })
        })
        .collect();
    wait_until("the calls are queued", || async {
        let v = health(http, proxy).await;
        v["pending"] == n
    })
    .await;
    calls
}

/// Answers a request item with the echo of its arguments' text.
async fn answer(http: &reqwest::Client, proxy: &Proxy, session: &str, item: &Value) {
    let request = &item["request"];
    let text = request["params"]["arguments"]["text"].clone();
    let response = json!({"jsonrpc": "2.0", "id": request["id"],
        "result": {"content": [{"type": "text", "text": text}]}});
    let (status, v) = respond(
        http,
        proxy,
        session,
        json!({"request_id": item["request_id"], "response": response}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn a_registration_granted_poll_items_takes_every_queued_item_in_one_answer() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let registered = register_with(&http, &proxy, json!({"poll_items": 8})).await;
    assert_eq!(registered["poll_items"], 8);
    let session = registered["session_id"].as_str().unwrap().to_owned();
    let calls = callers(&http, &proxy, 3, "batched").await;
    let (status, batch) = poll(&http, &proxy, &session, 0).await;
    assert_eq!(status, 200, "{batch}");
    let items = batch["items"].as_array().expect("a batch");
    assert_eq!(items.len(), 3, "{batch}");
    // Handed over as a whole: nothing is left for the next poll.
    assert_eq!(poll(&http, &proxy, &session, 0).await.0, 204);
    for item in items {
        answer(&http, &proxy, &session, item).await;
    }
    for (i, call) in calls.into_iter().enumerate() {
        let (status, v) = call.await.unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["id"], i);
        assert_eq!(v["result"]["content"][0]["text"], format!("batched{i}"));
    }
    // A single item is a batch too, for a registration that asked.
    let calls = callers(&http, &proxy, 1, "alone").await;
    let (_, batch) = poll(&http, &proxy, &session, 0).await;
    assert_eq!(batch["items"].as_array().map(Vec::len), Some(1), "{batch}");
    answer(&http, &proxy, &session, &batch["items"][0]).await;
    assert_eq!(calls.into_iter().next().unwrap().await.unwrap().0, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn a_batch_stops_at_its_count_and_within_the_body_limit() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let registered = register_with(&http, &proxy, json!({"poll_items": 2})).await;
    let session = registered["session_id"].as_str().unwrap().to_owned();
    let calls = callers(&http, &proxy, 3, "counted").await;
    let (_, first) = poll(&http, &proxy, &session, 0).await;
    let (_, second) = poll(&http, &proxy, &session, 0).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2, "{first}");
    assert_eq!(second["items"].as_array().unwrap().len(), 1, "{second}");
    for item in first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
    {
        answer(&http, &proxy, &session, item).await;
    }
    for call in calls {
        assert_eq!(call.await.unwrap().0, 200);
    }

    // 64 KiB of body at most (test_config): two 40 KiB calls go in two answers, whatever
    // the count allows.
    let big = register_with(&http, &proxy, json!({"poll_items": 64})).await;
    let big_session = big["session_id"].as_str().unwrap().to_owned();
    // The earlier registration is still in the default pool: leave, so the big one gets all.
    leave(&http, &proxy, &session).await;
    let calls = callers(&http, &proxy, 2, &"x".repeat(40 * 1024)).await;
    let (_, first) = poll(&http, &proxy, &big_session, 0).await;
    let (_, second) = poll(&http, &proxy, &big_session, 0).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    for item in [&first["items"][0], &second["items"][0]] {
        answer(&http, &proxy, &big_session, item).await;
    }
    for call in calls {
        assert_eq!(call.await.unwrap().0, 200);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn the_grant_is_capped_and_the_seeds_shape_is_kept_for_everyone_who_did_not_ask() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let greedy = register_with(&http, &proxy, json!({"poll_items": 100_000})).await;
    assert_eq!(greedy["poll_items"], 64);
    let modest = register_with(&http, &proxy, json!({"held_polls": 1})).await;
    assert!(modest.get("poll_items").is_none(), "{modest}");
    let one = register_with(&http, &proxy, json!({"poll_items": 1})).await;
    assert!(one.get("poll_items").is_none(), "{one}");
    let (_, seed) = post(
        &http,
        &proxy.url("/register"),
        json!({"type": "mcp_server", "timestamp": 1}),
    )
    .await;
    assert_eq!(
        seed.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["poll_endpoint", "response_endpoint", "session_id"],
        "the seed's answer, unchanged"
    );
    // Only the seed's registration stays: its poll answer is one bare item.
    for gone in [&greedy, &modest, &one] {
        let id = gone["session_id"].as_str().unwrap();
        leave(&http, &proxy, id).await;
    }
    let session = seed["session_id"].as_str().unwrap().to_owned();
    let calls = callers(&http, &proxy, 2, "seed").await;
    let (_, item) = poll(&http, &proxy, &session, 0).await;
    assert!(
        item.get("items").is_none() && item.get("request_id").is_some(),
        "{item}"
    );
    answer(&http, &proxy, &session, &item).await;
    let (_, item) = poll(&http, &proxy, &session, 0).await;
    answer(&http, &proxy, &session, &item).await;
    for call in calls {
        assert_eq!(call.await.unwrap().0, 200);
    }
    proxy.stop().await;
}

/// The final answer body for a request item: the echo of its arguments' text.
fn final_for(item: &Value) -> Value {
    let request = &item["request"];
    let response = json!({"jsonrpc": "2.0", "id": request["id"],
        "result": {"content": [{"type": "text", "text": request["params"]["arguments"]["text"]}]}});
    json!({"request_id": item["request_id"], "response": response})
}

#[tokio::test]
async fn several_answers_in_one_post_are_each_taken_as_if_posted_alone() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let registered = register_with(&http, &proxy, json!({"poll_items": 4})).await;
    let session = registered["session_id"].as_str().unwrap().to_owned();
    let calls = callers(&http, &proxy, 3, "posted").await;
    let (_, batch) = poll(&http, &proxy, &session, 0).await;
    let items = batch["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3, "{batch}");

    // Two answers, one unknown request and one malformed entry: each gets its own outcome.
    let body = json!({"answers": [
        final_for(&items[0]),
        {"request_id": "r-00000000000000000000000000000000", "response": null},
        {"neither": true},
        final_for(&items[1]),
    ]});
    let (status, v) = respond(&http, &proxy, &session, body).await;
    assert_eq!(status, 200, "{v}");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 4, "{v}");
    assert_eq!(results[0], json!({"status": "ok"}));
    assert_eq!(results[1]["error"], "unknown_request", "{v}");
    assert_eq!(results[2]["error"], "invalid_body", "{v}");
    assert_eq!(results[3], json!({"status": "ok"}));
    // A repeat is a duplicate, and the last answer still goes alone, in the seed's shape.
    let (_, v) = respond(
        &http,
        &proxy,
        &session,
        json!({"answers": [final_for(&items[0]), final_for(&items[2])]}),
    )
    .await;
    assert_eq!(
        v["results"],
        json!([{"status": "duplicate"}, {"status": "ok"}])
    );
    for (i, call) in calls.into_iter().enumerate() {
        let (status, v) = call.await.unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["result"]["content"][0]["text"], format!("posted{i}"));
    }

    // More entries than granted, none, or not an array: the post is refused and nothing taken.
    let calls = callers(&http, &proxy, 1, "refused").await;
    let (_, batch) = poll(&http, &proxy, &session, 0).await;
    let item = batch["items"][0].clone();
    for bad in [
        json!({"answers": vec![final_for(&item); 5]}),
        json!({"answers": []}),
        json!({"answers": final_for(&item)}),
    ] {
        let (status, v) = respond(&http, &proxy, &session, bad).await;
        assert_eq!(
            (status, v["error"].as_str()),
            (400, Some("invalid_body")),
            "{v}"
        );
    }
    answer(&http, &proxy, &session, &item).await;
    assert_eq!(calls.into_iter().next().unwrap().await.unwrap().0, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn several_answers_need_a_registration_granted_several_items() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let registered = register_with(&http, &proxy, json!({"held_polls": 1})).await;
    let session = registered["session_id"].as_str().unwrap().to_owned();
    let calls = callers(&http, &proxy, 1, "single").await;
    let (_, item) = poll(&http, &proxy, &session, 0).await;
    let (status, v) = respond(
        &http,
        &proxy,
        &session,
        json!({"answers": [final_for(&item)]}),
    )
    .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_body")),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("poll_items"), "{v}");
    // Nothing was taken: the answer alone still lands.
    answer(&http, &proxy, &session, &item).await;
    assert_eq!(calls.into_iter().next().unwrap().await.unwrap().0, 200);
    // A registration that is gone: 404, as for one body.
    leave(&http, &proxy, &session).await;
    let (status, v) = respond(
        &http,
        &proxy,
        &session,
        json!({"answers": [final_for(&item)]}),
    )
    .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (404, Some("unknown_session")),
        "{v}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn several_answers_over_the_body_limit_get_413_and_nothing_is_taken() {
    let proxy = Proxy::start(test_config()).await;
    let http = client();
    let registered = register_with(&http, &proxy, json!({"poll_items": 4})).await;
    let session = registered["session_id"].as_str().unwrap().to_owned();
    // Two answers each within the limit, together over it.
    let text = "x".repeat(proxy.state.config().max_body_bytes * 2 / 3);
    let calls = callers(&http, &proxy, 2, &text).await;
    // A poll answer stays within the limit too: one item each.
    let mut items = Vec::new();
    for _ in 0..2 {
        let (_, batch) = poll(&http, &proxy, &session, 0).await;
        items.extend(batch["items"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(items.len(), 2);
    let body = json!({"answers": [final_for(&items[0]), final_for(&items[1])]});
    let (status, v) = respond(&http, &proxy, &session, body).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (413, Some("payload_too_large"))
    );
    // Nothing was taken: each answer alone still lands, and its client gets it.
    for item in &items {
        answer(&http, &proxy, &session, item).await;
    }
    for (i, call) in calls.into_iter().enumerate() {
        let (status, v) = call.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(v["result"]["content"][0]["text"], format!("{text}{i}"));
    }
    proxy.stop().await;
}
