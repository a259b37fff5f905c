//! How the typed ids of `domain::ids` are stored: as PostgreSQL `uuid`, exactly
//! as a bare `Uuid` is, so they bind as parameters and read from rows directly.

use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use uuid::Uuid;

use crate::domain::ids::*;

macro_rules! sql_uuid {
    ($($name:ident),+) => {$(
        impl ToSql for $name {
            fn to_sql(
                &self,
                ty: &Type,
                out: &mut bytes::BytesMut,
            ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
                self.as_uuid().to_sql(ty, out)
            }
            fn accepts(ty: &Type) -> bool {
                <Uuid as ToSql>::accepts(ty)
            }
            to_sql_checked!();
        }

        impl<'a> FromSql<'a> for $name {
            fn from_sql(
                ty: &Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                Uuid::from_sql(ty, raw).map($name::from_uuid)
            }
            fn accepts(ty: &Type) -> bool {
                <Uuid as FromSql>::accepts(ty)
            }
        }
    )+};
}

sql_uuid!(
    PaymentId,
    UserId,
    TariffId,
    SubscriptionId,
    RefundId,
    InboxId,
    MethodId
);
