//! How items reach a registration's server: a [`Delivery`] is the seam (a held poll opens one
//! per request today); while it is open it counts for the registration's liveness, and it
//! hands over one claimed item at a time. Also the requeue of an item whose delivery was
//! dropped before returning it.

use super::*;

impl Broker {
    /// Holds a poll of one item until it arrives (`Some`) or the hold ends (`None`), for a
    /// caller without a token: one [`Delivery`], opened and closed around one wait.
    ///
    /// `requested` is the poll's `timeout`; the hold is capped by the configuration (legacy
    /// registrations at `poll_timeout`, modern ones at `max_poll_timeout`). An unknown id of
    /// the legacy format is re-adopted as a legacy registration in the default pool.
    pub async fn poll(
        &self,
        session_id: &str,
        requested: Option<Duration>,
    ) -> Result<Option<Claimed>, Error> {
        let mut delivery = match self.open_delivery(session_id, Requester::default(), true) {
            // A poll during shutdown ends at once, empty, as its hold would.
            Err(Error::ShuttingDown) => return Ok(None),
            opened => opened?,
        };
        let hold = delivery.hold(requested);
        let claimed = delivery.next(hold).await?;
        delivery.close(claimed.is_some());
        Ok(claimed)
    }

    /// Opens a delivery to registration `session_id` for `who` (its owner token must match):
    /// while open, it counts for the registration's liveness as a held poll. An unknown legacy
    /// id is re-adopted for `who` when `may_adopt`, within the registration quotas.
    /// [`Error::ShuttingDown`] once the broker is shutting down.
    pub fn open_delivery(
        &self,
        session_id: &str,
        who: Requester,
        may_adopt: bool,
    ) -> Result<Delivery, Error> {
        let owner = who.token;
        let kind = SessionIdKind::of(session_id).ok_or(Error::UnknownSession)?;
        let cfg = &self.inner.config;
        let mut st = self.lock();
        if st.shutting_down {
            return Err(Error::ShuttingDown);
        }
        if !st.registrations.contains_key(session_id) {
            if kind == SessionIdKind::Modern {
                return Err(Error::UnknownSession);
            }
            if !may_adopt {
                return Err(Error::ServerUnauthorized);
            }
            // A re-adoption is a registration: the same quotas as `/register`.
            st.admit_registration(&who, cfg)?;
            st.insert_registration(session_id.to_owned(), String::new(), None);
            st.charge_registration(session_id, owner, who.holder());
            info!(session = %Short(session_id), "re-adopted an unknown legacy session");
        }
        let reg = st
            .registrations
            .get_mut(session_id)
            .expect("present or just inserted");
        if reg.owner != owner {
            return Err(Error::ServerUnauthorized);
        }
        if reg.open_polls >= cfg.max_polls_per_registration {
            return Err(Error::RateLimited(
                "too many polls open for this registration",
            ));
        }
        reg.open_polls += 1;
        reg.last_activity = Instant::now();
        let cap = if reg.is_modern() {
            cfg.max_poll_timeout
        } else {
            cfg.poll_timeout
        };
        Ok(Delivery {
            broker: self.clone(),
            session_id: session_id.to_owned(),
            generation: reg.generation,
            notify: reg.notify.clone(),
            hold_cap: cap,
            batch: reg.poll_items(),
            end: End::Dropped,
            channel: None,
        })
    }

    /// Puts back an item whose poll was dropped before returning it (called by [`Claimed`]).
    pub(super) fn requeue(&self, session_id: &str, generation: u64, entry: QueueEntry) {
        let mut st = self.lock();
        let State {
            registrations,
            pending,
            ..
        } = &mut *st;
        let Some(reg) = registrations
            .get_mut(session_id)
            .filter(|r| r.generation == generation)
        else {
            return;
        };
        if let Some(id) = &entry.pending {
            match pending.get_mut(id) {
                Some(p) if p.stage == Stage::HandedOver => {
                    p.stage = Stage::Queued;
                    reg.in_flight = reg.in_flight.saturating_sub(1);
                }
                _ => return,
            }
        }
        debug!(session = %Short(session_id), "poll dropped before returning its item; requeued");
        reg.queue.push_front(entry);
        reg.notify.notify_one();
    }
}

impl State {
    /// Takes the next item for a poll of this registration, marking a request handed over.
    pub(super) fn claim(
        &mut self,
        session_id: &str,
        generation: u64,
    ) -> Result<Option<QueueEntry>, Error> {
        let State {
            registrations,
            pending,
            ..
        } = self;
        let reg = registrations
            .get_mut(session_id)
            .filter(|r| r.generation == generation)
            .ok_or(Error::UnknownSession)?;
        while let Some(entry) = reg.queue.pop_front() {
            match &entry.pending {
                None => return Ok(Some(entry)),
                Some(id) => {
                    if let Some(p) = pending.get_mut(id) {
                        p.stage = Stage::HandedOver;
                        reg.in_flight += 1;
                        return Ok(Some(entry));
                    }
                    // Withdrawn entries are removed from the queue; skip any stray one.
                }
            }
        }
        Ok(None)
    }
}

