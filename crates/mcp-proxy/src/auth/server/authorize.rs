//! The authorization endpoint (`/oauth/authorize`): checks the request (client, redirect
//! URI, PKCE S256, the pool's resource URL), then signs the user in and asks their consent
//! (once per user, client and pool), and sends the browser back with a single-use code and
//! the issuer (RFC 9207).
//!
//! Nothing is stored for a request before someone signs in: the request travels in the
//! forms' hidden fields and is checked again on every POST. Forms carry a CSRF token that
//! must equal the browser's CSRF cookie. Until the client and its redirect URI are known
//! good, errors are pages, never redirects (no open redirector).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tracing::info;
use url::Url;

use super::clients::Client;
use super::pages::{self, Asking, CSRF_COOKIE, LOGIN_COOKIE};
use super::store::{Kind, Put};
use super::{digest_key, random_token, AuthServer, CONSENT_LIFETIME, LOGIN_LIFETIME};
use crate::peer::ClientAddr;
use crate::state::AppState;

/// The largest form read.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// The parameters of an authorization request (RFC 6749 §4.1.1, RFC 7636, RFC 8707).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Params {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
}

impl Params {
    fn from_form(form: &HashMap<String, String>) -> Self {
        let get = |k: &str| form.get(k).cloned();
        Params {
            response_type: get("response_type"),
            client_id: get("client_id"),
            redirect_uri: get("redirect_uri"),
            state: get("state"),
            code_challenge: get("code_challenge"),
            code_challenge_method: get("code_challenge_method"),
            resource: get("resource"),
            scope: get("scope"),
        }
    }
}

/// What an authorization code stands for, as the store keeps it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CodeGrant {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    /// The PKCE S256 challenge.
    pub(crate) challenge: String,
    pub(crate) resource: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) subject: String,
}

/// A request that passed every check.
struct Checked {
    client: Client,
    redirect_uri: String,
    state: Option<String>,
    challenge: String,
    resource: String,
    pool: String,
    scopes: Vec<String>,
    /// The request as the forms carry it.
    fields: Vec<(&'static str, String)>,
}

impl Checked {
    fn asking(&self) -> Asking<'_> {
        Asking {
            client_name: self.client.display_name(),
            client_id: &self.client.client_id,
            pool: &self.pool,
            resource: &self.resource,
            scopes: &self.scopes,
        }
    }

