//! [`Outbound`]: how a transport carries the messages the server sends while handling a request.

use std::fmt;
use std::sync::Arc;

use mcp_protocol::Message;
use tokio::sync::mpsc::UnboundedSender;

type SendFn = dyn Fn(Message) -> bool + Send + Sync;

/// The transport's handle for the messages the server sends while it handles one request:
/// progress and log notifications, and requests to the client (sampling, elicitation, roots).
///
/// Cheap to clone. The transport decides how the messages travel (an SSE stream, an interim
/// `POST /response` through the proxy, a channel in tests). [`Outbound::none`] is for
/// transports that cannot carry them: notifications are then dropped and requests to the
/// client fail with [`crate::Error::ClientUnreachable`].
#[derive(Clone)]
pub struct Outbound {
    send: Option<Arc<SendFn>>,
}

impl Outbound {
    /// A transport that cannot carry server-to-client messages.
    pub fn none() -> Self {
        Outbound { send: None }
    }

    /// Messages are handed to `send` (and counted as delivered).
    pub fn new(send: impl Fn(Message) + Send + Sync + 'static) -> Self {
        Outbound::fallible(move |msg| {
            send(msg);
            true
        })
    }

    /// Messages are handed to `send`, which returns whether it could take them.
    pub fn fallible(send: impl Fn(Message) -> bool + Send + Sync + 'static) -> Self {
        Outbound {
            send: Some(Arc::new(send)),
        }
    }

    /// Messages are sent on this channel; they fail once its receiver is gone.
    pub fn channel(tx: UnboundedSender<Message>) -> Self {
        Outbound::fallible(move |msg| tx.send(msg).is_ok())
    }

    /// Whether this transport can carry messages at all.
    pub fn is_connected(&self) -> bool {
        self.send.is_some()
    }

    /// Sends a message; `false` when the transport could not take it (or carries nothing).
    pub fn send(&self, message: Message) -> bool {
        match &self.send {
            Some(send) => send(message),
            None => false,
        }
    }
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound::none()
    }
}

impl From<UnboundedSender<Message>> for Outbound {
    fn from(tx: UnboundedSender<Message>) -> Self {
        Outbound::channel(tx)
    }
}

impl fmt::Debug for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbound")
            .field("connected", &self.is_connected())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_protocol::Notification;

    #[test]
    fn none_drops_and_channel_delivers() {
        let n = Message::Notification(Notification::new("x", None));
        assert!(!Outbound::none().send(n.clone()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let out = Outbound::from(tx);
        assert!(out.is_connected());
        assert!(out.send(n.clone()));
        assert_eq!(rx.try_recv().unwrap(), n);
        drop(rx);
        assert!(!out.send(n.clone()));
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = Arc::clone(&count);
        let out = Outbound::new(move |_| {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        assert!(out.send(n));
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
