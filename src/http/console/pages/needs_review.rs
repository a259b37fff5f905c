//! Payments flagged for review: ours beside the provider's; refund or mark reviewed.

use super::*;

/// How long the review page waits for each provider read.
pub(super) const PROVIDER_READ: std::time::Duration = std::time::Duration::from_secs(3);

pub(super) struct ReviewItem {
    pub(super) id: String,
    pub(super) user_id: String,
    pub(super) reason: String,
    pub(super) ours: String,
    pub(super) ours_status: String,
    pub(super) ours_test: bool,
    pub(super) provider_id: String,
    pub(super) theirs: String,
    pub(super) theirs_status: String,
    pub(super) theirs_test: String,
    pub(super) theirs_account: String,
    pub(super) currency: String,
    pub(super) refundable: Option<String>,
    pub(super) created_at: String,
}

#[derive(Template)]
#[template(path = "console/review.html")]
pub(super) struct Review {
    layout: Layout,
    items: Vec<ReviewItem>,
    forms: Forms,
}

pub(super) async fn review_list(
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
pub(super) async fn mark_and_record(
    app: &App,
    op: &Operator,
    id: PaymentId,
    before: Option<Value>,
    note: &str,
) -> Result<(), BillingError> {
    let result = review::mark_reviewed(app, id, op.user.id, note).await;
    record(
        app,
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

pub(super) async fn mark_reviewed(
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

impl Review {
    /// A refusal about a payment no longer on the list (reviewed meanwhile).
    pub(super) fn error_elsewhere(&self) -> Option<&str> {
        match &self.forms.refused {
            Some(r) if !self.items.iter().any(|i| i.id == r.payment_id) => Some(&r.detail),
            _ => None,
        }
    }
}
