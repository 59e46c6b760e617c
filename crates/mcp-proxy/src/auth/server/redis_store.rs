//! The authorization server's state in Redis (`--broker redis://…`, feature `cluster`):
//! every instance of a cluster sees the same keys, clients, codes, refresh families,
//! revocations and consents. Entries are plain keys with a TTL; a take is `GETDEL`; a capped
//! kind keeps an index (a sorted set by expiry) that one script trims, counts and extends,
//! so two instances cannot both take the last place.

use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::ConnectionManager;
use redis::Script;
use tokio::sync::OnceCell;

use super::store::{unix_now, Kind, Put, Store};
use crate::Error;

/// Trim the index of expired entries, refuse a new entry past the cap, write, index it.
const CAPPED_PUT: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[5], KEYS[1])
return 1
"#;

/// The Redis store; connects on first use (reconnecting as the connection manager does).
pub struct RedisStore {
    url: String,
    prefix: String,
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    capped: Script,
}

impl RedisStore {
    /// A store in the Redis at `url`, its keys under `prefix` (the cluster's).
    pub fn new(url: &str, prefix: &str) -> Result<Self, Error> {
        let client = redis::Client::open(url).map_err(|e| Error::InvalidConfig {
            flag: "--broker",
            reason: e.to_string(),
        })?;
        Ok(RedisStore {
            url: crate::config::ClusterConfig::new(url).redacted_url(),
            prefix: format!("{prefix}as:"),
            client,
            conn: OnceCell::new(),
            capped: Script::new(CAPPED_PUT),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, Error> {
        self.conn
            .get_or_try_init(|| async {
                ConnectionManager::new(self.client.clone())
                    .await
                    .map_err(|e| Error::AuthState(format!("Redis: {e}")))
            })
            .await
            .cloned()
    }

    fn key(&self, kind: Kind, key: &str) -> String {
        format!("{}{}:{key}", self.prefix, kind.as_str())
    }
}

fn failed(e: redis::RedisError) -> Error {
    Error::AuthState(format!("Redis: {e}"))
}

impl Store for RedisStore {
    fn get<'a>(&'a self, kind: Kind, key: &'a str) -> BoxFuture<'a, Result<Option<String>, Error>> {
        Box::pin(async move {
            redis::cmd("GET")
                .arg(self.key(kind, key))
                .query_async(&mut self.conn().await?)
                .await
                .map_err(failed)
        })
    }

    fn put<'a>(
        &'a self,
        kind: Kind,
        key: &'a str,
        value: String,
        ttl: Duration,
        mode: Put,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let ms = ttl.as_millis().max(1) as u64;
            let full = self.key(kind, key);
            match mode {
                Put::Always => {
                    redis::cmd("SET")
                        .arg(&full)
                        .arg(value)
                        .arg("PX")
                        .arg(ms)
                        .query_async::<()>(&mut conn)
                        .await
                        .map_err(failed)?;
                    Ok(true)
                }
                Put::IfAbsent => {
                    let written: Option<String> = redis::cmd("SET")
                        .arg(&full)
                        .arg(value)
                        .arg("NX")
                        .arg("PX")
                        .arg(ms)
                        .query_async(&mut conn)
                        .await
                        .map_err(failed)?;
                    Ok(written.is_some())
                }
                Put::Capped(max) => {
                    let now_ms = unix_now() * 1000;
                    let written: i64 = self
                        .capped
                        .key(&full)
                        .key(format!("{}{}:index", self.prefix, kind.as_str()))
                        .arg(value)
                        .arg(ms)
                        .arg(now_ms)
                        .arg(max)
                        .arg(now_ms + ms)
                        .invoke_async(&mut conn)
                        .await
                        .map_err(failed)?;
                    Ok(written == 1)
                }
            }
        })
    }

    fn take<'a>(
        &'a self,
        kind: Kind,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, Error>> {
        Box::pin(async move {
            redis::cmd("GETDEL")
                .arg(self.key(kind, key))
                .query_async(&mut self.conn().await?)
                .await
                .map_err(failed)
        })
    }

    fn delete<'a>(&'a self, kind: Kind, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let full = self.key(kind, key);
            redis::pipe()
                .cmd("DEL")
                .arg(&full)
                .ignore()
                .cmd("ZREM")
                .arg(format!("{}{}:index", self.prefix, kind.as_str()))
                .arg(&full)
                .ignore()
                .query_async::<()>(&mut self.conn().await?)
                .await
                .map_err(failed)
        })
    }

    fn describe(&self) -> String {
        format!("Redis {}", self.url)
    }
}
