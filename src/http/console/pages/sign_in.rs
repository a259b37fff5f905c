//! Signing in: the form, the token, the refusal page for a viewer.

use super::*;

#[derive(Template)]
#[template(path = "console/sign_in.html")]
pub(super) struct SignIn {
    layout: Layout,
    form_token: String,
    error: Option<String>,
}

pub(super) fn sign_in_form(app: &App, error: Option<String>, status: StatusCode) -> Response {
    let form_token = random_token();
    let page = SignIn {
        layout: Layout::new(app, None, "Sign in"),
        form_token: form_token.clone(),
        error,
    };
    with_cookie(render(status, &page), &sign_in_cookie(app, &form_token))
}

/// Records a sign-in by a valid token (a superuser's, or a viewer's refused).
/// An invalid token names no one and is only logged.
pub(super) async fn sign_in_audit(app: &App, user: &crate::http::auth::User, outcome: &str) {
    record(
        app,
        NewAuditEntry {
            operator_id: user.id,
            action: "sign_in",
            target: &format!("user:{}", user.id),
            before: None,
            after: Some(json!({"is_superuser": user.is_superuser, "expires_at": user.expires_at})),
            outcome,
        },
    )
    .await;
}

pub(super) async fn sign_in(app: &App, req: &Request) -> Response {
    let expected = req.cookie(&cookie_name(app, SIGN_IN)).unwrap_or("");
    if expected.is_empty() || !csrf_ok(expected, req.field("csrf")) {
        return sign_in_form(
            app,
            Some("The sign-in form expired; paste the token again.".into()),
            StatusCode::FORBIDDEN,
        );
    }
    let token = req.field("token").trim();
    let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
    match app.keys.authenticate(Some(token)) {
        Err(e) => {
            tracing::info!(why = %e.detail, "console sign-in refused");
            sign_in_form(
                app,
                Some(format!("This token does not sign in: {}.", e.detail)),
                StatusCode::UNAUTHORIZED,
            )
        }
        Ok(user) if !user.is_superuser => {
            sign_in_audit(app, &user, "forbidden").await;
            refused(app, &user)
        }
        Ok(user) => {
            sign_in_audit(app, &user, "ok").await;
            let res = with_cookie(
                redirect("/console"),
                &session_cookie(app, token, user.expires_at),
            );
            with_cookie(res, &clear_cookie(app, SIGN_IN))
        }
    }
}

#[derive(Template)]
#[template(path = "console/refused.html")]
pub(super) struct RefusedPage {
    layout: Layout,
    user_id: String,
}

/// A viewer's token: the console is for operators.
pub(super) fn refused(app: &App, viewer: &crate::http::auth::User) -> Response {
    let page = RefusedPage {
        layout: Layout::new(app, None, "Operators only"),
        user_id: viewer.id.to_string(),
    };
    with_cookie(
        render(StatusCode::FORBIDDEN, &page),
        &clear_cookie(app, SESSION),
    )
}
