//! Authentication: `Authorization: Bearer` tokens for servers and clients, bound to pools.
//!
//! Server tokens open the reverse-client routes (`/register`, `/poll`, `/response`), client
//! tokens the client routes (`/message`, `/mcp` and their `/servers/{name}/...` forms). Each
//! token reaches the pools it names (`*` for all). A kind is enforced once a token of that kind
//! is configured; until then its routes are open, as in the seed (and the proxy warns at start
//! when it listens beyond loopback). Once enforced, a kind stays enforced until restart, even
//! if a reload empties it: an emptied file locks the door rather than opening it.
//!
//! Tokens come from flags and the environment (fixed for the process) and from a token file,
//! re-read on SIGHUP and whenever its content changes. A failed reload keeps the tokens in
//! force and logs why. Tokens are never logged: a 4-byte fingerprint of their digest is.

pub mod oauth;
pub mod server;
mod tokens;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ring::digest::{digest, SHA256};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use tokens::{Grant, Names, TokenId, TokenKind, TokenSet, DEFAULT_POOL_NAME, MIN_TOKEN_LEN};

use crate::Error;

/// How often the token file is checked for changes.
pub const TOKEN_FILE_CHECK: Duration = Duration::from_secs(1);

/// The proxy's tokens; cheap to clone (one `Arc`). [`Auth::default`] is auth off.
#[derive(Clone, Default)]
pub struct Auth {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// From flags and the environment; fixed for the life of the process.
    fixed: TokenSet,
    /// The token file, re-read on reload.
    file: Option<PathBuf>,
    /// `fixed` merged with the file's last good content. A sync lock: read per request, no
    /// `.await` under it, written only on reload.
    current: RwLock<TokenSet>,
    /// Digest of the file content last loaded, to skip unchanged files.
    file_digest: Mutex<Option<Vec<u8>>>,
    server_on: AtomicBool,
    client_on: AtomicBool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("server_tokens", &self.count(TokenKind::Server))
            .field("client_tokens", &self.count(TokenKind::Client))
            .field("file", &self.inner.file)
            .finish()
    }
}

impl Auth {
    /// No tokens: every route open (the seed's behaviour).
    pub fn off() -> Self {
        Auth::default()
    }

    /// Tokens from `fixed` (flags, environment) and, when given, the token file at `file`.
    pub fn new(fixed: TokenSet, file: Option<PathBuf>) -> Result<Self, Error> {
        let auth = Auth {
            inner: Arc::new(Inner {
                current: RwLock::new(fixed.clone()),
                fixed,
                file,
                ..Inner::default()
            }),
        };
        auth.load_file(true)?;
        auth.update_enforcement();
        Ok(auth)
    }

    /// Just these tokens (tests, embedders).
    pub fn with_tokens(tokens: TokenSet) -> Self {
        Auth::new(tokens, None).expect("no file to read")
    }

    /// Whether tokens of `kind` are required.
    pub fn enforced(&self, kind: TokenKind) -> bool {
        self.flag(kind).load(Ordering::Acquire)
    }

    /// How many tokens of `kind` are in force.
    pub fn count(&self, kind: TokenKind) -> usize {
        self.read().count(kind)
    }

    /// The token file, if one is configured.
    pub fn file(&self) -> Option<&Path> {
        self.inner.file.as_deref()
    }

