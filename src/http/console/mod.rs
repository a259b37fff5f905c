//! The operator's console at `/console`: server-rendered pages for support and
//! finance (askama templates in `templates/console/`), no script at all.
//!
//! - **Sign-in**: an operator pastes an auth-service access token with
//!   `is_superuser`; it becomes an `HttpOnly`, `SameSite=Strict` cookie scoped to
//!   `/console` that expires with the token (`Secure` outside sandbox mode). The
//!   token is checked on every request, as the API checks its header.
//! - **CSRF**: every state-changing form carries a token derived from the session
//!   (HMAC of the cookie's token under the service's key); the sign-in form, before
//!   any session, a double-submit value. A POST without it changes nothing (403).
//! - **Headers**: a strict Content-Security-Policy (no script, styles only from
//!   here), `X-Frame-Options: DENY`, no caching, no referrer.
//!
//! Every action goes through the same service functions as the admin API and is
//! recorded in `audit_log`.

mod pages;

use std::collections::HashMap;

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::path::Tail;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::auth::User;
use super::body;
use crate::app::App;

/// The session cookie: the operator's access token.
const SESSION: &str = "billing_console";
/// The sign-in form's double-submit value, before there is a session.
const SIGN_IN: &str = "billing_console_sign_in";

/// A cookie's name: outside sandbox mode with the `__Secure-` prefix, so a
/// browser accepts it only over HTTPS and never from a plain-HTTP page (nor from
/// a sibling site over HTTP).
fn cookie_name(app: &App, base: &str) -> String {
    if app.sandbox.is_some() {
        base.to_owned()
    } else {
        format!("__Secure-{base}")
    }
}

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// Route templates of the console, for the request metrics (see `routes`).
pub const CONSOLE_ROUTES: &[(&str, &str)] = &[
    ("GET", "/console"),
    ("GET", "/console/sign-in"),
    ("POST", "/console/sign-in"),
    ("POST", "/console/sign-out"),
    ("GET", "/console/static/console.css"),
    ("GET", "/console/find"),
    ("GET", "/console/users/{id}"),
    ("POST", "/console/users/{id}/refund"),
    ("POST", "/console/users/{id}/auto-renew"),
    ("GET", "/console/review"),
    ("POST", "/console/review/{id}"),
    ("POST", "/console/review/{id}/refund"),
    ("GET", "/console/inbox"),
    ("GET", "/console/inbox/{id}"),
    ("POST", "/console/inbox/{id}/replay"),
    ("GET", "/console/tariffs"),
    ("POST", "/console/tariffs"),
    ("POST", "/console/tariffs/{id}"),
    ("GET", "/console/audit"),
];

/// One request to the console, as the pages see it.
pub struct Request {
    pub method: Method,
    /// The path after `/console`, split on `/`, without empty segments.
    pub path: Vec<String>,
    pub query: HashMap<String, String>,
    pub form: HashMap<String, String>,
    headers: HeaderMap,
}

impl Request {
    fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// The path as requested, for the audit log and the metrics' route template.
    pub fn full_path(&self) -> String {
        let mut path = "/console".to_owned();
        for segment in &self.path {
            path.push('/');
            path.push_str(segment);
        }
        path
    }

