//! The login, consent and error pages: server-rendered HTML with no script, every value
//! escaped, behind headers that keep them out of frames (`frame-ancestors 'none'`), caches
//! and referrers; and the cookies the authorization endpoint sets (`HttpOnly;
//! SameSite=Lax`, `Secure` but on plain-http loopback).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The cookie holding a browser's CSRF token (double submit: forms carry it too).
pub(crate) const CSRF_COOKIE: &str = "mcp_proxy_csrf";
/// The cookie naming a browser's login.
pub(crate) const LOGIN_COOKIE: &str = "mcp_proxy_login";
/// Where both cookies are sent: the authorization server's own paths only.
const COOKIE_PATH: &str = "/oauth";

/// No script, no images, no frames; styles from the proxy only.
const CSP: &str = "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The pages' style sheet (`GET /oauth/style.css`).
const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem;color:#222}\
h1{font-size:1.3rem}p.note{color:#666;font-size:.9rem}p.error{color:#b00020}\
label{display:block;margin:.8rem 0 .2rem}input[type=text],input[type=password]{width:100%;padding:.4rem;box-sizing:border-box}\
button{margin:1rem .5rem 0 0;padding:.5rem 1rem}code{background:#f3f3f3;padding:0 .2rem}";

/// `GET /oauth/style.css`.
pub(crate) async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        STYLE,
    )
        .into_response()
}

/// Escapes text for HTML content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A whole page with its security headers.
pub(crate) fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width\"><title>{}</title>\
<link rel=\"stylesheet\" href=\"/oauth/style.css\"></head><body><h1>{}</h1>{body}</body></html>",
        escape(title),
        escape(title)
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// An error page: no redirect (the redirect URI could not be trusted, or the browser's
/// request is bad).
pub(crate) fn error_page(status: StatusCode, message: &str) -> Response {
    page(
        status,
        "Authorization failed",
        &format!("<p class=\"error\">{}</p>", escape(message)),
    )
}

/// Hidden inputs carrying the authorization request and the CSRF token from page to page.
pub(crate) fn hidden(fields: &[(&str, &str)], csrf: &str) -> String {
    let mut html = String::new();
    for (name, value) in fields.iter().filter(|(_, v)| !v.is_empty()) {
        html.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(name),
            escape(value)
        ));
    }
    html.push_str(&format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(csrf)
    ));
    html
}

/// What the pages say about the request: who asks, for which server.
pub(crate) struct Asking<'a> {
    /// The client's own name (unverified) and id.
    pub(crate) client_name: &'a str,
    pub(crate) client_id: &'a str,
    /// The pool (`""`: the default pool) and its resource URL.
    pub(crate) pool: &'a str,
    pub(crate) resource: &'a str,
    /// The scopes it would get.
    pub(crate) scopes: &'a [String],
}

impl Asking<'_> {
    fn describe(&self) -> String {
        let pool = if self.pool.is_empty() {
            "the default MCP server".to_owned()
        } else {
            format!("the MCP server <code>{}</code>", escape(self.pool))
        };
        let scopes = if self.scopes.is_empty() {
            String::new()
        } else {
            format!(
                " with the scopes <code>{}</code>",
                escape(&self.scopes.join(" "))
            )
        };
        format!(
            "<p><strong>{}</strong> asks to use {pool} at <code>{}</code>{scopes}.</p>\
<p class=\"note\">The name is the client's own and is not verified; its id is <code>{}</code>.</p>",
            escape(self.client_name),
            escape(self.resource),
            escape(self.client_id)
        )
    }
}

/// The login page.
pub(crate) fn login(
    asking: &Asking<'_>,
    fields: &[(&str, &str)],
    csrf: &str,
    with_user: bool,
    error: Option<&str>,
) -> Response {
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    let user = if with_user {
        "<label for=\"username\">User</label><input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" required>"
    } else {
        ""
    };
    let error = error
        .map(|e| format!("<p class=\"error\">{}</p>", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "{}{error}<form method=\"post\" action=\"/oauth/authorize\">{}{user}\
<label for=\"password\">{}</label><input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
<button type=\"submit\" name=\"action\" value=\"login\">Sign in</button></form>",
        asking.describe(),
        hidden(fields, csrf),
        if with_user { "Password" } else { "Passphrase" }
    );
    page(status, "Sign in to the MCP proxy", &body)
}

/// The consent page.
pub(crate) fn consent(
    asking: &Asking<'_>,
    fields: &[(&str, &str)],
    csrf: &str,
    subject: &str,
) -> Response {
    let body = format!(
        "{}<p>Signed in as <code>{}</code>. Allow it? You are asked once per client and server.</p>\
<form method=\"post\" action=\"/oauth/authorize\">{}\
<button type=\"submit\" name=\"action\" value=\"allow\">Allow</button>\
<button type=\"submit\" name=\"action\" value=\"deny\">Deny</button></form>",
        asking.describe(),
        escape(subject),
        hidden(fields, csrf)
    );
    page(StatusCode::OK, "Allow access?", &body)
}

/// A `Set-Cookie` value: `HttpOnly; SameSite=Lax; Path=/oauth`, `Secure` when `secure`
/// (see `AuthServer::secure_cookies` for when it is not), expiring after `max_age` (`None`:
/// when the browser closes; zero: now).
pub(crate) fn cookie(
    name: &str,
    value: &str,
    max_age: Option<Duration>,
    secure: bool,
) -> HeaderValue {
    let mut text = format!("{name}={value}; Path={COOKIE_PATH}; HttpOnly; SameSite=Lax");
    if secure {
        text.push_str("; Secure");
    }
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    HeaderValue::from_str(&text).expect("cookie values are base64url")
}

pub(crate) use crate::auth::read_cookie;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[test]
    fn pages_escape_and_carry_their_headers() {
        let asking = Asking {
            client_name: "<script>alert(1)</script>",
            client_id: "c\"1",
            pool: "files",
            resource: "https://p.example/servers/files/mcp",
            scopes: &["mcp:tools".to_owned()],
        };
        let r = login(&asking, &[("state", "a\"><b>")], "tok", false, None);
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert!(CSP.contains("frame-ancestors 'none'"));
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        let html = hidden(&[("state", "a\"><b>")], "tok") + &asking.describe();
        assert!(
            !html.contains("<script>") && !html.contains("\"><b>"),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;"));
    }

    #[test]
    fn cookies() {
        let c = cookie(CSRF_COOKIE, "abc", None, true);
        assert_eq!(
            c,
            "mcp_proxy_csrf=abc; Path=/oauth; HttpOnly; SameSite=Lax; Secure"
        );
        let c = cookie(LOGIN_COOKIE, "x", Some(Duration::from_secs(60)), false);
        assert_eq!(
            c,
            "mcp_proxy_login=x; Path=/oauth; HttpOnly; SameSite=Lax; Max-Age=60"
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; mcp_proxy_csrf=tok; b=2"),
        );
        assert_eq!(read_cookie(&h, CSRF_COOKIE), Some("tok"));
        assert_eq!(read_cookie(&h, LOGIN_COOKIE), None);
    }
}
