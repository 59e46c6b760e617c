//! A server's answers (`POST /response`): final answers, interims and session messages, matched
//! to the pending request they belong to; and what ends a pending request (its answer, its
//! client leaving, its withdrawal).

use super::*;

impl Broker {
    /// Takes a server's `/response`: a final answer, an interim or a session message.
    pub fn respond(
        &self,
        session_id: &str,
        envelope: ResponseEnvelope,
    ) -> Result<ResponseStatusKind, Error> {
        let kind = SessionIdKind::of(session_id).ok_or(Error::UnknownSession)?;
        let now = Instant::now();
        let mut st = self.lock();
        let Some(reg) = st.registrations.get_mut(session_id) else {
            return match kind {
                SessionIdKind::Legacy => {
                    info!(session = %Short(session_id), "answer from an unknown legacy session ignored");
                    Ok(ResponseStatusKind::Ignored)
                }
                SessionIdKind::Modern => Err(Error::UnknownSession),
            };
        };
        reg.last_activity = now;
        let modern = reg.is_modern();
        let generation = reg.generation;
        let refuse = |what: &str| {
            if modern {
                debug!(session = %Short(session_id), "{what} for an unknown request");
                Err(Error::UnknownRequest)
            } else {
                info!(session = %Short(session_id), "{what} for an unknown or late request ignored");
                Ok(ResponseStatusKind::Ignored)
            }
        };
        match envelope {
            ResponseEnvelope::Final {
                request_id,
                response,
            } => {
                tracing::Span::current().record("request_id", request_id.as_str());
                if st.owns(&request_id, session_id, generation) {
                    let pending = st.take_pending(&request_id).expect("owned above");
                    st.answered
                        .insert(request_id.clone(), session_id.to_owned(), now);
                    // The client may have just gone; delivering is then a no-op.
                    st.finish(pending, Ok(response));
                    debug!(request = %request_id, "answered");
                    Ok(ResponseStatusKind::Ok)
                } else if st.answered.contains(&request_id, session_id) {
                    Ok(ResponseStatusKind::Duplicate)
                } else {
                    refuse("final answer")
                }
            }
            ResponseEnvelope::Interim {
                request_id,
                message,
            } => {
                if !modern {
                    return Ok(ResponseStatusKind::Ignored);
                }
                if !st.owns(&request_id, session_id, generation) {
                    return refuse("interim message");
                }
                let pending = st.pending.get(&request_id).expect("owned above");
                let stream = pending.stream.clone();
                let client_session = pending.client_session.clone();
                let streamable = pending.streamable;
                let server_request = match Message::parse(message.get().as_bytes()) {
                    Ok(Message::Request(req)) => Some(req.id),
                    _ => None,
                };
                // Its own stream first, attached or not (a resuming client gets it).
                if let Some(stream) = &stream {
                    if st.push_to_stream(stream, &request_id, server_request.as_ref(), &message) {
                        return Ok(ResponseStatusKind::Ok);
                    }
                }
                let Some(id) = server_request else {
                    // A notification for a client answered as JSON has nowhere to go.
                    return Ok(ResponseStatusKind::Ok);
                };
                // A request to a client answered as JSON may use the session's open GET stream.
                if let Some(cs) = client_session.as_deref() {
                    let get = StreamRef {
                        session: Some(cs.to_owned()),
                        name: GET_STREAM.to_owned(),
                    };
                    if st.stream_is_attached(&get)
                        && st.push_to_stream(&get, &request_id, Some(&id), &message)
                    {
                        return Ok(ResponseStatusKind::Ok);
                    }
                }
                // Nobody can answer it: refuse it at once so the server does not wait for it.
                let why = if streamable {
                    "client cannot take requests: answered as JSON with no GET stream open"
                } else {
                    "client cannot take requests on /message"
                };
                let refusal = RpcResponse::error(
                    Some(id),
                    ErrorObject::new(ErrorCode::METHOD_NOT_FOUND, why),
                );
                st.queue_reply(session_id, request_id, client_session, to_raw(&refusal));
                Ok(ResponseStatusKind::Ok)
            }
            ResponseEnvelope::Session {
                client_session,
                message,
            } => {
                if !modern {
                    return Ok(ResponseStatusKind::Ignored);
                }
                let pinned_here = st
                    .sessions
                    .get(&client_session)
                    .is_some_and(|s| s.registration == session_id && s.generation == generation);
                if !pinned_here {
                    debug!(session = %Short(session_id), "session message for an ended client session ignored");
                    return Ok(ResponseStatusKind::Ignored);
                }
                let server_request = match Message::parse(message.get().as_bytes()) {
                    Ok(Message::Request(req)) => Some(req.id),
                    _ => None,
                };
                let get = StreamRef {
                    session: Some(client_session.clone()),
                    name: GET_STREAM.to_owned(),
                };
                // Logged even with no GET stream open: a later GET with Last-Event-ID sees it.
                // A request's answer comes back as a reply whose request_id is the session id.
                st.push_to_stream(&get, &client_session, server_request.as_ref(), &message);
                Ok(ResponseStatusKind::Ok)
            }
        }
    }

