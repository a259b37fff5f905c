//! The fake providers, each a standalone server over real HTTP, and the typed
//! settings that point a test server at them.

use std::net::SocketAddr;
use std::sync::Arc;

use billing::config::{
    decode_whsec, parse_cidrs, CloudPaymentsConfig, Config, Mode, Secret, YooKassaConfig,
    YOOKASSA_IPS,
};
use billing::providers::sandbox::cloudpayments::CloudPaymentsSandbox;
use billing::providers::sandbox::Sandbox;

/// The fake YooKassa shop: a `test_` key, so the service runs in test mode.
pub const YOOKASSA_SHOP_ID: &str = "test-shop";
pub const YOOKASSA_SECRET_KEY: &str = "test_secret";
pub const CP_PUBLIC_ID: &str = "pk_test_cinema";
pub const CP_API_SECRET: &str = "cp-api-secret-for-tests";
/// A real provider needs a JWT key of its own (never the sandbox dev key).
pub const JWT_KEY: &str = "test-jwt-key";
pub const OPS_SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
pub const RETURN_URL: &str = "https://cinema.example/return";

fn any_loopback_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("a socket address")
}

/// Starts a fake YooKassa and points `config` at it: test mode, notifications
/// allowed from loopback only, ops replays signed with [`OPS_SECRET`].
pub async fn yookassa(config: &mut Config) -> Arc<Sandbox> {
    let fake = Sandbox::new(YOOKASSA_SHOP_ID, YOOKASSA_SECRET_KEY, true);
    let addr = fake
        .spawn(any_loopback_port())
        .await
        .expect("the fake YooKassa listens");
    config.mode = Mode::Test;
    config.jwt_secret = Secret::new(JWT_KEY);
    config.yookassa = YooKassaConfig {
        shop_id: YOOKASSA_SHOP_ID.into(),
        secret_key: Secret::new(YOOKASSA_SECRET_KEY),
        api_url: Some(format!("http://{addr}/sandbox/yookassa/v3")),
        return_url: Some(RETURN_URL.into()),
        allowed_ips: cidrs("127.0.0.1/32"),
    };
    config.ops_webhook_secret = Some(decode_whsec(OPS_SECRET).expect("OPS_SECRET is a whsec_ key"));
    fake
}

/// Starts a fake CloudPayments and points `config` at it: a test terminal, or a
/// live one (`TestMode` false, `CLOUDPAYMENTS_MODE=live`).
pub async fn cloudpayments(config: &mut Config, live: bool) -> Arc<CloudPaymentsSandbox> {
    let fake = CloudPaymentsSandbox::new(CP_PUBLIC_ID, CP_API_SECRET, !live);
    let addr = fake
        .spawn(any_loopback_port())
        .await
        .expect("the fake CloudPayments listens");
    config.jwt_secret = Secret::new(JWT_KEY);
    config.cloudpayments = Some(CloudPaymentsConfig {
        public_id: CP_PUBLIC_ID.into(),
        api_secret: Secret::new(CP_API_SECRET),
        api_url: format!("http://{addr}/sandbox/cloudpayments"),
        mode: if live { Mode::Live } else { Mode::Test },
    });
    fake
}

/// IP addresses and CIDR ranges, comma-separated.
pub fn cidrs(text: &str) -> Vec<ipnet::IpNet> {
    parse_cidrs(text).expect("valid CIDR ranges")
}

/// YooKassa's published notification sources: the allow-list when none is configured.
pub fn yookassa_ips() -> Vec<ipnet::IpNet> {
    cidrs(&YOOKASSA_IPS.join(","))
}
