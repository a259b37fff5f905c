//! Public catalogue: tariffs and the providers a viewer can pay with.

use warp::reply::Response;

use super::ok;
use super::views::{PaySystemView, TariffView};
use crate::app::App;
use crate::domain::PaySystem;
use crate::http::error::ApiError;
use crate::store::tariffs;
use crate::store::Connect;

#[utoipa::path(
    get,
    path = "/api/v1/tariffs",
    tag = "catalogue",
    operation_id = "listTariffs",
    summary = "Active tariffs, cheapest first",
    responses(
        (status = 200, description = "Bare JSON array of tariffs", body = [TariffView]),
        (status = 503, description = "`database_unavailable`: the database is unavailable, retry later", body = crate::http::error::ErrorBody),
    )
)]
pub async fn list_tariffs(app: App) -> Result<Response, ApiError> {
    Ok(app.tariff_cache.response(&app.db).await?)
}

#[utoipa::path(
    get,
    path = "/api/v1/pay-systems",
    tag = "catalogue",
    operation_id = "listPaySystems",
    summary = "Enabled payment providers",
    responses(
        (status = 200, description = "Bare JSON array of providers", body = [PaySystemView]),
        (status = 503, description = "`database_unavailable`: the database is unavailable, retry later", body = crate::http::error::ErrorBody),
    )
)]
pub async fn list_pay_systems(app: App) -> Result<Response, ApiError> {
    let db = app.db.conn().await?;
    let systems: Vec<PaySystemView> = tariffs::list_pay_systems(&db)
        .await?
        .into_iter()
        .filter(|s| match s.alias {
            PaySystem::YooKassa => true,
            PaySystem::CloudPayments => app.config.cloudpayments.is_some(),
        })
        .map(|s| PaySystemView::from(&s))
        .collect();
    Ok(ok(&systems))
}
