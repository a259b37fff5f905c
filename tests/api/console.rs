//! The operator's console over plain HTTP: its session, CSRF and headers, bad
//! input, and the review page (the browser tests in `tests/browser` click through
//! the rest).

use billing::domain::{PaymentId, UserId};
use billing::providers::sandbox::Outcome;
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::json;

use crate::helpers::{payment_id, TestApp, MONTH_TARIFF};

/// An operator's browser, as far as the console can tell: its cookies and the
/// CSRF token of the last page it was shown.
pub(crate) struct Console<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
    cookie: String,
}

pub(crate) struct Page {
    pub(crate) status: u16,
    headers: HeaderMap,
    pub(crate) html: String,
}

impl Page {
    fn csrf(&self) -> String {
        let at = self
            .html
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.html));
        let rest = &self.html[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    fn location(&self) -> &str {
        self.headers["location"].to_str().unwrap()
    }

    fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

impl<'a> Console<'a> {
    pub(crate) fn new(app: &'a TestApp) -> Self {
        Console {
            app,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: String::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Page {
        let resp = req.header("cookie", &self.cookie).send().await.unwrap();
        Page {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            html: resp.text().await.unwrap(),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Page {
        self.send(self.http.get(format!("{}{path}", self.app.url)))
            .await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send(self.http.post(format!("{}{path}", self.app.url)).form(form))
            .await
    }

    /// Posts `form` with the CSRF token of the page at `from`.
    async fn submit(&self, from: &str, path: &str, form: &[(&str, &str)]) -> Page {
        let csrf = self.get(from).await.csrf();
        let mut fields = form.to_vec();
        fields.push(("csrf", &csrf));
        self.post(path, &fields).await
    }

    /// Signs in with `token` through the form; keeps the session cookie.
    pub(crate) async fn sign_in(&mut self, token: &str) -> Page {
        let form = self.get("/console/sign-in").await;
        self.cookie = first_pair(&form.cookies()[0]);
        let page = self
            .post(
                "/console/sign-in",
                &[("token", token), ("csrf", &form.csrf())],
            )
            .await;
        if let Some(session) = page.cookies().iter().find(|c| {
            c.starts_with("billing_console=") || c.starts_with("__Secure-billing_console=")
        }) {
            self.cookie = first_pair(session);
        }
        page
    }
}

fn first_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn signing_in_sets_a_strict_cookie_that_ends_with_the_token() {
    let app = TestApp::start().await;
    let mut console = Console::new(&app);
    let token = app.app().keys.issue(UserId::new(), true, 600);
    let signed_in = console.sign_in(&token).await;
    assert_eq!(signed_in.status, 303);
    assert_eq!(signed_in.location(), "/console");
    let session = signed_in
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("billing_console="))
        .expect("a session cookie");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(session.contains(part), "{session}");
    }
    let max_age: i64 = session
        .split("Max-Age=")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|n| n.parse().ok())
        .expect("Max-Age");
    assert!((590..=600).contains(&max_age), "{session}");
    // Sandbox mode is plain HTTP on a developer's machine; anywhere else it is Secure.
    assert!(!session.contains("Secure"), "{session}");

    let overview = console.get("/console").await;
    assert_eq!(overview.status, 200, "{}", overview.html);
    let csp = overview.headers["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(overview.headers["x-frame-options"], "DENY");
    assert!(!overview.html.contains("<script"), "{}", overview.html);

    let out = console.submit("/console", "/console/sign-out", &[]).await;
    assert_eq!(out.status, 303);
    assert!(
        out.cookies()
            .iter()
            .any(|c| c.starts_with("billing_console=;") && c.contains("Max-Age=0")),
        "{:?}",
        out.cookies()
    );
}

#[tokio::test]
async fn a_sign_in_without_its_form_token_or_with_a_bad_token_makes_no_session() {
    let app = TestApp::start().await;
    let console = Console::new(&app);
    let forged = console
        .post("/console/sign-in", &[("token", &app.admin_token())])
        .await;
    assert_eq!(forged.status, 403, "{}", forged.html);
    let mut console = Console::new(&app);
    let bad = console.sign_in("not-a-jwt").await;
    assert_eq!(bad.status, 401, "{}", bad.html);
    assert!(bad.html.contains("does not sign in"), "{}", bad.html);
    for page in [&forged, &bad] {
        assert!(
            page.cookies()
                .iter()
                .all(|c| !c.starts_with("billing_console=")),
            "{:?}",
            page.cookies()
        );
    }
}

#[tokio::test]
async fn an_expired_session_is_sent_back_to_sign_in_and_changes_nothing() {
    let app = TestApp::start().await;
    let mut console = Console::new(&app);
    let expired = app.app().keys.issue(UserId::new(), true, -120);
    console.cookie = format!("billing_console={expired}");
    let page = console.get("/console/tariffs").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/console/sign-in");
    let post = console
        .post(
            "/console/tariffs",
            &[("alias", "late"), ("name", "Late"), ("csrf", "x")],
        )
        .await;
    assert_eq!(post.status, 401, "{}", post.html);
    let (_, all) = app
        .get("/api/v1/admin/tariffs", Some(&app.admin_token()))
        .await;
    assert!(!all.to_string().contains("late"), "{all}");
}

/// The tariff create form, monthly in roubles.
fn tariff_form<'a>(
    csrf: &'a str,
    alias: &'a str,
    name: &'a str,
    price: &'a str,
) -> [(&'static str, &'a str); 7] {
    [
        ("csrf", csrf),
        ("alias", alias),
        ("name", name),
        ("price", price),
        ("currency", "RUB"),
        ("period_count", "1"),
        ("period_unit", "month"),
    ]
}

#[tokio::test]
async fn bad_input_to_the_console_is_a_page_that_says_why_never_a_500() {
    let app = TestApp::start().await;
    let mut console = Console::new(&app);
    console.sign_in(&app.admin_token()).await;
    let csrf = console.get("/console").await.csrf();
    let bad_tariff = |alias: &'static str, price: &'static str| {
        let form = tariff_form(&csrf, alias, "x", price);
        let console = &console;
        async move { console.post("/console/tariffs", &form).await }
    };
    for (page, status) in [
        (console.get("/console/users/not-a-uuid").await, 400),
        (console.get("/console/inbox?status=lost").await, 400),
        (console.get("/console/inbox?age=forever").await, 400),
        (console.get("/console/inbox?page=0").await, 400),
        (console.get("/console/no-such-page").await, 404),
        (
            console
                .get(&format!("/console/inbox/{}", uuid::Uuid::new_v4()))
                .await,
            404,
        ),
        (bad_tariff("Bad Alias", "1.00").await, 400),
        (bad_tariff("ok", "one rouble").await, 400),
        (
            console
                .post(
                    &format!("/console/users/{}/refund", UserId::new()),
                    &[("csrf", csrf.as_str()), ("payment_id", "nope")],
                )
                .await,
            400,
        ),
    ] {
        assert_eq!(page.status, status, "{}", page.html);
        assert!(page.html.contains("class=\"error\""), "{}", page.html);
    }
    // A NUL (%00) in any field or query: PostgreSQL cannot store it as text.
    for page in [
        console.get("/console/find?q=a%00b").await,
        console
            .post(
                "/console/tariffs",
                &tariff_form(&csrf, "nul", "a\0b", "1.00"),
            )
            .await,
        console
            .post(
                &format!("/console/review/{}", uuid::Uuid::new_v4()),
                &[("csrf", csrf.as_str()), ("note", "a\0b")],
            )
            .await,
    ] {
        assert_eq!(page.status, 400, "{}", page.html);
        assert!(page.html.contains("NUL"), "{}", page.html);
    }
    // A body that is not a form at all.
    let garbled = console
        .send(
            console
                .http
                .post(format!("{}/console/tariffs", app.url))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!(
                    "csrf={csrf}&alias=%zz&name=%&price=&currency=%E2%82"
                )),
        )
        .await;
    assert_eq!(garbled.status, 400, "{}", garbled.html);
    let (_, all) = app
        .get("/api/v1/admin/tariffs", Some(&app.admin_token()))
        .await;
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
}

/// A purchase the provider reports with another amount: flagged, nothing granted.
async fn flagged_payment(app: &TestApp) -> (PaymentId, UserId) {
    let fake = app.yookassa();
    let user = UserId::new();
    let (status, body) = app.buy(user, MONTH_TARIFF, false, None).await;
    assert_eq!(status, 201, "{body}");
    let id = payment_id(&body);
    let pid = app.provider_id(id).await;
    fake.patch(&pid, "amount", json!({"value": "2.99", "currency": "RUB"}));
    fake.settle(&pid, Outcome::Succeed);
    assert_eq!(fake.notify(&pid).await.unwrap(), 200);
    assert!(app.payment(id).await.review_reason.is_some());
    (id, user)
}

#[tokio::test]
async fn a_flagged_payment_is_shown_beside_the_provider_and_marked_reviewed_once() {
    let app = TestApp::builder().fake_yookassa().start().await;
    let (id, _) = flagged_payment(&app).await;
    let mut console = Console::new(&app);
    console.sign_in(&app.admin_token()).await;

    let overview = console.get("/console").await;
    assert!(
        overview
            .html
            .contains("<span class=\"n\" id=\"needs-review\">1</span>"),
        "{}",
        overview.html
    );
    // The alert the flag raised is stored and counted by kind.
    let mut alerted = false;
    for _ in 0..50 {
        if console
            .get("/console")
            .await
            .html
            .contains("<td>needs_review</td>")
        {
            alerted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(alerted, "no needs_review alert on the overview");

    let review = console.get("/console/review").await;
    assert_eq!(review.status, 200);
    assert!(review.html.contains(&id.to_string()), "{}", review.html);
    // Ours and the provider's amounts, side by side.
    assert!(
        review.html.contains("<td>299.00 RUB</td><td>2.99 RUB</td>"),
        "{}",
        review.html
    );

    let path = format!("/console/review/{id}");
    let empty = console
        .submit("/console/review", &path, &[("note", " ")])
        .await;
    assert_eq!(empty.status, 400, "{}", empty.html);
    let done = console
        .submit(
            "/console/review",
            &path,
            &[("note", "shop misconfigured; payment voided at YooKassa")],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.html);
    assert_eq!(done.location(), "/console/review?done=reviewed");
    let again = console
        .submit("/console", &path, &[("note", "twice")])
        .await;
    assert_eq!(again.status, 409, "{}", again.html);
    assert!(
        again.html.contains("not waiting for a review"),
        "{}",
        again.html
    );

    let after = console.get("/console/review").await;
    assert!(!after.html.contains(&id.to_string()), "{}", after.html);
    // The flag stays: the reconciler still leaves the payment to people.
    assert!(app.payment(id).await.review_reason.is_some());
    let audit = console.get("/console/audit").await;
    assert!(audit.html.contains("mark_reviewed"), "{}", audit.html);
    assert!(audit.html.contains("not_under_review"), "{}", audit.html);
    assert!(audit.html.contains("shop misconfigured"), "{}", audit.html);
}

/// A purchase paid on the sandbox's checkout page.
async fn paid_purchase(app: &TestApp) -> (PaymentId, UserId) {
    paid_purchase_renewing(app, false).await
}

/// A purchase paid on the sandbox's checkout page, its card kept for renewals
/// when `renew`.
async fn paid_purchase_renewing(app: &TestApp, renew: bool) -> (PaymentId, UserId) {
    let viewer = UserId::new();
    let (status, body) = app.buy(viewer, MONTH_TARIFF, renew, None).await;
    assert_eq!(status, 201, "{body}");
    let paid = reqwest::Client::new()
        .post(body["confirmation_url"].as_str().unwrap())
        .form(&[("action", "pay"), ("card", "4444")])
        .send()
        .await
        .unwrap();
    assert!(paid.status().is_success(), "{}", paid.status());
    (payment_id(&body), viewer)
}

#[tokio::test]
async fn refunding_a_flagged_payment_from_the_review_page_resolves_it() {
    let app = TestApp::start().await;
    let (id, viewer) = paid_purchase(&app).await;
    app.sql()
        .await
        .execute(
            "UPDATE payments SET review_reason = 'recipient account other-shop is not our shop' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let mut console = Console::new(&app);
    console.sign_in(&app.admin_token()).await;
    let done = console
        .submit(
            "/console/review",
            &format!("/console/review/{id}/refund"),
            &[
                ("idempotency_key", "review-1"),
                ("amount", ""),
                ("reason", "paid to the wrong shop"),
            ],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.html);
    assert_eq!(done.location(), "/console/review?done=refunded");
    let account = app.admin_account(viewer).await;
    assert_eq!(account["payments"][0]["status"], "refunded", "{account}");
    let review = console.get("/console/review").await;
    assert!(!review.html.contains(&id.to_string()), "{}", review.html);
    let audit = console.get("/console/audit").await.html;
    assert!(
        audit.contains("refunded 299.00 RUB (refund ")
            && audit.contains("): paid to the wrong shop"),
        "{audit}"
    );
}

/// The value of the hidden field `name` in the page's first form that has one.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field in {html}"));
    let rest = &html[at + marker.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn a_refund_form_sent_twice_at_once_refunds_once() {
    let app = TestApp::start().await;
    let (id, viewer) = paid_purchase(&app).await;
    let mut console = Console::new(&app);
    console.sign_in(&app.admin_token()).await;
    let page = format!("/console/users/{viewer}");
    let shown = console.get(&page).await;
    let (csrf, key) = (shown.csrf(), hidden(&shown.html, "idempotency_key"));
    let id = id.to_string();
    let form = [
        ("csrf", csrf.as_str()),
        ("payment_id", id.as_str()),
        ("idempotency_key", key.as_str()),
        ("amount", "100.00"),
        ("reason", "goodwill"),
    ];
    let action = format!("{page}/refund");
    let (first, second) = tokio::join!(console.post(&action, &form), console.post(&action, &form));
    // One made the refund; the other got its answer, or was told the first is
    // still running (and shown the same form, key kept, to send again).
    for p in [&first, &second] {
        assert!(
            p.status == 303 || p.status == 409,
            "{} {}",
            p.status,
            p.html
        );
        if p.status == 409 {
            assert_eq!(hidden(&p.html, "idempotency_key"), key, "the key is kept");
            assert!(p.html.contains("value=\"100.00\""), "{}", p.html);
        }
    }
    let again = console.post(&action, &form).await;
    assert_eq!(again.status, 303, "{}", again.html);
    let account = app.admin_account(viewer).await;
    assert_eq!(account["refunds"].as_array().unwrap().len(), 1, "{account}");
    assert_eq!(account["payments"][0]["refunded_amount"]["value"], "100.00");
    // A form without its key is not the console's own: refused, nothing made.
    let keyless = console
        .post(
            &action,
            &[
                ("csrf", csrf.as_str()),
                ("payment_id", id.as_str()),
                ("amount", "1.00"),
                ("reason", "no key"),
            ],
        )
        .await;
    assert_eq!(keyless.status, 400, "{}", keyless.html);
    assert_eq!(
        app.admin_account(viewer).await["refunds"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_refused_refund_sent_again_is_still_refused_and_recorded_so() {
    let app = TestApp::start().await;
    let (id, viewer) = paid_purchase(&app).await;
    let mut console = Console::new(&app);
    console.sign_in(&app.admin_token()).await;
    let page = format!("/console/users/{viewer}");
    let csrf = console.get(&page).await.csrf();
    let id = id.to_string();
    let form = [
        ("csrf", csrf.as_str()),
        ("payment_id", id.as_str()),
        ("idempotency_key", "too-much-1"),
        ("amount", "500.00"),
        ("reason", "too much"),
    ];
    for _ in 0..2 {
        let refused = console.post(&format!("{page}/refund"), &form).await;
        assert_eq!(refused.status, 409, "{}", refused.html);
        assert!(refused.html.contains("at most 299.00"), "{}", refused.html);
        assert!(!refused.html.contains("Refund sent"), "{}", refused.html);
        // What was typed is still in the form, under a fresh key.
        assert!(
            refused.html.contains("value=\"500.00\""),
            "{}",
            refused.html
        );
        assert_ne!(hidden(&refused.html, "idempotency_key"), "too-much-1");
    }
    let audit = console.get("/console/audit").await.html;
    assert_eq!(
        audit.matches("refund_exceeds_remaining").count(),
        2,
        "{audit}"
    );
    let done_refunds = audit
        .split("<tr>")
        .filter(|row| row.contains(">refund</td>") && row.contains("<td>ok</td>"))
        .count();
    assert_eq!(
        done_refunds, 0,
        "a refused refund recorded as done: {audit}"
    );

    // Another viewer's page cannot refund this viewer's payment.
    let stranger = format!("/console/users/{}/refund", UserId::new());
    let form = [
        ("csrf", csrf.as_str()),
        ("payment_id", id.as_str()),
        ("idempotency_key", "elsewhere-1"),
        ("amount", "1.00"),
        ("reason", "wrong page"),
    ];
    let wrong = console.post(&stranger, &form).await;
    assert_eq!(wrong.status, 404, "{}", wrong.html);
    assert!(app.admin_account(viewer).await["refunds"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn find_takes_our_payment_id_or_the_providers_to_the_viewer() {
    let app = TestApp::start().await;
    let (id, viewer) = paid_purchase(&app).await;
    let provider_id = app.provider_id(id).await;
    let mut console = Console::new(&app);
    console.sign_in(&app.admin_token()).await;
    for q in [id.to_string(), provider_id, viewer.to_string()] {
        let found = console.get(&format!("/console/find?q={q}")).await;
        assert_eq!(found.status, 303, "{q}: {}", found.html);
        assert_eq!(found.location(), format!("/console/users/{viewer}"), "{q}");
    }
    let nothing = console.get("/console/find?q=no-such-payment").await;
    assert_eq!(nothing.status, 404);
    assert!(nothing.html.contains("Nothing matches"), "{}", nothing.html);
}

#[tokio::test]
async fn an_operator_cancels_and_resumes_auto_renewal_for_a_viewer() {
    let app = TestApp::start().await;
    let (_, viewer) = paid_purchase_renewing(&app, true).await;
    let mut console = Console::new(&app);
    console.sign_in(&app.admin_token()).await;
    let page = format!("/console/users/{viewer}");
    let action = format!("{page}/auto-renew");

    let off = console.submit(&page, &action, &[("on", "false")]).await;
    assert_eq!(off.status, 303, "{}", off.html);
    assert_eq!(off.location(), format!("{page}?done=auto-renew-off"));
    let (_, profile) = app
        .get("/api/v1/subscriptions/profile", Some(&app.token(viewer)))
        .await;
    assert_eq!(profile["auto_renew"], false, "{profile}");
    let shown = console
        .get(&format!("{page}?done=auto-renew-off"))
        .await
        .html;
    assert!(shown.contains("Auto-renewal turned off."), "{shown}");
    assert!(
        shown.contains("subscription.auto_renew_disabled"),
        "{shown}"
    );

    let on = console.submit(&page, &action, &[("on", "true")]).await;
    assert_eq!(on.status, 303, "{}", on.html);
    let (_, profile) = app
        .get("/api/v1/subscriptions/profile", Some(&app.token(viewer)))
        .await;
    assert_eq!(profile["auto_renew"], true, "{profile}");

    // A viewer without a subscription: the service's 404, as a page.
    let none = console
        .submit(
            &page,
            &format!("/console/users/{}/auto-renew", UserId::new()),
            &[("on", "false")],
        )
        .await;
    assert_eq!(none.status, 404, "{}", none.html);
    let audit = console.get("/console/audit").await.html;
    for entry in ["auto_renew_off", "auto_renew_on", "no_active_subscription"] {
        assert!(audit.contains(entry), "{entry} not in {audit}");
    }
    // Each entry's before is the subscription as it was: on, then off.
    let rows: Vec<&str> = audit
        .split("<tr>")
        .filter(|r| r.contains("auto_renew_o"))
        .collect();
    let off = rows
        .iter()
        .find(|r| r.contains(">auto_renew_off<") && r.contains("<td>ok</td>"))
        .unwrap();
    assert!(off.contains("&#34;auto_renew&#34;:true"), "{off}");
    let on = rows.iter().find(|r| r.contains(">auto_renew_on<")).unwrap();
    assert!(on.contains("&#34;auto_renew&#34;:false"), "{on}");
}

#[tokio::test]
async fn outside_sandbox_mode_the_cookies_are_secure_and_prefixed() {
    // A provider configured (here a fake of YooKassa's test shop): no sandbox.
    let app = TestApp::builder().fake_yookassa().start().await;
    let mut console = Console::new(&app);
    let form = console.get("/console/sign-in").await;
    let pre = &form.cookies()[0];
    assert!(
        pre.starts_with("__Secure-billing_console_sign_in="),
        "{pre}"
    );
    assert!(pre.contains("; Secure"), "{pre}");
    let signed_in = console.sign_in(&app.admin_token()).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.html);
    let session = signed_in
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("__Secure-billing_console="))
        .expect("the session cookie");
    assert!(session.contains("; Secure"), "{session}");
    assert_eq!(console.get("/console").await.status, 200);
    // The unprefixed name means nothing here.
    console.cookie = console.cookie.replace("__Secure-", "");
    assert_eq!(console.get("/console").await.status, 303);
}

#[tokio::test]
async fn a_processed_notification_stays_processed_when_a_slower_processing_ends_worse() {
    use billing::domain::InboxStatus;
    use billing::store::webhook_inbox;
    let app = TestApp::start().await;
    paid_purchase(&app).await;
    let row = app.inbox_with(InboxStatus::Processed).await.remove(0);
    // A second processing of the same row (a replay beside the retry job) that
    // finishes after the first and could not reach the provider.
    let db = app.conn().await;
    let (status, _) = webhook_inbox::record_outcome(
        &db,
        row.id,
        InboxStatus::Received,
        None,
        Some("provider unreachable"),
    )
    .await
    .unwrap();
    assert_eq!(status, InboxStatus::Processed);
    let history = webhook_inbox::attempts(&db, row.id, 10).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].error.as_deref(), Some("provider unreachable"));
    assert_eq!(history[1].status, InboxStatus::Processed);

    let mut console = Console::new(&app);
    console.sign_in(&app.admin_token()).await;
    let page = console.get(&format!("/console/inbox/{}", row.id)).await;
    assert_eq!(page.status, 200);
    assert!(
        page.html.contains("<td>provider unreachable</td>"),
        "{}",
        page.html
    );
    assert!(
        page.html.contains("<dd id=\"row-status\">processed</dd>"),
        "{}",
        page.html
    );
}

#[tokio::test]
async fn an_alert_raised_as_the_service_stops_still_gets_its_row() {
    let mut app = TestApp::start().await;
    let running = app.server.take().expect("running");
    for _ in 0..50 {
        billing::service::alerts::raise(
            &running.app,
            "needs_review",
            "raised while stopping",
            PaymentId::new(),
        );
    }
    running.stop().await;
    let stored: i64 = app
        .conn()
        .await
        .query_one(
            "SELECT count(*) FROM alerts WHERE message = 'raised while stopping'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 50);
}
