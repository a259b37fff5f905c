//! The audit log page.

use super::*;

/// One audit entry as shown (here and in a notification's history).
pub(super) struct AuditLine {
    pub(super) at: String,
    pub(super) operator: String,
    pub(super) action: String,
    pub(super) target: String,
    pub(super) before: String,
    pub(super) after: String,
    pub(super) outcome: String,
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
#[template(path = "console/audit.html")]
pub(super) struct Audit {
    layout: Layout,
    entries: Vec<AuditLine>,
}

pub(super) async fn audit(app: &App, op: &Operator) -> Result<Response, ApiError> {
    let entries = queries::audit_log(&app.db.conn().await?, None, 200).await?;
    Ok(render(
        StatusCode::OK,
        &Audit {
            layout: Layout::new(app, Some(op), "Audit log"),
            entries: entries.iter().map(AuditLine::from).collect(),
        },
    ))
}
