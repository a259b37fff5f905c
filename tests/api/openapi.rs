//! The served OpenAPI document against the service itself: its structure is sound
//! (every `$ref` resolves, every path parameter is declared), and real answers of
//! the real routes fit the schemas documented for their route and status.

use std::collections::BTreeSet;

use crate::helpers::*;
use billing::domain::UserId;
use billing::providers::sandbox::Outcome;
use serde_json::{json, Value};
use uuid::Uuid;

async fn document(app: &TestApp) -> Value {
    let (status, doc) = app.get("/api/openapi.json", None).await;
    assert_eq!(status, 200);
    doc
}

/// Every `$ref` below `value`, with where it was found.
fn refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push((at.clone(), r)),
                    _ => refs(v, format!("{at}/{k}"), out),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, format!("{at}/{i}"), out)
            }
        }
        _ => {}
    }
}

fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_every_reference_resolves() {
    let app = TestApp::start().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Billing service");
    assert!(doc["info"]["version"].is_string());
    assert!(doc["servers"][0]["url"].is_string());

    let mut found = Vec::new();
    refs(&doc, String::new(), &mut found);
    assert!(found.len() > 30, "the document uses its components");
    for (at, reference) in &found {
        assert!(
            reference.starts_with("#/components/schemas/"),
            "{at}: {reference} is not a schema reference"
        );
        assert!(
            resolve(&doc, reference).is_some_and(Value::is_object),
            "{at}: {reference} does not resolve"
        );
    }

    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let mut operation_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let in_template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().expect("operationId");
            assert!(operation_ids.insert(id), "{id} is used twice");
            for tag in op["tags"].as_array().expect("tagged") {
                assert!(
                    tags.contains(tag.as_str().unwrap()),
                    "{method} {path}: {tag}"
                );
            }
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(declared, in_template, "{method} {path}: path parameters");
            for requirement in op["security"].as_array().into_iter().flatten() {
                for name in requirement.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(name), "{method} {path}: {name}");
                }
            }
            let responses = op["responses"].as_object().expect("responses");
            assert!(!responses.is_empty(), "{method} {path}");
            for (status, response) in responses {
                assert!(
                    status.parse::<u16>().is_ok_and(|s| (200..600).contains(&s)),
                    "{method} {path}: {status}"
                );
                assert!(
                    response["description"].is_string(),
                    "{method} {path} {status}"
                );
            }
        }
    }
    // Routes a viewer or operator calls with a token say so.
    let buy = &doc["paths"]["/api/v1/subscriptions/{pay_system}/buy"]["post"];
    assert_eq!(buy["security"], json!([{"jwt": []}]));
    assert_eq!(
        schemes["jwt"],
        json!({"type": "apiKey", "in": "header", "name": "Authorization",
               "description": schemes["jwt"]["description"]})
    );
}

/// Checks `value` against `schema` (the subset of JSON Schema the document uses):
/// every field of an object is a documented property, every required property is
/// there, types, enums and nullability hold. Answers the mismatches.
fn mismatches(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let target = resolve(doc, reference).expect("reference resolves");
        return mismatches(doc, target, value, at);
    }
    if let Some(all) = schema["allOf"].as_array() {
        return all
            .iter()
            .flat_map(|s| mismatches(doc, s, value, at))
            .collect();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(any) = schema[key].as_array() {
            let tries: Vec<Vec<String>> =
                any.iter().map(|s| mismatches(doc, s, value, at)).collect();
            return if tries.iter().any(Vec::is_empty) {
                Vec::new()
            } else {
                vec![format!("{at}: {value} fits none of {key}: {tries:?}")]
            };
        }
    }
    let mut out = Vec::new();
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let actual = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let type_ok = types.is_empty()
        || types.contains(&actual)
        || (actual == "integer" && types.contains(&"number"));
    if !type_ok {
        out.push(format!("{at}: {value} is {actual}, documented {types:?}"));
        return out;
    }
    if let Some(values) = schema["enum"].as_array() {
        if !values.contains(value) {
            out.push(format!("{at}: {value} is not one of {values:?}"));
        }
    }
    match (schema["format"].as_str(), value) {
        (Some("uuid"), Value::String(s)) if Uuid::parse_str(s).is_err() => {
            out.push(format!("{at}: {s} is not a uuid"))
        }
        (Some("date-time"), Value::String(s))
            if chrono::DateTime::parse_from_rfc3339(s).is_err() =>
        {
            out.push(format!("{at}: {s} is not a date-time"))
        }
        _ => {}
    }
    match value {
        Value::Object(fields) if types.contains(&"object") || schema["properties"].is_object() => {
            let properties = schema["properties"].as_object();
            let open = schema["additionalProperties"] == json!(true)
                || schema["additionalProperties"].is_object()
                || (properties.is_none() && schema["additionalProperties"].is_null());
            for (name, v) in fields {
                match properties.and_then(|p| p.get(name)) {
                    Some(s) => out.extend(mismatches(doc, s, v, &format!("{at}.{name}"))),
                    None if open => {}
                    None => out.push(format!("{at}.{name} is not a documented property")),
                }
            }
            for name in schema["required"].as_array().into_iter().flatten() {
                if !fields.contains_key(name.as_str().unwrap()) {
                    out.push(format!("{at}: required {name} is missing"));
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                out.extend(mismatches(
                    doc,
                    &schema["items"],
                    item,
                    &format!("{at}[{i}]"),
                ));
            }
        }
        _ => {}
    }
    out
}

