//! Operator routes (superuser token): tariffs, refunds, one viewer's account, the
//! webhook inbox and its replay.

use serde::Deserialize;
use serde_json::Value;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::account::{pagination, subscription_view};
use super::views::{
    DeclineView, InboxView, PaymentMethodView, PaymentView, ReceiptView, RefundView, TariffView,
    UserAccount,
};
use super::{json as reply, keyed, ok};
use crate::app::App;
use crate::domain::{InboxId, PaymentId, TariffId, UserId};
use crate::http::error::ApiError;
use crate::http::filters::Superuser;
use crate::service::idempotency::IdempotencyKey;
use crate::service::refunds::{self, RefundRequest};
use crate::service::tariffs::{self, NewTariff, TariffEdit};
use crate::service::{webhooks, BillingError};
use crate::store::refunds::Refund;
use crate::store::webhook_inbox;
use crate::store::Connect;
use crate::store::{self, payments, subscriptions};

#[utoipa::path(
    get,
    path = "/api/v1/admin/tariffs",
    tag = "admin",
    operation_id = "adminListTariffs",
    summary = "Every tariff, archived ones included",
    security(("jwt" = [])),
    responses(
        (status = 200, description = "Tariffs, live ones first", body = [TariffView]),
        (status = 401, description = "`unauthorized`: missing or invalid access token", body = crate::http::error::ErrorBody),
        (status = 403, description = "`forbidden`: not a superuser", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`: the database is unavailable, retry later", body = crate::http::error::ErrorBody),
    )
)]
pub async fn tariffs_list(app: App) -> Result<Response, ApiError> {
    let list = store::tariffs::list_all(&app.db.conn().await?).await?;
    Ok(ok(&list.iter().map(TariffView::admin).collect::<Vec<_>>()))
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/tariffs",
    tag = "admin",
    operation_id = "adminCreateTariff",
    summary = "Create a tariff",
    request_body = NewTariff,
    security(("jwt" = [])),
    responses(
        (status = 201, description = "Created", body = TariffView),
        (status = 400, description = "`bad_json`, `bad_body`, `bad_field` (name, description, alias or period out of bounds)", body = crate::http::error::ErrorBody),
        (status = 401, description = "`unauthorized`: missing or invalid access token", body = crate::http::error::ErrorBody),
        (status = 403, description = "`forbidden`: not a superuser", body = crate::http::error::ErrorBody),
        (status = 409, description = "`alias_taken`: a tariff with this alias exists", body = crate::http::error::ErrorBody),
        (status = 413, description = "`payload_too_large`: request body is over 64 KiB", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`: the database is unavailable, retry later", body = crate::http::error::ErrorBody),
    )
)]
pub async fn tariff_create(app: App, t: NewTariff) -> Result<Response, ApiError> {
    let created = tariffs::create(&app, &t).await?;
    Ok(reply(StatusCode::CREATED, &TariffView::admin(&created)))
}

/// Price and period never change (409 `tariff_immutable`): archive the tariff and
/// create another.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TariffPatch {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    #[schema(max_length = 2000)]
    description: Option<String>,
    archived: Option<bool>,
    /// 1..12 (54-FZ receipts); applies to purchases and renewals charged from now on.
    #[schema(minimum = 1, maximum = 12)]
    vat_code: Option<i64>,
    /// 1..6, or null for none (the till's own).
    #[schema(minimum = 1, maximum = 6)]
    tax_system_code: Option<i64>,
}

