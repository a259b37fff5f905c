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
use crate::http::handlers::views::{InboxView, PaymentView, TariffView};
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
        (["sign-in"], _, true) => return sign_in(app, &req),
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
    if post && !csrf_ok(&op.csrf, req.field("csrf")) {
        return problem(
            StatusCode::FORBIDDEN,
            "This form's security token is missing or wrong, so nothing was changed. \
             Reload the page and try again.",
        );
    }
    let answer = async {
        match (path.as_slice(), get, post) {
            ([], true, _) => overview(app, &op).await,
            (["sign-out"], _, true) => Ok(with_cookie(
                redirect("/console/sign-in"),
                &clear_cookie(app, SESSION),
            )),
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
    answer.unwrap_or_else(|e| error_page(app, &op, &e))
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
            "created" => "Tariff created.",
            "saved" => "Tariff saved.",
            "archived" => "Tariff archived: it is no longer on sale.",
            "restored" => "Tariff back on sale.",
            _ => return None,
        }
        .to_owned(),
    )
}

async fn record(app: &App, op: &Operator, entry: NewAuditEntry<'_>) -> Result<(), ApiError> {
    let entry = NewAuditEntry {
        operator_id: op.user.id,
        ..entry
    };
    queries::audit(&app.db.conn().await?, &entry).await?;
    Ok(())
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

fn sign_in(app: &App, req: &Request) -> Response {
    let expected = req.cookie(SIGN_IN).unwrap_or("");
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
        Err(e) => sign_in_form(
            app,
            Some(format!("This token does not sign in: {}.", e.detail)),
            StatusCode::UNAUTHORIZED,
        ),
        Ok(user) if !user.is_superuser => refused(app, &user),
        Ok(user) => {
            tracing::info!(operator = %user.id, "console sign-in");
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
struct Refused {
    layout: Layout,
    user_id: String,
}

/// A viewer's token: the console is for operators.
fn refused(app: &App, viewer: &crate::http::auth::User) -> Response {
    let page = Refused {
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
            currency: r.currency,
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
}

async fn find(app: &App, op: &Operator, q: &str) -> Result<Response, ApiError> {
    let q = q.trim();
    if !q.is_empty() {
        if let Some(user) = queries::find_user(&app.db.conn().await?, q).await? {
            return Ok(redirect(&format!("/console/users/{user}")));
        }
        // A user id that has no payment or subscription yet still has a page.
        if let Ok(user) = q.parse::<UserId>() {
            return Ok(redirect(&format!("/console/users/{user}")));
        }
    }
    let mut layout = Layout::new(app, Some(op), "Find");
    layout.notice = (!q.is_empty()).then(|| format!("Nothing matches {q:?}."));
    Ok(render(
        if q.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        },
        &Find {
            layout,
            q: q.to_owned(),
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

impl From<&PaymentView> for PaymentLine {
    fn from(p: &PaymentView) -> Self {
        let left = p.amount.minor() - p.refunded_amount.minor();
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
    /// The refund form that was refused, and why.
    refund_error: Option<(String, String)>,
    /// A fresh Idempotency-Key per rendering: a form sent twice refunds once.
    key: String,
}

async fn viewer(
    app: &App,
    op: &Operator,
    user_id: UserId,
    notice: Option<String>,
    refund_error: Option<(PaymentId, ApiError)>,
) -> Result<Response, ApiError> {
    let account = admin::account(app, user_id).await?;
    let timeline = queries::timeline(&app.db.conn().await?, user_id, 200).await?;
    let status = refund_error
        .as_ref()
        .map(|(_, e)| e.status)
        .unwrap_or(StatusCode::OK);
    let mut layout = Layout::new(app, Some(op), format!("Viewer {user_id}"));
    layout.notice = notice;
    Ok(render(
        status,
        &Viewer {
            layout,
            user_id: user_id.to_string(),
            payments: account.payments.iter().map(PaymentLine::from).collect(),
            account,
            timeline: timeline.iter().map(EventLine::from).collect(),
            refund_error: refund_error.map(|(id, e)| (id.to_string(), e.detail)),
            key: random_token(),
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
    let db = app.db.conn().await?;
    let payment = store::payments::get(&db, payment_id)
        .await?
        .ok_or_else(|| ApiError::from(BillingError::PaymentNotFound))?;
    drop(db);
    let before = payment_json(&payment);
    let amount = match req.field("amount").trim() {
        "" => Ok(None),
        a => Money::parse(a, payment.amount.currency())
            .map(Some)
            .map_err(|e| BillingError::BadField(format!("amount: {e}"))),
    };
    let key = IdempotencyKey::parse(req.field("idempotency_key")).ok();
    let result = match amount {
        Ok(amount) => {
            let request = RefundRequest {
                amount,
                reason: req.field("reason").to_owned(),
            };
            let render = |outcome: &Result<store::refunds::Refund, BillingError>| {
                ApiError::stored(
                    outcome
                        .as_ref()
                        .map(crate::http::handlers::views::RefundView::from),
                    StatusCode::CREATED,
                )
            };
            refunds::admin_refund(app, op.user.id, payment_id, request, key, &render).await
        }
        Err(e) => Err(e),
    };
    let after = match &result {
        Ok(Keyed::Fresh(r)) => Some(json!(crate::http::handlers::views::RefundView::from(r))),
        Ok(Keyed::Replayed(stored)) => Some(stored.body.clone()),
        Err(_) => None,
    };
    record(
        app,
        op,
        NewAuditEntry {
            operator_id: op.user.id,
            action: "refund",
            target: &format!("payment:{payment_id}"),
            before: Some(before),
            after,
            outcome: &outcome_of(&result),
        },
    )
    .await?;
    let done = match &result {
        Ok(Keyed::Fresh(r)) if r.status == crate::domain::RefundStatus::Succeeded => "refunded",
        Ok(_) => "refund-pending",
        Err(_) => "",
    };
    match (result, back) {
        (Ok(_), Back::Viewer(user)) => Ok(redirect(&format!("/console/users/{user}?done={done}"))),
        (Err(e), Back::Viewer(user)) => {
            viewer(app, op, user, None, Some((payment_id, ApiError::from(e)))).await
        }
        (Ok(_), Back::Review(id)) => {
            let note = format!("refunded: {}", req.field("reason").trim());
            let marked = review::mark_reviewed(app, id, op.user.id, &note).await;
            record(
                app,
                op,
                NewAuditEntry {
                    operator_id: op.user.id,
                    action: "mark_reviewed",
                    target: &format!("payment:{id}"),
                    before: Some(json!({"review_reason": payment.review_reason})),
                    after: Some(json!({"note": note})),
                    outcome: &outcome_of(&marked),
                },
            )
            .await?;
            Ok(redirect(&format!("/console/review?done={done}")))
        }
        (Err(e), Back::Review(id)) => {
            review_list(app, op, None, Some((id, ApiError::from(e)))).await
        }
    }
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
    .await?;
    result?;
    let done = if on {
        "auto-renew-on"
    } else {
        "auto-renew-off"
    };
    Ok(redirect(&format!("/console/users/{user_id}?done={done}")))
}

// --- needs review ----------------------------------------------------------

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
    error: Option<(String, String)>,
    key: String,
}

async fn review_list(
    app: &App,
    op: &Operator,
    notice: Option<String>,
    error: Option<(PaymentId, ApiError)>,
) -> Result<Response, ApiError> {
    let flagged = queries::needing_review(&app.db.conn().await?, 50).await?;
    // The provider's figures, read now, beside ours.
    let theirs = futures::future::join_all(flagged.iter().map(|p| async move {
        let provider = app.providers.get(p.pay_system)?;
        let id = p.provider_payment_id.as_deref()?;
        Some(provider.get_payment(id).await)
    }))
    .await;
    let items = flagged
        .iter()
        .zip(theirs)
        .map(|(p, theirs)| {
            let line = PaymentLine::from(&PaymentView::from(p));
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
    let status = error
        .as_ref()
        .map(|(_, e)| e.status)
        .unwrap_or(StatusCode::OK);
    let mut layout = Layout::new(app, Some(op), "Needs review");
    layout.notice = notice;
    Ok(render(
        status,
        &Review {
            layout,
            items,
            error: error.map(|(id, e)| (id.to_string(), e.detail)),
            key: random_token(),
        },
    ))
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
    .await?;
    match result {
        Ok(()) => Ok(redirect("/console/review?done=reviewed")),
        Err(e) => review_list(app, op, None, Some((id, ApiError::from(e)))).await,
    }
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
    history: Vec<AuditLine>,
}

async fn inbox_row(
    app: &App,
    op: &Operator,
    id: InboxId,
    notice: Option<String>,
) -> Result<Response, ApiError> {
    let db = app.db.conn().await?;
    if !webhook_inbox::exists(&db, id).await? {
        return Err(ApiError::not_found(
            "webhook_not_found",
            "no such inbox row",
        ));
    }
    let row = webhook_inbox::get(&db, id).await?;
    let view = InboxView::from(&row);
    let body = view
        .body
        .as_ref()
        .map(|b| serde_json::to_string_pretty(b).unwrap_or_default())
        .unwrap_or_default();
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
            history: history.iter().map(AuditLine::from).collect(),
        },
    ))
}

async fn replay(app: &App, op: &Operator, id: InboxId) -> Result<Response, ApiError> {
    let db = app.db.conn().await?;
    if !webhook_inbox::exists(&db, id).await? {
        return Err(ApiError::not_found(
            "webhook_not_found",
            "no such inbox row",
        ));
    }
    let before = webhook_inbox::get(&db, id).await?;
    drop(db);
    let result = webhooks::process_and_record(app, id).await;
    let after = match &result {
        Ok(_) => Some(webhook_inbox::get(&app.db.conn().await?, id).await?),
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
            outcome: match &result {
                Ok(_) => "ok",
                Err(_) => "database_unavailable",
            },
        },
    )
    .await?;
    result?;
    Ok(redirect(&format!("/console/inbox/{id}?done=replayed")))
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

impl Viewer {
    fn refund_error_for(&self, payment_id: &str) -> Option<&str> {
        match &self.refund_error {
            Some((id, why)) if id == payment_id => Some(why),
            _ => None,
        }
    }
}

impl Review {
    fn error_for(&self, payment_id: &str) -> Option<&str> {
        match &self.error {
            Some((id, why)) if id == payment_id => Some(why),
            _ => None,
        }
    }

    /// A refusal about a payment no longer on the list (reviewed meanwhile).
    fn error_elsewhere(&self) -> Option<&str> {
        match &self.error {
            Some((id, why)) if !self.items.iter().any(|i| &i.id == id) => Some(why),
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
                Err(_) => format!("tariff:{}", req.field("alias").trim()),
            },
            before: None,
            after: result.as_ref().ok().map(|t| json!(TariffView::admin(t))),
            outcome: &outcome_of(&result),
        },
    )
    .await?;
    match result {
        Ok(_) => Ok(redirect("/console/tariffs?done=created")),
        Err(e) => {
            tariff_list(
                app,
                op,
                None,
                Some(("new".into(), ApiError::from(e), req.form.clone())),
            )
            .await
        }
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
    .await?;
    match result {
        Ok(_) => Ok(redirect(&format!("/console/tariffs?done={done}"))),
        Err(e) => {
            tariff_list(
                app,
                op,
                None,
                Some((id.to_string(), ApiError::from(e), req.form.clone())),
            )
            .await
        }
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
