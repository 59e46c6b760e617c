//! The route table, which the router, the rate limits and a cluster's relay all read; one
//! file per route beside it, and the extraction helpers the routes share.

pub(crate) mod channel;
pub(crate) mod health;
pub(crate) mod mcp;
pub(crate) mod message;
pub(crate) mod metrics;
pub(crate) mod poll;
pub(crate) mod register;
pub(crate) mod response;
pub(crate) mod servers;

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Query, Request};
use axum::http::StatusCode;
use axum::routing::{get, post, MethodRouter};
use bytes::Bytes;
use serde::Deserialize;

use crate::auth::oauth::{metadata, Authenticated};
use crate::auth::server;
use crate::auth::Grant;
use crate::broker::Requester;
use crate::console;
use crate::peer::ClientAddr;
use crate::state::AppState;
use crate::Error;

/// Who calls a route, which decides its token, its checks and its rate budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Surface {
    /// A reverse client (`/register`, `/poll`, `/response`): a server token, the server budget.
    Reverse,
    /// A client of the seed's `/message` routes: a client token, Origin and Content-Type checks.
    Message,
    /// A client of Streamable HTTP (`/mcp`): as [`Surface::Message`], plus Host and CORS.
    Streamable,
    /// An operator's view of the whole proxy: a client token for every pool (`*`).
    Operator,
    /// The health check: anyone, never limited.
    Health,
    /// Public metadata (RFC 9728, RFC 8414) and the built-in authorization server's API
    /// (registration, token, revocation): anyone, CORS for any origin, the client budget.
    Discovery,
    /// The operator's console (`/console`, when enabled): its own admin login.
    Console,
    /// The built-in authorization server's pages (login, consent): anyone, no CORS, the
    /// client budget.
    Login,
}

/// One route: its path pattern (as axum matches it), who calls it, and its handlers.
pub(crate) struct Route {
    /// The pattern, e.g. `/servers/{name}/mcp`; a pool route names its pool `{name}`.
    pub(crate) pattern: &'static str,
    /// Who calls it.
    pub(crate) surface: Surface,
    /// Its handlers by method.
    pub(crate) handlers: fn() -> MethodRouter<AppState>,
}

/// Every route the proxy serves.
pub(crate) const ROUTES: &[Route] = &[
    Route {
        pattern: "/register",
        surface: Surface::Reverse,
        handlers: || post(register::register).delete(register::deregister),
    },
    Route {
        pattern: "/poll",
        surface: Surface::Reverse,
        handlers: || get(poll::poll),
    },
    Route {
        pattern: "/response",
        surface: Surface::Reverse,
        handlers: || post(response::response),
    },
    Route {
        pattern: mcp_protocol::channel::CHANNEL_PATH,
        surface: Surface::Reverse,
        handlers: || get(channel::channel),
    },
    Route {
        pattern: "/message",
        surface: Surface::Message,
        handlers: || post(message::default_pool),
    },
    Route {
        pattern: "/servers/{name}/message",
        surface: Surface::Message,
        handlers: || post(message::named_pool),
    },
    Route {
        pattern: "/mcp",
        surface: Surface::Streamable,
        handlers: || {
            post(mcp::post_default)
                .get(mcp::get_default)
                .delete(mcp::delete_default)
        },
    },
    Route {
        pattern: "/servers/{name}/mcp",
        surface: Surface::Streamable,
        handlers: || {
            post(mcp::post_named)
                .get(mcp::get_named)
                .delete(mcp::delete_named)
        },
    },
    Route {
        pattern: "/servers",
        surface: Surface::Operator,
        handlers: || get(servers::servers),
    },
    Route {
        pattern: "/metrics",
        surface: Surface::Operator,
        handlers: || get(metrics::metrics),
    },
    Route {
        pattern: "/.well-known/oauth-protected-resource/mcp",
        surface: Surface::Discovery,
        handlers: || get(metadata::default_pool),
    },
    Route {
        pattern: "/.well-known/oauth-protected-resource/servers/{name}/mcp",
        surface: Surface::Discovery,
        handlers: || get(metadata::named_pool),
    },
    Route {
        pattern: "/.well-known/oauth-authorization-server",
        surface: Surface::Discovery,
        handlers: || get(server::metadata::metadata),
    },
    Route {
        pattern: "/oauth/jwks",
        surface: Surface::Discovery,
        handlers: || get(server::metadata::jwks),
    },
    Route {
        pattern: "/oauth/register",
        surface: Surface::Discovery,
        handlers: || post(server::register),
    },
    Route {
        pattern: "/oauth/token",
        surface: Surface::Discovery,
        handlers: || post(server::token),
    },
    Route {
        pattern: "/oauth/revoke",
        surface: Surface::Discovery,
        handlers: || post(server::revoke),
    },
    Route {
        pattern: "/oauth/authorize",
        surface: Surface::Login,
        handlers: || get(server::authorize_page).post(server::authorize_form),
    },
    Route {
        pattern: "/oauth/style.css",
        surface: Surface::Login,
        handlers: || get(server::style),
    },
    Route {
        pattern: "/healthz",
        surface: Surface::Health,
        handlers: || get(health::healthz),
    },
    Route {
        pattern: "/console",
        surface: Surface::Console,
        handlers: || get(console::page),
    },
    Route {
        pattern: "/console/login",
        surface: Surface::Console,
        handlers: || {
            get(console::login_page)
                .post(console::login)
                .layer(DefaultBodyLimit::max(console::LOGIN_BODY_MAX))
        },
    },
    Route {
        pattern: "/console/logout",
        surface: Surface::Console,
        handlers: || post(console::logout),
    },
    Route {
        pattern: "/console/assets/{file}",
        surface: Surface::Console,
        handlers: || get(console::assets),
    },
    Route {
        pattern: "/console/api/state",
        surface: Surface::Console,
        handlers: || get(console::state_json),
    },
    Route {
        pattern: "/console/events",
        surface: Surface::Console,
        handlers: || get(console::events),
    },
];

