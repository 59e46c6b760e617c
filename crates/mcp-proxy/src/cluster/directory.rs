//! The directory in Redis: which instance is home to each pool (`pool:{name}`), to each
//! registration (`reg:{id}`) and client session (`sess:{id}`), with what a new home needs to
//! take them over; the lookups (cached while their instance lives), the records, the
//! takeovers, and the periodic refresh that keeps entries alive and writes them back after
//! Redis forgot them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mcp_protocol::wire::SessionIdKind;
use tracing::{debug, warn};

use super::relay::Permit;
use super::{lock, redis_error, Cluster, Target};
use crate::auth::TokenId;
use crate::broker::{Broker, RegistrationRecord, SessionRecord, Short};
use crate::Error;

/// Registration directory entries outlive a silent home by this much; the home refreshes
/// them every [`DIRECTORY_REFRESH`]. A stale entry is harmless: its instance is dead, or
/// it answers for the id like a single instance would.
const DIRECTORY_TTL: Duration = Duration::from_secs(600);
pub(super) const DIRECTORY_REFRESH: Duration = Duration::from_secs(120);
/// The home cache is cleared past this many entries (lookups then go to Redis again).
const HOME_CACHE_MAX: usize = 100_000;

/// The pool's home, taking the pool over when asked to (`ARGV[3] == "1"`) and the home is
/// missing or dead. One script, so two instances racing to take a pool agree on the winner.
pub(super) const HOME_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and redis.call('EXISTS', ARGV[2] .. cur) == 1 then return cur end
if ARGV[3] ~= '1' then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
return ARGV[1]
"#;

