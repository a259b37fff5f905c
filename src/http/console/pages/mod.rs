//! The console's pages and actions. Reads come from the store (as the admin API's
//! do); every action calls the service function the admin API calls, then records
//! itself in `audit_log`. After an action the browser is sent back to the page
//! (POST, redirect, GET); a refused action re-renders the page with the reason
//! next to its form and the status the API would answer.
//!
//! This module holds what every page shares (layout, rendering, the dispatch,
//! the audit record); each page and its actions are a module of their own:
//! `sign_in`, `overview` (and find), `viewer`, `needs_review`, `inbox`,
//! `catalogue` (tariffs), `audit_page`.

use std::collections::HashMap;
use std::str::FromStr;

use askama::Template;
use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use serde_json::{json, Value};
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::{
    clear_cookie, cookie_name, csrf_ok, random_token, redirect, session, session_cookie,
    sign_in_cookie, with_cookie, Operator, Request, SESSION, SIGN_IN,
};
use crate::app::App;
use crate::domain::money::{format_minor, Currency};
use crate::domain::{InboxId, Money, PaySystem, PaymentId, Period, TariffId, UserId};
use crate::http::error::ApiError;
use crate::http::handlers::admin;
use crate::http::handlers::views::{InboxView, PaymentView, RefundView, TariffView};
use crate::service::idempotency::{IdempotencyKey, Keyed};
use crate::service::refunds::{self, RefundRequest};
use crate::service::tariffs::{self, NewTariff, TariffEdit};
use crate::service::{review, subscriptions as subs, webhooks, BillingError};
use crate::store::console::{self as queries, NewAuditEntry};
use crate::store::{self, alerts, webhook_inbox, Connect};

mod audit_page;
mod catalogue;
mod inbox;
mod needs_review;
mod overview;
mod sign_in;
mod viewer;

use audit_page::*;
use catalogue::*;
use inbox::*;
use needs_review::*;
use overview::*;
use sign_in::*;
use viewer::*;

const STYLE: &str = include_str!("../console.css");

/// What every page shows around its content.
pub struct Layout {
    pub title: String,
    /// The operator's user id, when signed in (then the navigation is shown).
    pub operator: Option<String>,
    pub csrf: String,
    pub sandbox: bool,
    pub notice: Option<String>,
}

impl Layout {
    fn new(app: &App, op: Option<&Operator>, title: impl Into<String>) -> Layout {
        Layout {
            title: title.into(),
            operator: op.map(|o| o.user.id.to_string()),
            csrf: op.map(|o| o.csrf.clone()).unwrap_or_default(),
            sandbox: app.sandbox.is_some(),
            notice: None,
        }
    }
}

fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => warp::reply::with_status(warp::reply::html(html), status).into_response(),
        Err(e) => ApiError::internal(&e).into_response(),
    }
}

#[derive(Template)]
#[template(path = "console/problem.html")]
struct Problem {
    layout: Layout,
    message: String,
}

/// A page that only says what went wrong (no navigation: it may be shown before
/// any session).
pub fn problem(status: StatusCode, message: &str) -> Response {
    let page = Problem {
        layout: Layout {
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            operator: None,
            csrf: String::new(),
            sandbox: false,
            notice: None,
        },
        message: message.to_owned(),
    };
    render(status, &page)
}

fn error_page(app: &App, op: &Operator, e: &ApiError) -> Response {
    let mut layout = Layout::new(app, Some(op), "Refused");
    layout.notice = None;
    render(
        e.status,
        &Problem {
            layout,
            message: e.detail.clone(),
        },
    )
}