/// One way items reach a registration's server, open: a held poll today. It counts for the
/// registration's liveness until it is closed or dropped, and hands over claimed items one
/// at a time ([`Claimed::deliver`] completes each hand-over).
#[derive(Debug)]
pub struct Delivery {
    broker: Broker,
    session_id: String,
    generation: u64,
    /// Woken when an item is queued for the registration.
    notify: Arc<tokio::sync::Notify>,
    /// The longest one wait may be (legacy registrations: `poll_timeout`; modern ones:
    /// `max_poll_timeout`).
    hold_cap: Duration,
    /// The most items one poll answer carries for this registration (its granted
    /// `poll_items`; 1 for the seed's shape).
    batch: usize,
    /// How the delivery ended; `Dropped` until it is closed.
    end: End,
    /// Its number as the registration's channel, when it is one.
    channel: Option<u64>,
}

/// How a delivery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// It was dropped unclosed: its connection closed (or the server died).
    Dropped,
    /// It was closed after handing over an item.
    Item,
    /// It was closed with nothing to hand over: its server was alive all along.
    Empty,
}

impl Delivery {
    /// How long one wait may hold when the server asks for `requested` (its poll's timeout;
    /// `None`: the configured default).
    pub fn hold(&self, requested: Option<Duration>) -> Duration {
        requested
            .unwrap_or(self.broker.inner.config.poll_timeout)
            .min(self.hold_cap)
    }

    /// The most items one poll answer carries for this registration (1: the seed's shape).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Whether its registration is still the one it was opened for.
    pub fn is_live(&self) -> bool {
        self.broker
            .lock()
            .registrations
            .get(&self.session_id)
            .is_some_and(|r| r.generation == self.generation)
    }

    /// Cancelled when the broker shuts down (a channel then closes; its waits end empty).
    pub fn stopping(&self) -> CancellationToken {
        self.broker.inner.shutdown.clone()
    }

    /// Makes this delivery the registration's channel: the token it returns is cancelled when
    /// a newer channel replaces it (a reconnect need not wait for the old connection to be
    /// found dead) or the registration ends ([`Delivery::is_live`] tells which). The older
    /// channel's token, if any, is cancelled now.
    pub fn become_channel(&mut self) -> Result<CancellationToken, Error> {
        static CHANNELS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let number = CHANNELS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut st = self.broker.lock();
        let reg = st
            .registrations
            .get_mut(&self.session_id)
            .filter(|r| r.generation == self.generation)
            .ok_or(Error::UnknownSession)?;
        let token = CancellationToken::new();
        if let Some((_, older)) = reg.channel.replace((number, token.clone())) {
            older.cancel();
        }
        self.channel = Some(number);
        Ok(token)
    }

    /// The next item for the server, waiting up to `hold` for one (`None`: none came, or the
    /// broker is shutting down).
    pub async fn next(&mut self, hold: Duration) -> Result<Option<Claimed>, Error> {
        let broker = &self.broker;
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            {
                let mut st = broker.lock();
                if st.shutting_down {
                    return Ok(None);
                }
                if let Some(entry) = st.claim(&self.session_id, self.generation)? {
                    if let Some(id) = &entry.pending {
                        tracing::Span::current().record("request_id", id.as_str());
                    }
                    return Ok(Some(Claimed {
                        broker: broker.clone(),
                        session_id: self.session_id.clone(),
                        generation: self.generation,
                        entry: Some(entry),
                    }));
                }
                if hold.is_zero() {
                    return Ok(None);
                }
                // Registered as a waiter before the lock is released, so an item queued in
                // between cannot be missed.
                notified.as_mut().enable();
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                _ = broker.inner.shutdown.cancelled() => return Ok(None),
            }
        }
    }

    /// Closes the delivery in good order: `handed_over` says whether its last wait handed an
    /// item over (else the server proved alive by waiting out the hold). Dropping it unclosed
    /// instead marks the registration suspect until it reconnects or the grace ends.
    pub fn close(mut self, handed_over: bool) {
        self.end = if handed_over { End::Item } else { End::Empty };
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        let mut st = self.broker.lock();
        if let Some(reg) = st
            .registrations
            .get_mut(&self.session_id)
            .filter(|r| r.generation == self.generation)
        {
            let now = Instant::now();
            if self.channel.is_some() && reg.channel.as_ref().map(|(n, _)| *n) == self.channel {
                reg.channel = None;
            }
            reg.open_polls = reg.open_polls.saturating_sub(1);
            reg.last_activity = now;
            match self.end {
                // Suspect until it proves alive or the grace decides.
                End::Dropped => {
                    reg.suspect_until = Some(now + self.broker.inner.config.liveness_grace)
                }
                End::Empty => reg.suspect_until = None,
                End::Item => {}
            }
            if reg.open_polls == 0 {
                reg.no_polls_since = now;
            }
        }
    }
}
