//! The console's pages and actions. Reads come from the store (as the admin API's
//! do); every action calls the service function the admin API calls, then records
//! itself in `audit_log`. After an action the browser is sent back to the page
//! (POST, redirect, GET); a refused action re-renders the page with the reason
//! next to its form and the status the API would answer.

use std::collections::HashMap;
use std::str::FromStr;

use askama::Template;
use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use serde_json::{json, Value};
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::{
    clear_cookie, csrf_ok, random_token, redirect, session, session_cookie, sign_in_cookie,
    with_cookie, Operator, Request, SESSION, SIGN_IN,
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

const STYLE: &str = include_str!("console.css");

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
                record(app, &op, entry).await;
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
        op,
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
async fn record(app: &App, op: &Operator, entry: NewAuditEntry<'_>) {
    let entry = NewAuditEntry {
        operator_id: op.user.id,
        ..entry
    };
    let stored = async { queries::audit(&app.db.conn().await?, &entry).await };
    if let Err(e) = stored.await {
        crate::service::alerts::raise(
            app,
            "audit_failed",
            &format!(
                "console action {} on {} ({}) by {} not recorded: {e}",
                entry.action, entry.target, entry.outcome, op.user.id
            ),
            crate::service::alerts::Subject::Operator(op.user.id),
        );
    }
}

fn outcome_of<T>(r: &Result<T, BillingError>) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(e) => ApiError::from(e).code.to_owned(),
    }
}

// --- sign-in ---------------------------------------------------------------

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignIn {
    layout: Layout,
    form_token: String,
    error: Option<String>,
}

fn sign_in_form(app: &App, error: Option<String>, status: StatusCode) -> Response {
    let form_token = random_token();
    let page = SignIn {
        layout: Layout::new(app, None, "Sign in"),
        form_token: form_token.clone(),
        error,
    };
    with_cookie(render(status, &page), &sign_in_cookie(app, &form_token))
}

/// Records a sign-in by a valid token (a superuser's, or a viewer's refused).
/// An invalid token names no one and is only logged.
async fn sign_in_audit(app: &App, user: &crate::http::auth::User, outcome: &str) {
    let op = Operator {
        user: *user,
        csrf: String::new(),
    };
    record(
        app,
        &op,
        NewAuditEntry {
            operator_id: user.id,
            action: "sign_in",
            target: &format!("user:{}", user.id),
            before: None,
            after: Some(json!({"is_superuser": user.is_superuser, "expires_at": user.expires_at})),
            outcome,
        },
    )
    .await;
}

async fn sign_in(app: &App, req: &Request) -> Response {
    let expected = req.cookie(&super::cookie_name(app, SIGN_IN)).unwrap_or("");
    if expected.is_empty() || !csrf_ok(expected, req.field("csrf")) {
        return sign_in_form(
            app,
            Some("The sign-in form expired; paste the token again.".into()),
            StatusCode::FORBIDDEN,
        );
    }
    let token = req.field("token").trim();
    let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
    match app.keys.authenticate(Some(token)) {
        Err(e) => {
            tracing::info!(why = %e.detail, "console sign-in refused");
            sign_in_form(
                app,
                Some(format!("This token does not sign in: {}.", e.detail)),
                StatusCode::UNAUTHORIZED,
            )
        }
        Ok(user) if !user.is_superuser => {
            sign_in_audit(app, &user, "forbidden").await;
            refused(app, &user)
        }
        Ok(user) => {
            sign_in_audit(app, &user, "ok").await;
            let res = with_cookie(
                redirect("/console"),
                &session_cookie(app, token, user.expires_at),
            );
            with_cookie(res, &clear_cookie(app, SIGN_IN))
        }
    }
}

#[derive(Template)]
#[template(path = "console/refused.html")]
struct RefusedPage {
    layout: Layout,
    user_id: String,
}

/// A viewer's token: the console is for operators.
fn refused(app: &App, viewer: &crate::http::auth::User) -> Response {
    let page = RefusedPage {
        layout: Layout::new(app, None, "Operators only"),
        user_id: viewer.id.to_string(),
    };
    with_cookie(
        render(StatusCode::FORBIDDEN, &page),
        &clear_cookie(app, SESSION),
    )
}

// --- overview --------------------------------------------------------------

