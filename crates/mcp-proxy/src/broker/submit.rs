//! A client's messages on their way to a pool: picking the registration, queueing the item,
//! recording the pending request, and the SSE stream a Streamable HTTP request answers on.

use super::*;

impl Broker {
    /// Routes a client message; returns the waiter for a request, `None` for a notification.
    pub fn submit(&self, sub: Submission) -> Result<Option<Waiter>, Error> {
        let mut st = self.lock();
        if st.shutting_down {
            return Err(Error::ShuttingDown);
        }
        let client_id = Message::parse(sub.message.get().as_bytes())
            .ok()
            .and_then(|m| m.id().cloned());
        let expects_answer = sub.expects_answer;
        let (waiter, rx) = if expects_answer {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let request_id = st.enqueue(sub, client_id, waiter, &self.inner.config)?;
        Ok(rx.map(|rx| Waiter {
            broker: self.clone(),
            request_id,
            rx,
        }))
    }

    /// Routes a client request whose answer is streamed as SSE (`/mcp`): its interim messages
    /// and final answer go to a new stream, and the returned connection is attached to it.
    pub fn submit_streamed(
        &self,
        sub: Submission,
        client_id: RequestId,
    ) -> Result<Attached, Error> {
        let mut st = self.lock();
        if st.shutting_down {
            return Err(Error::ShuttingDown);
        }
        st.next_conn += 1;
        let n = st.next_conn;
        // The stream is created right after the request is queued, under the same lock, so
        // nothing can answer before it exists.
        let stream = match &sub.client_session {
            Some(cs) => StreamRef {
                session: Some(cs.clone()),
                name: String::new(),
            },
            None => StreamRef {
                session: None,
                name: format!("l{n}"),
            },
        };
        let stateless = sub.stateless_era;
        let client_session = sub.client_session.clone();
        let request_id = st.enqueue(sub, Some(client_id), None, &self.inner.config)?;
        let mut stream = stream;
        let state = match &client_session {
            Some(cs) => {
                let session = st.sessions.get_mut(cs).expect("checked by enqueue");
                stream.name = session.new_request_stream(&request_id);
                session.last_seen = Instant::now();
                session.streams.get_mut(&stream.name).expect("just created")
            }
            None => {
                let mut state = StreamState::new(&stream.name, sessions::REQUEST_STREAM_LOG);
                state.request = Some(request_id.clone());
                st.loose.entry(stream.name.clone()).or_insert(state)
            }
        };
        state.cancel_on_close = stateless;
        let (initial, rx) = state.attach(n, None);
        if let Some(p) = st.pending.get_mut(&request_id) {
            p.stream = Some(stream.clone());
        }
        Ok(Attached {
            broker: self.clone(),
            stream,
            conn: n,
            initial,
            rx,
        })
    }
}

impl State {
    /// Routes a message to its registration and queues it; records the pending entry.
    pub(super) fn enqueue(
        &mut self,
        sub: Submission,
        client_id: Option<RequestId>,
        waiter: Option<oneshot::Sender<Outcome>>,
        config: &Config,
    ) -> Result<String, Error> {
        let target = match &sub.client_session {
            Some(cs) => {
                let session = self.live_session(&sub.pool, cs)?;
                session.last_seen = Instant::now();
                session.registration.clone()
            }
            None => {
                let State {
                    pools,
                    registrations,
                    ..
                } = &mut *self;
                let pool = pools
                    .get_mut(&sub.pool)
                    .ok_or_else(|| pool_error(&sub.pool))?;
                let speaks = |m: &String| {
                    registrations
                        .get(m)
                        .is_some_and(|r| r.speaks(STATELESS_ERA))
                };
                if sub.stateless_era && !pool.members.iter().any(speaks) {
                    return Err(Error::UnsupportedProtocolVersion);
                }
                let sticky = pool
                    .sticky_member(registrations)
                    .ok_or_else(|| pool_error(&sub.pool))?;
                if sub.stateless_era && !speaks(&sticky) {
                    // A mixed pool: a stateless request goes to a member that speaks its era
                    // (the least loaded, healthy ones first), leaving stickiness alone.
                    let pick = pool.members.iter().filter(|m| speaks(m)).min_by_key(|m| {
                        registrations
                            .get(*m)
                            .map_or((true, usize::MAX), |r| (r.is_suspect(), r.outstanding))
                    });
                    pick.cloned().ok_or_else(|| pool_error(&sub.pool))?
                } else {
                    sticky
                }
            }
        };
        let reg = self.registrations.get(&target).expect("checked above");
        if sub.client_session.is_some() && sub.stateless_era && !reg.speaks(STATELESS_ERA) {
            return Err(Error::UnsupportedProtocolVersion);
        }
        if reg.outstanding >= config.max_pending_per_registration {
            return Err(Error::QueueFull);
        }
        let (member, channel) = (reg.generation, reg.channel.is_some());
        let request_id = self.queue_request(
            &target,
            sub.message,
            sub.client_session.clone(),
            sub.headers,
            sub.identity,
        );
        tracing::Span::current().record("request_id", request_id.as_str());
        crate::audit::note_routed(&request_id, member, channel);
        let p = self.pending.get_mut(&request_id).expect("just queued");
        p.waiter = waiter;
        p.client_id = client_id;
        p.streamable = sub.streamable;
        p.cancel_on_abandon = sub.stateless_era;
        p.deadline = Instant::now() + config.request_timeout;
        Ok(request_id)
    }

