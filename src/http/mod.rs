//! The HTTP server: routes, the request log and metrics wrapper, graceful shutdown.

pub mod api_docs;
pub mod auth;
pub mod body;
pub mod conn;
pub mod console;
pub mod error;
pub mod filters;
pub mod handlers;
pub mod openapi;
pub mod routes;
pub mod tariff_cache;
pub mod webhook_auth;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Instant;

use warp::filters::BoxedFilter;
use warp::http::HeaderValue;
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::app::App;
use crate::domain::{InboxId, TariffId, UserId};
use error::respond;
use filters::Superuser;
use handlers::{account, admin, catalog, health, payments, webhooks};

fn with_app(app: App) -> impl Filter<Extract = (App,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
}

/// The raw query string, empty when there is none.
fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// The API routes (without the log wrapper).
pub fn api(app: App) -> BoxedFilter<(Response,)> {
    let body_deadline = app.config.http.body_read_timeout;
    let v1 = warp::path("api").and(warp::path("v1"));

    let tariffs = v1
        .and(warp::path!("tariffs"))
        .and(warp::get())
        .and(with_app(app.clone()))
        .then(|app| async move { respond(catalog::list_tariffs(app).await) });
    let pay_systems = v1
        .and(warp::path!("pay-systems"))
        .and(warp::get())
        .and(with_app(app.clone()))
        .then(|app| async move { respond(catalog::list_pay_systems(app).await) });
    let user = || filters::user(app.clone());
    let superuser = || filters::superuser(app.clone());
    let sub_profile = v1
        .and(warp::path!("subscriptions" / "profile"))
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(user())
        .then(|app, user| async move { respond(account::profile(app, user).await) });
    let cancel = v1
        .and(warp::path!("subscriptions" / "cancel"))
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(user())
        .then(|app, user| async move { respond(account::cancel(app, user).await) });
    let resume = v1
        .and(warp::path!("subscriptions" / "resume"))
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(user())
        .then(|app, user| async move { respond(account::resume(app, user).await) });
    let contact = v1
        .and(warp::path!("subscriptions" / "contact"))
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(user())
        .and(filters::json(body_deadline))
        .then(|app, user, req| async move { respond(account::contact(app, user, req).await) });
    let payments_profile = v1
        .and(warp::path!("payments" / "profile"))
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(user())
        .and(raw_query())
        .then(|app, user, q| async move { respond(account::payments_list(app, user, q).await) });
    let payment = v1
        .and(warp::path!("payments" / String))
        .and(warp::get())
        .and(user())
        .and_then(|id: String, user| async move {
            Ok::<_, warp::Rejection>((filters::parse(&id, "payment id")?, user))
        })
        .untuple_one()
        .and(with_app(app.clone()))
        .then(|id, user, app| async move { respond(account::payment_get(app, id, user).await) });

    let buy = v1
        .and(warp::path!("subscriptions" / String / "buy"))
        .and(warp::post())
        .and(user())
        .and_then(|system: String, user| async move {
            Ok::<_, warp::Rejection>((payments::pay_system(&system)?, user))
        })
        .untuple_one()
        .and(with_app(app.clone()))
        .and(filters::idempotency_key())
        .and(filters::json(body_deadline))
        .then(|system, user, app, key, req| async move {
            respond(payments::buy(app, system, user, key, req).await)
        });
    let change =
        v1.and(warp::path!("subscriptions" / "change"))
            .and(warp::post())
            .and(with_app(app.clone()))
            .and(user())
            .and(filters::idempotency_key())
            .and(filters::json(body_deadline))
            .then(|app, user, key, req| async move {
                respond(payments::change(app, user, key, req).await)
            });
    let webhook_yookassa = warp::path!("webhooks" / "yookassa")
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(filters::peer())
        .and(warp::header::headers_cloned())
        .and(body::limited(body_deadline))
        .then(|app, peer, headers, raw| async move {
            respond(webhooks::yookassa(app, peer, headers, raw).await)
        });

    let admin_root = v1.and(warp::path("admin"));
    let admin_tariffs = admin_root
        .and(warp::path!("tariffs"))
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(superuser())
        .then(|app, _: Superuser| async move { respond(admin::tariffs_list(app).await) });
    let admin_tariff_create = admin_root
        .and(warp::path!("tariffs"))
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(superuser())
        .and(filters::json(body_deadline))
        .then(|app, _: Superuser, t| async move { respond(admin::tariff_create(app, t).await) });
    let admin_tariff_patch = admin_root
        .and(warp::path!("tariffs" / String))
        .and(warp::patch())
        .and(superuser())
        .and_then(
            |id: String, _: Superuser| async move { filters::parse::<TariffId>(&id, "tariff id") },
        )
        .and(with_app(app.clone()))
        .and(filters::json(body_deadline))
        .then(|id, app, patch| async move { respond(admin::tariff_patch(app, id, patch).await) });
    let admin_refund = admin_root
        .and(warp::path!("payments" / String / "refund"))
        .and(warp::post())
        .and(superuser())
        .and_then(|id: String, admin: Superuser| async move {
            Ok::<_, warp::Rejection>((filters::parse(&id, "payment id")?, admin))
        })
        .untuple_one()
        .and(with_app(app.clone()))
        .and(filters::idempotency_key())
        .and(filters::json(body_deadline))
        .then(|id, admin, app, key, req| async move {
            respond(admin::refund(app, id, admin, key, req).await)
        });
    let admin_user = admin_root
        .and(warp::path!("users" / String))
        .and(warp::get())
        .and(superuser())
        .and_then(
            |id: String, _: Superuser| async move { filters::parse::<UserId>(&id, "user id") },
        )
        .and(with_app(app.clone()))
        .then(|id, app| async move { respond(admin::user(app, id).await) });
    let admin_webhooks = admin_root
        .and(warp::path!("webhooks"))
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(superuser())
        .and(raw_query())
        .then(|app, _: Superuser, q| async move { respond(admin::webhooks_list(app, q).await) });
    let admin_replay = admin_root
        .and(warp::path!("webhooks" / String / "replay"))
        .and(warp::post())
        .and(superuser())
        .and_then(
            |id: String, _: Superuser| async move { filters::parse::<InboxId>(&id, "webhook id") },
        )
        .and(with_app(app.clone()))
        .then(|id, app| async move { respond(admin::webhook_replay(app, id).await) });
    let admin = admin_tariffs
        .or(admin_tariff_create)
        .unify()
        .or(admin_tariff_patch)
        .unify()
        .or(admin_refund)
        .unify()
        .or(admin_user)
        .unify()
        .or(admin_webhooks)
        .unify()
        .or(admin_replay)
        .unify()
        .boxed();
    let webhook_cloudpayments = warp::path!("webhooks" / "cloudpayments" / String)
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(filters::peer())
        .and(warp::header::headers_cloned())
        .and(body::limited(body_deadline))
        .then(|kind, app, peer, headers, raw| async move {
            respond(webhooks::cloudpayments(app, kind, peer, headers, raw).await)
        });

    let healthz = warp::path!("healthz")
        .and(warp::get())
        .then(health::healthz);
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_app(app.clone()))
        .then(health::readyz);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .then(health::metrics);
    let openapi = warp::path!("api" / "openapi.json")
        .and(warp::get())
        .map(openapi::document);
    let api_docs = warp::path!("api" / "docs")
        .and(warp::get())
        .map(api_docs::page);

    // Each route boxed and joined one at a time: an unboxed chain of `or`s is a
    // type that nests once more with every route, and the compiler's time grows
    // with it (warp#507; with the 17th route a clean build of this crate was
    // still compiling it after an hour).
    let routes = [
        tariffs.boxed(),
        buy.boxed(),
        webhook_yookassa.boxed(),
        admin.boxed(),
        webhook_cloudpayments.boxed(),
        pay_systems.boxed(),
        sub_profile.boxed(),
        cancel.boxed(),
        resume.boxed(),
        contact.boxed(),
        change.boxed(),
        payments_profile.boxed(),
        payment.boxed(),
        healthz.boxed(),
        readyz.boxed(),
        metrics.boxed(),
        openapi.boxed(),
        api_docs.boxed(),
        console::routes(app.clone()),
    ]
    .into_iter()
    .reduce(|all, route| all.or(route).unify().boxed())
    .expect("routes");
    match app.sandbox.clone() {
        Some(sandbox) => routes.or(sandbox.routes()).unify().boxed(),
        None => routes,
    }
}

