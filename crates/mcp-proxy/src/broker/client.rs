//! What a client of `/mcp` does with its session: open it (within the quotas), check it, open
//! and attach streams, reply to a server's request, end or abandon it; and the bookkeeping of
//! sessions beside the maps.

use super::*;

impl Broker {
    /// Starts a client session in `pool` on its least loaded member; returns the session id.
    pub fn open_session(&self, pool: &str) -> Result<String, Error> {
        self.open_session_for(pool, Requester::default())
    }

    /// [`Broker::open_session`] for `who`, within its quota of sessions (429 above it).
    pub fn open_session_for(&self, pool: &str, who: Requester) -> Result<String, Error> {
        let mut st = self.lock();
        if st.shutting_down {
            return Err(Error::ShuttingDown);
        }
        let cfg = &self.inner.config;
        let holder = who.holder();
        if let Some(h) = &holder {
            if st.session_holders.of(h) >= cfg.max_sessions_per_caller {
                info!(
                    max = cfg.max_sessions_per_caller,
                    "client session refused: --max-sessions-per-caller reached"
                );
                return Err(Error::RateLimited(
                    "too many client sessions for this caller",
                ));
            }
        }
        if st.sessions.len() >= cfg.max_sessions {
            // `info`, not `warn`: a flood of initializes must not flood the log at warn.
            info!(
                max = cfg.max_sessions,
                "client session refused: --max-sessions reached"
            );
            return Err(Error::TooManySessions);
        }
        let State {
            pools,
            registrations,
            sessions_per_registration,
            ..
        } = &mut *st;
        let pool_ref = pools.get(pool).ok_or_else(|| pool_error(pool))?;
        if pool_ref.members.is_empty() {
            return Err(pool_error(pool));
        }
        let member = pool_ref
            .least_loaded_for_session(
                registrations,
                sessions_per_registration,
                cfg.max_sessions_per_registration,
            )
            .ok_or_else(|| {
                info!(
                    pool,
                    max = cfg.max_sessions_per_registration,
                    "client session refused: every member has --max-sessions-per-registration"
                );
                Error::TooManySessions
            })?
            .clone();
        let generation = registrations[&member].generation;
        let id = new_client_session_id();
        let mut session =
            ClientSession::new(member.clone(), pool.to_owned(), generation, Instant::now());
        session.holder = holder;
        session.owner = who.token;
        st.insert_session(id.clone(), session);
        debug!(client_session = %Short(&id), session = %Short(&member), "client session opened");
        Ok(id)
    }

    /// Refuses `caller` on a client session another caller opened, as if the session did not
    /// exist (404 -32001: its existence is not revealed). A session opened without
    /// credentials, or unknown here, passes: the route's own lookup answers for it.
    pub fn check_session_owner(
        &self,
        client_session: &str,
        caller: Option<TokenId>,
    ) -> Result<(), Error> {
        let st = self.lock();
        match st.sessions.get(client_session).and_then(|s| s.owner) {
            Some(owner) if Some(owner) != caller => {
                info!(client_session = %Short(client_session), "refused: a client session used by a caller other than the one that opened it");
                Err(Error::UnknownClientSession)
            }
            _ => Ok(()),
        }
    }

    /// Whether the client session exists in `pool` and its registration lives (touching it).
    pub fn check_session(&self, pool: &str, client_session: &str) -> Result<(), Error> {
        let mut st = self.lock();
        st.live_session(pool, client_session)?.last_seen = Instant::now();
        Ok(())
    }

    /// Opens a session's GET stream, or resumes the stream named by `last_event_id`.
    ///
    /// Resuming replays what came after that event, then stays attached while the stream
    /// lives. An id on the GET stream whose events were partly forgotten starts a fresh GET
    /// stream; any other id this session cannot replay is [`Error::CannotResume`].
    pub fn open_stream(
        &self,
        pool: &str,
        client_session: &str,
        last_event_id: Option<&str>,
    ) -> Result<Attached, Error> {
        let mut st = self.lock();
        if st.shutting_down {
            return Err(Error::ShuttingDown);
        }
        st.next_conn += 1;
        let conn = st.next_conn;
        let session = st.live_session(pool, client_session)?;
        session.last_seen = Instant::now();
        let (name, after) = match last_event_id {
            None => (GET_STREAM.to_owned(), None),
            Some(text) => {
                let id = EventId::parse(text).ok_or(Error::CannotResume)?;
                let stream = session.streams.get(&id.stream).ok_or(Error::CannotResume)?;
                if stream.log.replay_after(id.seq).is_some() {
                    (id.stream, Some(id.seq))
                } else if id.stream == GET_STREAM {
                    (id.stream, None)
                } else {
                    return Err(Error::CannotResume);
                }
            }
        };
        let stream = session.streams.get_mut(&name).expect("looked up above");
        let (initial, rx) = stream.attach(conn, after);
        Ok(Attached {
            broker: self.clone(),
            stream: StreamRef {
                session: Some(client_session.to_owned()),
                name,
            },
            conn,
            initial,
            rx,
        })
    }