    /// Queues a request item for `target` (live) with a pending entry nobody waits on yet.
    pub(super) fn queue_request(
        &mut self,
        target: &str,
        message: Box<RawValue>,
        client_session: Option<String>,
        headers: BTreeMap<String, String>,
        identity: Option<Arc<Identity>>,
    ) -> String {
        let request_id = new_request_id();
        let reg = self.registrations.get_mut(target).expect("a live target");
        let modern = reg.is_modern();
        let item = RequestItem {
            request_id: request_id.clone(),
            request: message,
            client_session: client_session
                .clone()
                .filter(|_| reg.takes_client_sessions()),
            headers: (modern && !headers.is_empty()).then_some(headers),
            identity: identity.filter(|_| modern).map(|i| Identity::clone(&i)),
        };
        reg.queue.push_back(QueueEntry {
            pending: Some(request_id.clone()),
            item: Arc::new(PollItem::Request(item)),
        });
        reg.outstanding += 1;
        reg.notify.notify_one();
        let generation = reg.generation;
        debug!(request = %request_id, session = %Short(target), "queued");
        self.pending.insert(
            request_id.clone(),
            Pending {
                registration: target.to_owned(),
                generation,
                stage: Stage::Queued,
                waiter: None,
                stream: None,
                client_id: None,
                streamable: false,
                cancel_on_abandon: false,
                client_session,
                // `enqueue` sets the request timeout; a cancellation the proxy sends on its own
                // is forgotten after this if the server never acknowledges it.
                deadline: Instant::now() + pending::ANSWERED_MEMORY,
            },
        );
        request_id
    }

    /// Queues a `reply` item (a client's answer to a server request) for a registration.
    pub(super) fn queue_reply(
        &mut self,
        registration: &str,
        request_id: String,
        client_session: Option<String>,
        message: Box<RawValue>,
    ) {
        let Some(reg) = self.registrations.get_mut(registration) else {
            return;
        };
        if !reg.is_modern() {
            return; // legacy registrations never get reply items
        }
        let item = PollItem::Reply(ReplyItem {
            request_id,
            client_session: client_session.filter(|_| reg.takes_client_sessions()),
            message,
        });
        reg.queue.push_back(QueueEntry {
            pending: None,
            item: Arc::new(item),
        });
        reg.notify.notify_one();
    }

    /// Sends `message` (from a server, tied to `request_id`) on a stream that has not ended.
    /// A request to the client is tracked so its answer finds its way back. `false` when the
    /// stream is gone or ended, or a request cannot be answered there (a loose stream).
    pub(super) fn push_to_stream(
        &mut self,
        stream: &StreamRef,
        request_id: &str,
        server_request: Option<&RequestId>,
        message: &RawValue,
    ) -> bool {
        match &stream.session {
            Some(cs) => {
                let Some(session) = self.sessions.get_mut(cs) else {
                    return false;
                };
                if !matches!(session.streams.get(&stream.name), Some(s) if !s.done) {
                    return false;
                }
                let data = match server_request {
                    Some(id) => session.track_outbound(request_id, id, message),
                    None => message.get().to_owned(),
                };
                if let Some(state) = session.streams.get_mut(&stream.name) {
                    state.push(data);
                }
                session.trim_replay(self.replay_budget);
                true
            }
            None => match self.loose.get_mut(&stream.name) {
                Some(state) if !state.done && server_request.is_none() => {
                    state.push(message.get().to_owned());
                    true
                }
                _ => false,
            },
        }
    }
}