    /// Withdraws a request whose client is gone (called by [`Waiter`]'s drop).
    pub(super) fn abandon(&self, request_id: &str) {
        let mut st = self.lock();
        st.withdraw(request_id);
    }
}

impl State {
    /// Delivers a pending request's outcome: to its waiter, or as the last event of its stream.
    pub(super) fn finish(&mut self, p: Pending, outcome: Outcome) {
        if let Some(tx) = p.waiter {
            let _ = tx.send(outcome);
            return;
        }
        let (Some(stream), Some(client_id)) = (p.stream, p.client_id) else {
            return; // a notification
        };
        let error = |e: Error| {
            let obj = e
                .to_error_object()
                .unwrap_or_else(|| ErrorObject::new(ErrorCode::INTERNAL_ERROR, e.to_string()));
            serde_json::to_string(&RpcResponse::error(Some(client_id.clone()), obj))
                .unwrap_or_default()
        };
        let data = match outcome {
            Ok(answer) => stream_answer(&answer, &client_id).unwrap_or_else(|| {
                warn!("server's final answer is not a JSON-RPC response");
                error(Error::InvalidServerResponse(
                    "not a JSON-RPC response".into(),
                ))
            }),
            Err(e) => error(e),
        };
        match &stream.session {
            Some(cs) => {
                // A pinned request the server answers "unknown session": it forgot the
                // session, so the client's next request gets 404 and it re-initializes.
                let forgotten = serde_json::from_str::<Value>(&data)
                    .is_ok_and(|v| v["error"]["code"] == json!(ErrorCode::UNKNOWN_SESSION.0));
                if let Some(session) = self.sessions.get_mut(cs) {
                    session.last_seen = Instant::now();
                    if let Some(state) = session.streams.get_mut(&stream.name) {
                        state.finish(data);
                    }
                    session.retire(&stream.name);
                    session.trim_replay(self.replay_budget);
                }
                if forgotten {
                    self.close_session(cs, false, "forgotten by its server");
                }
            }
            None => {
                if let Some(mut state) = self.loose.remove(&stream.name) {
                    state.finish(data);
                }
            }
        }
    }

    /// Withdraws a request whose client is gone. A stateless-era request already handed
    /// over is cancelled at the server with `notifications/cancelled`.
    pub(super) fn withdraw(&mut self, request_id: &str) {
        let Some(p) = self.take_pending(request_id) else {
            return;
        };
        let handed_over = p.stage == Stage::HandedOver;
        debug!(request = %request_id, handed_over, "client gone; request withdrawn");
        let (true, true, Some(client_id)) = (handed_over, p.cancel_on_abandon, p.client_id) else {
            return;
        };
        if !self
            .registrations
            .get(&p.registration)
            .is_some_and(|r| r.generation == p.generation && r.is_modern())
        {
            return;
        }
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": client_id, "reason": "the client closed the response stream"}});
        let headers = BTreeMap::from([
            (
                "mcp-method".to_owned(),
                "notifications/cancelled".to_owned(),
            ),
            ("mcp-protocol-version".to_owned(), STATELESS_ERA.to_owned()),
        ]);
        self.queue_request(
            &p.registration,
            to_raw(&cancel),
            p.client_session,
            headers,
            None,
        );
    }

    /// Whether `request_id` is pending on this registration.
    pub(super) fn owns(&self, request_id: &str, session_id: &str, generation: u64) -> bool {
        self.pending
            .get(request_id)
            .is_some_and(|p| p.registration == session_id && p.generation == generation)
    }

    /// Removes a pending entry, keeping its registration's counters and queue in step.
    pub(super) fn take_pending(&mut self, request_id: &str) -> Option<Pending> {
        let p = self.pending.remove(request_id)?;
        if let Some(reg) = self
            .registrations
            .get_mut(&p.registration)
            .filter(|r| r.generation == p.generation)
        {
            reg.outstanding = reg.outstanding.saturating_sub(1);
            match p.stage {
                Stage::HandedOver => reg.in_flight = reg.in_flight.saturating_sub(1),
                Stage::Queued => {
                    reg.queue.remove_pending(request_id);
                }
            }
        }
        Some(p)
    }
}
