//! The webhook inbox: the list, one notification with its history, Replay.

use super::*;

pub(super) struct InboxLine {
    pub(super) id: String,
    pub(super) provider: String,
    pub(super) event: String,
    pub(super) object_id: String,
    pub(super) status: String,
    pub(super) attempts: i32,
    pub(super) deliveries: i32,
    pub(super) received_at: String,
    pub(super) last_received_at: String,
    pub(super) processed_at: String,
    pub(super) outcome: String,
    pub(super) last_error: String,
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
pub(super) struct Inbox {
    layout: Layout,
    rows: Vec<InboxLine>,
    provider: String,
    status: String,
    age: String,
    page: i64,
    next: Option<String>,
}

pub(super) const INBOX_PAGE: i64 = 50;

pub(super) async fn inbox(app: &App, op: &Operator, req: &Request) -> Result<Response, ApiError> {
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

#[derive(Template)]
#[template(path = "console/inbox_row.html")]
pub(super) struct InboxRowPage {
    layout: Layout,
    row: InboxLine,
    body: String,
    purged: bool,
    attempts: Vec<AttemptLine>,
    history: Vec<AuditLine>,
}

pub(super) struct AttemptLine {
    pub(super) attempt: i32,
    pub(super) at: String,
    pub(super) status: String,
    pub(super) outcome: String,
    pub(super) error: String,
}

/// One inbox row, or 404 `webhook_not_found`.
pub(super) async fn inbox_row_of(
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

pub(super) async fn inbox_row(
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

pub(super) async fn replay(app: &App, op: &Operator, id: InboxId) -> Result<Response, ApiError> {
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