    /// Takes a client's answer to a server-to-client request and queues it as a `reply` item
    /// for the registration that asked. `Ok(false)`: nobody asked (unknown or late id).
    pub fn client_reply(
        &self,
        pool: &str,
        client_session: &str,
        message: Box<RawValue>,
        id: Option<&RequestId>,
    ) -> Result<bool, Error> {
        let mut st = self.lock();
        let session = st.live_session(pool, client_session)?;
        session.last_seen = Instant::now();
        let Some(out) = id.and_then(|id| session.take_outbound(&id_text(id))) else {
            debug!(client_session = %Short(client_session), "client answer for no pending server request dropped");
            return Ok(false);
        };
        let registration = session.registration.clone();
        let message = match out.original_id {
            Some(original) => match serde_json::from_str::<Map<String, Value>>(message.get()) {
                Ok(mut obj) => {
                    obj.insert("id".into(), original);
                    to_raw(&obj)
                }
                Err(_) => message,
            },
            None => message,
        };
        st.queue_reply(
            &registration,
            out.request_id,
            Some(client_session.to_owned()),
            message,
        );
        Ok(true)
    }

    /// Ends a client session (`DELETE`): its streams close and its server gets a
    /// `session_closed` item.
    pub fn end_session(&self, pool: &str, client_session: &str) -> Result<(), Error> {
        let mut st = self.lock();
        st.live_session(pool, client_session)?;
        st.close_session(client_session, true, "ended by the client");
        Ok(())
    }

    /// Forgets a client session without telling its server (the server forgot it first, or
    /// its `initialize` failed).
    pub fn forget_session(&self, client_session: &str) {
        self.lock()
            .close_session(client_session, false, "forgotten by its server");
    }

    /// Ends a client session whose `initialize` the client abandoned before its answer: the
    /// client never learnt it, so it is not kept for the idle time (its server is told).
    pub fn abandon_session(&self, client_session: &str) {
        self.lock()
            .close_session(client_session, true, "its initialize was abandoned");
    }

    /// Detaches a connection from its stream (called by [`Attached`]'s drop). Under the
    /// stateless era, closing a request's stream cancels the request.
    pub(super) fn detach(&self, stream: &StreamRef, conn: u64) {
        let mut st = self.lock();
        let now = Instant::now();
        let state = match &stream.session {
            Some(cs) => st.sessions.get_mut(cs).and_then(|s| {
                s.last_seen = now;
                s.streams.get_mut(&stream.name)
            }),
            None => st.loose.get_mut(&stream.name),
        };
        let Some(state) = state else { return };
        if state.live.as_ref().is_none_or(|(c, _)| *c != conn) {
            return; // finished, or taken over by a newer connection
        }
        state.live = None;
        let cancel = (state.cancel_on_close && !state.done)
            .then(|| state.request.clone())
            .flatten();
        if stream.session.is_none() {
            st.loose.remove(&stream.name);
        }
        if let Some(request_id) = cancel {
            debug!(request = %request_id, "stateless-era stream closed by the client: cancelling");
            st.withdraw(&request_id);
        }
    }
}

impl State {
    /// Whether a connection is attached to the stream.
    pub(super) fn stream_is_attached(&self, stream: &StreamRef) -> bool {
        stream
            .session
            .as_ref()
            .and_then(|cs| self.sessions.get(cs))
            .and_then(|s| s.streams.get(&stream.name))
            .is_some_and(|s| s.live.is_some())
    }

    /// The client session, if it exists, belongs to `pool` (the pool the route addresses) and
    /// its registration lives; a session whose registration is gone is removed (404 for the
    /// client). A session of another pool is answered as an unknown one: the route's token
    /// check covered `pool` only, and the answer must not tell that the id exists elsewhere.
    pub(super) fn live_session(
        &mut self,
        pool: &str,
        client_session: &str,
    ) -> Result<&mut ClientSession, Error> {
        let alive = match self.sessions.get(client_session) {
            None => return Err(Error::UnknownClientSession),
            Some(s) if s.pool != pool => return Err(Error::UnknownClientSession),
            Some(s) => self
                .registrations
                .get(&s.registration)
                .is_some_and(|r| r.generation == s.generation),
        };
        if !alive {
            self.remove_session(client_session);
            return Err(Error::UnknownClientSession);
        }
        Ok(self
            .sessions
            .get_mut(client_session)
            .expect("present above"))
    }

    /// Adds a client session, counting it for its registration.
    pub(super) fn insert_session(&mut self, id: String, session: ClientSession) {
        self.session_holders.add(session.holder);
        *self
            .sessions_per_registration
            .entry(session.registration.clone())
            .or_default() += 1;
        self.sessions.insert(id, session);
    }

    /// Removes a client session, uncounting it.
    pub(super) fn remove_session(&mut self, id: &str) -> Option<ClientSession> {
        let session = self.sessions.remove(id)?;
        self.session_holders.remove(session.holder);
        if let Some(n) = self
            .sessions_per_registration
            .get_mut(&session.registration)
        {
            *n -= 1;
            if *n == 0 {
                self.sessions_per_registration.remove(&session.registration);
            }
        }
        Some(session)
    }

    /// Ends a client session: its streams close; with `notify`, its server gets a
    /// `session_closed` item (when it takes client sessions).
    pub(super) fn close_session(&mut self, client_session: &str, notify: bool, why: &'static str) {
        let Some(session) = self.remove_session(client_session) else {
            return;
        };
        debug!(client_session = %Short(client_session), why, "client session ended");
        if !notify {
            return;
        }
        if let Some(reg) = self
            .registrations
            .get_mut(&session.registration)
            .filter(|r| r.generation == session.generation && r.takes_client_sessions())
        {
            reg.queue.push_back(QueueEntry {
                pending: None,
                item: Arc::new(PollItem::SessionClosed(SessionClosedItem {
                    client_session: client_session.to_owned(),
                })),
            });
            reg.notify.notify_one();
        }
    }
}