struct RevenueLine {
    currency: String,
    payments: i64,
    captured: String,
    refunded: String,
    kept: String,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct Overview {
    layout: Layout,
    o: queries::Overview,
    oldest_unsent: String,
    alerts: Vec<(String, i64)>,
    revenue: Vec<RevenueLine>,
}

async fn overview(app: &App, op: &Operator) -> Result<Response, ApiError> {
    let db = app.db.conn().await?;
    let o = queries::overview(&db).await?;
    let alerts = alerts::count_by_kind(&db, o.now - ChronoDuration::hours(24)).await?;
    let revenue = queries::revenue_since(&db, o.now - ChronoDuration::days(30))
        .await?
        .into_iter()
        .map(|r| RevenueLine {
            currency: if r.livemode {
                r.currency
            } else {
                format!("{} (test)", r.currency)
            },
            payments: r.payments,
            captured: format_minor(r.captured_minor),
            refunded: format_minor(r.refunded_minor),
            kept: format_minor(r.captured_minor - r.refunded_minor),
        })
        .collect();
    let oldest_unsent = match o.outbox_oldest_unsent {
        Some(t) => age(o.now - t),
        None => "none waiting".to_owned(),
    };
    Ok(render(
        StatusCode::OK,
        &Overview {
            layout: Layout::new(app, Some(op), "Overview"),
            o,
            oldest_unsent,
            alerts,
            revenue,
        },
    ))
}

fn age(d: ChronoDuration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

// --- find ------------------------------------------------------------------

#[derive(Template)]
#[template(path = "console/find.html")]
struct Find {
    layout: Layout,
    q: String,
    /// A well-formed user id nothing is recorded for (a viewer who never paid).
    unknown_user: Option<String>,
}

async fn find(app: &App, op: &Operator, q: &str) -> Result<Response, ApiError> {
    let q = q.trim();
    if !q.is_empty() {
        if let Some(user) = queries::find_user(&app.db.conn().await?, q).await? {
            return Ok(redirect(&format!("/console/users/{user}")));
        }
    }
    let mut layout = Layout::new(app, Some(op), "Find");
    layout.notice = (!q.is_empty()).then(|| {
        format!("Nothing matches {q:?}: no payment has this id or provider id, and no user with it has a payment or a subscription.")
    });
    Ok(render(
        if q.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        },
        &Find {
            layout,
            q: q.to_owned(),
            unknown_user: q.parse::<UserId>().ok().map(|u| u.to_string()),
        },
    ))
}

// --- a viewer --------------------------------------------------------------

struct PaymentLine {
    id: String,
    kind: String,
    status: String,
    pay_system: String,
    amount: String,
    refunded: String,
    currency: String,
    /// What is left to refund, when the payment can be refunded at all.
    refundable: Option<String>,
    created_at: String,
    reason: String,
}

impl PaymentLine {
    /// `pending_minor`: refunds of it sent and not final yet, which the service
    /// counts as gone (what is left never includes them).
    fn new(p: &PaymentView, pending_minor: i64) -> Self {
        let left = p.amount.minor() - p.refunded_amount.minor() - pending_minor;
        let refundable = matches!(
            p.status,
            crate::domain::PaymentStatus::Succeeded
                | crate::domain::PaymentStatus::PartiallyRefunded
        ) && left > 0;
        PaymentLine {
            id: p.id.to_string(),
            kind: p.kind.as_str().to_owned(),
            status: p.status.as_str().to_owned(),
            pay_system: p.pay_system.as_str().to_owned(),
            amount: p.amount.to_string(),
            refunded: format_minor(p.refunded_amount.minor()),
            currency: p.amount.currency().code().to_owned(),
            refundable: refundable.then(|| format_minor(left)),
            created_at: p.created_at.clone(),
            reason: p.cancellation_reason.clone().unwrap_or_default(),
        }
    }
}

/// A form about one payment that was refused, shown again beside that payment.
pub struct Refused {
    payment_id: String,
    status: StatusCode,
    code: String,
    detail: String,
    /// The outcome is not known (the provider did not answer, or the first
    /// submission is still running): the form keeps its Idempotency-Key, so
    /// sending it again resumes that refund instead of making a second one.
    key: Option<String>,
    amount: String,
    reason: String,
}

impl Refused {
    fn new(payment_id: PaymentId, e: &ApiError) -> Refused {
        Refused {
            payment_id: payment_id.to_string(),
            status: e.status,
            code: e.code.to_owned(),
            detail: e.detail.clone(),
            key: None,
            amount: String::new(),
            reason: String::new(),
        }
    }
}

/// The refund and review forms of a page: a fresh Idempotency-Key for each
/// payment's form per rendering (a form sent twice refunds once), and the one
/// refused form, if any, with what it held.
pub struct Forms {
    key: String,
    refused: Option<Refused>,
}

impl Forms {
    fn new(refused: Option<Refused>) -> Forms {
        Forms {
            key: random_token(),
            refused,
        }
    }

    fn status(&self) -> StatusCode {
        self.refused
            .as_ref()
            .map(|r| r.status)
            .unwrap_or(StatusCode::OK)
    }

    fn about(&self, payment_id: &str) -> Option<&Refused> {
        self.refused.as_ref().filter(|r| r.payment_id == payment_id)
    }

