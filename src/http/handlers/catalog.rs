//! Public catalogue: tariffs and the providers a viewer can pay with.

use warp::reply::Response;

use super::ok;
use crate::app::App;
use crate::domain::PaySystem;
use crate::http::error::ApiError;
use crate::store::tariffs;

pub async fn list_tariffs(app: App) -> Result<Response, ApiError> {
    let db = app.db.get().await?;
    Ok(ok(&tariffs::list_active(&db).await?))
}

pub async fn list_pay_systems(app: App) -> Result<Response, ApiError> {
    let db = app.db.get().await?;
    let systems: Vec<_> = tariffs::list_pay_systems(&db)
        .await?
        .into_iter()
        .filter(|s| match s.alias {
            PaySystem::YooKassa => true,
            PaySystem::CloudPayments => app.config.cloudpayments.is_some(),
        })
        .collect();
    Ok(ok(&systems))
}