pub async fn dispatch(app: &App, req: Request) -> Response {
    let path: Vec<&str> = req.path.iter().map(String::as_str).collect();
    let get = req.method == Method::GET || req.method == Method::HEAD;
    let post = req.method == Method::POST;
    match (path.as_slice(), get, post) {
        (["static", "console.css"], true, _) => {
            return warp::reply::with_header(STYLE, "content-type", "text/css; charset=utf-8")
                .into_response()
        }
        (["sign-in"], true, _) => return sign_in_form(app, None, StatusCode::OK),
        (["sign-in"], _, true) => return sign_in(app, &req).await,
        _ => {}
    }
    let op = match session(app, &req) {
        Ok(op) => op,
        Err(Some(viewer)) => return refused(app, &viewer),
        Err(None) if get => return redirect("/console/sign-in"),
        Err(None) => {
            return problem(
                StatusCode::UNAUTHORIZED,
                "You are not signed in (or your token has expired): sign in again.",
            )
        }
    };
    let action = crate::http::routes::template(req.method.as_str(), &req.full_path());
    if post && !csrf_ok(&op.csrf, req.field("csrf")) {
        refused_request(app, &op, action, &req, "csrf_rejected").await;
        return problem(
            StatusCode::FORBIDDEN,
            "This form's security token is missing or wrong, so nothing was changed. \
             Reload the page and try again.",
        );
    }
    let answer = async {
        match (path.as_slice(), get, post) {
            ([], true, _) => overview(app, &op).await,
            (["sign-out"], _, true) => {
                let entry = NewAuditEntry {
                    operator_id: op.user.id,
                    action: "sign_out",
                    target: &format!("user:{}", op.user.id),
                    before: None,
                    after: None,
                    outcome: "ok",
                };
                record(app, entry).await;
                Ok(with_cookie(
                    redirect("/console/sign-in"),
                    &clear_cookie(app, SESSION),
                ))
            }
            (["find"], true, _) => find(app, &op, req.param("q")).await,
            (["users", id], true, _) => {
                let id = parse::<UserId>(id, "user id")?;
                viewer(app, &op, id, notice(req.param("done")), None).await
            }
            (["users", id, "refund"], _, true) => {
                let id = parse::<UserId>(id, "user id")?;
                refund(app, &op, &req, Back::Viewer(id)).await
            }
            (["users", id, "auto-renew"], _, true) => {
                let id = parse::<UserId>(id, "user id")?;
                auto_renew(app, &op, id, req.field("on") == "true").await
            }
            (["review"], true, _) => review_list(app, &op, notice(req.param("done")), None).await,
            (["review", id], _, true) => {
                let id = parse::<PaymentId>(id, "payment id")?;
                mark_reviewed(app, &op, id, req.field("note")).await
            }
            (["review", id, "refund"], _, true) => {
                let id = parse::<PaymentId>(id, "payment id")?;
                refund(app, &op, &req, Back::Review(id)).await
            }
            (["inbox"], true, _) => inbox(app, &op, &req).await,
            (["inbox", id], true, _) => {
                let id = parse::<InboxId>(id, "inbox id")?;
                inbox_row(app, &op, id, notice(req.param("done"))).await
            }
            (["inbox", id, "replay"], _, true) => {
                let id = parse::<InboxId>(id, "inbox id")?;
                replay(app, &op, id).await
            }
            (["tariffs"], true, _) => tariff_list(app, &op, notice(req.param("done")), None).await,
            (["tariffs"], _, true) => tariff_create(app, &op, &req).await,
            (["tariffs", id], _, true) => {
                let id = parse::<TariffId>(id, "tariff id")?;
                tariff_edit(app, &op, id, &req).await
            }
            (["audit"], true, _) => audit(app, &op).await,
            _ => Err(ApiError::not_found(
                "not_found",
                "no such page in the console",
            )),
        }
    }
    .await;
    match answer {
        Ok(page) => page,
        Err(e) => {
            // Refused before reaching a service function (a bad id, an unknown
            // object): an action all the same, so it is recorded.
            if post {
                refused_request(app, &op, action, &req, e.code).await;
            }
            error_page(app, &op, &e)
        }
    }
}

/// Records a POST refused before its action ran (CSRF, a bad id, an unknown object).
async fn refused_request(app: &App, op: &Operator, action: &str, req: &Request, outcome: &str) {
    record(
        app,
        NewAuditEntry {
            operator_id: op.user.id,
            action,
            target: &req.full_path(),
            before: None,
            after: None,
            outcome,
        },
    )
    .await;
}

fn parse<T: FromStr>(raw: &str, what: &str) -> Result<T, ApiError> {
    raw.parse::<T>()
        .map_err(|_| ApiError::bad_request("bad_uuid", format!("{what} {raw:?} is not a UUID")))
}

/// The notice after an action, by its code (never text from the URL).
fn notice(done: &str) -> Option<String> {
    Some(
        match done {
            "refunded" => "Refund made.",
            "refund-pending" => "Refund sent; the provider has not confirmed it yet.",
            "auto-renew-on" => "Auto-renewal turned on.",
            "auto-renew-off" => "Auto-renewal turned off.",
            "reviewed" => "Marked reviewed.",
            "replayed" => "Notification processed again.",
            "replayed-ignored" => "Processed again and ignored: see the outcome.",
            "replayed-failed" => "Processed again and failed: see the last error.",
            "replayed-retry" => "Could not be processed now (see the last error); it is retried.",
            "created" => "Tariff created.",
            "saved" => "Tariff saved.",
            "archived" => "Tariff archived: it is no longer on sale.",
            "restored" => "Tariff back on sale.",
            _ => return None,
        }
        .to_owned(),
    )
}

/// Records a console action. The action has happened by now (its own
/// transaction committed): a failure here must not turn it into an error page the
/// operator would retry, so it is alerted instead.
async fn record(app: &App, entry: NewAuditEntry<'_>) {
    let stored = async { queries::audit(&app.db.conn().await?, &entry).await };
    if let Err(e) = stored.await {
        crate::service::alerts::raise(
            app,
            "audit_failed",
            &format!(
                "console action {} on {} ({}) by {} not recorded: {e}",
                entry.action, entry.target, entry.outcome, entry.operator_id
            ),
            crate::service::alerts::Subject::Operator(entry.operator_id),
        );
    }
}

fn outcome_of<T>(r: &Result<T, BillingError>) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(e) => ApiError::from(e).code.to_owned(),
    }
}