    fn fields(&self) -> Vec<(&str, &str)> {
        self.fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

impl AuthServer {
    /// The browser back at the client's redirect URI with `params`, the state and `iss`.
    fn back(&self, redirect_uri: &str, state: Option<&str>, params: &[(&str, &str)]) -> Response {
        let mut url = Url::parse(redirect_uri).expect("checked at registration");
        {
            let mut query = url.query_pairs_mut();
            for (k, v) in params {
                query.append_pair(k, v);
            }
            if let Some(state) = state {
                query.append_pair("state", state);
            }
            query.append_pair("iss", self.issuer());
        }
        let mut response = StatusCode::SEE_OTHER.into_response();
        if let Ok(location) = HeaderValue::from_str(url.as_str()) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// Checks an authorization request; the refusal is a page until the redirect URI is
    /// trusted, then a redirect with `error`.
    async fn check(&self, params: &Params) -> Result<Checked, Response> {
        let page = |why: &str| pages::error_page(StatusCode::BAD_REQUEST, why);
        let client_id = params.client_id.as_deref().unwrap_or_default();
        if client_id.is_empty() {
            return Err(page("The request names no client (client_id)."));
        }
        let client = match self.client(client_id).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(page("This client is unknown here (or its registration expired, or its metadata document could not be used): it must register again.")),
            Err(e) => {
                tracing::warn!(error = %e, "authorization server state unavailable");
                return Err(pages::error_page(StatusCode::SERVICE_UNAVAILABLE, "The authorization server cannot reach its state; retry later."));
            }
        };
        let redirect_uri = match params.redirect_uri.as_deref() {
            Some(uri) if client.redirect_allowed(uri) => uri.to_owned(),
            Some(_) => return Err(page("The redirect URI is not one this client registered.")),
            None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
            None => return Err(page("The request names no redirect URI (redirect_uri).")),
        };
        let state = params.state.clone();
        let fail = |code: &str, why: &str| {
            self.back(
                &redirect_uri,
                state.as_deref(),
                &[("error", code), ("error_description", why)],
            )
        };
        if params.response_type.as_deref() != Some("code") {
            return Err(fail(
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
        let Some(challenge) = params.code_challenge.clone() else {
            return Err(fail(
                "invalid_request",
                "PKCE is required: code_challenge with S256",
            ));
        };
        if params.code_challenge_method.as_deref() != Some("S256") {
            return Err(fail(
                "invalid_request",
                "code_challenge_method must be S256",
            ));
        }
        if challenge.len() != 43
            || !challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(fail(
                "invalid_request",
                "code_challenge is not a base64url SHA-256",
            ));
        }
        let Some(resource) = params.resource.clone() else {
            return Err(fail(
                "invalid_target",
                "resource (RFC 8707) is required: the MCP server's URL",
            ));
        };
        let Some(pool) = self.pool_of(&resource) else {
            return Err(fail(
                "invalid_target",
                "resource is not an MCP server of this proxy",
            ));
        };
        let scopes = self.grant_scopes(&pool, params.scope.as_deref());
        let mut fields = vec![
            ("response_type", "code".to_owned()),
            ("client_id", client.client_id.clone()),
            ("redirect_uri", redirect_uri.clone()),
            ("code_challenge", challenge.clone()),
            ("code_challenge_method", "S256".to_owned()),
            ("resource", resource.clone()),
        ];
        if let Some(s) = &state {
            fields.push(("state", s.clone()));
        }
        if let Some(s) = &params.scope {
            fields.push(("scope", s.clone()));
        }
        Ok(Checked {
            client,
            redirect_uri,
            state,
            challenge,
            resource,
            pool,
            scopes,
            fields,
        })
    }

    /// The scopes a token for `pool` gets: those asked for that the pool knows, or, when
    /// none are asked for, the pool's required scopes.
    fn grant_scopes(&self, pool: &str, asked: Option<&str>) -> Vec<String> {
        let asked: Vec<&str> = asked.unwrap_or_default().split_whitespace().collect();
        if asked.is_empty() {
            return self.resources.pool_scopes(pool).to_vec();
        }
        self.resources
            .scopes_supported(pool)
            .into_iter()
            .filter(|s| asked.contains(&s.as_str()))
            .collect()
    }

    /// The subject the browser's login cookie names, if it is still good.
    async fn signed_in(&self, headers: &HeaderMap) -> Option<String> {
        let cookie = pages::read_cookie(headers, LOGIN_COOKIE)?;
        self.store
            .get(Kind::Login, &digest_key(cookie))
            .await
            .ok()
            .flatten()
    }

    fn consent_key(subject: &str, checked: &Checked) -> String {
        digest_key(&format!(
            "{subject}\n{}\n{}",
            checked.client.client_id, checked.resource
        ))
    }

    /// Whether `subject` already allowed this client every scope asked for this pool.
    async fn consented(&self, subject: &str, checked: &Checked) -> bool {
        match self
            .store
            .get(Kind::Consent, &Self::consent_key(subject, checked))
            .await
        {
            Ok(Some(granted)) => {
                let granted: Vec<&str> = granted.split_whitespace().collect();
                checked.scopes.iter().all(|s| granted.contains(&s.as_str()))
            }
            _ => false,
        }
    }

    /// Issues a code for `subject` and sends the browser back with it.
    async fn issue_code(&self, subject: &str, checked: &Checked) -> Response {
        let code = random_token(32);
        let grant = CodeGrant {
            client_id: checked.client.client_id.clone(),
            redirect_uri: checked.redirect_uri.clone(),
            challenge: checked.challenge.clone(),
            resource: checked.resource.clone(),
            scopes: checked.scopes.clone(),
            subject: subject.to_owned(),
        };
        let value = serde_json::to_string(&grant).expect("serializes");
        if let Err(e) = self
            .store
            .put(
                Kind::Code,
                &digest_key(&code),
                value,
                self.settings.code_lifetime,
                Put::Always,
            )
            .await
        {
            tracing::warn!(error = %e, "authorization server state unavailable");
            return self.back(
                &checked.redirect_uri,
                checked.state.as_deref(),
                &[("error", "temporarily_unavailable")],
            );
        }
        info!(client = %checked.client.display_name(), pool = %checked.pool, subject, "authorization code issued");
        self.back(
            &checked.redirect_uri,
            checked.state.as_deref(),
            &[("code", &code)],
        )
    }

    /// The next step for a checked request: the code when signed in and consented, else the
    /// consent or the login page.
    async fn next_step(&self, headers: &HeaderMap, checked: &Checked, csrf: &str) -> Response {
        match self.signed_in(headers).await {
            Some(subject) if self.consented(&subject, checked).await => {
                self.issue_code(&subject, checked).await
            }
            Some(subject) => pages::consent(&checked.asking(), &checked.fields(), csrf, &subject),
            None => pages::login(
                &checked.asking(),
                &checked.fields(),
                csrf,
                self.settings.credentials.has_users(),
                None,
            ),
        }
    }
}

/// The browser's CSRF token, and whether it is new (to be set as a cookie).
fn csrf_of(headers: &HeaderMap) -> (String, bool) {
    match pages::read_cookie(headers, CSRF_COOKIE).filter(|c| c.len() >= 32) {
        Some(c) => (c.to_owned(), false),
        None => (random_token(32), true),
    }
}

/// `GET /oauth/authorize`.
pub(crate) async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(server) = super::of(&state) else {
        return super::not_running();
    };
    let Ok(Query(params)) = query else {
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            "The authorization request is malformed.",
        );
    };
    let checked = match server.check(&params).await {
        Ok(c) => c,
        Err(refusal) => return refusal,
    };
    let (csrf, new) = csrf_of(&headers);
    let mut response = server.next_step(&headers, &checked, &csrf).await;
    if new {
        response.headers_mut().append(
            header::SET_COOKIE,
            pages::cookie(CSRF_COOKIE, &csrf, None, server.secure_cookies()),
        );
    }
    response
}

/// `POST /oauth/authorize`: the login and consent forms.
pub(crate) async fn post(
    State(state): State<AppState>,
    address: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(server) = super::of(&state) else {
        return super::not_running();
    };
    if body.len() > MAX_FORM_BYTES {
        return pages::error_page(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.");
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    // Double submit: the form's token must be the browser's cookie, which a page on another
    // site can neither read nor set.
    let cookie = pages::read_cookie(&headers, CSRF_COOKIE).unwrap_or_default();
    let presented = form.get("csrf").map(String::as_str).unwrap_or_default();
    if cookie.len() < 32 || !bool::from(cookie.as_bytes().ct_eq(presented.as_bytes())) {
        info!("authorization form refused: CSRF token missing or wrong");
        return pages::error_page(
            StatusCode::FORBIDDEN,
            "This form expired or was not sent from this site. Start again from your application.",
        );
    }
    let checked = match server.check(&Params::from_form(&form)).await {
        Ok(c) => c,
        Err(refusal) => return refusal,
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    match field("action") {
        "login" => {
            if let Err(wait) = server.limiter.attempt(address.map(|a| a.0 .0)) {
                info!("login refused: too many attempts");
                let mut r = pages::error_page(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many sign-in attempts; wait a minute and start again.",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(wait));
                return r;
            }
            // A users file's password hash is PBKDF2 (a fraction of a second of CPU): off the
            // runtime's workers, which carry everyone's calls.
            let (checker, user, password) = (
                server.clone(),
                field("username").to_owned(),
                field("password").to_owned(),
            );
            let checked_in = tokio::task::spawn_blocking(move || {
                checker.settings.credentials.check(&user, &password)
            })
            .await
            .ok()
            .flatten();
            let Some(subject) = checked_in else {
                info!("login failed");
                let with_user = server.settings.credentials.has_users();
                return pages::login(
                    &checked.asking(),
                    &checked.fields(),
                    cookie,
                    with_user,
                    Some("Wrong passphrase or password."),
                );
            };
            let login = random_token(32);
            if let Err(e) = server
                .store
                .put(
                    Kind::Login,
                    &digest_key(&login),
                    subject.clone(),
                    LOGIN_LIFETIME,
                    Put::Always,
                )
                .await
            {
                tracing::warn!(error = %e, "authorization server state unavailable");
                return pages::error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The authorization server cannot reach its state; retry later.",
                );
            }
            info!(subject, "signed in");
            let mut response = if server.consented(&subject, &checked).await {
                server.issue_code(&subject, &checked).await
            } else {
                pages::consent(&checked.asking(), &checked.fields(), cookie, &subject)
            };
            response.headers_mut().append(
                header::SET_COOKIE,
                pages::cookie(
                    LOGIN_COOKIE,
                    &login,
                    Some(LOGIN_LIFETIME),
                    server.secure_cookies(),
                ),
            );
            response
        }
        "allow" => {
            let Some(subject) = server.signed_in(&headers).await else {
                return pages::login(
                    &checked.asking(),
                    &checked.fields(),
                    cookie,
                    server.settings.credentials.has_users(),
                    Some("Your sign-in expired; sign in again."),
                );
            };
            let key = AuthServer::consent_key(&subject, &checked);
            let scopes = checked.scopes.join(" ");
            if let Err(e) = server
                .store
                .put(Kind::Consent, &key, scopes, CONSENT_LIFETIME, Put::Always)
                .await
            {
                tracing::warn!(error = %e, "authorization server state unavailable");
                return pages::error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The authorization server cannot reach its state; retry later.",
                );
            }
            info!(subject, client = %checked.client.display_name(), pool = %checked.pool, "consent given");
            server.issue_code(&subject, &checked).await
        }
        "deny" => server.back(
            &checked.redirect_uri,
            checked.state.as_deref(),
            &[
                ("error", "access_denied"),
                ("error_description", "the user denied access"),
            ],
        ),
        _ => pages::error_page(StatusCode::BAD_REQUEST, "The form has no action."),
    }
}
