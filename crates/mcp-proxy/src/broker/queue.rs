//! A registration's queue of poll items, and the guard that hands one item to one poll.

use std::collections::VecDeque;
use std::sync::Arc;

use mcp_protocol::wire::PollItem;

use super::Broker;

/// One queued item.
#[derive(Debug)]
pub(crate) struct QueueEntry {
    /// The pending request this item carries (`None` for replies and session notices).
    pub(crate) pending: Option<String>,
    /// The item as the poll will send it (shared: requeueing never copies the message).
    pub(crate) item: Arc<PollItem>,
}

/// Items waiting for a poll, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    entries: VecDeque<QueueEntry>,
}

impl Queue {
    /// Appends an item.
    pub(crate) fn push_back(&mut self, entry: QueueEntry) {
        self.entries.push_back(entry);
    }

    /// Puts an item back at the head (a poll dropped before returning it).
    pub(crate) fn push_front(&mut self, entry: QueueEntry) {
        self.entries.push_front(entry);
    }

    /// Takes the oldest item.
    pub(crate) fn pop_front(&mut self) -> Option<QueueEntry> {
        self.entries.pop_front()
    }

    /// Withdraws the item of a pending request nobody waits for any more.
    pub(crate) fn remove_pending(&mut self, request_id: &str) -> bool {
        let before = self.entries.len();
        self.entries
            .retain(|e| e.pending.as_deref() != Some(request_id));
        self.entries.len() != before
    }

    /// Number of queued items.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// An item taken from a queue by a poll, not yet returned to the reverse client.
///
/// [`Claimed::deliver`] is the hand-over: after it, the item is never queued again. If the
/// guard is dropped instead (hyper dropped the poll handler because the reverse client closed
/// the connection), the item goes back to the head of its queue.
#[derive(Debug)]
pub struct Claimed {
    pub(crate) broker: Broker,
    pub(crate) session_id: String,
    pub(crate) generation: u64,
    pub(crate) entry: Option<QueueEntry>,
}

impl Claimed {
    /// The item, for serializing.
    pub fn item(&self) -> &PollItem {
        let entry = self.entry.as_ref();
        // `entry` is only taken by `deliver`, which consumes the guard.
        &entry
            .expect("a claimed item is present until delivered")
            .item
    }

    /// Completes the hand-over: the item now belongs to the poll's response.
    pub fn deliver(mut self) -> Arc<PollItem> {
        let entry = self.entry.take();
        entry
            .expect("a claimed item is present until delivered")
            .item
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.broker
                .requeue(&self.session_id, self.generation, entry);
        }
    }
}