/// Writes a directory entry (a registration or a client session) naming `ARGV[1]` its home,
/// unless another live instance already is: `1` written, `0` held elsewhere. After a
/// partition or a Redis restart this is what keeps two instances from both claiming one.
pub(super) const ENTRY_SCRIPT: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'home')
if cur and cur ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. cur) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'home', ARGV[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// Deletes a directory entry only while it still names `ARGV[1]` as its home.
pub(super) const FORGET_SCRIPT: &str = r#"
if redis.call('HGET', KEYS[1], 'home') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

impl Cluster {
    fn target(&self, home: String) -> Target {
        if home == self.inner.id {
            Target::Local
        } else {
            Target::Remote(home)
        }
    }

    fn cached_home(&self, key: &str) -> Option<String> {
        let fenced = lock(&self.inner.last_beat).elapsed() > self.inner.heartbeat.ttl();
        if fenced {
            // Cut off from Redis for longer than others wait: whatever this instance
            // believed about homes may be stale, so every route asks Redis (and gets 503
            // while it cannot) rather than serving a pool another instance now holds.
            return None;
        }
        let home = lock(&self.inner.homes).get(key).cloned()?;
        // Only homes alive at the last beat count; others are asked again.
        lock(&self.inner.alive).contains(&home).then_some(home)
    }

    fn cache_home(&self, key: String, home: &str) {
        let mut homes = lock(&self.inner.homes);
        if homes.len() >= HOME_CACHE_MAX {
            homes.clear();
        }
        homes.insert(key, home.to_owned());
    }

    /// The home of `pool`. With `claim`, a pool without a live home becomes this instance's
    /// (a server registering, or a legacy id being re-adopted); without, it is served here,
    /// which answers as a single instance would (no server).
    pub(crate) async fn pool_home(&self, pool: &str, claim: bool) -> Result<Target, Error> {
        let cache_key = format!("p:{pool}");
        if let Some(home) = self.cached_home(&cache_key) {
            return Ok(self.target(home));
        }
        let home: Option<String> = self
            .inner
            .scripts
            .home
            .key(self.key(&format!("pool:{pool}")))
            .arg(&self.inner.id)
            .arg(self.key("inst:"))
            .arg(if claim { "1" } else { "0" })
            .arg(DIRECTORY_TTL.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| redis_error("pool lookup", e))?;
        match home {
            Some(home) => {
                if home == self.inner.id && claim {
                    debug!(pool, "this instance is the pool's home");
                }
                self.cache_home(cache_key, &home);
                Ok(self.target(home))
            }
            None => Ok(Target::Local),
        }
    }

    /// The home of registration `session_id`. A registration whose home was lost is
    /// served by its pool's home (taking the pool over if need be), which adopts it
    /// ([`Cluster::adopt_orphan`]); an unrecorded id of the legacy form by the default pool's
    /// home (re-adoption, as after a restart); any other unknown id here (404).
    ///
    /// Only a caller whose token reaches the pool (`permit`) makes this instance claim it;
    /// any other is served here, where the route refuses it.
    pub(super) async fn registration_home(
        &self,
        session_id: &str,
        permit: &Permit<'_>,
    ) -> Result<Target, Error> {
        let cache_key = format!("r:{session_id}");
        if let Some(home) = self.cached_home(&cache_key) {
            return Ok(self.target(home));
        }
        let kind = SessionIdKind::of(session_id);
        if kind.is_some() {
            let (home, pool): (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg(self.key(&format!("reg:{session_id}")))
                .arg("home")
                .arg("pool")
                .query_async(&mut self.conn())
                .await
                .map_err(|e| redis_error("registration lookup", e))?;
            if let Some(home) = home {
                if self.is_alive(&home).await? {
                    self.cache_home(cache_key, &home);
                    return Ok(self.target(home));
                }
                let pool = pool.unwrap_or_default();
                if !permit.allows(&pool) {
                    return Ok(Target::Local);
                }
                return self.pool_home(&pool, true).await;
            }
        }
        match kind {
            Some(SessionIdKind::Legacy) if permit.allows("") => self.pool_home("", true).await,
            _ => Ok(Target::Local),
        }
    }

    /// Records a registration (with what another instance needs to take it over) as living
    /// here, before its id is handed out.
    pub(crate) async fn record_registration(
        &self,
        record: &RegistrationRecord,
    ) -> Result<(), Error> {
        let mut pipe = redis::pipe();
        self.registration_entry(&mut pipe, record);
        self.write_entries(pipe).await?;
        self.note_recorded(format!("reg:{}", record.session_id));
        Ok(())
    }

    /// The command that writes `record`'s directory entry, naming this instance its home
    /// unless another live instance is (see `ENTRY_SCRIPT`).
    fn registration_entry(&self, pipe: &mut redis::Pipeline, record: &RegistrationRecord) {
        let capabilities = match &record.capabilities {
            Some(c) => serde_json::to_string(c).expect("capabilities serialize"),
            None => String::new(),
        };
        let owner = record
            .owner
            .as_ref()
            .map(TokenId::digest_hex)
            .unwrap_or_default();
        self.entry(
            pipe,
            &format!("reg:{}", record.session_id),
            &[
                ("pool", record.pool.as_str()),
                ("caps", &capabilities),
                ("owner", &owner),
            ],
        );
    }

    /// Remembers an entry this instance wrote, so the refresh removes it once it ends here.
    fn note_recorded(&self, what: String) {
        lock(&self.inner.recorded).insert(what);
    }

    /// One `ENTRY_SCRIPT` call for `what` with these fields.
    fn entry(&self, pipe: &mut redis::Pipeline, what: &str, fields: &[(&str, &str)]) {
        let cmd = pipe
            .cmd("EVALSHA")
            .arg(self.inner.scripts.entry.get_hash())
            .arg(1)
            .arg(self.key(what))
            .arg(&self.inner.id)
            .arg(self.key("inst:"))
            .arg(DIRECTORY_TTL.as_millis() as u64);
        for (field, value) in fields {
            cmd.arg(*field).arg(*value);
        }
    }

    /// Runs `pipe` (entry writes) after loading the entry script; one `1`/`0` per entry.
    async fn write_entries(&self, pipe: redis::Pipeline) -> Result<Vec<i64>, Error> {
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(ENTRY_SCRIPT)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(|e| redis_error("directory", e))?;
        pipe.query_async(&mut self.conn())
            .await
            .map_err(|e| redis_error("directory", e))
    }

    /// Forgets registration `session_id` (it deregistered): no instance may take it over.
    pub(crate) async fn forget_registration(&self, session_id: &str) {
        lock(&self.inner.homes).remove(&format!("r:{session_id}"));
        let result: Result<(), _> = redis::cmd("DEL")
            .arg(self.key(&format!("reg:{session_id}")))
            .query_async(&mut self.conn())
            .await;
        if let Err(e) = result {
            warn!(error = %e, "could not remove a registration from the cluster directory");
        }
    }

    /// Before a registration route is served here: when `session_id` is unknown to `broker`
    /// but recorded for an instance that is lost, take it over with its recorded pool,
    /// capabilities and owner, so its server carries on without registering again. Only the
    /// pool's home gets here for it (see [`Cluster::registration_home`]), so one instance
    /// adopts it.
    ///
    /// Nothing is taken over for a caller whose token does not reach its pool (`permit`).
    pub(super) async fn adopt_orphan(
        &self,
        broker: &Broker,
        session_id: &str,
        permit: &Permit<'_>,
    ) {
        if SessionIdKind::of(session_id).is_none() || broker.knows(session_id) {
            return;
        }
        let key = self.key(&format!("reg:{session_id}"));
        let record: Result<HashMap<String, String>, _> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut self.conn())
            .await;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cluster directory unavailable; registration not taken over");
                return;
            }
        };
        let Some(home) = record.get("home") else {
            return;
        };
        // Recorded here but unknown: it left or died here; not ours to bring back.
        if *home == self.inner.id || self.is_alive(home).await.unwrap_or(true) {
            return;
        }
        let capabilities = match record.get("caps").map(String::as_str) {
            None | Some("") => None,
            Some(json) => match serde_json::from_str(json) {
                Ok(c) => Some(c),
                Err(_) => return,
            },
        };
        let owner = match record.get("owner").map(String::as_str) {
            None | Some("") => None,
            Some(hex) => match TokenId::from_digest_hex(hex) {
                Some(id) => Some(id),
                None => return,
            },
        };
        let pool = record.get("pool").cloned().unwrap_or_default();
        // Only the pool's home takes its registrations over (claiming the pool if nobody
        // holds it), so one instance has each.
        if !permit.allows(&pool) || self.pool_home(&pool, true).await.ok() != Some(Target::Local) {
            return;
        }
        if broker.adopt(session_id, &pool, capabilities.clone(), owner) {
            let record = RegistrationRecord {
                session_id: session_id.to_owned(),
                pool,
                capabilities,
                owner,
            };
            if let Err(e) = self.record_registration(&record).await {
                warn!(error = %e, "could not record a registration taken over");
            }
        }
    }

    /// Records client session `record` (just opened here), so the pool's next home can take
    /// it over, with its owner, if this instance is lost.
    pub(crate) async fn record_session(&self, record: &SessionRecord) {
        let mut pipe = redis::pipe();
        self.session_entry(&mut pipe, record);
        match self.write_entries(pipe).await {
            Ok(_) => self.note_recorded(format!("sess:{}", record.client_session)),
            Err(e) => {
                warn!(error = %e, "could not record a client session in the cluster directory")
            }
        }
    }

    /// The command that writes a client session's directory entry (see `ENTRY_SCRIPT`).
    fn session_entry(&self, pipe: &mut redis::Pipeline, record: &SessionRecord) {
        let owner = record
            .owner
            .as_ref()
            .map(TokenId::digest_hex)
            .unwrap_or_default();
        self.entry(
            pipe,
            &format!("sess:{}", record.client_session),
            &[
                ("pool", record.pool.as_str()),
                ("registration", record.registration.as_str()),
                ("owner", &owner),
            ],
        );
    }

    /// Forgets client session `client_session` (the client ended it).
    pub(crate) async fn forget_session(&self, client_session: &str) {
        let result: Result<(), _> = redis::cmd("DEL")
            .arg(self.key(&format!("sess:{client_session}")))
            .query_async(&mut self.conn())
            .await;
        if let Err(e) = result {
            warn!(error = %e, "could not remove a client session from the cluster directory");
        }
    }

    /// Before a client route of `pool` is served here with `client_session`: when the
    /// session is unknown to `broker` but recorded for a lost instance, take it (and its
    /// registration) over, so the client carries on without initializing again.
    ///
    /// Nothing is taken over for a caller whose token does not reach `pool` (`permit`).
    pub(super) async fn adopt_session(
        &self,
        broker: &Broker,
        pool: &str,
        client_session: &str,
        permit: &Permit<'_>,
    ) {
        if broker.session_registration(client_session).is_some() {
            return;
        }
        let key = self.key(&format!("sess:{client_session}"));
        let record: HashMap<String, String> = match redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut self.conn())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cluster directory unavailable; client session not taken over");
                return;
            }
        };
        let (Some(home), Some(recorded_pool), Some(registration)) = (
            record.get("home"),
            record.get("pool"),
            record.get("registration"),
        ) else {
            return;
        };
        if *home == self.inner.id
            || recorded_pool != pool
            || self.is_alive(home).await.unwrap_or(true)
        {
            return;
        }
        // Only the pool's home takes its sessions over (claiming the pool if nobody holds
        // it): two instances adopting one session would split its client from its server.
        if !permit.allows(pool) || self.pool_home(pool, true).await.ok() != Some(Target::Local) {
            return;
        }
        self.adopt_orphan(broker, registration, permit).await;
        // Bound to whoever opened it, as before: the route then refuses anyone else.
        let owner = record
            .get("owner")
            .and_then(|hex| TokenId::from_digest_hex(hex));
        if broker.adopt_session(client_session, pool, registration, owner) {
            if let Some(record) = broker.session_record(client_session) {
                self.record_session(&record).await;
            }
        }
    }

    /// Refreshes the directory entries of the registrations and client sessions homed here
    /// (and records re-adopted legacy ids, which have no entry yet), and the homes of the
    /// pools with members here, claiming those with no home recorded (Redis forgot them). A
    /// pool without members anywhere is forgotten after `DIRECTORY_TTL`.
    pub(super) async fn refresh_directory(&self, broker: &Broker) -> Result<(), Error> {
        // Pools: claim (or keep) each pool with members here. One that another live instance
        // holds now (it took the pool over while this one was cut off from Redis) is not
        // ours any more: its members here are dropped, and their servers, told 404, register
        // again with the pool's home.
        let registrations = broker.registration_records();
        for pool in broker.pool_names() {
            if self.pool_home(&pool, true).await? != Target::Local {
                warn!(
                    pool,
                    "another instance took this pool over; dropping its members here"
                );
                for record in registrations.iter().filter(|r| r.pool == pool) {
                    let _ = broker.deregister(&record.session_id);
                }
            } else {
                let _: Result<(), _> = redis::cmd("PEXPIRE")
                    .arg(self.key(&format!("pool:{pool}")))
                    .arg(DIRECTORY_TTL.as_millis() as u64)
                    .query_async(&mut self.conn())
                    .await;
            }
        }
        // Whole entries, not just their expiry: after Redis lost its data they are written
        // back with everything a takeover needs. An entry another live instance holds is
        // dropped here likewise.
        let registrations: Vec<RegistrationRecord> = registrations
            .into_iter()
            .filter(|r| broker.knows(&r.session_id))
            .collect();
        for chunk in registrations.chunks(500) {
            let mut pipe = redis::pipe();
            for record in chunk {
                self.registration_entry(&mut pipe, record);
            }
            for (record, written) in chunk.iter().zip(self.write_entries(pipe).await?) {
                if written == 0 {
                    warn!(session = %Short(&record.session_id), "another instance took this registration over; dropping it here");
                    let _ = broker.deregister(&record.session_id);
                }
            }
        }
        let sessions = broker.session_records();
        for chunk in sessions.chunks(500) {
            let mut pipe = redis::pipe();
            for record in chunk {
                self.session_entry(&mut pipe, record);
            }
            for (record, written) in chunk.iter().zip(self.write_entries(pipe).await?) {
                if written == 0 {
                    broker.forget_session(&record.client_session);
                }
            }
        }
        // Entries of registrations that died or expired here, and of sessions that ended,
        // since the last refresh: removed, so no instance takes them over later.
        let current: HashSet<String> = registrations
            .iter()
            .map(|r| format!("reg:{}", r.session_id))
            .chain(
                sessions
                    .iter()
                    .map(|r| format!("sess:{}", r.client_session)),
            )
            .collect();
        let ended: Vec<String> = {
            let mut recorded = lock(&self.inner.recorded);
            let ended = recorded.difference(&current).cloned().collect();
            *recorded = current;
            ended
        };
        for what in ended {
            let _: Result<i64, _> = self
                .inner
                .scripts
                .forget
                .key(self.key(&what))
                .arg(&self.inner.id)
                .invoke_async(&mut self.conn())
                .await;
        }
        Ok(())
    }
}
