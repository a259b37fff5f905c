//! Every route the service answers, as (method, template). Metrics label requests
//! with these templates (never raw paths), and a test checks the OpenAPI document
//! lists exactly these, so the description cannot drift from the code.

pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/tariffs"),
    ("GET", "/api/v1/pay-systems"),
    ("POST", "/api/v1/subscriptions/{pay_system}/buy"),
    ("GET", "/api/v1/subscriptions/profile"),
    ("POST", "/api/v1/subscriptions/cancel"),
    ("POST", "/api/v1/subscriptions/resume"),
    ("POST", "/api/v1/subscriptions/contact"),
    ("POST", "/api/v1/subscriptions/change"),
    ("GET", "/api/v1/payments/profile"),
    ("GET", "/api/v1/payments/{id}"),
    ("POST", "/webhooks/yookassa"),
    ("GET", "/api/v1/admin/tariffs"),
    ("POST", "/api/v1/admin/tariffs"),
    ("PATCH", "/api/v1/admin/tariffs/{id}"),
    ("POST", "/api/v1/admin/payments/{id}/refund"),
    ("GET", "/api/v1/admin/users/{user_id}"),
    ("GET", "/api/v1/admin/webhooks"),
    ("POST", "/api/v1/admin/webhooks/{id}/replay"),
    ("POST", "/webhooks/cloudpayments/{kind}"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/docs"),
];

/// Routes of the built-in sandbox provider (sandbox mode only; not part of the API).
pub const SANDBOX_ROUTES: &[(&str, &str)] = &[
    ("POST", "/sandbox/yookassa/v3/payments"),
    ("GET", "/sandbox/yookassa/v3/payments"),
    ("GET", "/sandbox/yookassa/v3/payments/{id}"),
    ("POST", "/sandbox/yookassa/v3/refunds"),
    ("GET", "/sandbox/yookassa/v3/refunds/{id}"),
    ("GET", "/sandbox/checkout/{id}"),
    ("POST", "/sandbox/checkout/{id}"),
    ("GET", "/sandbox/return"),
    ("GET", "/favicon.ico"),
];

/// The template a request path matches, for metric labels; `unmatched` otherwise.
pub fn template(method: &str, path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    ROUTES
        .iter()
        .chain(SANDBOX_ROUTES)
        .chain(super::console::CONSOLE_ROUTES)
        .filter(|(m, _)| *m == method || (method == "HEAD" && *m == "GET"))
        .map(|(_, t)| *t)
        .find(|t| {
            let parts: Vec<&str> = t.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p.starts_with('{') || p == s)
        })
        .unwrap_or("unmatched")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_collapse_into_templates() {
        assert_eq!(
            template(
                "GET",
                "/api/v1/payments/0d3c4a90-3f44-4a63-9d6b-6a4a7b1c2d3e"
            ),
            "/api/v1/payments/{id}"
        );
        assert_eq!(
            template("GET", "/api/v1/payments/profile"),
            "/api/v1/payments/profile"
        );
        assert_eq!(
            template("POST", "/api/v1/subscriptions/yookassa/buy"),
            "/api/v1/subscriptions/{pay_system}/buy"
        );
        assert_eq!(
            template("POST", "/webhooks/cloudpayments/pay"),
            "/webhooks/cloudpayments/{kind}"
        );
        assert_eq!(
            template(
                "POST",
                "/console/users/0d3c4a90-3f44-4a63-9d6b-6a4a7b1c2d3e/refund"
            ),
            "/console/users/{id}/refund"
        );
        assert_eq!(template("GET", "/console"), "/console");
        assert_eq!(template("GET", "/etc/passwd"), "unmatched");
        assert_eq!(template("DELETE", "/api/v1/tariffs"), "unmatched");
    }
}
