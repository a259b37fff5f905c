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

use crate::http::escape_html as escape;

const STYLE: &str = "body{font-family:sans-serif;max-width:32em;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}\
.warn{background:#fff3cd;border:1px solid #e0c060;padding:.6em;border-radius:4px}\
select{font-size:1em;max-width:100%;min-height:44px}\
button{font-size:1.1em;min-height:44px;padding:.5em 1.4em;margin:0 1em .5em 0}\
.note{color:#555;font-size:.9em}";

/// Every sandbox page: English, sized for a phone, under the sandbox banner.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    html(
        status,
        format!(
            "<!doctype html><html lang=en><head><meta charset=utf-8>\
             <meta name=viewport content=\"width=device-width, initial-scale=1\">\
             <title>{title}</title><style>{STYLE}</style></head>\
             <body><p class=warn>SANDBOX: no real money moves.</p>{body}</body></html>",
            title = escape(title),
        ),
    )
}

fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "No such payment",
        "<h1>No such payment</h1><p>This sandbox has no payment with that id.</p>",
    )
}

fn amount_of(p: &serde_json::Value) -> String {
    format!(
        "{} {}",
        p["amount"]["value"].as_str().unwrap_or(""),
        p["amount"]["currency"].as_str().unwrap_or("")
    )
}

/// Where the viewer goes after the page: the shop's return URL; the sandbox's
/// own return page is told which payment it is about.
fn return_to(p: &serde_json::Value, id: &str) -> String {
    let back = p["confirmation"]["return_url"]
        .as_str()
        .unwrap_or("/sandbox/return");
    if back
        .split('?')
        .next()
        .unwrap_or("")
        .ends_with("/sandbox/return")
        && !back.contains('?')
    {
        format!("{back}?payment={id}")
    } else {
        back.to_owned()
    }
}

pub fn routes(sandbox: Arc<Sandbox>) -> warp::filters::BoxedFilter<(Response,)> {
    let sb = sandbox.clone();
    let show = warp::path!("sandbox" / "checkout" / String).and(warp::get()).map(move |id: String| {
        let Some(p) = sb.payment(&id) else {
            return not_found();
        };
        let status = p["status"].as_str().unwrap_or("");
        let amount = escape(&amount_of(&p));
        let desc = escape(p["description"].as_str().unwrap_or(""));
        let body = if status == "pending" {
            format!(
                "<h1>Pay {amount}</h1><p>{desc}</p>\
                 <form method=post action=\"/sandbox/checkout/{id}\">\
                 <p><label>Card <select name=card>\
                 <option value=4444>5555 5555 5555 4444 (pays)</option>\
                 <option value=0002>4000 0000 0000 0002 (declined: insufficient funds)</option>\
                 </select></label></p>\
                 <button name=action value=pay>Pay</button><button name=action value=decline>Decline</button></form>\
                 <p class=note><b>Pay</b> charges the card chosen above (the second card is declined by its bank). \
                 <b>Decline</b> leaves without paying, as a viewer who fails 3-D Secure would.</p>",
                id = escape(&id)
            )
        } else {
            format!(
                "<h1>Payment of {amount}</h1><p>{desc}</p><p>This payment is already <b>{status}</b>.</p>\
                 <p><a href=\"{back}\">Back to the shop</a></p>",
                status = escape(status),
                back = escape(&return_to(&p, &id)),
            )
        };
        page(StatusCode::OK, "Sandbox checkout", &body)
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
                    return not_found();
                };
                if p["status"] != "pending" {
                    return page(
                        StatusCode::CONFLICT,
                        "Already settled",
                        &format!(
                            "<h1>This payment is already settled</h1><p>It is <b>{}</b>; nothing was charged now.</p>",
                            escape(p["status"].as_str().unwrap_or(""))
                        ),
                    );
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
                match return_to(&p, &id).parse::<Uri>() {
                    Ok(uri) => warp::redirect::see_other(uri).into_response(),
                    Err(_) => page(StatusCode::OK, "Done", "<h1>Done</h1>"),
                }
            }
        });

    let sb = sandbox.clone();
    let back = warp::path!("sandbox" / "return")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .map(move |q: HashMap<String, String>| {
            let Some(id) = q.get("payment") else {
                return page(
                    StatusCode::OK,
                    "Back from checkout",
                    "<h1>Back from checkout</h1><p>This page was not told which payment it is about. \
                     <code>GET /api/v1/payments/profile</code> shows your payments.</p>",
                );
            };
            let Some(p) = sb.payment(id) else {
                return not_found();
            };
            let amount = escape(&amount_of(&p));
            let checkout = format!("/sandbox/checkout/{}", escape(id));
            let body = match p["status"].as_str().unwrap_or("") {
                "succeeded" => format!(
                    "<h1>Paid</h1><p>Thank you: {amount} paid. The service has been told; \
                     <code>GET /api/v1/subscriptions/profile</code> shows the subscription.</p>"
                ),
                "canceled" => format!(
                    "<h1>Declined</h1><p>{amount} was not charged: {why}.</p>\
                     <p>Start a new purchase to try another card.</p>",
                    why = escape(
                        p["cancellation_details"]["reason"]
                            .as_str()
                            .unwrap_or("declined")
                    )
                ),
                other => format!(
                    "<h1>Still pending</h1><p>The payment of {amount} is <b>{status}</b>: \
                     reload this page in a moment, or <a href=\"{checkout}\">go back to the checkout</a>.</p>",
                    status = escape(other)
                ),
            };
            page(StatusCode::OK, "Back from checkout", &body)
        });

    // Browsers ask for it on every page: no icon, and no 404 in the log.
    let favicon = warp::path!("favicon.ico")
        .and(warp::get())
        .map(|| warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response());

    show.or(submit)
        .unify()
        .or(back)
        .unify()
        .or(favicon)
        .unify()
        .boxed()
}
