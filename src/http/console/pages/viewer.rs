//! One viewer: their account and timeline; refunds and auto-renewal on their behalf.

use super::*;

pub(super) struct PaymentLine {
    pub(super) id: String,
    pub(super) kind: String,
    pub(super) status: String,
    pub(super) pay_system: String,
    pub(super) amount: String,
    pub(super) refunded: String,
    pub(super) currency: String,
    /// What is left to refund, when the payment can be refunded at all.
    pub(super) refundable: Option<String>,
    pub(super) created_at: String,
    pub(super) reason: String,
}

impl PaymentLine {
    /// `gone_minor`: what of it cannot be refunded beyond what was (pending
    /// refunds, a tariff change's credit), as the service counts it.
    pub(super) fn new(p: &PaymentView, gone_minor: i64) -> Self {
        let left = p.amount.minor() - p.refunded_amount.minor() - gone_minor;
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
    pub(super) payment_id: String,
    pub(super) status: StatusCode,
    pub(super) code: String,
    pub(super) detail: String,
    /// The outcome is not known (the provider did not answer, or the first
    /// submission is still running): the form keeps its Idempotency-Key, so
    /// sending it again resumes that refund instead of making a second one.
    pub(super) key: Option<String>,
    pub(super) amount: String,
    pub(super) reason: String,
}

impl Refused {
    pub(super) fn new(payment_id: PaymentId, e: &ApiError) -> Refused {
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
    pub(super) key: String,
    pub(super) refused: Option<Refused>,
}

impl Forms {
    pub(super) fn new(refused: Option<Refused>) -> Forms {
        Forms {
            key: random_token(),
            refused,
        }
    }

    pub(super) fn status(&self) -> StatusCode {
        self.refused
            .as_ref()
            .map(|r| r.status)
            .unwrap_or(StatusCode::OK)
    }

    pub(super) fn about(&self, payment_id: &str) -> Option<&Refused> {
        self.refused.as_ref().filter(|r| r.payment_id == payment_id)
    }

    pub(super) fn error_for(&self, payment_id: &str) -> Option<&str> {
        self.about(payment_id).map(|r| r.detail.as_str())
    }

    pub(super) fn key_for(&self, payment_id: &str) -> String {
        match self.about(payment_id).and_then(|r| r.key.clone()) {
            Some(key) => key,
            None => format!("{}-{payment_id}", self.key),
        }
    }

    pub(super) fn amount_for(&self, payment_id: &str) -> &str {
        self.about(payment_id).map_or("", |r| r.amount.as_str())
    }

    pub(super) fn reason_for(&self, payment_id: &str) -> &str {
        self.about(payment_id).map_or("", |r| r.reason.as_str())
    }
}

pub(super) struct EventLine {
    pub(super) seq: String,
    pub(super) event_type: String,
    pub(super) occurred_at: String,
    pub(super) summary: String,
    pub(super) published: bool,
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
pub(super) struct Viewer {
    layout: Layout,
    user_id: String,
    account: crate::http::handlers::views::UserAccount,
    payments: Vec<PaymentLine>,
    timeline: Vec<EventLine>,
    forms: Forms,
}

pub(super) async fn viewer(
    app: &App,
    op: &Operator,
    user_id: UserId,
    notice: Option<String>,
    refused: Option<Refused>,
) -> Result<Response, ApiError> {
    let account = admin::account(app, user_id).await?;
    let db = app.db.conn().await?;
    let timeline = queries::timeline(&db, user_id, 200).await?;
    let credited = queries::credited_of_user(&db, user_id).await?;
    drop(db);
    // Not refundable: refunds sent and not final yet, and what a tariff change
    // took as credit.
    let gone = |id: PaymentId| {
        let pending: i64 = account
            .refunds
            .iter()
            .filter(|r| r.payment_id == id && r.status == crate::domain::RefundStatus::Pending)
            .map(|r| r.amount.minor())
            .sum();
        let credit: i64 = credited
            .iter()
            .filter(|(p, _)| *p == id)
            .map(|(_, c)| c)
            .sum();
        pending + credit
    };
    let payments = account
        .payments
        .iter()
        .map(|p| PaymentLine::new(p, gone(p.id)))
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
pub(super) enum Back {
    Viewer(UserId),
    Review(PaymentId),
}

pub(super) async fn refund(
    app: &App,
    op: &Operator,
    req: &Request,
    back: Back,
) -> Result<Response, ApiError> {
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
pub(super) fn done_or_page(app: &App, op: &Operator, page: Result<Response, ApiError>) -> Response {
    page.unwrap_or_else(|e| error_page(app, op, &e))
}

pub(super) fn payment_json(p: &store::Payment) -> Value {
    json!({
        "status": p.status.as_str(),
        "amount": p.amount,
        "refunded": format_minor(p.refunded_minor),
    })
}

pub(super) async fn auto_renew(
    app: &App,
    op: &Operator,
    user_id: UserId,
    on: bool,
) -> Result<Response, ApiError> {
    let before = store::subscriptions::current_for_user(&app.db.conn().await?, user_id)
        .await?
        .map(|s| json!({"auto_renew": s.auto_renew, "subscription_id": s.id, "status": s.status.as_str()}));
    let result = subs::set_auto_renew(app, user_id, on).await;
    record(app, NewAuditEntry {
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
