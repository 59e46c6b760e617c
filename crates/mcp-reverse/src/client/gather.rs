//! Final answers gathered into one `POST /response` when several finish while earlier posts are
//! still out (docs/protocol.md, "Several answers per post"), for a registration granted
//! `poll_items` above 1. A lone answer goes at once, in the seed's shape: gathering only ever
//! happens under load, so it adds no latency.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use mcp_protocol::wire::{AnswerOutcome, AnswerOutcomes, WireErrorCode};
use reqwest::StatusCode;
use tokio::sync::oneshot;

use super::{Inner, Registration};

/// Answer posts a registration keeps in flight at once; answers that finish meanwhile wait
/// for the next post and go together.
pub(super) const MAX_ANSWER_POSTS: usize = 4;
/// The most bytes of answers gathered into one post.
const MAX_GATHERED_BYTES: usize = 256 * 1024;
/// An answer larger than this always goes alone.
pub(super) const MAX_GATHERED_ANSWER: usize = 64 * 1024;

/// What a post did with one answer: the status it would have had alone, or why it failed.
pub(super) type Outcome = Result<StatusCode, String>;

/// One answer waiting for a post, and who waits for its outcome.
type Waiting = (String, oneshot::Sender<Outcome>);

/// The answers of one registration waiting to be posted, and how many posts are out.
pub(super) struct Gather {
    /// The most answers one post may carry (the `poll_items` granted).
    per_post: usize,
    /// A std mutex: never held across an await.
    state: Mutex<GatherState>,
}

#[derive(Default)]
struct GatherState {
    waiting: VecDeque<Waiting>,
    posting: usize,
}

impl Gather {
    /// Gathering for a registration granted `per_post` items per poll (1: never gathered).
    pub(super) fn new(per_post: usize) -> Self {
        Gather {
            per_post,
            state: Mutex::default(),
        }
    }

    /// Whether answers of this registration may go several to a post.
    pub(super) fn enabled(&self) -> bool {
        self.per_post > 1
    }

    /// Queues an answer; true when the caller must start a poster (a post slot was free).
    fn push(&self, body: String, done: oneshot::Sender<Outcome>) -> bool {
        let mut st = self.state.lock().expect("gather lock");
        st.waiting.push_back((body, done));
        let start = st.posting < MAX_ANSWER_POSTS;
        if start {
            st.posting += 1;
        }
        start
    }

    /// The next answers to post together, or `None` (and one poster fewer) when none wait:
    /// both under one lock, so an answer queued just now is never left without a poster.
    fn next_batch(&self) -> Option<Vec<Waiting>> {
        let mut st = self.state.lock().expect("gather lock");
        let Some(first) = st.waiting.pop_front() else {
            st.posting -= 1;
            return None;
        };
        let mut bytes = first.0.len();
        let mut batch = vec![first];
        if bytes <= MAX_GATHERED_ANSWER {
            while batch.len() < self.per_post {
                match st.waiting.front() {
                    Some((body, _))
                        if body.len() <= MAX_GATHERED_ANSWER
                            && bytes + body.len() <= MAX_GATHERED_BYTES =>
                    {
                        bytes += body.len();
                        batch.extend(st.waiting.pop_front());
                    }
                    _ => break,
                }
            }
        }
        Some(batch)
    }
}

impl Inner {
    /// Posts a final answer's `body`, alone or with others that wait, and says what the proxy
    /// did with it.
    pub(super) async fn post_gathered(
        self: &Arc<Self>,
        registration: &Registration,
        body: String,
    ) -> Outcome {
        let (done, outcome) = oneshot::channel();
        if registration.answers.push(body, done) {
            // A task of its own: a caller that is cancelled must not strand the answers of
            // others it took into its post.
            let (inner, registration) = (self.clone(), registration.clone());
            tokio::spawn(async move {
                while let Some(batch) = registration.answers.next_batch() {
                    inner.post_batch(&registration, batch).await;
                }
            });
        }
        outcome
            .await
            .unwrap_or_else(|_| Err("the answer post was abandoned".into()))
    }

    /// One post of `batch`: the seed's shape for one answer, `{"answers": [...]}` for more.
    async fn post_batch(&self, registration: &Registration, batch: Vec<Waiting>) {
        if batch.len() == 1 {
            let (body, done) = batch.into_iter().next().expect("one answer");
            let _ = done.send(self.post_http(registration, body).await);
            return;
        }
        let mut body =
            String::with_capacity(batch.iter().map(|(b, _)| b.len() + 1).sum::<usize>() + 16);
        body.push_str("{\"answers\":[");
        for (i, (answer, _)) in batch.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(answer);
        }
        body.push_str("]}");
        match self.post_for_body(registration, body).await {
            Ok((StatusCode::OK, reply)) => {
                let outcomes = serde_json::from_slice::<AnswerOutcomes>(&reply)
                    .ok()
                    .filter(|o| o.results.len() == batch.len());
                let Some(outcomes) = outcomes else {
                    // Retried by their owners: a repeat that had landed is a harmless duplicate.
                    let why = "unreadable outcomes of several answers";
                    return batch
                        .into_iter()
                        .for_each(|(_, d)| drop(d.send(Err(why.into()))));
                };
                for ((_, done), outcome) in batch.into_iter().zip(outcomes.results) {
                    let _ = done.send(Ok(status_of(&outcome)));
                }
            }
            // Nothing was taken: each goes alone, so only one too large to pass is refused.
            Ok((StatusCode::PAYLOAD_TOO_LARGE, _)) => {
                for (body, done) in batch {
                    let _ = done.send(self.post_http(registration, body).await);
                }
            }
            Ok((status, _)) => batch
                .into_iter()
                .for_each(|(_, d)| drop(d.send(Ok(status)))),
            Err(e) => batch
                .into_iter()
                .for_each(|(_, d)| drop(d.send(Err(e.clone())))),
        }
    }
}

/// The status one entry would have had, posted alone.
fn status_of(outcome: &AnswerOutcome) -> StatusCode {
    match outcome {
        AnswerOutcome::Status(_) => StatusCode::OK,
        AnswerOutcome::Error(e) => match e.error {
            WireErrorCode::UnknownRequest | WireErrorCode::UnknownSession => StatusCode::NOT_FOUND,
            WireErrorCode::InvalidBody | WireErrorCode::InvalidQuery => StatusCode::BAD_REQUEST,
            WireErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WireErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            WireErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
    }
}
