//! The authorization server's signing keys: ES256 (P-256) keys made with ring, one per
//! rotation slot (`--oauth-key-rotation`, 30 days by default), kept in the store so every
//! instance and every restart signs and verifies with the same ones.
//!
//! Slot `n` covers the time `[n·rotation, (n+1)·rotation)`. The first instance that needs a
//! slot's key makes it and writes it only if absent, so instances racing at a rotation agree
//! on one key. The key set published (JWKS) holds the current slot's key and the previous
//! one's, so a token signed just before a rotation verifies until it expires (access tokens
//! live minutes; refresh tokens are opaque and do not depend on keys): nobody is logged out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::info;

use super::store::{unix_now, Kind, Put, Store};
use crate::Error;

/// The default time one signing key signs before the next takes over.
pub const DEFAULT_ROTATION: Duration = Duration::from_secs(30 * 86_400);

/// One signing key.
pub(crate) struct SigningKey {
    /// Its key id (`kid`).
    pub(crate) kid: String,
    encoding: EncodingKey,
    /// The public point, uncompressed (0x04 || x || y).
    public: Vec<u8>,
}

/// A key as the store keeps it.
#[derive(Serialize, Deserialize)]
struct Stored {
    kid: String,
    /// PKCS#8 DER, base64url.
    pkcs8: String,
}

impl SigningKey {
    fn from_stored(stored: &Stored) -> Result<Self, Error> {
        let bad = |why: &str| Error::AuthState(format!("signing key {}: {why}", stored.kid));
        let pkcs8 = URL_SAFE_NO_PAD
            .decode(&stored.pkcs8)
            .map_err(|_| bad("not base64url"))?;
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|_| bad("not a P-256 key"))?;
        Ok(SigningKey {
            kid: stored.kid.clone(),
            public: pair.public_key().as_ref().to_vec(),
            encoding: EncodingKey::from_ec_der(&pkcs8),
        })
    }

    fn generate(slot: u64) -> Result<Stored, Error> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| Error::AuthState("cannot make a signing key".into()))?;
        Ok(Stored {
            kid: format!("s{slot}-{}", super::random_token(6)),
            pkcs8: URL_SAFE_NO_PAD.encode(pkcs8.as_ref()),
        })
    }

    /// Its public JWK.
    pub(crate) fn jwk(&self) -> Value {
        json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&self.public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&self.public[33..65])})
    }

    /// `claims` signed as an RFC 9068 access token (`typ: at+jwt`).
    pub(crate) fn sign(&self, claims: &Value) -> Result<String, Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("at+jwt".to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| Error::AuthState(format!("cannot sign: {e}")))
    }
}

/// The keys by slot, read from the store once each (a slot's key never changes).
pub(crate) struct Keys {
    store: Arc<dyn Store>,
    rotation: Duration,
    /// A sync lock: no `.await` under it.
    cache: Mutex<BTreeMap<u64, Arc<SigningKey>>>,
}

impl Keys {
    pub(crate) fn new(store: Arc<dyn Store>, rotation: Duration) -> Self {
        Keys {
            store,
            rotation: rotation.max(Duration::from_secs(1)),
            cache: Mutex::new(BTreeMap::new()),
        }
    }

    fn slot_at(&self, unix: u64) -> u64 {
        unix / self.rotation.as_secs()
    }

    /// The key of `slot`, made (once, by whichever instance comes first) when `make`.
    async fn key(&self, slot: u64, make: bool) -> Result<Option<Arc<SigningKey>>, Error> {
        if let Some(key) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&slot)
        {
            return Ok(Some(key.clone()));
        }
        let name = slot.to_string();
        let stored = match self.store.get(Kind::Key, &name).await? {
            Some(text) => text,
            None if make => {
                let new = serde_json::to_string(&SigningKey::generate(slot)?).expect("serializes");
                // Kept while it signs, then one more period for the tokens it signed.
                let ttl = self.rotation * 3;
                if self
                    .store
                    .put(Kind::Key, &name, new.clone(), ttl, Put::IfAbsent)
                    .await?
                {
                    info!(slot, "new signing key");
                    new
                } else {
                    // Another instance made it first: use that one.
                    self.store
                        .get(Kind::Key, &name)
                        .await?
                        .ok_or_else(|| Error::AuthState("signing key vanished".into()))?
                }
            }
            None => return Ok(None),
        };
        let stored: Stored = serde_json::from_str(&stored)
            .map_err(|e| Error::AuthState(format!("signing key unreadable: {e}")))?;
        let key = Arc::new(SigningKey::from_stored(&stored)?);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(slot, key.clone());
        // Slots older than the previous one are never needed again.
        while cache.len() > 3 {
            cache.pop_first();
        }
        Ok(Some(key))
    }

    /// The key that signs now.
    pub(crate) async fn current(&self) -> Result<Arc<SigningKey>, Error> {
        self.current_at(unix_now()).await
    }

    async fn current_at(&self, unix: u64) -> Result<Arc<SigningKey>, Error> {
        Ok(self.key(self.slot_at(unix), true).await?.expect("made"))
    }

    /// The published key set: the current key and the previous slot's.
    pub(crate) async fn jwks(&self) -> Result<Value, Error> {
        self.jwks_at(unix_now()).await
    }

    async fn jwks_at(&self, unix: u64) -> Result<Value, Error> {
        let slot = self.slot_at(unix);
        let mut keys = vec![self.current_at(unix).await?.jwk()];
        if let Some(previous) = self.key(slot.saturating_sub(1), false).await? {
            if slot > 0 {
                keys.push(previous.jwk());
            }
        }
        Ok(json!({ "keys": keys }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::FileStore;
    use super::*;

    #[tokio::test]
    async fn a_rotation_keeps_the_previous_key_published() {
        let store: Arc<dyn Store> = Arc::new(FileStore::memory());
        let keys = Keys::new(store.clone(), Duration::from_secs(100));
        let t = unix_now();
        let first = keys.current_at(t).await.unwrap();
        let set = keys.jwks_at(t).await.unwrap();
        assert_eq!(set["keys"][0]["kid"], first.kid);
        assert_eq!(set["keys"][0]["crv"], "P-256");
        assert_eq!(set["keys"][0]["alg"], "ES256");
        assert!(set["keys"][0].get("d").is_none(), "no private part");

        // Another instance (same store, empty cache) signs with the same key.
        let other = Keys::new(store, Duration::from_secs(100));
        assert_eq!(other.current_at(t).await.unwrap().kid, first.kid);

        // One period later: a new key signs, the old one is still published.
        let next = keys.current_at(t + 100).await.unwrap();
        assert_ne!(next.kid, first.kid);
        let set = keys.jwks_at(t + 100).await.unwrap();
        let kids: Vec<&str> = set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, [next.kid.as_str(), first.kid.as_str()]);

        // What it signs verifies with its JWK.
        let token = first.sign(&json!({"sub": "x", "exp": t + 60})).unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(first.jwk()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.set_required_spec_claims(&["exp"]);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        jsonwebtoken::decode::<Value>(&token, &key, &validation).unwrap();
    }
}
