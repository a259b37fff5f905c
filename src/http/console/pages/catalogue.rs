//! Tariffs: the list, create, rename, archive.

use super::*;

pub(super) struct TariffLine {
    pub(super) id: String,
    pub(super) alias: String,
    pub(super) name: String,
    pub(super) price: String,
    pub(super) period: String,
    pub(super) archived: bool,
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
pub(super) struct Tariffs {
    layout: Layout,
    tariffs: Vec<TariffLine>,
    /// The refused form (`new` or a tariff id) and why.
    error: Option<(String, String)>,
    form: HashMap<String, String>,
}

impl Tariffs {
    /// What the refused form held, to show it again.
    pub(super) fn value(&self, name: &str) -> &str {
        self.form.get(name).map(String::as_str).unwrap_or("")
    }

    pub(super) fn error_for(&self, which: &str) -> Option<&str> {
        match &self.error {
            Some((w, why)) if w == which => Some(why),
            _ => None,
        }
    }
}

pub(super) async fn tariff_list(
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
pub(super) fn new_tariff(req: &Request) -> Result<NewTariff, BillingError> {
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

pub(super) async fn tariff_create(
    app: &App,
    op: &Operator,
    req: &Request,
) -> Result<Response, ApiError> {
    let result = match new_tariff(req) {
        Ok(t) => tariffs::create(app, &t).await,
        Err(e) => Err(e),
    };
    record(
        app,
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
        Err(e) => Ok(refused_form(app, op, "new", e, req).await),
    }
}

pub(super) async fn tariff_edit(
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
        Err(e) => Ok(refused_form(app, op, &id.to_string(), e, req).await),
    }
}

/// The tariff page again after a refused form (`new`, or a tariff's id), with
/// why and what the form held.
async fn refused_form(
    app: &App,
    op: &Operator,
    which: &str,
    e: BillingError,
    req: &Request,
) -> Response {
    let refused = (which.to_owned(), ApiError::from(e), req.form.clone());
    done_or_page(app, op, tariff_list(app, op, None, Some(refused)).await)
}
