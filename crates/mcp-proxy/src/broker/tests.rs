//! Broker unit tests: hand-over, withdrawal, answers, liveness; no HTTP.

use std::time::Duration;

use mcp_protocol::wire::{RegisterRequest, RegistrationCapabilities, ResponseEnvelope};

use super::*;

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

fn config() -> Config {
    Config {
        liveness_grace: Duration::from_millis(50),
        expiry: Duration::from_millis(50),
        ..Config::default()
    }
}

fn request(pool: &str, id: i64) -> Submission {
    Submission {
        pool: pool.to_owned(),
        client_session: None,
        message: raw(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#)),
        expects_answer: true,
        streamable: false,
        headers: BTreeMap::new(),
        stateless_era: false,
        identity: None,
    }
}

fn request_id_of(item: &PollItem) -> String {
    match item {
        PollItem::Request(r) => r.request_id.clone(),
        other => panic!("expected a request item, got {other:?}"),
    }
}

const NOW: Option<Duration> = Some(Duration::ZERO);

#[tokio::test]
async fn every_queued_request_is_delivered_once() {
    let b = Broker::new(config());
    let s = b.register(&RegisterRequest::legacy(1)).unwrap();
    let waiters: Vec<_> = (0..5)
        .map(|i| b.submit(request("", i)).unwrap().unwrap())
        .collect();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let claimed = b.poll(&s, NOW).await.unwrap().expect("an item");
        seen.push(request_id_of(&claimed.deliver()));
    }
    let expected: Vec<_> = waiters.iter().map(|w| w.request_id().to_owned()).collect();
    assert_eq!(seen, expected, "in queue order, each once");
    assert!(b.poll(&s, NOW).await.unwrap().is_none());
}

#[tokio::test]
async fn a_dropped_claim_is_requeued_a_delivered_one_never() {
    let b = Broker::new(config());
    let s = b.register(&RegisterRequest::legacy(1)).unwrap();
    let w = b.submit(request("", 1)).unwrap().unwrap();
    let claimed = b.poll(&s, NOW).await.unwrap().unwrap();
    drop(claimed); // the poll handler was dropped before returning it
    let claimed = b.poll(&s, NOW).await.unwrap().expect("requeued");
    assert_eq!(request_id_of(claimed.item()), w.request_id());
    claimed.deliver();
    assert!(
        b.poll(&s, NOW).await.unwrap().is_none(),
        "never handed out twice"
    );
}

#[tokio::test]
async fn a_gone_client_withdraws_its_queued_request() {
    let b = Broker::new(config());
    let s = b.register(&RegisterRequest::legacy(1)).unwrap();
    let w = b.submit(request("", 1)).unwrap().unwrap();
    drop(w);
    assert_eq!(b.stats().pending, 0);
    assert!(b.poll(&s, NOW).await.unwrap().is_none());
}

#[tokio::test]
async fn answers_reach_their_waiter_and_duplicates_are_recognised() {
    let b = Broker::new(config());
    let s = b.register(&RegisterRequest::legacy(1)).unwrap();
    let mut w = b.submit(request("", 1)).unwrap().unwrap();
    let rid = request_id_of(&b.poll(&s, NOW).await.unwrap().unwrap().deliver());
    let fin = || {
        ResponseEnvelope::final_response(
            rid.clone(),
            raw(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
        )
    };
    assert_eq!(b.respond(&s, fin()).unwrap(), ResponseStatusKind::Ok);
    assert_eq!(
        w.answer().await.unwrap().get(),
        r#"{"jsonrpc":"2.0","id":1,"result":{}}"#
    );
    assert_eq!(b.respond(&s, fin()).unwrap(), ResponseStatusKind::Duplicate);
    let other = ResponseEnvelope::final_response("r-nope", raw("null"));
    assert_eq!(b.respond(&s, other).unwrap(), ResponseStatusKind::Ignored);
}

#[tokio::test]
async fn a_poll_wakes_on_arrival() {
    let b = Broker::new(config());
    let s = b.register(&RegisterRequest::legacy(1)).unwrap();
    let poller = {
        let b = b.clone();
        let s = s.clone();
        tokio::spawn(async move {
            b.poll(&s, Some(Duration::from_secs(30)))
                .await
                .unwrap()
                .map(|c| request_id_of(&c.deliver()))
        })
    };
    // Wait until the poll is open, then queue.
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.lock().registrations[&s].open_polls == 0 {
        assert!(Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    let w = b.submit(request("", 1)).unwrap().unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), poller)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.as_deref(), Some(w.request_id()));
}

#[tokio::test]
async fn a_held_poll_registration_without_polls_dies_and_fails_its_requests() {
    let b = Broker::new(config());
    let caps = RegistrationCapabilities {
        held_polls: 1,
        ..Default::default()
    };
    let s = b.register(&RegisterRequest::modern(None, caps)).unwrap();
    let mut w = b.submit(request("", 1)).unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await; // past the 50 ms grace
    b.sweep();
    assert!(matches!(w.answer().await, Err(Error::ServerGone)));
    assert!(matches!(b.poll(&s, NOW).await, Err(Error::UnknownSession)));
    assert!(matches!(
        b.submit(request("", 2)),
        Err(Error::NoServer { pool: None })
    ));
}