/// Asserts that `body`, answered with `status` by `method template`, fits the schema
/// the document gives for exactly that route and status; answers the schema's name.
fn assert_documented(doc: &Value, method: &str, template: &str, status: u16, body: &Value) {
    let response = &doc["paths"][template][method.to_lowercase()]["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {template} answered {status}, which is not documented: {body}"
    );
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {template} {status} documents no JSON body"
    );
    let problems = mismatches(doc, schema, body, "body");
    assert!(
        problems.is_empty(),
        "{method} {template} {status}: {problems:#?}\n{body:#}"
    );
}

async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app
        .http
        .request(method.parse().unwrap(), format!("{}{path}", app.url));
    if let Some(t) = token {
        req = req.header("authorization", t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    read(req.send().await.unwrap()).await
}

#[tokio::test]
async fn real_answers_fit_the_schemas_documented_for_their_route_and_status() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let fake = app.yookassa();
    let doc = document(&app).await;
    let user = UserId::new();
    let token = app.token(user);
    let admin = app.admin_token();
    let mut checked = BTreeSet::new();
    let mut check = |method: &str, template: &str, status: u16, body: &Value| {
        assert_documented(&doc, method, template, status, body);
        checked.insert(format!("{method} {template} {status}"));
    };

    // The catalogue.
    let (s, b) = send(&app, "GET", "/api/v1/tariffs", None, None).await;
    check("GET", "/api/v1/tariffs", s, &b);
    let (s, b) = send(&app, "GET", "/api/v1/pay-systems", None, None).await;
    check("GET", "/api/v1/pay-systems", s, &b);

    // A purchase, paid through the fake, and the notification's answer.
    let buy = "/api/v1/subscriptions/{pay_system}/buy";
    let (s, b) = send(
        &app,
        "POST",
        "/api/v1/subscriptions/yookassa/buy",
        Some(&token),
        Some(json!({"tariff_id": MONTH_TARIFF, "renew": true, "return_url": RETURN_URL})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    check("POST", buy, s, &b);
    let payment = payment_id(&b);
    let (s, b) = send(
        &app,
        "GET",
        &format!("/api/v1/payments/{payment}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        b["confirmation_url"].is_string(),
        "an open payment shows its URL"
    );
    check("GET", "/api/v1/payments/{id}", s, &b);
    let pid = app.provider_id(payment).await;
    fake.settle(&pid, Outcome::Succeed);
    let (s, b) = send(
        &app,
        "POST",
        "/webhooks/yookassa",
        None,
        Some(json!({"type": "notification", "event": "payment.succeeded", "object": {"id": pid}})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    check("POST", "/webhooks/yookassa", s, &b);

    // The viewer's side.
    for (method, path) in [
        ("GET", "/api/v1/subscriptions/profile"),
        ("POST", "/api/v1/subscriptions/cancel"),
        ("POST", "/api/v1/subscriptions/resume"),
        ("GET", "/api/v1/payments/profile"),
    ] {
        let (s, b) = send(&app, method, path, Some(&token), None).await;
        assert_eq!(s, 200, "{method} {path}: {b}");
        check(method, path, s, &b);
    }
    let contact = "/api/v1/subscriptions/contact";
    let (s, b) = send(
        &app,
        "POST",
        contact,
        Some(&token),
        Some(json!({"email": "viewer@example.com"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    check("POST", contact, s, &b);
    let (s, b) = send(&app, "POST", contact, Some(&token), Some(json!({}))).await;
    assert_eq!(s, 400, "{b}");
    check("POST", contact, s, &b);
    let change = "/api/v1/subscriptions/change";
    for (when, tariff, status) in [
        ("period_end", YEAR_TARIFF, 200),
        ("now", YEAR_TARIFF, 201),
        ("now", MONTH_TARIFF, 409),
    ] {
        let body = json!({"tariff_id": tariff, "when": when});
        let (s, b) = send(&app, "POST", change, Some(&token), Some(body)).await;
        assert_eq!(s, status, "{when} {tariff}: {b}");
        check("POST", change, s, &b);
    }

    // The operator's side: a partial refund, the account, tariffs, the inbox.
    let refund = "/api/v1/admin/payments/{id}/refund";
    let (s, b) = send(
        &app,
        "POST",
        &format!("/api/v1/admin/payments/{payment}/refund"),
        Some(&admin),
        Some(json!({"amount": {"value": "100.00", "currency": "RUB"}, "reason": "asked"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    check("POST", refund, s, &b);
    let (s, b) = send(
        &app,
        "GET",
        &format!("/api/v1/admin/users/{user}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["refunds"].as_array().unwrap().len(), 1);
    assert_eq!(b["payment_methods"].as_array().unwrap().len(), 1);
    let refunded = b["payments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == json!(payment))
        .expect("the purchase");
    assert_eq!(refunded["refunded_amount"]["value"], "100.00");
    check("GET", "/api/v1/admin/users/{user_id}", s, &b);
    let (s, b) = send(
        &app,
        "POST",
        "/api/v1/admin/tariffs",
        Some(&admin),
        Some(json!({"alias": "week", "name": "Weekly", "price": {"value": "99.00", "currency": "RUB"},
                    "period": {"count": 7, "unit": "day"}})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    check("POST", "/api/v1/admin/tariffs", s, &b);
    let week = b["id"].as_str().unwrap().to_owned();
    let (s, b) = send(
        &app,
        "PATCH",
        &format!("/api/v1/admin/tariffs/{week}"),
        Some(&admin),
        Some(json!({"archived": true})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["archived_at"].is_string());
    check("PATCH", "/api/v1/admin/tariffs/{id}", s, &b);
    let (s, b) = send(&app, "GET", "/api/v1/admin/tariffs", Some(&admin), None).await;
    assert!(b
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["archived_at"].is_string()));
    check("GET", "/api/v1/admin/tariffs", s, &b);
    let (s, b) = send(&app, "GET", "/api/v1/admin/webhooks", Some(&admin), None).await;
    assert!(!b.as_array().unwrap().is_empty());
    check("GET", "/api/v1/admin/webhooks", s, &b);
    let inbox = b[0]["id"].as_str().unwrap().to_owned();
    let (s, b) = send(
        &app,
        "POST",
        &format!("/api/v1/admin/webhooks/{inbox}/replay"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    check("POST", "/api/v1/admin/webhooks/{id}/replay", s, &b);

    // Operations.
    for path in ["/healthz", "/readyz"] {
        let (s, b) = send(&app, "GET", path, None, None).await;
        check("GET", path, s, &b);
    }

    // Errors, each documented for its route and status.
    // (method, concrete path, route template, token, body)
    type ErrorCase<'a> = (&'a str, String, &'a str, Option<&'a str>, Option<Value>);
    let errors: [ErrorCase; 9] = [
        (
            "GET",
            format!("/api/v1/payments/{}", Uuid::new_v4()),
            "/api/v1/payments/{id}",
            Some(&token),
            None,
        ),
        (
            "GET",
            "/api/v1/payments/nope".into(),
            "/api/v1/payments/{id}",
            Some(&token),
            None,
        ),
        (
            "GET",
            "/api/v1/payments/profile?limit=0".into(),
            "/api/v1/payments/profile",
            Some(&token),
            None,
        ),
        (
            "GET",
            "/api/v1/subscriptions/profile".into(),
            "/api/v1/subscriptions/profile",
            None,
            None,
        ),
        (
            "POST",
            "/api/v1/subscriptions/bitcoin/buy".into(),
            buy,
            Some(&token),
            Some(json!({"tariff_id": MONTH_TARIFF, "renew": false})),
        ),
        (
            "POST",
            "/api/v1/subscriptions/yookassa/buy".into(),
            buy,
            Some(&token),
            Some(json!({"tariff_id": MONTH_TARIFF})),
        ),
        (
            "GET",
            "/api/v1/admin/tariffs".into(),
            "/api/v1/admin/tariffs",
            Some(&token),
            None,
        ),
        (
            "POST",
            format!("/api/v1/admin/payments/{payment}/refund"),
            refund,
            Some(&admin),
            Some(json!({"reason": "again", "amount": {"value": "500.00", "currency": "RUB"}})),
        ),
        (
            "POST",
            "/webhooks/cloudpayments/pay".into(),
            "/webhooks/cloudpayments/{kind}",
            None,
            Some(json!({})),
        ),
    ];
    for (method, path, template, token, body) in errors {
        let (s, b) = send(&app, method, &path, token, body).await;
        assert!(s >= 400, "{method} {path}: {s} {b}");
        check(method, template, s, &b);
    }

    // The error body is the real `ErrorBody`, field for field.
    let real = serde_json::to_value(billing::http::error::ErrorBody {
        code: "payment_not_found",
        detail: "no such payment",
    })
    .unwrap();
    assert!(mismatches(
        &doc,
        &json!({"$ref": "#/components/schemas/Error"}),
        &real,
        "error"
    )
    .is_empty());

    assert_eq!(checked.len(), 32, "{checked:#?}");
    // The answers that are not JSON objects of a schema: this document (fetched
    // above), the Prometheus text and the reference page.
    checked.insert("GET /api/openapi.json 200".into());
    assert!(app.metrics().await.contains("# TYPE "));
    checked.insert("GET /metrics 200".into());
    // The reference page people read, rendered from this document.
    let docs = app
        .http
        .get(format!("{}/api/docs", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let docs = docs.text().await.unwrap();
    assert!(docs.contains("<code>POST /api/v1/subscriptions/change</code>"));
    // Nothing fetched from elsewhere: no script, style sheet or image to load.
    assert!(!docs.contains("<script") && !docs.contains("<link") && !docs.contains(" src="));
    checked.insert("GET /api/docs 200".into());
    // Every documented operation was called above on a served route, and nothing
    // was called that the document leaves out.
    let called: BTreeSet<String> = checked
        .iter()
        .map(|c| c.rsplit_once(' ').unwrap().0.to_owned())
        .collect();
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect();
    assert_eq!(called, documented);
}

#[tokio::test]
async fn the_schema_check_catches_an_undocumented_a_missing_or_a_wrong_field() {
    let app = TestApp::start().await;
    let doc = document(&app).await;
    let (_, tariffs) = app.get("/api/v1/tariffs", None).await;
    let schema = json!({"$ref": "#/components/schemas/Tariff"});
    let tariff = &tariffs[0];
    assert_eq!(mismatches(&doc, &schema, tariff, "t"), Vec::<String>::new());

    let mut extra = tariff.clone();
    extra["surprise"] = json!(1);
    let mut missing = tariff.clone();
    missing.as_object_mut().unwrap().remove("price");
    let mut wrong = tariff.clone();
    wrong["period"]["unit"] = json!("fortnight");
    let mut float = tariff.clone();
    float["price"]["value"] = json!(299.0);
    for (bad, why) in [
        (extra, "t.surprise is not a documented property"),
        (missing, "t: required \"price\" is missing"),
        (wrong, "t.period.unit: \"fortnight\" is not one of"),
        (float, "t.price.value: 299.0 is number"),
    ] {
        let found = mismatches(&doc, &schema, &bad, "t");
        assert!(found.iter().any(|m| m.starts_with(why)), "{why}: {found:?}");
    }
}
