//! The operator's console and the sandbox checkout, in a real browser: headless
//! Chromium over WebDriver against the real server (its own database, sandbox
//! mode). What a viewer and an operator do, by clicking.

#[allow(dead_code, unused_imports)]
#[path = "../api/helpers/mod.rs"]
mod helpers;

mod driver;

use std::time::Duration;

use billing::domain::UserId;
use driver::{browse, Browser, Screen};
use helpers::{read, TestApp, MONTH_TARIFF};

/// Signs in at `/console/sign-in` with `token`.
async fn sign_in(b: &Browser, app: &TestApp, token: &str) {
    b.goto(&format!("{}/console/sign-in", app.url)).await;
    b.fill("#token", token).await;
    b.click("#sign-in").await;
}

async fn sign_in_as_operator(b: &Browser, app: &TestApp) {
    sign_in(b, app, &app.admin_token()).await;
    assert_eq!(b.text("h1").await, "Overview", "{}", b.page_text().await);
}

/// A viewer's purchase of the monthly tariff: the checkout page's address.
async fn checkout_of(app: &TestApp, viewer: UserId) -> String {
    let (status, body) = app.buy(viewer, MONTH_TARIFF, true, None).await;
    assert_eq!(status, 201, "{body}");
    body["confirmation_url"]
        .as_str()
        .expect("confirmation_url")
        .to_owned()
}

/// Chooses a card on the sandbox checkout and presses Pay.
async fn pay_with(b: &Browser, card: &str) {
    b.find("select[name=card]")
        .await
        .select_by_value(card)
        .await
        .expect("choose the card");
    b.click("button[value=pay]").await;
}

/// Whether the page is wider than the screen (something would scroll sideways).
async fn overflows(b: &Browser) -> bool {
    b.js("return document.documentElement.scrollWidth > window.innerWidth")
        .await
        .as_bool()
        .expect("a boolean")
}