/// Text made safe for HTML text and attribute values (askama's escaper, the one
/// the console's templates use), for the pages written by hand (sandbox, API docs).
pub fn escape_html(s: &str) -> String {
    askama::filters::escape(s, askama::filters::Html)
        .map(|safe| safe.to_string())
        .unwrap_or_default()
}

/// Wraps the routes: request id (echoed or generated), request log, metrics by
/// route template, and the one `recover` that turns rejections into JSON errors.
pub fn service(app: App) -> BoxedFilter<(Response,)> {
    // Refuse a declared oversize body on every route, before any handler runs;
    // routes that read a body also cap what actually arrives (chunked uploads).
    let size_guard = warp::header::optional::<u64>("content-length")
        .and_then(|len: Option<u64>| async move {
            match len {
                Some(n) if n > body::MAX_BODY as u64 => Err(warp::reject::custom(error::Rejected(
                    error::ApiError::too_large(),
                ))),
                _ => Ok(()),
            }
        })
        .untuple_one();
    let routes = size_guard.and(api(app)).recover(error::recover).unify();
    warp::any()
        .map(Instant::now)
        .and(warp::method())
        .and(warp::path::full())
        // The raw value: one that is not text must not reject the request (warp's
        // `optional::<String>` answers a plain-text 400 for it); it is replaced below.
        .and(
            warp::header::value("x-request-id")
                .map(Some)
                .or(warp::any().map(|| None))
                .unify(),
        )
        .and(routes)
        .map(
            |start: Instant,
             method: warp::http::Method,
             path: FullPath,
             rid: Option<HeaderValue>,
             reply: Response| {
                let mut response = reply.into_response();
                let request_id = rid
                    .as_ref()
                    .and_then(|r| r.to_str().ok())
                    .filter(|r| {
                        !r.is_empty() && r.len() <= 128 && r.bytes().all(|b| b.is_ascii_graphic())
                    })
                    .map(str::to_owned)
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                if let Ok(v) = HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert("x-request-id", v);
                }
                let route = routes::template(method.as_str(), path.as_str());
                let method = method_label(&method);
                let status = response.status().as_u16();
                let elapsed = start.elapsed();
                let labels = [
                    ("method", method.to_owned()),
                    ("route", route.to_owned()),
                    ("status", status.to_string()),
                ];
                metrics::counter!("http_requests_total", &labels).increment(1);
                metrics::histogram!("http_request_duration_seconds", &labels)
                    .record(elapsed.as_secs_f64());
                tracing::info!(
                    method = %method, route, status, latency_ms = elapsed.as_secs_f64() * 1000.0,
                    request_id = %request_id, "request"
                );
                response
            },
        )
        .boxed()
}

/// The `method` label and log field: the methods HTTP defines, or `other`. Anything
/// a client can send must not become a label value (one series per made-up method).
fn method_label(method: &warp::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

/// Serves on an already bound listener until `shutdown` fires; in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let limits = app.config.http;
    let pool_size = app.config.database_pool_size;
    conn::serve(listener, service(app), limits, pool_size, shutdown).await;
}

pub fn peer(addr: Option<SocketAddr>) -> Option<std::net::IpAddr> {
    addr.map(|a| a.ip().to_canonical())
}
