//! The overview and find.

use super::*;

pub(super) struct RevenueLine {
    pub(super) currency: String,
    pub(super) payments: i64,
    pub(super) captured: String,
    pub(super) refunded: String,
    pub(super) kept: String,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
pub(super) struct Overview {
    layout: Layout,
    o: queries::Overview,
    oldest_unsent: String,
    alerts: Vec<(String, i64)>,
    revenue: Vec<RevenueLine>,
}

pub(super) async fn overview(app: &App, op: &Operator) -> Result<Response, ApiError> {
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

pub(super) fn age(d: ChronoDuration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

pub(super) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Template)]
#[template(path = "console/find.html")]
pub(super) struct Find {
    layout: Layout,
    q: String,
    /// A well-formed user id nothing is recorded for (a viewer who never paid).
    unknown_user: Option<String>,
}

pub(super) async fn find(app: &App, op: &Operator, q: &str) -> Result<Response, ApiError> {
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