async fn public_aliases(app: &TestApp) -> Vec<String> {
    let (status, body) = app.get("/api/v1/tariffs", None).await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .expect("a list")
        .iter()
        .map(|t| t["alias"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Polls the public tariff list (it is cached for a moment) until `present` holds.
async fn wait_for_alias(app: &TestApp, alias: &str, present: bool) {
    for _ in 0..100 {
        if public_aliases(app).await.iter().any(|a| a == alias) == present {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("tariff {alias} present={present} never showed in the public list");
}

#[tokio::test]
async fn a_viewer_token_cannot_open_the_console() {
    let app = TestApp::start().await;
    browse("viewer_token", Screen::Desktop, |b| async move {
        let viewer = UserId::new();
        sign_in(&b, &app, &app.token(viewer)).await;
        assert_eq!(b.text("h1").await, "Operators only");
        let refusal = b.text("#refused").await;
        assert!(refusal.contains(&viewer.to_string()), "{refusal}");
        // No session was made: the console sends the browser back to sign in.
        b.goto(&format!("{}/console", app.url)).await;
        assert_eq!(b.text("h1").await, "Sign in");
        let cookies = b.client.get_all_cookies().await.expect("cookies");
        assert!(
            cookies.iter().all(|c| c.name() != "billing_console"),
            "{cookies:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn an_operator_signs_in_and_a_post_without_the_csrf_token_changes_nothing() {
    let app = TestApp::start().await;
    browse("csrf", Screen::Desktop, |b| async move {
        sign_in_as_operator(&b, &app).await;
        let cookies = b.client.get_all_cookies().await.expect("cookies");
        let session = cookies
            .iter()
            .find(|c| c.name() == "billing_console")
            .expect("the session cookie");
        assert_eq!(session.http_only(), Some(true));
        assert_eq!(
            session.same_site().map(|s| format!("{s:?}")).as_deref(),
            Some("Strict")
        );
        // The session is good: the tariff page opens. Its create form without the
        // CSRF field is refused and creates nothing.
        b.goto(&format!("{}/console/tariffs", app.url)).await;
        b.fill("#new-tariff input[name=alias]", "no-token").await;
        b.fill("#new-tariff input[name=name]", "Forged").await;
        b.fill("#new-tariff input[name=price]", "1.00").await;
        b.js("document.querySelector('#new-tariff input[name=csrf]').remove(); return true")
            .await;
        b.click("#new-tariff button[type=submit]").await;
        assert_eq!(b.text("h1").await, "Forbidden");
        assert!(
            b.page_text().await.contains("security token"),
            "{}",
            b.page_text().await
        );
        let (_, all) = app
            .get("/api/v1/admin/tariffs", Some(&app.admin_token()))
            .await;
        assert!(
            !all.to_string().contains("no-token"),
            "a tariff was created: {all}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_viewer_pays_at_the_checkout_and_an_operator_refunds_half() {
    let app = TestApp::start().await;
    browse("pay_and_refund", Screen::Desktop, |b| async move {
        let viewer = UserId::new();
        b.goto(&checkout_of(&app, viewer).await).await;
        assert!(b.text("h1").await.starts_with("Pay 299.00"));
        pay_with(&b, "4444").await;
        assert_eq!(b.text("h1").await, "Paid", "{}", b.page_text().await);
        let (_, profile) = app
            .get("/api/v1/subscriptions/profile", Some(&app.token(viewer)))
            .await;
        assert_eq!(profile["status"], "active", "{profile}");

        sign_in_as_operator(&b, &app).await;
        b.fill("#find-q", &viewer.to_string()).await;
        b.click("form.find button").await;
        assert_eq!(b.text("#sub-status").await, "active");
        b.fill("form.refund input[name=amount]", "149.50").await;
        b.fill("form.refund input[name=reason]", "half back: test")
            .await;
        b.click("form.refund button").await;
        assert_eq!(b.text(".notice").await, "Refund made.");
        let refunds = b.text("#refunds").await;
        assert!(refunds.contains("149.50 RUB"), "{refunds}");
        assert!(
            b.text("#payments").await.contains("partially_refunded"),
            "{}",
            b.text("#payments").await
        );
        let timeline = b.text("#timeline").await;
        assert!(timeline.contains("payment.refunded"), "{timeline}");
        assert!(timeline.contains("refunded 149.50 RUB"), "{timeline}");
        b.shot("console-viewer").await;

        // A second refund of more than what is left is shown next to its form.
        b.fill("form.refund input[name=amount]", "200.00").await;
        b.fill("form.refund input[name=reason]", "too much").await;
        b.click("form.refund button").await;
        let error = b.text("form.refund .error").await;
        assert!(error.contains("at most 149.50"), "{error}");
        let account = app.admin_account(viewer).await;
        assert_eq!(
            account["refunds"].as_array().map(Vec::len),
            Some(1),
            "{account}"
        );

        b.goto(&format!("{}/console/audit", app.url)).await;
        let mut refunds = vec![];
        for row in b
            .client
            .find_all(fantoccini::Locator::Css("#audit tbody tr"))
            .await
            .expect("audit rows")
        {
            let action = row
                .find(fantoccini::Locator::Css("td.action"))
                .await
                .expect("action cell");
            if action.text().await.expect("text") == "refund" {
                refunds.push(row.text().await.expect("row text"));
            }
        }
        // The half refund done, the over-refund refused: one row each.
        assert_eq!(refunds.len(), 2, "{refunds:?}");
        assert!(refunds.iter().any(|r| r.contains(" ok ")), "{refunds:?}");
        assert!(
            refunds
                .iter()
                .any(|r| r.contains("refund_exceeds_remaining")),
            "{refunds:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_declined_purchase_says_declined_on_a_phone() {
    let app = TestApp::start().await;
    browse("declined_on_a_phone", Screen::Phone, |b| async move {
        b.goto(&checkout_of(&app, UserId::new()).await).await;
        assert_eq!(b.js("return window.innerWidth").await, 390);
        assert!(!overflows(&b).await, "the checkout scrolls sideways");
        let (_, _, width, height) = b
            .find("button[value=pay]")
            .await
            .rectangle()
            .await
            .expect("the Pay button's box");
        assert!(
            height >= 44.0 && width >= 44.0,
            "Pay is {width}×{height} CSS px"
        );
        b.shot("checkout-phone").await;
        pay_with(&b, "0002").await;
        assert_eq!(b.text("h1").await, "Declined", "{}", b.page_text().await);
        let page = b.page_text().await;
        assert!(page.contains("insufficient_funds"), "{page}");
        assert!(!page.contains("Thank you"), "{page}");
    })
    .await;
}

#[tokio::test]
async fn an_operator_replays_a_notification_from_the_inbox() {
    let app = TestApp::start().await;
    browse("replay", Screen::Desktop, |b| async move {
        b.goto(&checkout_of(&app, UserId::new()).await).await;
        pay_with(&b, "4444").await;
        assert_eq!(b.text("h1").await, "Paid");

        sign_in_as_operator(&b, &app).await;
        b.goto(&format!(
            "{}/console/inbox?provider=yookassa&status=processed",
            app.url
        ))
        .await;
        b.click("#inbox tbody tr a").await;
        let body = b.text("#body").await;
        assert!(body.contains("payment.succeeded"), "{body}");
        b.click("#replay").await;
        assert_eq!(b.text(".notice").await, "Notification processed again.");
        assert_eq!(b.text("#row-status").await, "processed");
        let history = b.text("#history").await;
        assert!(history.contains("replay by"), "{history}");
        // Both processings in the row's history: on arrival, and the replay.
        let attempts = b
            .client
            .find_all(fantoccini::Locator::Css("#attempts tbody tr"))
            .await
            .expect("attempt rows");
        assert_eq!(attempts.len(), 2, "{}", b.text("#attempts").await);
        let (_, inbox) = app
            .get("/api/v1/admin/webhooks", Some(&app.admin_token()))
            .await;
        assert_eq!(inbox[0]["attempts"], 2, "{inbox}");
    })
    .await;
}

#[tokio::test]
async fn an_archived_tariff_leaves_the_public_list() {
    let app = TestApp::start().await;
    browse("archive_tariff", Screen::Desktop, |b| async move {
        sign_in_as_operator(&b, &app).await;
        b.goto(&format!("{}/console/tariffs", app.url)).await;
        b.fill("#new-tariff input[name=alias]", "week").await;
        b.fill("#new-tariff input[name=name]", "Weekly").await;
        b.fill("#new-tariff input[name=price]", "99.00").await;
        b.fill("#new-tariff input[name=period_count]", "7").await;
        b.find("#new-tariff select[name=period_unit]")
            .await
            .select_by_value("day")
            .await
            .expect("choose days");
        b.click("#new-tariff button[type=submit]").await;
        assert_eq!(b.text(".notice").await, "Tariff created.");
        wait_for_alias(&app, "week", true).await;

        b.click("tr[data-alias=week] button.archive").await;
        assert_eq!(
            b.text(".notice").await,
            "Tariff archived: it is no longer on sale."
        );
        assert_eq!(b.text("tr[data-alias=week] td.on-sale").await, "no");
        wait_for_alias(&app, "week", false).await;

        // Price and period are not even offered for change; a name is.
        b.fill("tr[data-alias=week] input[name=name]", "Weekly (old)")
            .await;
        b.click("tr[data-alias=week] button.rename").await;
        assert_eq!(b.text(".notice").await, "Tariff saved.");
        b.goto(&format!("{}/console/audit", app.url)).await;
        let audit = b.text("#audit").await;
        for action in ["tariff_create", "tariff_archive", "tariff_rename"] {
            assert!(audit.contains(action), "{action} not in {audit}");
        }
    })
    .await;
}

#[tokio::test]
async fn the_console_fits_a_phone() {
    let app = TestApp::start().await;
    let viewer = UserId::new();
    let checkout = checkout_of(&app, viewer).await;
    let paid = app
        .http
        .post(&checkout)
        .form(&[("action", "pay"), ("card", "4444")])
        .send()
        .await
        .expect("pay");
    assert!(paid.status().is_success() || paid.status().is_redirection());
    browse("console_on_a_phone", Screen::Phone, |b| async move {
        sign_in_as_operator(&b, &app).await;
        assert!(!overflows(&b).await, "the overview scrolls sideways");
        b.shot("console-overview-phone").await;
        b.goto(&format!("{}/console/users/{viewer}", app.url)).await;
        assert_eq!(b.text("#sub-status").await, "active");
        assert!(!overflows(&b).await, "the viewer page scrolls sideways");
        // The refund form is on the screen, not at the far end of a table.
        let (x, _, width, _) = b
            .find("form.refund button")
            .await
            .rectangle()
            .await
            .expect("the Refund button's box");
        assert!(x + width <= 390.0, "Refund is at x {x}..{}", x + width);
        b.goto(&format!("{}/console/tariffs", app.url)).await;
        let (x, _, width, _) = b
            .find("tr[data-alias=month] button.archive")
            .await
            .rectangle()
            .await
            .expect("the Archive button's box");
        assert!(x + width <= 390.0, "Archive is at x {x}..{}", x + width);
        let (status, _) = read(
            app.http
                .get(format!("{}/console/static/console.css", app.url))
                .send()
                .await
                .expect("css"),
        )
        .await;
        assert_eq!(status, 200);
    })
    .await;
}