/// The route a request matched, read by layers outside the router (`None`: no route matched).
pub(crate) fn route_of(req: &Request) -> Option<&'static Route> {
    let matched = req.extensions().get::<MatchedPath>()?.as_str();
    ROUTES.iter().find(|r| r.pattern == matched)
}

/// Who calls, for the quotas: the token the auth layer granted (or the subject an access
/// token names) and the address the listener resolved.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Requester {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Requester {
            token: parts
                .extensions
                .get::<Grant>()
                .map(|g| g.id)
                .or_else(|| parts.extensions.get::<Authenticated>().map(|a| a.id)),
            address: parts.extensions.get::<ClientAddr>().map(|a| a.0),
        })
    }
}

/// The client an access token named (OAuth on), for the handlers: its identity goes on the
/// request items, its scopes meet the tools' (`None`: a static token, or auth off).
#[derive(Clone, Debug, Default)]
pub(crate) struct Caller(pub(crate) Option<Authenticated>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Caller(parts.extensions.get::<Authenticated>().cloned()))
    }
}

impl Caller {
    /// The scope check of a `tools/call` whose tool needs scopes of its own (OAuth on).
    pub(crate) fn check_tool_call(
        &self,
        state: &AppState,
        pool: &str,
        message: &mcp_protocol::jsonrpc::Message,
    ) -> Result<(), Error> {
        match &state.config().oauth {
            Some(oauth) => oauth.check_tool_call(self.0.as_ref(), pool, message),
            None => Ok(()),
        }
    }

    /// The identity request items carry.
    pub(crate) fn identity(&self) -> Option<std::sync::Arc<mcp_protocol::wire::Identity>> {
        self.0.as_ref().map(|a| a.identity.clone())
    }
}

/// `?session_id=X`, the query of every reverse-client route but `/register`'s POST.
#[derive(Debug, Deserialize)]
pub(crate) struct SessionQuery {
    /// The registration's session id (never logged whole).
    pub(crate) session_id: Option<String>,
}

/// The session id from a reverse-client query, or 400 `invalid_query`.
pub(crate) fn session_id(
    query: Result<Query<SessionQuery>, QueryRejection>,
) -> Result<String, Error> {
    let Query(q) = query.map_err(|e| Error::InvalidQuery(e.body_text()))?;
    q.session_id
        .ok_or_else(|| Error::InvalidQuery("missing session_id".into()))
}

/// A reverse-client body, or 413 `payload_too_large` / 400 `invalid_body`.
pub(crate) fn wire_body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, Error> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::BodyTooLarge { limit }
        } else {
            Error::InvalidBody(e.body_text())
        }
    })
}