/// Name, description and archival change; price and period never do (a sold
/// tariff keeps its price: archive it and create another).
#[utoipa::path(
    patch,
    path = "/api/v1/admin/tariffs/{id}",
    tag = "admin",
    operation_id = "adminPatchTariff",
    summary = "Rename, describe or archive a tariff",
    params(
        ("id" = TariffId, Path, description = "Tariff id"),
    ),
    request_body = TariffPatch,
    security(("jwt" = [])),
    responses(
        (status = 200, description = "The tariff", body = TariffView),
        (status = 400, description = "`bad_uuid`, `bad_json`, `bad_body`, `bad_field`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`unauthorized`: missing or invalid access token", body = crate::http::error::ErrorBody),
        (status = 403, description = "`forbidden`: not a superuser", body = crate::http::error::ErrorBody),
        (status = 404, description = "`tariff_not_found`", body = crate::http::error::ErrorBody),
        (status = 409, description = "`tariff_immutable`: price and period never change", body = crate::http::error::ErrorBody),
        (status = 413, description = "`payload_too_large`: request body is over 64 KiB", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`: the database is unavailable, retry later", body = crate::http::error::ErrorBody),
    )
)]
pub async fn tariff_patch(app: App, id: TariffId, value: Value) -> Result<Response, ApiError> {
    if value.get("price").is_some() || value.get("period").is_some() {
        return Err(BillingError::TariffImmutable.into());
    }
    let clear_tax_system = value.get("tax_system_code").is_some_and(Value::is_null);
    let patch: TariffPatch = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("bad_json", crate::http::body::json_error(&e)))?;
    let changed = tariffs::change(
        &app,
        id,
        &TariffEdit {
            name: patch.name,
            description: patch.description,
            archived: patch.archived,
            vat_code: patch.vat_code,
            tax_system_code: patch.tax_system_code,
            clear_tax_system,
        },
    )
    .await?;
    Ok(ok(&TariffView::admin(&changed)))
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/payments/{id}/refund",
    tag = "admin",
    operation_id = "adminRefund",
    summary = "Refund a payment, fully (no amount) or partly",
    params(
        ("id" = PaymentId, Path, description = "Payment id"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, description = "Scoped to the user, kept 24 h. The same key with the same body returns the same answer; with another body 422; while the first request is still running 409."),
    ),
    request_body = crate::service::refunds::RefundRequest,
    security(("jwt" = [])),
    responses(
        (status = 201, description = "The refund", body = crate::http::handlers::views::RefundView),
        (status = 400, description = "`bad_uuid`, `bad_json`, `bad_body`, `bad_reason` (1..=500 characters), `currency_mismatch`, `bad_idempotency_key`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`unauthorized`: missing or invalid access token", body = crate::http::error::ErrorBody),
        (status = 403, description = "`forbidden`: not a superuser", body = crate::http::error::ErrorBody),
        (status = 404, description = "`payment_not_found`", body = crate::http::error::ErrorBody),
        (status = 409, description = "`payment_not_refundable`, `refund_exceeds_remaining` (more than what is left), `request_in_progress` (same Idempotency-Key still running)", body = crate::http::error::ErrorBody),
        (status = 413, description = "`payload_too_large`: request body is over 64 KiB", body = crate::http::error::ErrorBody),
        (status = 422, description = "`idempotency_key_reused`: the Idempotency-Key was used with another body", body = crate::http::error::ErrorBody),
        (status = 502, description = "`provider_unavailable` (unreachable: the refund stays queued and is re-sent) or `provider_rejected` (refused: the refund is canceled)", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`: the database is unavailable, retry later", body = crate::http::error::ErrorBody),
    )
)]
pub async fn refund(
    app: App,
    payment_id: PaymentId,
    Superuser(admin): Superuser,
    key: Option<IdempotencyKey>,
    req: RefundRequest,
) -> Result<Response, ApiError> {
    let render = |outcome: &Result<Refund, BillingError>| {
        ApiError::stored(outcome.as_ref().map(RefundView::from), StatusCode::CREATED)
    };
    let answer = refunds::admin_refund(&app, admin.id, payment_id, req, key, &render).await?;
    Ok(keyed(
        StatusCode::CREATED,
        answer.map(|r| RefundView::from(&r)),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/users/{user_id}",
    tag = "admin",
    operation_id = "adminUser",
    summary = "One viewer's subscription, payments, refunds and saved methods",
    params(
        ("user_id" = UserId, Path),
    ),
    security(("jwt" = [])),
    responses(
        (status = 200, description = "The account (empty lists for an unknown user)", body = UserAccount),
        (status = 400, description = "`bad_uuid`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`unauthorized`: missing or invalid access token", body = crate::http::error::ErrorBody),
        (status = 403, description = "`forbidden`: not a superuser", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`: the database is unavailable, retry later", body = crate::http::error::ErrorBody),
    )
)]
pub async fn user(app: App, user_id: UserId) -> Result<Response, ApiError> {
    Ok(ok(&account(&app, user_id).await?))
}

/// One viewer's account as operators see it (the admin API and the console).
pub async fn account(app: &App, user_id: UserId) -> Result<UserAccount, ApiError> {
    let db = app.db.conn().await?;
    let subscription = match subscriptions::current_for_user(&db, user_id).await? {
        Some(s) => Some(subscription_view(&db, &s).await?),
        None => None,
    };
    let (payments, total) = payments::list_for_user(&db, user_id, 100, 0).await?;
    let payments: Vec<PaymentView> = payments.iter().map(PaymentView::from).collect();
    let refunds: Vec<RefundView> = store::refunds::list_for_user(&db, user_id)
        .await?
        .iter()
        .map(RefundView::from)
        .collect();
    let methods = store::payment_methods::of_user(&db, user_id).await?;
    Ok(UserAccount {
        user_id,
        subscription,
        payments,
        payments_total: total,
        refunds,
        payment_methods: methods.iter().map(PaymentMethodView::from).collect(),
        declined_attempts: payments::declines_of_user(&db, user_id)
            .await?
            .iter()
            .map(DeclineView::from)
            .collect(),
        receipts: payments::receipts_of_user(&db, user_id)
            .await?
            .iter()
            .map(ReceiptView::from)
            .collect(),
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/webhooks",
    tag = "admin",
    operation_id = "adminWebhooks",
    summary = "The webhook inbox, newest first",
    params(
        ("status" = Option<crate::domain::InboxStatus>, Query),
        ("provider" = Option<crate::domain::PaySystem>, Query),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Page size, 1..=100, default 10; anything else is 400"),
        ("page" = Option<i64>, Query, minimum = 1, maximum = 1000000, description = "1-based page number, default 1; anything else is 400"),
    ),
    security(("jwt" = [])),
    responses(
        (status = 200, description = "Inbox rows", body = [InboxView]),
        (status = 400, description = "`bad_query`, `bad_status`, `bad_provider`, `bad_pagination`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`unauthorized`: missing or invalid access token", body = crate::http::error::ErrorBody),
        (status = 403, description = "`forbidden`: not a superuser", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`: the database is unavailable, retry later", body = crate::http::error::ErrorBody),
    )
)]
pub async fn webhooks_list(app: App, query: String) -> Result<Response, ApiError> {
    let params: std::collections::HashMap<String, String> = serde_urlencoded::from_str(&query)
        .map_err(|e| ApiError::bad_request("bad_query", format!("malformed query string: {e}")))?;
    let status = params.get("status").filter(|s| !s.is_empty());
    if let Some(s) = status {
        if !["received", "processed", "failed", "ignored"].contains(&s.as_str()) {
            return Err(ApiError::bad_request(
                "bad_status",
                "status is received, processed, failed or ignored",
            ));
        }
    }
    let provider = params.get("provider").filter(|s| !s.is_empty());
    if let Some(p) = provider {
        if p.parse::<crate::domain::PaySystem>().is_err() {
            return Err(ApiError::bad_request(
                "bad_provider",
                "provider is yookassa or cloudpayments",
            ));
        }
    }
    let (limit, page) = pagination(&query)?;
    let db = app.db.conn().await?;
    let rows = webhook_inbox::list(
        &db,
        status.map(String::as_str),
        provider.map(String::as_str),
        None,
        limit,
        (page - 1) * limit,
    )
    .await?;
    let list: Vec<InboxView> = rows.iter().map(InboxView::from).collect();
    Ok(ok(&list))
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/webhooks/{id}/replay",
    tag = "admin",
    operation_id = "adminReplayWebhook",
    summary = "Process a stored notification again (idempotent)",
    params(
        ("id" = InboxId, Path, description = "Inbox row id"),
    ),
    security(("jwt" = [])),
    responses(
        (status = 200, description = "The inbox row after processing", body = InboxView),
        (status = 400, description = "`bad_uuid`", body = crate::http::error::ErrorBody),
        (status = 401, description = "`unauthorized`: missing or invalid access token", body = crate::http::error::ErrorBody),
        (status = 403, description = "`forbidden`: not a superuser", body = crate::http::error::ErrorBody),
        (status = 404, description = "`webhook_not_found`", body = crate::http::error::ErrorBody),
        (status = 503, description = "`database_unavailable`: the database is unavailable, retry later", body = crate::http::error::ErrorBody),
    )
)]
pub async fn webhook_replay(app: App, id: InboxId) -> Result<Response, ApiError> {
    let db = app.db.conn().await?;
    if !webhook_inbox::exists(&db, id).await? {
        return Err(ApiError::not_found(
            "webhook_not_found",
            "no such inbox row",
        ));
    }
    webhooks::process_and_record(&app, id).await?;
    let row = webhook_inbox::get(&db, id).await?;
    Ok(
        warp::reply::with_status(warp::reply::json(&InboxView::from(&row)), StatusCode::OK)
            .into_response(),
    )
}
