//! What only a cluster asks of the broker: taking over the registrations and client sessions
//! of a lost instance, the records the directory keeps of them, and the fate of requests
//! that instance was carrying to their servers.

use super::quota::Holder;
use super::*;

impl Broker {
    /// Takes over a registration another instance held (it was lost): same id, pool,
    /// capabilities and owner, nothing pending. `false` when the id is already known here.
    pub fn adopt(
        &self,
        session_id: &str,
        pool: &str,
        capabilities: Option<mcp_protocol::wire::RegistrationCapabilities>,
        owner: Option<TokenId>,
    ) -> bool {
        let mut st = self.lock();
        if st.shutting_down || st.registrations.contains_key(session_id) {
            return false;
        }
        st.insert_registration(session_id.to_owned(), pool.to_owned(), capabilities);
        st.charge_registration(session_id, owner, owner.map(Holder::Token));
        info!(session = %Short(session_id), pool, "took over a registration of a lost instance");
        true
    }

    /// Takes over a client session another instance held (it was lost), pinned to
    /// `registration` in `pool` as before, bound to the same `owner`; its streams start empty
    /// (nothing to resume). `false` when the session is known here or the registration is not.
    pub fn adopt_session(
        &self,
        client_session: &str,
        pool: &str,
        registration: &str,
        owner: Option<TokenId>,
    ) -> bool {
        let mut st = self.lock();
        if st.shutting_down || st.sessions.contains_key(client_session) {
            return false;
        }
        let Some(generation) = st
            .registrations
            .get(registration)
            .filter(|r| r.pool == pool)
            .map(|r| r.generation)
        else {
            return false;
        };
        let mut session = ClientSession::new(
            registration.to_owned(),
            pool.to_owned(),
            generation,
            Instant::now(),
        );
        session.owner = owner;
        session.holder = owner.map(Holder::Token);
        st.insert_session(client_session.to_owned(), session);
        info!(client_session = %Short(client_session), "took over a client session of a lost instance");
        true
    }

    /// The registration client session `client_session` is pinned to, if it lives here.
    pub fn session_registration(&self, client_session: &str) -> Option<String> {
        self.lock()
            .sessions
            .get(client_session)
            .map(|s| s.registration.clone())
    }

    /// Every client session here, for the cluster's directory.
    pub fn session_records(&self) -> Vec<SessionRecord> {
        self.lock()
            .sessions
            .iter()
            .map(|(id, s)| SessionRecord {
                client_session: id.clone(),
                pool: s.pool.clone(),
                registration: s.registration.clone(),
                owner: s.owner,
            })
            .collect()
    }

    /// Client session `client_session` as the cluster's directory records it.
    pub fn session_record(&self, client_session: &str) -> Option<SessionRecord> {
        self.lock()
            .sessions
            .get(client_session)
            .map(|s| SessionRecord {
                client_session: client_session.to_owned(),
                pool: s.pool.clone(),
                registration: s.registration.clone(),
                owner: s.owner,
            })
    }

    /// Fails a request that was handed to a poll whose answer may never have reached its
    /// server (the instance that relayed the poll was lost): its client gets
    /// [`Error::InstanceLost`] now instead of waiting for the request timeout. A request
    /// already answered, or still queued, is left alone.
    pub fn fail_handed_over(&self, request_id: &str) {
        let mut st = self.lock();
        if st
            .pending
            .get(request_id)
            .is_some_and(|p| p.stage == Stage::HandedOver)
        {
            if let Some(p) = st.take_pending(request_id) {
                info!(request = %request_id, "request failed: the instance that carried it to its server was lost");
                st.finish(p, Err(Error::InstanceLost));
            }
        }
    }

    /// Puts request `request_id`, handed to a poll whose item provably never left this
    /// instance (the relay that carried the poll found nobody to take it), back at the front
    /// of its registration's queue for the next poll; `false` when it is no longer handed
    /// over there (answered, withdrawn, its registration gone).
    pub fn requeue_undelivered(&self, request_id: &str, item: PollItem) -> bool {
        let mut st = self.lock();
        let State {
            registrations,
            pending,
            ..
        } = &mut *st;
        let Some(p) = pending
            .get_mut(request_id)
            .filter(|p| p.stage == Stage::HandedOver)
        else {
            return false;
        };
        let Some(reg) = registrations
            .get_mut(&p.registration)
            .filter(|r| r.generation == p.generation)
        else {
            return false;
        };
        p.stage = Stage::Queued;
        reg.in_flight = reg.in_flight.saturating_sub(1);
        reg.queue.push_front(QueueEntry {
            pending: Some(request_id.to_owned()),
            item: Arc::new(item),
        });
        reg.notify.notify_one();
        info!(request = %request_id, "request requeued: the poll that took it was relayed by a lost instance");
        true
    }

    /// Which of `request_ids` are still pending here.
    pub fn still_pending<'a>(&self, request_ids: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
        let st = self.lock();
        request_ids
            .filter(|id| st.pending.contains_key(*id))
            .collect()
    }

    /// Whether `session_id` is a live registration here.
    pub fn knows(&self, session_id: &str) -> bool {
        self.lock().registrations.contains_key(session_id)
    }

    /// The names of the pools with live members (`""` is the default pool).
    pub fn pool_names(&self) -> Vec<String> {
        self.lock()
            .pools
            .iter()
            .filter(|(_, p)| !p.members.is_empty())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Every live registration as the cluster's directory records it.
    pub fn registration_records(&self) -> Vec<RegistrationRecord> {
        self.lock()
            .registrations
            .values()
            .map(RegistrationRecord::of)
            .collect()
    }

    /// The registration `session_id` as the cluster's directory records it.
    pub fn registration_record(&self, session_id: &str) -> Option<RegistrationRecord> {
        self.lock()
            .registrations
            .get(session_id)
            .map(RegistrationRecord::of)
    }
}

impl RegistrationRecord {
    fn of(r: &Registration) -> Self {
        RegistrationRecord {
            session_id: r.id.clone(),
            pool: r.pool.clone(),
            capabilities: r.capabilities.clone(),
            owner: r.owner,
        }
    }
}