    fn error_for(&self, payment_id: &str) -> Option<&str> {
        self.about(payment_id).map(|r| r.detail.as_str())
    }

    fn key_for(&self, payment_id: &str) -> String {
        match self.about(payment_id).and_then(|r| r.key.clone()) {
            Some(key) => key,
            None => format!("{}-{payment_id}", self.key),
        }
    }

    fn amount_for(&self, payment_id: &str) -> &str {
        self.about(payment_id).map_or("", |r| r.amount.as_str())
    }

    fn reason_for(&self, payment_id: &str) -> &str {
        self.about(payment_id).map_or("", |r| r.reason.as_str())
    }
}

struct EventLine {
    seq: String,
    event_type: String,
    occurred_at: String,
    summary: String,
    published: bool,
}

impl From<&queries::TimelineEvent> for EventLine {
    fn from(e: &queries::TimelineEvent) -> Self {
        let data = &e.payload["data"];
        let money = |v: &Value| match (v["value"].as_str(), v["currency"].as_str()) {
            (Some(value), Some(cur)) => format!("{value} {cur}"),
            _ => String::new(),
        };
        let mut summary = vec![format!("status {}", data["status"].as_str().unwrap_or("?"))];
        if data.get("amount").is_some() {
            summary.push(money(&data["amount"]));
        }
        if data.get("refunded_amount").is_some() {
            summary.push(format!("refunded {}", money(&data["refunded_amount"])));
        }
        if let Some(end) = data["current_period_end"].as_str() {
            summary.push(format!("until {end}"));
        }
        EventLine {
            seq: data["seq"].to_string(),
            event_type: e.event_type.clone(),
            occurred_at: time(e.occurred_at),
            summary: summary.join(", "),
            published: e.sent_at.is_some(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/viewer.html")]
struct Viewer {
    layout: Layout,
    user_id: String,
    account: crate::http::handlers::views::UserAccount,
    payments: Vec<PaymentLine>,
    timeline: Vec<EventLine>,
    forms: Forms,
}

async fn viewer(
    app: &App,
    op: &Operator,
    user_id: UserId,
    notice: Option<String>,
    refused: Option<Refused>,
) -> Result<Response, ApiError> {
    let account = admin::account(app, user_id).await?;
    let timeline = queries::timeline(&app.db.conn().await?, user_id, 200).await?;
    let pending = |id: PaymentId| {
        account
            .refunds
            .iter()
            .filter(|r| r.payment_id == id && r.status == crate::domain::RefundStatus::Pending)
            .map(|r| r.amount.minor())
            .sum::<i64>()
    };
    let payments = account
        .payments
        .iter()
        .map(|p| PaymentLine::new(p, pending(p.id)))
        .collect();
    let forms = Forms::new(refused);
    let mut layout = Layout::new(app, Some(op), format!("Viewer {user_id}"));
    layout.notice = notice;
    Ok(render(
        forms.status(),
        &Viewer {
            layout,
            user_id: user_id.to_string(),
            payments,
            account,
            timeline: timeline.iter().map(EventLine::from).collect(),
            forms,
        },
    ))
}

/// Where a refund form came from, to go back to.
enum Back {
    Viewer(UserId),
    Review(PaymentId),
}

async fn refund(app: &App, op: &Operator, req: &Request, back: Back) -> Result<Response, ApiError> {
    let payment_id = match back {
        Back::Review(id) => id,
        Back::Viewer(_) => parse::<PaymentId>(req.field("payment_id"), "payment id")?,
    };
    let payment = store::payments::get(&app.db.conn().await?, payment_id)
        .await?
        .filter(|p| match back {
            Back::Viewer(user) => p.user_id == user,
            Back::Review(_) => true,
        })
        .ok_or_else(|| ApiError::from(BillingError::PaymentNotFound))?;
    // The form always carries one: a request without it is not the console's.
    let key = IdempotencyKey::parse(req.field("idempotency_key"))?;
    let amount = req.field("amount").trim();
    let reason = req.field("reason");
    let result = match amount {
        "" => Ok(None),
        a => Money::parse(a, payment.amount.currency())
            .map(Some)
            .map_err(|e| BillingError::BadField(format!("amount: {e}"))),
    };
    let result = match result {
        Ok(amount) => {
            let request = RefundRequest {
                amount,
                reason: reason.to_owned(),
            };
            let render = |outcome: &Result<store::refunds::Refund, BillingError>| {
                ApiError::stored(outcome.as_ref().map(RefundView::from), StatusCode::CREATED)
            };
            refunds::admin_refund(app, op.user.id, payment_id, request, Some(key), &render).await
        }
        Err(e) => Err(e),
    };
    // What it came to: the refund (as the API would show it), or why not. A
    // repeated form gets the first one's answer, which may be a refusal.
    let replayed = matches!(result, Ok(Keyed::Replayed(_)));
    let outcome: Result<Value, Refused> = match result {
        Ok(Keyed::Fresh(r)) => Ok(json!(RefundView::from(&r))),
        Ok(Keyed::Replayed(stored)) if stored.status < 400 => Ok(stored.body),
        Ok(Keyed::Replayed(stored)) => Err(Refused {
            payment_id: payment_id.to_string(),
            status: StatusCode::from_u16(stored.status).unwrap_or(StatusCode::CONFLICT),
            code: stored.body["code"].as_str().unwrap_or_default().to_owned(),
            detail: stored.body["detail"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            key: None,
            amount: amount.to_owned(),
            reason: reason.to_owned(),
        }),
        Err(e) => {
            let api = ApiError::from(&e);
            // Not a refusal, an outcome not known: the first submission still
            // running, the provider not answering, or our own failure after the
            // refund may have been recorded and sent (a 5xx).
            let unknown = matches!(
                e,
                BillingError::RequestInProgress
                    | BillingError::ProviderUnavailable(_)
                    | BillingError::Provider(_)
            ) || api.status.is_server_error();
            Err(Refused {
                key: unknown.then(|| req.field("idempotency_key").to_owned()),
                amount: amount.to_owned(),
                reason: reason.to_owned(),
                ..Refused::new(payment_id, &api)
            })
        }
    };
    record(
        app,
        op,
        NewAuditEntry {
            operator_id: op.user.id,
            action: "refund",
            target: &format!("payment:{payment_id}"),
            before: Some(payment_json(&payment)),
            after: outcome.as_ref().ok().cloned(),
            outcome: &match &outcome {
                Ok(_) if replayed => "replayed".to_owned(),
                Ok(_) => "ok".to_owned(),
                Err(r) => r.code.clone(),
            },
        },
    )
    .await;
    let done = match &outcome {
        Ok(refund) if refund["status"] == "succeeded" => "refunded",
        _ => "refund-pending",
    };
    let page = match (outcome, back) {
        (Ok(_), Back::Viewer(user)) => Ok(redirect(&format!("/console/users/{user}?done={done}"))),
        (Err(refused), Back::Viewer(user)) => viewer(app, op, user, None, Some(refused)).await,
        // The first submission marked it reviewed already.
        (Ok(_), Back::Review(_)) if replayed => {
            Ok(redirect(&format!("/console/review?done={done}")))
        }
        (Ok(refund), Back::Review(id)) => {
            let mut note = format!(
                "refunded {} {} (refund {}): {}",
                refund["amount"]["value"].as_str().unwrap_or("?"),
                refund["amount"]["currency"].as_str().unwrap_or(""),
                refund["id"].as_str().unwrap_or("?"),
                reason.trim()
            );
            if let Some((cut, _)) = note.char_indices().nth(review::NOTE_MAX) {
                note.truncate(cut);
            }
            let before = Some(json!({"review_reason": payment.review_reason}));
            match mark_and_record(app, op, id, before, &note).await {
                Ok(()) => Ok(redirect(&format!("/console/review?done={done}"))),
                Err(e) => {
                    let e = ApiError::from(e);
                    let why = format!("Refunded, but not marked reviewed: {}", e.detail);
                    let refused = Refused {
                        detail: why,
                        ..Refused::new(id, &e)
                    };
                    review_list(app, op, None, Some(refused)).await
                }
            }
        }
        (Err(refused), Back::Review(_)) => review_list(app, op, None, Some(refused)).await,
    };
    Ok(done_or_page(app, op, page))
}

/// After an action has run and been recorded, a failure to show the next page is
/// only that: an error page, never a refusal of the action.
fn done_or_page(app: &App, op: &Operator, page: Result<Response, ApiError>) -> Response {
    page.unwrap_or_else(|e| error_page(app, op, &e))
}

fn payment_json(p: &store::Payment) -> Value {
    json!({
        "status": p.status.as_str(),
        "amount": p.amount,
        "refunded": format_minor(p.refunded_minor),
    })
}

async fn auto_renew(
    app: &App,
    op: &Operator,
    user_id: UserId,
    on: bool,
) -> Result<Response, ApiError> {
    let before = store::subscriptions::current_for_user(&app.db.conn().await?, user_id)
        .await?
        .map(|s| json!({"auto_renew": s.auto_renew, "subscription_id": s.id, "status": s.status.as_str()}));
    let result = subs::set_auto_renew(app, user_id, on).await;
    record(
        app,
        op,
        NewAuditEntry {
            operator_id: op.user.id,
            action: if on {
                "auto_renew_on"
            } else {
                "auto_renew_off"
            },
            target: &format!("user:{user_id}"),
            before,
            after: result
                .as_ref()
                .ok()
                .map(|s| json!({"auto_renew": s.auto_renew, "subscription_id": s.id, "status": s.status.as_str()})),
            outcome: &outcome_of(&result),
        },
    )
    .await;
    if let Err(e) = result {
        return Ok(error_page(app, op, &ApiError::from(e)));
    }
    let done = if on {
        "auto-renew-on"
    } else {
        "auto-renew-off"
    };
    Ok(redirect(&format!("/console/users/{user_id}?done={done}")))
}

// --- needs review ----------------------------------------------------------

/// How long the review page waits for each provider read.
const PROVIDER_READ: std::time::Duration = std::time::Duration::from_secs(3);

struct ReviewItem {
    id: String,
    user_id: String,
    reason: String,
    ours: String,
    ours_status: String,
    ours_test: bool,
    provider_id: String,
    theirs: String,
    theirs_status: String,
    theirs_test: String,
    theirs_account: String,
    currency: String,
    refundable: Option<String>,
    created_at: String,
}

#[derive(Template)]
#[template(path = "console/review.html")]
struct Review {
    layout: Layout,
    items: Vec<ReviewItem>,
    forms: Forms,
}

async fn review_list(
    app: &App,
    op: &Operator,
    notice: Option<String>,
    refused: Option<Refused>,
) -> Result<Response, ApiError> {
    let flagged = queries::needing_review(&app.db.conn().await?, 50).await?;
    // The provider's figures, read now, beside ours.
    let theirs = futures::future::join_all(flagged.iter().map(|p| async move {
        let provider = app.providers.get(p.pay_system)?;
        let id = p.provider_payment_id.as_deref()?;
        Some(
            match tokio::time::timeout(PROVIDER_READ, provider.get_payment(id)).await {
                Ok(read) => read.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {} s", PROVIDER_READ.as_secs())),
            },
        )
    }))
    .await;
    let items = flagged
        .iter()
        .zip(theirs)
        .map(|(p, theirs)| {
            let line = PaymentLine::new(&PaymentView::from(p), 0);
            let (theirs, theirs_status, theirs_test, theirs_account) = match theirs {
                None => (
                    "no provider payment".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                ),
                Some(Err(e)) => (
                    format!("could not read it: {e}"),
                    String::new(),
                    String::new(),
                    String::new(),
                ),
                Some(Ok(pp)) => (
                    pp.amount.to_string(),
                    pp.status.as_str().to_owned(),
                    pp.test.to_string(),
                    pp.account_id.unwrap_or_default(),
                ),
            };
            ReviewItem {
                id: p.id.to_string(),
                user_id: p.user_id.to_string(),
                reason: p.review_reason.clone().unwrap_or_default(),
                ours: p.amount.to_string(),
                ours_status: p.status.as_str().to_owned(),
                ours_test: !p.livemode,
                provider_id: p.provider_payment_id.clone().unwrap_or_default(),
                theirs,
                theirs_status,
                theirs_test,
                theirs_account,
                currency: line.currency,
                refundable: line.refundable,
                created_at: time(p.created_at),
            }
        })
        .collect();
    let forms = Forms::new(refused);
    let mut layout = Layout::new(app, Some(op), "Needs review");
    layout.notice = notice;
    Ok(render(
        forms.status(),
        &Review {
            layout,
            items,
            forms,
        },
    ))
}

/// Marks a flagged payment reviewed and records that (or why not).
async fn mark_and_record(
    app: &App,
    op: &Operator,
    id: PaymentId,
    before: Option<Value>,
    note: &str,
) -> Result<(), BillingError> {
    let result = review::mark_reviewed(app, id, op.user.id, note).await;
    record(
        app,
        op,
        NewAuditEntry {
            operator_id: op.user.id,
            action: "mark_reviewed",
            target: &format!("payment:{id}"),
            before,
            after: result.as_ref().ok().map(|_| json!({"note": note.trim()})),
            outcome: &outcome_of(&result),
        },
    )
    .await;
    result
}

async fn mark_reviewed(
    app: &App,
    op: &Operator,
    id: PaymentId,
    note: &str,
) -> Result<Response, ApiError> {
    let before = store::payments::get(&app.db.conn().await?, id)
        .await?
        .map(|p| json!({"review_reason": p.review_reason}));
    let result = mark_and_record(app, op, id, before, note).await;
    let page = match result {
        Ok(()) => Ok(redirect("/console/review?done=reviewed")),
        Err(e) => review_list(app, op, None, Some(Refused::new(id, &ApiError::from(e)))).await,
    };
    Ok(done_or_page(app, op, page))
}

// --- webhook inbox ---------------------------------------------------------

struct InboxLine {
    id: String,
    provider: String,
    event: String,
    object_id: String,
    status: String,
    attempts: i32,
    deliveries: i32,
    received_at: String,
    last_received_at: String,
    processed_at: String,
    outcome: String,
    last_error: String,
}

impl From<&webhook_inbox::InboxRow> for InboxLine {
    fn from(r: &webhook_inbox::InboxRow) -> Self {
        InboxLine {
            id: r.id.to_string(),
            provider: r.provider.as_str().to_owned(),
            event: r.event.clone(),
            object_id: r.object_id.clone(),
            status: r.status.as_str().to_owned(),
            attempts: r.attempts,
            deliveries: r.deliveries,
            received_at: time(r.received_at),
            last_received_at: time(r.last_received_at),
            processed_at: r.processed_at.map(time).unwrap_or_default(),
            outcome: r.outcome.clone().unwrap_or_default(),
            last_error: r.last_error.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/inbox.html")]
struct Inbox {
    layout: Layout,
    rows: Vec<InboxLine>,
    provider: String,
    status: String,
    age: String,
    page: i64,
    next: Option<String>,
}

const INBOX_PAGE: i64 = 50;

async fn inbox(app: &App, op: &Operator, req: &Request) -> Result<Response, ApiError> {
    let provider = req.param("provider");
    if !provider.is_empty() && provider.parse::<PaySystem>().is_err() {
        return Err(ApiError::bad_request(
            "bad_provider",
            "provider is yookassa or cloudpayments",
        ));
    }
    let status = req.param("status");
    if !status.is_empty() && !["received", "processed", "failed", "ignored"].contains(&status) {
        return Err(ApiError::bad_request(
            "bad_status",
            "status is received, processed, failed or ignored",
        ));
    }
    let age = req.param("age");
    let since = match age {
        "" => None,
        "1h" => Some(Utc::now() - ChronoDuration::hours(1)),
        "24h" => Some(Utc::now() - ChronoDuration::hours(24)),
        "7d" => Some(Utc::now() - ChronoDuration::days(7)),
        _ => {
            return Err(ApiError::bad_request(
                "bad_age",
                "age is 1h, 24h or 7d (received within)",
            ))
        }
    };
    let page = match req.param("page") {
        "" => 1,
        p => p
            .parse::<i64>()
            .ok()
            .filter(|p| (1..=10_000).contains(p))
            .ok_or_else(|| ApiError::bad_request("bad_pagination", "page is 1..=10000"))?,
    };
    let rows = webhook_inbox::list(
        &app.db.conn().await?,
        (!status.is_empty()).then_some(status),
        (!provider.is_empty()).then_some(provider),
        since,
        INBOX_PAGE + 1,
        (page - 1) * INBOX_PAGE,
    )
    .await?;
    let next = (rows.len() as i64 > INBOX_PAGE).then(|| {
        serde_urlencoded::to_string([
            ("provider", provider),
            ("status", status),
            ("age", age),
            ("page", &(page + 1).to_string()),
        ])
        .unwrap_or_default()
    });
    Ok(render(
        StatusCode::OK,
        &Inbox {
            layout: Layout::new(app, Some(op), "Webhook inbox"),
            rows: rows
                .iter()
                .take(INBOX_PAGE as usize)
                .map(InboxLine::from)
                .collect(),
            provider: provider.to_owned(),
            status: status.to_owned(),
            age: age.to_owned(),
            page,
            next,
        },
    ))
}

struct AuditLine {
    at: String,
    operator: String,
    action: String,
    target: String,
    before: String,
    after: String,
    outcome: String,
}

impl From<&queries::AuditEntry> for AuditLine {
    fn from(e: &queries::AuditEntry) -> Self {
        let show = |v: &Option<Value>| v.as_ref().map(Value::to_string).unwrap_or_default();
        AuditLine {
            at: time(e.at),
            operator: e.operator_id.to_string(),
            action: e.action.clone(),
            target: e.target.clone(),
            before: show(&e.before),
            after: show(&e.after),
            outcome: e.outcome.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/inbox_row.html")]
struct InboxRowPage {
    layout: Layout,
    row: InboxLine,
    body: String,
    purged: bool,
    attempts: Vec<AttemptLine>,
    history: Vec<AuditLine>,
}

struct AttemptLine {
    attempt: i32,
    at: String,
    status: String,
    outcome: String,
    error: String,
}

/// One inbox row, or 404 `webhook_not_found`.
async fn inbox_row_of(
    db: &impl store::GenericClient,
    id: InboxId,
) -> Result<webhook_inbox::InboxRow, ApiError> {
    if !webhook_inbox::exists(db, id).await? {
        return Err(ApiError::not_found(
            "webhook_not_found",
            "no such inbox row",
        ));
    }
    Ok(webhook_inbox::get(db, id).await?)
}

async fn inbox_row(
    app: &App,
    op: &Operator,
    id: InboxId,
    notice: Option<String>,
) -> Result<Response, ApiError> {
    let db = app.db.conn().await?;
    let row = inbox_row_of(&db, id).await?;
    let view = InboxView::from(&row);
    let body = view
        .body
        .as_ref()
        .map(|b| serde_json::to_string_pretty(b).unwrap_or_default())
        .unwrap_or_default();
    let attempts = webhook_inbox::attempts(&db, id, 100).await?;
    let history = queries::audit_log(&db, Some(&format!("webhook:{id}")), 50).await?;
    let mut layout = Layout::new(app, Some(op), format!("Notification {id}"));
    layout.notice = notice;
    Ok(render(
        StatusCode::OK,
        &InboxRowPage {
            layout,
            row: InboxLine::from(&row),
            body,
            purged: view.body_purged,
            attempts: attempts
                .iter()
                .map(|a| AttemptLine {
                    attempt: a.attempt,
                    at: time(a.at),
                    status: a.status.as_str().to_owned(),
                    outcome: a.outcome.clone().unwrap_or_default(),
                    error: a.error.clone().unwrap_or_default(),
                })
                .collect(),
            history: history.iter().map(AuditLine::from).collect(),
        },
    ))
}

async fn replay(app: &App, op: &Operator, id: InboxId) -> Result<Response, ApiError> {
    let before = inbox_row_of(&app.db.conn().await?, id).await?;
    let result = webhooks::process_and_record(app, id).await;
    let after = match &result {
        Ok(_) => match app.db.conn().await {
            Ok(db) => inbox_row_of(&db, id).await.ok(),
            Err(_) => None,
        },
        Err(_) => None,
    };
    let status_of = |r: &webhook_inbox::InboxRow| json!({"status": r.status.as_str(), "outcome": r.outcome, "last_error": r.last_error});
    record(
        app,
        op,
        NewAuditEntry {
            operator_id: op.user.id,
            action: "replay",
            target: &format!("webhook:{id}"),
            before: Some(status_of(&before)),
            after: after.as_ref().map(status_of),
            outcome: &match &result {
                Ok(status) => status.as_str().to_owned(),
                Err(e) => ApiError::from(e).code.to_owned(),
            },
        },
    )
    .await;
    let done = match result {
        Ok(crate::domain::InboxStatus::Processed) => "replayed",
        Ok(crate::domain::InboxStatus::Ignored) => "replayed-ignored",
        Ok(crate::domain::InboxStatus::Failed) => "replayed-failed",
        Ok(crate::domain::InboxStatus::Received) => "replayed-retry",
        Err(e) => return Ok(error_page(app, op, &ApiError::from(e))),
    };
    Ok(redirect(&format!("/console/inbox/{id}?done={done}")))
}

// --- tariffs ---------------------------------------------------------------

struct TariffLine {
    id: String,
    alias: String,
    name: String,
    price: String,
    period: String,
    archived: bool,
}

impl From<&store::tariffs::Tariff> for TariffLine {
    fn from(t: &store::tariffs::Tariff) -> Self {
        TariffLine {
            id: t.id.to_string(),
            alias: t.alias.clone(),
            name: t.name.clone(),
            price: t.price.to_string(),
            period: t.period.to_string(),
            archived: t.archived_at.is_some(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/tariffs.html")]
struct Tariffs {
    layout: Layout,
    tariffs: Vec<TariffLine>,
    /// The refused form (`new` or a tariff id) and why.
    error: Option<(String, String)>,
    form: HashMap<String, String>,
}

impl Tariffs {
    /// What the refused form held, to show it again.
    fn value(&self, name: &str) -> &str {
        self.form.get(name).map(String::as_str).unwrap_or("")
    }

    fn error_for(&self, which: &str) -> Option<&str> {
        match &self.error {
            Some((w, why)) if w == which => Some(why),
            _ => None,
        }
    }
}

impl Review {
    /// A refusal about a payment no longer on the list (reviewed meanwhile).
    fn error_elsewhere(&self) -> Option<&str> {
        match &self.forms.refused {
            Some(r) if !self.items.iter().any(|i| i.id == r.payment_id) => Some(&r.detail),
            _ => None,
        }
    }
}

async fn tariff_list(
    app: &App,
    op: &Operator,
    notice: Option<String>,
    error: Option<(String, ApiError, HashMap<String, String>)>,
) -> Result<Response, ApiError> {
    let list = store::tariffs::list_all(&app.db.conn().await?).await?;
    let mut layout = Layout::new(app, Some(op), "Tariffs");
    layout.notice = notice;
    let status = error
        .as_ref()
        .map(|(_, e, _)| e.status)
        .unwrap_or(StatusCode::OK);
    let (error, form) = match error {
        Some((which, e, form)) => (Some((which, e.detail)), form),
        None => (None, HashMap::new()),
    };
    Ok(render(
        status,
        &Tariffs {
            layout,
            tariffs: list.iter().map(TariffLine::from).collect(),
            error,
            form,
        },
    ))
}

/// The create form's fields as the API's body.
fn new_tariff(req: &Request) -> Result<NewTariff, BillingError> {
    let bad = |why: String| BillingError::BadField(why);
    let currency: Currency = req
        .field("currency")
        .parse()
        .map_err(|_| bad("currency must be RUB, USD or EUR".into()))?;
    let price = Money::parse(req.field("price").trim(), currency)
        .map_err(|e| bad(format!("price: {e}")))?;
    let count = req
        .field("period_count")
        .trim()
        .parse::<u32>()
        .map_err(|_| bad("period count must be a whole number".into()))?;
    let unit = req
        .field("period_unit")
        .parse()
        .map_err(|_| bad("period unit must be day, month or year".into()))?;
    let period = Period::new(count, unit).map_err(bad)?;
    let vat_code = match req.field("vat_code").trim() {
        "" => None,
        v => Some(
            v.parse::<i64>()
                .map_err(|_| bad("vat_code must be 1..12".into()))?,
        ),
    };
    Ok(NewTariff {
        alias: req.field("alias").trim().to_owned(),
        name: req.field("name").to_owned(),
        description: req.field("description").to_owned(),
        price,
        period,
        vat_code,
        tax_system_code: None,
    })
}

async fn tariff_create(app: &App, op: &Operator, req: &Request) -> Result<Response, ApiError> {
    let result = match new_tariff(req) {
        Ok(t) => tariffs::create(app, &t).await,
        Err(e) => Err(e),
    };
    record(
        app,
        op,
        NewAuditEntry {
            operator_id: op.user.id,
            action: "tariff_create",
            target: &match &result {
                Ok(t) => format!("tariff:{}", t.id),
                Err(_) => "tariff:new".to_owned(),
            },
            before: None,
            after: Some(match &result {
                Ok(t) => json!(TariffView::admin(t)),
                Err(_) => json!({"alias": req.field("alias"), "name": req.field("name"),
                    "price": req.field("price"), "currency": req.field("currency")}),
            }),
            outcome: &outcome_of(&result),
        },
    )
    .await;
    match result {
        Ok(_) => Ok(redirect("/console/tariffs?done=created")),
        Err(e) => Ok(done_or_page(
            app,
            op,
            tariff_list(
                app,
                op,
                None,
                Some(("new".into(), ApiError::from(e), req.form.clone())),
            )
            .await,
        )),
    }
}

async fn tariff_edit(
    app: &App,
    op: &Operator,
    id: TariffId,
    req: &Request,
) -> Result<Response, ApiError> {
    let before = store::tariffs::get(&app.db.conn().await?, id)
        .await?
        .ok_or_else(|| ApiError::from(BillingError::UnknownTariff))?;
    let (edit, action, done) = match req.field("archived") {
        "true" => (
            TariffEdit {
                archived: Some(true),
                ..TariffEdit::default()
            },
            "tariff_archive",
            "archived",
        ),
        "false" => (
            TariffEdit {
                archived: Some(false),
                ..TariffEdit::default()
            },
            "tariff_restore",
            "restored",
        ),
        _ => (
            TariffEdit {
                name: Some(req.field("name").to_owned()),
                ..TariffEdit::default()
            },
            "tariff_rename",
            "saved",
        ),
    };
    let result = tariffs::change(app, id, &edit).await;
    record(
        app,
        op,
        NewAuditEntry {
            operator_id: op.user.id,
            action,
            target: &format!("tariff:{id}"),
            before: Some(json!(TariffView::admin(&before))),
            after: result.as_ref().ok().map(|t| json!(TariffView::admin(t))),
            outcome: &outcome_of(&result),
        },
    )
    .await;
    match result {
        Ok(_) => Ok(redirect(&format!("/console/tariffs?done={done}"))),
        Err(e) => Ok(done_or_page(
            app,
            op,
            tariff_list(
                app,
                op,
                None,
                Some((id.to_string(), ApiError::from(e), req.form.clone())),
            )
            .await,
        )),
    }
}

// --- audit log -------------------------------------------------------------

#[derive(Template)]
#[template(path = "console/audit.html")]
struct Audit {
    layout: Layout,
    entries: Vec<AuditLine>,
}

async fn audit(app: &App, op: &Operator) -> Result<Response, ApiError> {
    let entries = queries::audit_log(&app.db.conn().await?, None, 200).await?;
    Ok(render(
        StatusCode::OK,
        &Audit {
            layout: Layout::new(app, Some(op), "Audit log"),
            entries: entries.iter().map(AuditLine::from).collect(),
        },
    ))
}
