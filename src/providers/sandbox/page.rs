//! The checkout page a viewer sees in sandbox mode, with Pay and Decline buttons.

use std::collections::HashMap;
use std::sync::Arc;

use warp::http::{StatusCode, Uri};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::{Outcome, Sandbox};

fn html(status: StatusCode, body: String) -> Response {
    warp::reply::with_status(warp::reply::html(body), status).into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:sans-serif;max-width:32em;margin:3em auto;color:#222}\
.warn{background:#fff3cd;border:1px solid #e0c060;padding:.6em;border-radius:4px}\
button{font-size:1.1em;padding:.5em 1.4em;margin-right:1em}";

pub fn routes(sandbox: Arc<Sandbox>) -> warp::filters::BoxedFilter<(Response,)> {
    let sb = sandbox.clone();
    let show = warp::path!("sandbox" / "checkout" / String).and(warp::get()).map(move |id: String| {
        let Some(p) = sb.payment(&id) else {
            return html(StatusCode::NOT_FOUND, "<h1>No such payment</h1>".into());
        };
        let status = p["status"].as_str().unwrap_or("");
        let amount = format!("{} {}", p["amount"]["value"].as_str().unwrap_or(""), p["amount"]["currency"].as_str().unwrap_or(""));
        let form = if status == "pending" {
            format!(
                "<form method=post action=\"/sandbox/checkout/{id}\">\
                 <p><label>Card <select name=card>\
                 <option value=4444>5555 5555 5555 4444 (pays)</option>\
                 <option value=0002>4000 0000 0000 0002 (declined: insufficient funds)</option>\
                 </select></label></p>\
                 <button name=action value=pay>Pay</button><button name=action value=decline>Decline</button></form>",
                id = escape(&id)
            )
        } else {
            format!("<p>This payment is already <b>{}</b>.</p>", escape(status))
        };
        html(
            StatusCode::OK,
            format!(
                "<!doctype html><html><head><meta charset=utf-8><title>Sandbox checkout</title><style>{STYLE}</style></head>\
                 <body><p class=warn>SANDBOX: no real money moves.</p><h1>Pay {amount}</h1><p>{desc}</p>{form}</body></html>",
                amount = escape(&amount),
                desc = escape(p["description"].as_str().unwrap_or("")),
            ),
        )
    });

    let sb = sandbox.clone();
    let submit = warp::path!("sandbox" / "checkout" / String)
        .and(warp::post())
        .and(warp::body::content_length_limit(4096))
        .and(warp::body::form::<HashMap<String, String>>())
        .then(move |id: String, form: HashMap<String, String>| {
            let sb = sb.clone();
            async move {
                let Some(p) = sb.payment(&id) else {
                    return html(StatusCode::NOT_FOUND, "<h1>No such payment</h1>".into());
                };
                if p["status"] != "pending" {
                    return html(StatusCode::CONFLICT, "<h1>This payment is already settled</h1>".into());
                }
                let outcome = match (form.get("action").map(String::as_str), form.get("card").map(String::as_str)) {
                    (Some("pay"), Some("0002")) => Outcome::Decline("insufficient_funds".into()),
                    (Some("pay"), _) => Outcome::Succeed,
                    _ => Outcome::Decline("3d_secure_failed".into()),
                };
                sb.settle(&id, outcome);
                // Tell the service, as YooKassa would, before sending the viewer back.
                match sb.notify(&id).await {
                    Ok(code) => tracing::info!(payment = %id, webhook_status = code, "sandbox: notification sent"),
                    Err(e) => tracing::warn!(payment = %id, error = %e, "sandbox: notification failed"),
                }
                let back = p["confirmation"]["return_url"].as_str().unwrap_or("/sandbox/return").to_owned();
                match back.parse::<Uri>() {
                    Ok(uri) => warp::redirect::see_other(uri).into_response(),
                    Err(_) => html(StatusCode::OK, "<h1>Done</h1>".into()),
                }
            }
        });

    let back = warp::path!("sandbox" / "return").and(warp::get()).map(|| {
        html(
            StatusCode::OK,
            format!(
                "<!doctype html><html><head><meta charset=utf-8><title>Back from checkout</title><style>{STYLE}</style></head>\
                 <body><p class=warn>SANDBOX: no real money moves.</p><h1>Thank you</h1>\
                 <p>Check <code>GET /api/v1/subscriptions/profile</code> to see your subscription.</p></body></html>"
            ),
        )
    });

    show.or(submit).unify().or(back).unify().boxed()
}
