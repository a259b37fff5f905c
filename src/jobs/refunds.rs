//! Follows up refunds the provider has not settled. Claimed with SKIP LOCKED and a
//! lease (committed before any provider call), then, per refund:
//!
//! - answered `pending` (we hold the provider's refund id): re-read until it is
//!   `succeeded` or `canceled`;
//! - never answered (the outcome is unknown): re-sent with its stored key while the
//!   provider still keeps keys (YooKassa: 24 h, so under 23 h). Past that window the
//!   same key could refund a second time: it is not re-sent but alerted
//!   (`refund_unresolved`) and left pending, still counted against what is left to
//!   refund, for an operator to resolve;
//! - refused for good (a parsed 4xx, or canceled at the provider): `canceled` and
//!   alerted (`refund_refused`) by `service::refunds`, never sent again.
//!
//! A refund still open waits 1 minute, doubling to 1 hour, between tries.

use uuid::Uuid;

use crate::app::App;
use crate::domain::{PaySystem, RefundStatus};
use crate::service::refunds::{self, RefundError};
use crate::service::settle;

pub const BATCH: usize = 20;
/// A claimed refund is left alone this long (a provider call with retries is far shorter).
pub const LEASE_SECS: f64 = 300.0;
pub const FIRST_RETRY_SECS: f64 = 60.0;
pub const MAX_BACKOFF_SECS: f64 = 3600.0;
/// YooKassa keeps idempotence keys 24 h: an unanswered refund older than this is not re-sent.
pub const RESEND_WINDOW_HOURS: i32 = 23;

struct Claimed {
    id: Uuid,
    payment_id: Uuid,
    pay_system: String,
    provider_refund_id: Option<String>,
    in_key_window: bool,
}

enum Next {
    /// Succeeded or canceled: nothing more to do.
    Final,
    /// Still open: try again later.
    Open(String),
    /// Unanswered past the key window: stop and alert.
    Unresolved,
}

pub async fn run_once(app: &App) -> Result<usize, String> {
    let claimed: Vec<Claimed> = {
        let db = app.db.get().await.map_err(|e| e.to_string())?;
        db.query(
            "UPDATE refunds SET next_attempt_at = now() + make_interval(secs => $2) WHERE id IN ( \
               SELECT id FROM refunds WHERE status = 'pending' AND next_attempt_at <= now() \
               ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING id, payment_id, pay_system, provider_refund_id, \
               created_at > now() - make_interval(hours => $3)",
            &[&(BATCH as i64), &LEASE_SECS, &RESEND_WINDOW_HOURS],
        )
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| Claimed {
            id: r.get(0),
            payment_id: r.get(1),
            pay_system: r.get(2),
            provider_refund_id: r.get(3),
            in_key_window: r.get(4),
        })
        .collect()
    };
    for c in &claimed {
        let next = follow(app, c).await;
        if let Err(e) = schedule(app, c, next).await {
            tracing::warn!(refund_id = %c.id, error = %e, "could not schedule the refund's next try");
        }
    }
    Ok(claimed.len())
}

async fn follow(app: &App, c: &Claimed) -> Next {
    match &c.provider_refund_id {
        Some(provider_id) => {
            let Some(provider) = c
                .pay_system
                .parse::<PaySystem>()
                .ok()
                .and_then(|s| app.providers.get(s).cloned())
            else {
                return Next::Open(format!("{} is not configured", c.pay_system));
            };
            match provider.get_refund(provider_id).await {
                Ok(r) if r.status == RefundStatus::Pending => {
                    Next::Open("still pending at the provider".into())
                }
                Ok(r) => match refunds::record_result(app, c.id, &r.id, r.status).await {
                    Ok(()) => Next::Final,
                    Err(e) => Next::Open(e.to_string()),
                },
                Err(e) => Next::Open(e.to_string()),
            }
        }
        None if c.in_key_window => match refunds::submit(app, c.id).await {
            Ok(RefundStatus::Pending) => Next::Open("answered pending".into()),
            Ok(_) => Next::Final,
            // Canceled and alerted by `submit`.
            Err(RefundError::Provider(e)) if e.is_definite() => Next::Final,
            Err(RefundError::NotFound(_)) => Next::Final,
            Err(e) => Next::Open(e.to_string()),
        },
        None => Next::Unresolved,
    }
}

async fn schedule(app: &App, c: &Claimed, next: Next) -> Result<(), String> {
    let db = app.db.get().await.map_err(|e| e.to_string())?;
    match next {
        Next::Final => {}
        Next::Open(why) => {
            db.execute(
                "UPDATE refunds SET attempts = attempts + 1, last_error = $2, updated_at = now(), \
                 next_attempt_at = now() + make_interval(secs => LEAST($3 * power(2, LEAST(attempts, 20)), $4)) \
                 WHERE id = $1 AND status = 'pending'",
                &[&c.id, &why, &FIRST_RETRY_SECS, &MAX_BACKOFF_SECS],
            )
            .await
            .map_err(|e| e.to_string())?;
        }
        Next::Unresolved => {
            let n = db
                .execute(
                    "UPDATE refunds SET next_attempt_at = NULL, updated_at = now(), \
                     last_error = 'unanswered past the provider''s idempotence-key window; not re-sent' \
                     WHERE id = $1 AND status = 'pending'",
                    &[&c.id],
                )
                .await
                .map_err(|e| e.to_string())?;
            if n == 1 {
                settle::alert(
                    "refund_unresolved",
                    &format!(
                        "refund {} never answered and past the key window: check it in the provider's dashboard",
                        c.id
                    ),
                    c.payment_id,
                );
            }
        }
    }
    Ok(())
}