    pub fn field(&self, name: &str) -> &str {
        self.form.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn param(&self, name: &str) -> &str {
        self.query.get(name).map(String::as_str).unwrap_or("")
    }
}

/// A signed-in operator: the token's user and the CSRF token of this session.
#[derive(Clone)]
pub struct Operator {
    pub user: User,
    pub csrf: String,
}

pub fn routes(app: App) -> BoxedFilter<(Response,)> {
    let deadline = app.config.http.body_read_timeout;
    warp::path("console")
        .and(warp::path::tail())
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(body::limited(deadline))
        .and(warp::any().map(move || app.clone()))
        .then(
            |tail: Tail,
             method: Method,
             headers: HeaderMap,
             query: String,
             raw: Bytes,
             app: App| async move {
                let res = handle(&app, tail, method, headers, &query, &raw).await;
                secure(res)
            },
        )
        .boxed()
}

async fn handle(
    app: &App,
    tail: Tail,
    method: Method,
    headers: HeaderMap,
    query: &str,
    raw: &[u8],
) -> Response {
    let parsed = |what: &str, bytes: &[u8]| {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(bytes)
            .map(|pairs| pairs.into_iter().collect::<HashMap<_, _>>())
            .map_err(|e| format!("malformed {what}: {e}"))
    };
    let query = match parsed("query string", query.as_bytes()) {
        Ok(q) => q,
        Err(why) => return pages::problem(StatusCode::BAD_REQUEST, &why),
    };
    let form = if method == Method::POST {
        match parsed("form", raw) {
            Ok(f) => f,
            Err(why) => return pages::problem(StatusCode::BAD_REQUEST, &why),
        }
    } else {
        HashMap::new()
    };
    // PostgreSQL cannot store a NUL in text: refused here, as the API refuses it.
    if query
        .iter()
        .chain(&form)
        .any(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return pages::problem(
            StatusCode::BAD_REQUEST,
            "The request holds a NUL character (%00), which no field may contain.",
        );
    }
    let req = Request {
        method,
        path: tail
            .as_str()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        query,
        form,
        headers,
    };
    if req.method == Method::POST {
        // An action runs to its end and is recorded even when the browser goes
        // away meanwhile (a closed tab drops this request's future, not a task).
        let app = app.clone();
        return tokio::spawn(async move { pages::dispatch(&app, req).await })
            .await
            .unwrap_or_else(|e| super::error::ApiError::internal(&e).into_response());
    }
    pages::dispatch(app, req).await
}

/// The headers every console answer carries.
fn secure(mut res: Response) -> Response {
    let h = res.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    res
}

/// The operator whose cookie this request carries: Err(None) without a usable
/// token, Err(Some(user)) for a viewer's.
fn session(app: &App, req: &Request) -> Result<Operator, Option<User>> {
    let token = req.cookie(&cookie_name(app, SESSION)).ok_or(None)?;
    let user = app.keys.authenticate(Some(token)).map_err(|_| None)?;
    if !user.is_superuser {
        return Err(Some(user));
    }
    Ok(Operator {
        user,
        csrf: csrf_token(app, token),
    })
}

/// The session's CSRF token: HMAC-SHA256 of the session's token under the JWT key.
fn csrf_token(app: &App, token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(app.config.jwt_secret.expose().as_bytes())
        .expect("HMAC takes any key length");
    mac.update(b"billing-console-csrf\0");
    mac.update(token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Whether a form's `csrf` field is this session's token (constant time).
fn csrf_ok(expected: &str, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    !given.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// `Set-Cookie` for the session: the token, until it expires.
fn session_cookie(app: &App, token: &str, expires_at: i64) -> String {
    let max_age = (expires_at - chrono::Utc::now().timestamp()).max(0);
    format!(
        "{}={token}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        cookie_name(app, SESSION),
        secure_flag(app)
    )
}

fn clear_cookie(app: &App, base: &str) -> String {
    format!(
        "{}=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict{}",
        cookie_name(app, base),
        secure_flag(app)
    )
}

/// The sign-in form's one-time value, also set as a cookie for the POST to match.
fn sign_in_cookie(app: &App, value: &str) -> String {
    format!(
        "{}={value}; Path=/console; Max-Age=3600; HttpOnly; SameSite=Strict{}",
        cookie_name(app, SIGN_IN),
        secure_flag(app)
    )
}

/// Plain HTTP only in sandbox mode (a developer's machine); in front of real
/// money the cookie never travels unencrypted.
fn secure_flag(app: &App) -> &'static str {
    if app.sandbox.is_some() {
        ""
    } else {
        "; Secure"
    }
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn redirect(to: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        res.headers_mut().insert("location", v);
    }
    res
}

fn with_cookie(mut res: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        res.headers_mut().append("set-cookie", v);
    }
    res
}
