//! Headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them). Each test gets its own
//! chromedriver and browser profile; at most two browsers run at once (two cores).
//!
//! `browse(name, Screen::Desktop, |b| async move { … })` runs a test body; when it
//! fails, a screenshot of the page it was on is saved to
//! `target/browser-failures/<name>.png` before the failure is passed on.
//! `b.shot(name)` saves a screenshot for the README: into
//! `target/browser-screenshots/`, and into `docs/screenshots/` when
//! `UPDATE_SCREENSHOTS=1` (so an ordinary run leaves the checkout clean).

use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::LazyLock;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;

static BROWSERS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(2));

/// The window the page is shown in.
#[derive(Clone, Copy)]
pub enum Screen {
    Desktop,
    /// A phone, 390×844 CSS pixels at 3× (Chromium's device emulation: the
    /// viewport meta is honoured as on a real phone).
    Phone,
}

pub struct Browser {
    pub client: Client,
}

impl Browser {
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => panic!("no element {css:?} on {}: {e}", self.url().await),
        }
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("element text")
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear field");
        field.send_keys(value).await.expect("type into field");
    }

    /// Clicks what `css` finds and waits for the page it leads to (a link or a
    /// form's button): the old page is marked first, and the new one has no mark.
    pub async fn click(&self, css: &str) {
        self.js("window.billingOldPage = true; return true").await;
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css:?}: {e}"));
        for _ in 0..200 {
            let loaded = self
                .client
                .execute(
                    "return window.billingOldPage === undefined && document.readyState === 'complete'",
                    vec![],
                )
                .await;
            if matches!(loaded, Ok(Value::Bool(true))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "clicking {css:?} led to no new page (still on {})",
            self.url().await
        );
    }

    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// The text of the whole page as a viewer sees it.
    pub async fn page_text(&self) -> String {
        self.text("body").await
    }

    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script {script:?}: {e}"))
    }

    /// Saves a screenshot for the README (see the module's note).
    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        save(&target_dir().join("browser-screenshots"), name, &png);
        if std::env::var("UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
            let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
            save(&docs, name, &png);
        }
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn save(dir: &PathBuf, name: &str, png: &[u8]) {
    std::fs::create_dir_all(dir).expect("screenshot directory");
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// Runs `body` in a fresh browser; on failure saves a screenshot, then fails.
pub async fn browse<F, Fut>(name: &str, screen: Screen, body: F)
where
    F: FnOnce(Browser) -> Fut,
    Fut: Future<Output = ()>,
{
    let _turn = BROWSERS.acquire().await.expect("semaphore");
    let (mut driver, client, profile) = start(screen).await;
    let outcome = std::panic::AssertUnwindSafe(body(Browser {
        client: client.clone(),
    }))
    .catch_unwind()
    .await;
    if outcome.is_err() {
        match client.screenshot().await {
            Ok(png) => save(&target_dir().join("browser-failures"), name, &png),
            Err(e) => eprintln!("no screenshot of the failure: {e}"),
        }
    }
    let _ = client.close().await;
    let _ = driver.kill().await;
    let _ = std::fs::remove_dir_all(profile);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn program(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

async fn start(screen: Screen) -> (Child, Client, PathBuf) {
    let chromedriver = program("CHROMEDRIVER", "/usr/bin/chromedriver");
    let chromium = program("CHROME_BIN", "/usr/bin/chromium");
    for (what, path) in [("chromedriver", &chromedriver), ("chromium", &chromium)] {
        assert!(
            std::path::Path::new(path).exists(),
            "{what} not found at {path}: the browser tests need Debian's `chromium` and \
             `chromium-driver` (`apt-get install chromium chromium-driver`; .ci/run installs \
             them), or CHROME_BIN and CHROMEDRIVER pointing at them"
        );
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let driver = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {chromedriver}: {e}"));
    let url = format!("http://127.0.0.1:{port}");
    let profile = tempdir();
    let mut args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--no-first-run".to_owned(),
        "--lang=en-US".to_owned(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut options = json!({"binary": chromium});
    match screen {
        Screen::Desktop => args.push("--window-size=1280,1000".to_owned()),
        Screen::Phone => {
            options["mobileEmulation"] =
                json!({"deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 3.0}});
        }
    }
    options["args"] = json!(args);
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let mut last = None;
    for _ in 0..100 {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return (driver, client, profile),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver at {url} did not start a session: {last:?}");
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("billing-browser-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("browser profile directory");
    dir
}
