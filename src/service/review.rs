//! Payments flagged for review (`review_reason`: the provider's data disagreed
//! with ours, nothing was granted). A person resolves one by refunding it
//! (`refunds::admin_refund`) or by marking it reviewed with a note; either way the
//! flag stays, and the note says what was decided.

use crate::app::App;
use crate::domain::{PaymentId, UserId};
use crate::service::BillingError;
use crate::store::{console, payments, Connect};

/// The longest note, in characters.
pub const NOTE_MAX: usize = 500;

pub async fn mark_reviewed(
    app: &App,
    payment_id: PaymentId,
    operator: UserId,
    note: &str,
) -> Result<(), BillingError> {
    let note = note.trim();
    if note.is_empty() || note.chars().count() > NOTE_MAX {
        return Err(BillingError::BadField(format!(
            "note must be 1..={NOTE_MAX} characters"
        )));
    }
    let db = app.db.conn().await?;
    if console::mark_reviewed(&db, payment_id, operator, note).await? {
        return Ok(());
    }
    match payments::get(&db, payment_id).await? {
        None => Err(BillingError::PaymentNotFound),
        Some(_) => Err(BillingError::NotUnderReview),
    }
}