    fn flag(&self, kind: TokenKind) -> &AtomicBool {
        match kind {
            TokenKind::Server => &self.inner.server_on,
            TokenKind::Client => &self.inner.client_on,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, TokenSet> {
        // A panic under the lock cannot leave a half-written set: it is replaced whole.
        self.inner.current.read().unwrap_or_else(|e| e.into_inner())
    }

    fn update_enforcement(&self) {
        for kind in [TokenKind::Server, TokenKind::Client] {
            if self.count(kind) > 0 {
                self.flag(kind).store(true, Ordering::Release);
            }
        }
    }

    /// Checks a request's bearer token: `Ok(None)` when `kind` is not enforced, the grant of
    /// a valid token, or the 401 of the kind's routes when the token is missing or wrong.
    pub fn check(&self, kind: TokenKind, headers: &HeaderMap) -> Result<Option<Grant>, Error> {
        if !self.enforced(kind) {
            return Ok(None);
        }
        let refused = || match kind {
            TokenKind::Server => Error::ServerUnauthorized,
            TokenKind::Client => Error::Unauthorized,
        };
        let presented = bearer(headers).ok_or_else(refused)?;
        self.read()
            .lookup(kind, presented)
            .map(Some)
            .ok_or_else(refused)
    }

    /// Re-reads the token file; `Ok(true)` when its content changed and was applied. On error
    /// the tokens in force stay.
    pub fn reload(&self) -> Result<bool, Error> {
        let changed = self.load_file(false)?;
        self.update_enforcement();
        Ok(changed)
    }

    fn load_file(&self, first: bool) -> Result<bool, Error> {
        let Some(path) = &self.inner.file else {
            return Ok(false);
        };
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::TokenConfig {
            origin: origin.clone(),
            line: None,
            reason: format!("cannot read: {e}"),
        })?;
        let new_digest = digest(&SHA256, text.as_bytes()).as_ref().to_vec();
        let mut last = self
            .inner
            .file_digest
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !first && last.as_deref() == Some(new_digest.as_slice()) {
            return Ok(false);
        }
        let from_file = TokenSet::parse_file(&text, &origin)?;
        let merged = self.inner.fixed.merged(&from_file);
        info!(
            file = %origin,
            server_tokens = merged.count(TokenKind::Server),
            client_tokens = merged.count(TokenKind::Client),
            "token file loaded"
        );
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = merged;
        *last = Some(new_digest);
        Ok(true)
    }

    /// Reloads the token file on SIGHUP (Unix) and whenever its content changes, until
    /// `shutdown`. `None` when there is no token file.
    pub fn spawn_reloader(
        &self,
        shutdown: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.inner.file.as_ref()?;
        let auth = self.clone();
        Some(tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(TOKEN_FILE_CHECK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let sighup = async {
                    match hangup.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let sighup = std::future::pending::<Option<()>>();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                    _ = sighup => info!("SIGHUP: reloading the token file"),
                }
                if let Err(e) = auth.reload() {
                    error!(error = %e, "token file not reloaded; the tokens in force stay");
                }
            }
        }))
    }

    /// Warns loudly for each kind of route that is open while the proxy listens on `addr`
    /// beyond loopback (client routes are not open with `oauth` on).
    pub fn warn_if_open(&self, addr: std::net::SocketAddr, oauth: bool) {
        if addr.ip().is_loopback() {
            return;
        }
        if !self.enforced(TokenKind::Server) {
            warn!(
                %addr,
                "SECURITY: no server tokens configured and listening beyond loopback: ANYONE can \
                 register as a server and answer clients' requests. Set --server-token or --token-file."
            );
        }
        if !self.enforced(TokenKind::Client) && !oauth {
            warn!(
                %addr,
                "SECURITY: no client tokens configured and listening beyond loopback: ANYONE can \
                 call the registered servers. Set --client-token or --token-file."
            );
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The value of cookie `name` in the request.
pub(crate) fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The pool a client route addresses: `name` of `/servers/{name}/...`, else the default
/// pool (`""`). A name with escapes is returned raw and so matches no token's names.
pub(crate) fn client_pool(path: &str) -> &str {
    path.strip_prefix("/servers/")
        .and_then(|rest| rest.split_once('/'))
        .map_or("", |(name, _)| name)
}

/// Middleware of the reverse-client routes: 401 without a valid server token; puts the
/// [`Grant`] in the request's extensions for the handler's pool and ownership checks.
pub(crate) async fn require_server(
    State(auth): State<Auth>,
    mut req: Request,
    next: Next,
) -> Response {
    match auth.check(TokenKind::Server, req.headers()) {
        Ok(grant) => {
            if let Some(grant) = grant {
                req.extensions_mut().insert(grant);
            }
            next.run(req).await
        }
        Err(e) => {
            info!(path = %req.uri().path(), "refused: missing or invalid server token");
            e.into_response()
        }
    }
}

/// Middleware of the client routes: 401 without a valid client token for the addressed pool.
/// With OAuth on, the outer layer has already checked an access token ([`oauth::Verdict`]):
/// its refusal is answered here (inside the rate limit and CORS), and an accepted caller's
/// [`oauth::Authenticated`] goes on to the handler.
pub(crate) async fn require_client(
    State(auth): State<Auth>,
    mut req: Request,
    next: Next,
) -> Response {
    match req.extensions_mut().remove::<oauth::Verdict>() {
        Some(oauth::Verdict::Accepted(who)) => {
            req.extensions_mut().insert(who);
            return next.run(req).await;
        }
        Some(oauth::Verdict::Refused(challenge)) => return Error::OAuth(challenge).into_response(),
        None => {}
    }
    match auth.check(TokenKind::Client, req.headers()) {
        Ok(None) => next.run(req).await,
        Ok(Some(grant)) if grant.names.allows(client_pool(req.uri().path())) => {
            // The handler binds the client sessions it opens to this token.
            req.extensions_mut().insert(grant);
            next.run(req).await
        }
        Ok(Some(grant)) => {
            info!(token = %grant.id.fingerprint(), "refused: client token not bound to this server name");
            Error::Unauthorized.into_response()
        }
        Err(e) => {
            info!(path = %req.uri().path(), "refused: missing or invalid client token");
            e.into_response()
        }
    }
}

/// Middleware of operator routes (`GET /servers`): when client auth is on, a client token
/// whose names are `*` (a token bound to some pools must not learn the others' names).
pub(crate) async fn require_operator(
    State(auth): State<Auth>,
    req: Request,
    next: Next,
) -> Response {
    match auth.check(TokenKind::Client, req.headers()) {
        Ok(None) => next.run(req).await,
        Ok(Some(grant)) if *grant.names == Names::Any => next.run(req).await,
        Ok(Some(_)) | Err(_) => {
            info!(path = %req.uri().path(), "refused: operator route needs a client token for `*`");
            Error::Unauthorized.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        for (value, token) in [
            ("Bearer abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearer", None),
        ] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer(&h), token, "{value:?}");
        }
    }

    #[test]
    fn pool_of_client_paths() {
        assert_eq!(client_pool("/message"), "");
        assert_eq!(client_pool("/mcp"), "");
        assert_eq!(client_pool("/servers/alpha/mcp"), "alpha");
        assert_eq!(client_pool("/servers/a%6c/message"), "a%6c");
    }

    #[test]
    fn enforcement_is_per_kind_and_sticky() {
        let dir = std::env::temp_dir().join(format!("mcp-proxy-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        std::fs::write(&file, "server ssssssssssssssssssss *\n").unwrap();
        let auth = Auth::new(TokenSet::new(), Some(file.clone())).unwrap();
        assert!(auth.enforced(TokenKind::Server));
        assert!(!auth.enforced(TokenKind::Client));
        assert!(!auth.reload().unwrap(), "unchanged content is not reloaded");
        std::fs::write(&file, "# emptied\n").unwrap();
        assert!(auth.reload().unwrap());
        assert!(
            auth.enforced(TokenKind::Server),
            "an emptied file does not open the door"
        );
        assert_eq!(auth.count(TokenKind::Server), 0);
        std::fs::write(&file, "server x\n").unwrap();
        assert!(auth.reload().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
