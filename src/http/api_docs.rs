//! `GET /api/docs`: the API reference for people, rendered on the server from the
//! OpenAPI document (`openapi.rs`), so it cannot drift from it. Plain HTML and
//! one inline style sheet: no script, nothing fetched, works offline.

use std::fmt::Write as _;
use std::sync::LazyLock;

use serde_json::Value;
use warp::reply::Response;
use warp::Reply;

use super::escape_html as esc;

/// `` `code` `` spans of a description as <code>, the rest escaped.
fn prose(s: &str) -> String {
    esc(s)
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{part}</code>")
            } else {
                part.to_owned()
            }
        })
        .collect()
}

/// A schema's type in a few words: a link to a named schema, or its type.
fn type_of(s: &Value) -> String {
    if let Some(r) = s["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("<a href=\"#schema-{0}\">{0}</a>", esc(name));
    }
    if let Some(all) = s["allOf"].as_array().or(s["oneOf"].as_array()) {
        return all.iter().map(type_of).collect::<Vec<_>>().join(" | ");
    }
    match &s["type"] {
        Value::String(t) if t == "array" => format!("array of {}", type_of(&s["items"])),
        Value::String(t) => esc(t),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(esc)
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".into(),
    }
}

fn anchor(method: &str, path: &str) -> String {
    format!("op-{}{}", method, path.replace(['/', '{', '}', '.'], "-"))
}

fn render(doc: &Value) -> String {
    let mut toc = String::new();
    let mut ops = String::new();
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    for (path, item) in &paths {
        for (method, op) in item.as_object().into_iter().flatten() {
            let id = anchor(method, path);
            let summary = op["summary"].as_str().unwrap_or("");
            let _ = write!(
                toc,
                "<li><a href=\"#{id}\"><code>{} {}</code></a> {}</li>",
                method.to_uppercase(),
                esc(path),
                esc(summary)
            );
            let _ = write!(
                ops,
                "<section id=\"{id}\"><h3><code>{} {}</code></h3><p>{}</p>",
                method.to_uppercase(),
                esc(path),
                prose(summary)
            );
            if let Some(d) = op["description"].as_str() {
                let _ = write!(ops, "<p>{}</p>", prose(d));
            }
            if let Some(sec) = op["security"].as_array().filter(|s| !s.is_empty()) {
                let names: Vec<String> = sec
                    .iter()
                    .filter_map(Value::as_object)
                    .flat_map(|o| o.keys().cloned())
                    .collect();
                let _ = write!(ops, "<p>Auth: <code>{}</code></p>", esc(&names.join(", ")));
            }
            if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
                ops.push_str("<table><tr><th>parameter</th><th>in</th><th>type</th><th></th></tr>");
                for p in params {
                    let _ = write!(
                        ops,
                        "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(p["name"].as_str().unwrap_or("")),
                        if p["required"] == true {
                            " (required)"
                        } else {
                            ""
                        },
                        esc(p["in"].as_str().unwrap_or("")),
                        type_of(&p["schema"]),
                        prose(p["description"].as_str().unwrap_or(""))
                    );
                }
                ops.push_str("</table>");
            }
            if let Some(content) = op["requestBody"]["content"].as_object() {
                for (media, body) in content {
                    let _ = write!(
                        ops,
                        "<p>Body (<code>{}</code>): {}</p>",
                        esc(media),
                        type_of(&body["schema"])
                    );
                }
            }
            ops.push_str("<table><tr><th>status</th><th>meaning</th><th>body</th></tr>");
            for (status, r) in op["responses"].as_object().into_iter().flatten() {
                let body = r["content"]
                    .as_object()
                    .and_then(|c| c.values().next())
                    .map(|c| type_of(&c["schema"]))
                    .unwrap_or_default();
                let _ = write!(
                    ops,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(status),
                    prose(r["description"].as_str().unwrap_or("")),
                    body
                );
            }
            ops.push_str("</table></section>");
        }
    }
    let mut schemas = String::new();
    for (name, s) in doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let _ = write!(
            schemas,
            "<section id=\"schema-{0}\"><h3>{0}</h3>",
            esc(name)
        );
        if let Some(d) = s["description"].as_str() {
            let _ = write!(schemas, "<p>{}</p>", prose(d));
        }
        if let Some(values) = s["enum"].as_array() {
            let list: Vec<String> = values
                .iter()
                .map(|v| format!("<code>{}</code>", esc(&v.to_string())))
                .collect();
            let _ = write!(schemas, "<p>One of {}</p>", list.join(", "));
        }
        if let Some(props) = s["properties"].as_object() {
            let required: Vec<&str> = s["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            schemas.push_str("<table><tr><th>field</th><th>type</th><th></th></tr>");
            for (field, p) in props {
                let _ = write!(
                    schemas,
                    "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(field),
                    if required.contains(&field.as_str()) {
                        ""
                    } else {
                        " (optional)"
                    },
                    type_of(p),
                    prose(p["description"].as_str().unwrap_or(""))
                );
            }
            schemas.push_str("</table>");
        } else if s["enum"].is_null() {
            let _ = write!(schemas, "<p>{}</p>", type_of(s));
        }
        schemas.push_str("</section>");
    }
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\">\
         <title>{title} — API reference</title><style>\
         body{{font-family:sans-serif;max-width:60em;margin:1em auto;padding:0 1em;color:#222;line-height:1.4}}\
         table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}}\
         code{{background:#f4f4f4;padding:0 .2em}}section{{border-top:1px solid #ddd;margin-top:1em}}\
         </style></head><body><h1>{title} {version}</h1><p>{about}</p>\
         <p>Generated from <a href=\"/api/openapi.json\">the OpenAPI document</a>.</p>\
         <h2>Operations</h2><ul>{toc}</ul>{ops}<h2>Schemas</h2>{schemas}</body></html>",
        title = esc(doc["info"]["title"].as_str().unwrap_or("API")),
        version = esc(doc["info"]["version"].as_str().unwrap_or("")),
        about = prose(doc["info"]["description"].as_str().unwrap_or("")),
    )
}

static PAGE: LazyLock<String> = LazyLock::new(|| {
    let doc: Value =
        serde_json::from_str(&super::openapi::DOCUMENT).expect("the OpenAPI document is JSON");
    render(&doc)
});

/// `GET /api/docs`
#[utoipa::path(
    get,
    path = "/api/docs",
    tag = "operations",
    operation_id = "apiDocs",
    summary = "This API's reference as a web page, generated from the OpenAPI document",
    responses((status = 200, description = "HTML page (no script, works offline)", content_type = "text/html", body = String))
)]
pub fn page() -> Response {
    warp::reply::html(PAGE.as_str()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_lists_every_operation_and_schema_of_the_document() {
        let doc: Value = serde_json::from_str(&super::super::openapi::DOCUMENT).unwrap();
        let page = render(&doc);
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                assert!(
                    page.contains(&format!("id=\"{}\"", anchor(method, path))),
                    "{method} {path}"
                );
            }
        }
        for name in doc["components"]["schemas"].as_object().unwrap().keys() {
            assert!(page.contains(&format!("id=\"schema-{name}\"")), "{name}");
        }
        assert!(!page.contains("<script"));
    }

    #[test]
    fn descriptions_are_escaped_and_code_spans_kept() {
        assert_eq!(prose("a `<b>` c"), "a <code>&#60;b&#62;</code> c");
    }
}