#[tokio::test]
async fn pools_and_sessions_route_and_fail() {
    let b = Broker::new(config());
    let a = b
        .register(&RegisterRequest::modern(
            Some("files".into()),
            Default::default(),
        ))
        .unwrap();
    assert!(matches!(
        b.submit(request("other", 1)),
        Err(Error::NoServer { pool: Some(p) }) if p == "other"
    ));
    let cs = b.open_session("files").unwrap();
    let mut sub = request("files", 1);
    sub.client_session = Some(cs.clone());
    let _w = b.submit(sub).unwrap().unwrap();
    b.deregister(&a).unwrap();
    let mut sub = request("files", 2);
    sub.client_session = Some(cs);
    assert!(matches!(b.submit(sub), Err(Error::UnknownClientSession)));
}

#[test]
fn replay_in_all_is_trimmed_least_recent_sessions_first() {
    let mut st = State::default();
    let now = Instant::now();
    let big = "x".repeat(1000);
    for (i, age) in [(0, 30u64), (1, 20), (2, 10)] {
        let mut s = ClientSession::new(
            "m-r".into(),
            String::new(),
            1,
            now - Duration::from_secs(age),
        );
        for r in 0..2 {
            let name = s.new_request_stream(&format!("r{i}{r}"));
            s.streams.get_mut(&name).unwrap().finish(big.clone());
            s.retire(&name);
        }
        st.insert_session(format!("c{i}"), s);
    }
    // 6,000 bytes over three sessions; keep 2,500: the two seen longest ago lose theirs.
    st.trim_replay_in_all(2_500);
    let bytes = |id: &str| st.sessions[id].replay_bytes();
    assert_eq!((bytes("c0"), bytes("c1"), bytes("c2")), (0, 0, 2_000));
}

#[cfg(feature = "cluster")]
#[tokio::test]
async fn an_item_that_provably_never_left_goes_back_to_the_queue() {
    let b = Broker::new(config());
    let s = b.register(&RegisterRequest::legacy(1)).unwrap();
    let w = b.submit(request("", 1)).unwrap().unwrap();
    let item = b.poll(&s, NOW).await.unwrap().unwrap().deliver();
    let id = request_id_of(&item);
    // The instance that relayed the poll was gone: nobody received the item.
    assert!(b.requeue_undelivered(&id, (*item).clone()));
    let again = b.poll(&s, NOW).await.unwrap().expect("requeued");
    assert_eq!(request_id_of(&again.deliver()), w.request_id());
    // Answered (or withdrawn), it is never requeued; nor is an unknown id.
    drop(w);
    assert!(!b.requeue_undelivered(&id, (*item).clone()));
    assert!(!b.requeue_undelivered("no-such-request", (*item).clone()));
}

#[tokio::test]
async fn one_open_delivery_hands_over_item_after_item_and_counts_as_one_poll() {
    let b = Broker::new(config());
    let s = b.register(&RegisterRequest::legacy(1)).unwrap();
    let mut delivery = b.open_delivery(&s, Requester::default(), true).unwrap();
    assert_eq!(b.lock().registrations[&s].open_polls, 1);
    let waiters: Vec<_> = (0..3)
        .map(|i| b.submit(request("", i)).unwrap().unwrap())
        .collect();
    for w in &waiters {
        let claimed = delivery
            .next(Duration::ZERO)
            .await
            .unwrap()
            .expect("an item");
        assert_eq!(request_id_of(&claimed.deliver()), w.request_id());
    }
    assert!(delivery.next(Duration::ZERO).await.unwrap().is_none());
    // Still one open delivery throughout; closing it in good order leaves no suspicion.
    assert_eq!(b.lock().registrations[&s].open_polls, 1);
    delivery.close(false);
    let st = b.lock();
    assert_eq!(st.registrations[&s].open_polls, 0);
    assert!(st.registrations[&s].suspect_until.is_none());
}

#[tokio::test]
async fn a_delivery_dropped_unclosed_makes_its_registration_suspect() {
    let b = Broker::new(config());
    let s = b.register(&RegisterRequest::legacy(1)).unwrap();
    let delivery = b.open_delivery(&s, Requester::default(), true).unwrap();
    drop(delivery);
    let st = b.lock();
    assert_eq!(st.registrations[&s].open_polls, 0);
    assert!(st.registrations[&s].suspect_until.is_some());
}

#[tokio::test]
async fn no_delivery_opens_once_the_broker_shuts_down() {
    let b = Broker::new(config());
    let s = b.register(&RegisterRequest::legacy(1)).unwrap();
    b.shutdown();
    assert!(matches!(
        b.open_delivery(&s, Requester::default(), true),
        Err(Error::ShuttingDown)
    ));
    // A poll then ends at once, empty, as before.
    assert!(b
        .poll(&s, Some(Duration::from_secs(30)))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_stream_has_ended_once_its_final_answer_is_taken() {
    let b = Broker::new(config());
    let s = b.register(&RegisterRequest::legacy(1)).unwrap();
    let mut sub = request("", 1);
    sub.streamable = true;
    let mut attached = b.submit_streamed(sub, RequestId::Number(1.into())).unwrap();
    attached.take_initial();
    assert!(!attached.ended(), "open until its answer");
    let item = b.poll(&s, NOW).await.unwrap().unwrap().deliver();
    let answer = raw(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
    let envelope = ResponseEnvelope::final_response(request_id_of(&item), answer);
    assert_eq!(b.respond(&s, envelope).unwrap(), ResponseStatusKind::Ok);
    let chunk = attached.next().await.expect("the answer");
    assert!(chunk.contains(r#""result":{}"#), "{chunk}");
    assert!(attached.ended(), "the answer was the last chunk");
    assert!(attached.next().await.is_none());
}
