//! The dashboard in a real browser: headless Chromium driven through chromedriver (WebDriver),
//! against the real `spool demo --http` process. Each test waits for what a person would see
//! (elements, text) with generous bounds, never for pixels, and saves a screenshot of the pages
//! it visits under `<target>/screenshots/` for a person to look at.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};

use crate::support::{plugin_path, spool, stop};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long to wait for anything the page shows: the machine may be busy building.
const PATIENCE: Duration = Duration::from_secs(60);

/// One browser at a time: two cores do not run several Chromiums and demo workers well.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `spool demo --http 127.0.0.1:0` in a temporary directory: its worker, mail API and server.
struct Demo {
    child: Option<Child>,
    url: String,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// Start the demo with `env` set (tokens), and read the dashboard's URL it prints.
    fn start(env: &[(&str, &str)]) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let plugins = plugin_path("email").parent().unwrap().to_path_buf();
        let mut child = spool()
            .current_dir(dir.path())
            .env_remove("SPOOL_DB")
            .env_remove("SPOOL_NATS_URL")
            .env_remove("SPOOL_ADMIN_TOKEN")
            .env_remove("SPOOL_READ_TOKEN")
            .envs(env.iter().copied())
            .args(["demo", "--http", "127.0.0.1:0", "--plugins"])
            .arg(&plugins)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let Some(line) = lines.next() else {
                let status = child.wait().unwrap();
                panic!("spool demo --http exited ({status}) without printing its URL");
            };
            let line = line.unwrap();
            if let Some(rest) = line.trim().strip_prefix("Dashboard: ") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep reading its output so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Demo {
            child: Some(child),
            url,
            _dir: dir,
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child, "-INT");
        }
    }
}

/// chromedriver and a headless Chromium session through it.
struct Browser {
    client: Option<Client>,
    driver: Child,
}

impl Browser {
    async fn start() -> Browser {
        for (path, what) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the dashboard tests need {what}; install it with \
                 `apt-get install -y chromium chromium-driver` (.ci/run does)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1366,1000", "--no-first-run", "--no-default-browser-check",
                ],
            }
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let webdriver = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&webdriver)
                .await
            {
                Ok(client) => break client,
                Err(e) if start.elapsed() < PATIENCE => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot start Chromium through {CHROMEDRIVER}: {e}"),
            }
        };
        Browser {
            client: Some(client),
            driver,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    async fn open(&self, url: &str) {
        self.client().goto(url).await.unwrap();
    }

    /// The first element matching `css`, waiting for it.
    async fn find(&self, css: &str) -> Element {
        self.client()
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page within {PATIENCE:?}: {e}"))
    }

    /// Wait until the text of the first element matching `css` contains `text`; returns it.
    async fn wait_text(&self, css: &str, text: &str) -> String {
        let start = Instant::now();
        let mut seen = String::new();
        while start.elapsed() < PATIENCE {
            if let Ok(el) = self.client().find(Locator::Css(css)).await
                && let Ok(now) = el.text().await
            {
                if now.contains(text) {
                    return now;
                }
                seen = now;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        panic!("{css} never showed {text:?} within {PATIENCE:?}; last seen: {seen:?}");
    }

    /// Wait until no element matches `css`.
    async fn wait_gone(&self, css: &str) {
        let start = Instant::now();
        while start.elapsed() < PATIENCE {
            if self
                .client()
                .find_all(Locator::Css(css))
                .await
                .unwrap()
                .is_empty()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        panic!("{css} was still on the page after {PATIENCE:?}");
    }

    async fn click(&self, css: &str) {
        let el = self.find(css).await;
        let start = Instant::now();
        // An element re-rendered between finding and clicking is found again.
        loop {
            let el = match self.client().find(Locator::Css(css)).await {
                Ok(now) => now,
                Err(_) => el.clone(),
            };
            match el.click().await {
                Ok(_) => return,
                Err(e) if start.elapsed() > PATIENCE => panic!("cannot click {css}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(150)).await,
            }
        }
    }

    async fn script(&self, js: &str) -> serde_json::Value {
        self.client().execute(js, vec![]).await.unwrap()
    }

    /// Mark the loaded page; [`Browser::same_page`] tells whether it was reloaded since.
    async fn mark(&self) {
        self.script("window.__spoolTestMark = 42;").await;
    }

    async fn same_page(&self) -> bool {
        self.script("return window.__spoolTestMark === 42;").await == serde_json::json!(true)
    }

    /// Use `token` in the page's token field.
    async fn use_token(&self, token: &str) {
        let field = self.find("#token").await;
        field.clear().await.unwrap();
        field.send_keys(token).await.unwrap();
        self.click("#token-form button").await;
    }

    /// Save a PNG of the page as `<target>/screenshots/<name>.png`.
    async fn screenshot(&self, name: &str) {
        let png = self.client().screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Whether the element matching `css` is disabled, and its tooltip.
    async fn disabled(&self, css: &str) -> (bool, String) {
        self.find(css).await;
        let js = format!(
            "const el = document.querySelector({}); return el && [el.disabled, el.title];",
            serde_json::to_string(css).unwrap()
        );
        let state = self.script(&js).await;
        serde_json::from_value(state).unwrap_or_else(|e| panic!("{css}: {e}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Closing ends Chromium; a runtime still alive runs it, else the driver's end does.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let _ = std::thread::spawn(move || {
                    handle.block_on(async {
                        let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
                    })
                })
                .join();
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `$CARGO_TARGET_DIR/screenshots`, or the workspace's `target/screenshots`.
fn screenshots_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("screenshots")
}

/// Enqueue the email job in `mode` from the demo panel; returns its id.
async fn enqueue_from_panel(browser: &Browser, mode: &str) -> String {
    // Read in one go: the panel re-renders as events arrive.
    let listed = || async {
        let ids = browser
            .script(
                "return [...document.querySelectorAll('#demo-jobs li')].map(li => li.dataset.job);",
            )
            .await;
        serde_json::from_value::<Vec<String>>(ids).unwrap()
    };
    let before = listed().await;
    browser
        .click(&format!("#demo-form button[value={mode}]"))
        .await;
    let start = Instant::now();
    loop {
        // The newest is first.
        if let Some(id) = listed().await.into_iter().find(|id| !before.contains(id)) {
            return id;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the demo panel never listed the {mode} job"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_demo_job_succeed_live_and_every_page_renders() {
    let _one = ONE_AT_A_TIME.lock().await;
    let demo = Demo::start(&[]);
    let browser = Browser::start().await;
    browser.open(&demo.url).await;
    browser.wait_text("#role", "admin").await;
    browser.wait_text("#live", "live").await;
    browser.find("#demo:not([hidden])").await;
    browser.wait_text("h1", "Queues").await;
    browser.mark().await;

    let id = enqueue_from_panel(&browser, "ok").await;
    let item = format!("#demo-jobs li[data-job='{id}']");
    browser.wait_text(&item, "succeeded").await;
    browser.wait_text(&item, "started").await;
    // The queue's counts moved with it, through the stream.
    browser
        .wait_text("tr[data-queue=email] .count-succeeded", "1")
        .await;
    assert!(browser.same_page().await, "the page was reloaded");
    browser.screenshot("queues").await;

    // The job's page: its timeline, attempt and payload.
    browser.click(&format!("{item} a")).await;
    browser.wait_text("#timeline", "succeeded").await;
    let timeline = browser.wait_text("#timeline", "started").await;
    assert!(timeline.contains("enqueued"), "{timeline}");
    browser.wait_text("#attempts", "#1").await;
    browser.wait_text("main", "ada@example.com").await;
    browser.wait_text("main", "sending email").await;
    assert!(browser.same_page().await, "the page was reloaded");
    browser.screenshot("job").await;

    browser.click("nav a[data-route=jobs]").await;
    browser
        .wait_text(&format!("tr[data-job='{id}']"), "succeeded")
        .await;
    browser.screenshot("jobs").await;

    browser.click("nav a[data-route=dlq]").await;
    browser
        .wait_text("main", "The dead-letter queue is empty.")
        .await;
    browser.screenshot("dlq").await;

    browser.click("nav a[data-route=schedules]").await;
    browser.wait_text("main", "No schedules.").await;
    browser.screenshot("schedules").await;

    browser.click("nav a[data-route=workers]").await;
    browser.wait_text("h1", "Workers").await;
    browser.screenshot("workers").await;
    assert!(browser.same_page().await, "the page was reloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_demo_job_is_replayed_then_purged_from_the_dead_letter_page() {
    let _one = ONE_AT_A_TIME.lock().await;
    let demo = Demo::start(&[]);
    let browser = Browser::start().await;
    browser.open(&demo.url).await;
    browser.wait_text("#role", "admin").await;
    browser.wait_text("#live", "live").await;

    let id = enqueue_from_panel(&browser, "fail").await;
    let item = format!("#demo-jobs li[data-job='{id}']");
    // Three failed attempts (backoff 1 s, then 2 s), then the dead-letter queue.
    browser.wait_text(&item, "dead-lettered").await;

    browser.open(&format!("{}#/dlq", demo.url)).await;
    let row = format!("tr[data-job='{id}']");
    browser.wait_text(&row, "smtp server unavailable").await;
    browser.mark().await;
    browser.click(&format!("{row} input[type=checkbox]")).await;
    browser.wait_text("#replay", "Replay 1 selected").await;
    browser.click("#replay").await;
    let question = browser.wait_text("#confirm", "Replay 1 dead job").await;
    assert!(question.contains("fresh attempts"), "{question}");
    browser.screenshot("dlq-confirm").await;
    browser.click("#confirm-yes").await;
    browser.wait_gone(&row).await;

    // The replayed job runs again (and fails again, three times): its page shows it live.
    browser.open(&format!("{}#/job/{id}", demo.url)).await;
    browser.wait_text("#timeline", "replayed").await;
    browser.mark().await;
    let timeline = browser.wait_text("#timeline", "dead-lettered").await;
    let deaths = timeline.matches("dead-lettered").count();
    if deaths < 2 {
        let start = Instant::now();
        loop {
            // The timeline is redrawn as events arrive: an element found just before a
            // redraw is stale by the time its text is read, so read it again.
            let Ok(now) = browser.find("#timeline").await.text().await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let after = now.split("replayed").nth(1).unwrap_or("");
            if after.contains("dead-lettered") {
                break;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the replayed job never died again:\n{now}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(browser.same_page().await, "the job page was reloaded");

    // Purge asks first, naming how many.
    browser
        .open(&format!("{}#/dlq?queue=email", demo.url))
        .await;
    browser.wait_text(&row, "email").await;
    browser.click("#purge").await;
    let question = browser.wait_text("#confirm", "Purge 1 dead job").await;
    assert!(question.contains("queue email"), "{question}");
    browser.click("#confirm-no").await;
    browser.wait_gone("#confirm").await;
    browser.find(&row).await;
    browser.click("#purge").await;
    browser.wait_text("#confirm-yes", "Purge 1 job").await;
    browser.click("#confirm-yes").await;
    browser
        .wait_text("main", "The dead-letter queue is empty.")
        .await;
    browser.open(&format!("{}#/job/{id}", demo.url)).await;
    browser.wait_text("main", "No such job.").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_demo_job_is_cancelled_from_its_page() {
    let _one = ONE_AT_A_TIME.lock().await;
    let demo = Demo::start(&[]);
    let browser = Browser::start().await;
    browser.open(&demo.url).await;
    browser.wait_text("#role", "admin").await;
    browser.wait_text("#live", "live").await;

    let delay = browser.find("#demo-form input[name=delay_ms]").await;
    delay.send_keys("30000").await.unwrap();
    let id = enqueue_from_panel(&browser, "hang").await;
    browser
        .click(&format!("#demo-jobs li[data-job='{id}'] a"))
        .await;
    browser.mark().await;
    browser.wait_text("h1", "running").await;
    browser.wait_text("#timeline", "started").await;
    browser.click("#cancel").await;
    browser.wait_text("h1", "cancelled").await;
    browser.wait_text("#timeline", "cancelled").await;
    browser.wait_gone("#cancel").await;
    assert!(browser.same_page().await, "the job page was reloaded");
    browser.screenshot("job-cancelled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_read_token_the_admin_buttons_cannot_be_pressed() {
    let _one = ONE_AT_A_TIME.lock().await;
    let demo = Demo::start(&[
        ("SPOOL_ADMIN_TOKEN", "admin-secret"),
        ("SPOOL_READ_TOKEN", "read-secret"),
    ]);
    let browser = Browser::start().await;
    browser.open(&demo.url).await;
    // No token: nothing is shown but the token field.
    browser.wait_text("#role", "no access").await;

    // An admin enqueues a job to look at.
    browser.use_token("admin-secret").await;
    browser.wait_text("#role", "admin").await;
    let (disabled, _) = browser.disabled("#demo-form button[value=ok]").await;
    assert!(!disabled, "an admin's demo buttons are disabled");
    let id = enqueue_from_panel(&browser, "ok").await;
    browser
        .wait_text(&format!("#demo-jobs li[data-job='{id}']"), "succeeded")
        .await;

    // A reader sees the same job but cannot act.
    browser.use_token("read-secret").await;
    browser.wait_text("#role", "read").await;
    browser
        .wait_text("#admin-note", "need an admin token")
        .await;
    let stored = browser
        .script("return localStorage.getItem('spool.token');")
        .await;
    assert_eq!(stored, serde_json::json!("read-secret"));
    for button in ["ok", "flaky", "fail", "hang"] {
        let (disabled, why) = browser
            .disabled(&format!("#demo-form button[value={button}]"))
            .await;
        assert!(
            disabled,
            "the demo's {button} button is enabled for a reader"
        );
        assert!(why.contains("admin token"), "{why}");
    }
    browser.wait_text("tr[data-queue=email]", "email").await;
    let (disabled, why) = browser.disabled("#enqueue-form button").await;
    assert!(disabled && why.contains("admin token"), "enqueue: {why}");
    browser.screenshot("queues-read-only").await;

    // Pressing a disabled button does nothing: no job appears.
    let count = "return document.querySelectorAll('#demo-jobs li').length;";
    let jobs = browser.script(count).await;
    let _ = browser
        .find("#demo-form button[value=ok]")
        .await
        .click()
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = browser.script(count).await;
    assert_eq!(after, jobs, "a read token enqueued a job");

    browser.open(&format!("{}#/dlq", demo.url)).await;
    browser.wait_text("h1", "Dead-letter queue").await;
    for button in ["#replay", "#purge"] {
        let (disabled, why) = browser.disabled(button).await;
        assert!(disabled && why.contains("admin token"), "{button}: {why}");
    }
    browser.open(&format!("{}#/schedules", demo.url)).await;
    let (disabled, why) = browser.disabled("#schedule-form button").await;
    assert!(disabled && why.contains("admin token"), "schedule: {why}");

    // A job still running shows its cancel button, disabled.
    browser.use_token("admin-secret").await;
    browser.wait_text("#role", "admin").await;
    let delay = browser.find("#demo-form input[name=delay_ms]").await;
    delay.send_keys("30000").await.unwrap();
    let hang = enqueue_from_panel(&browser, "hang").await;
    browser.use_token("read-secret").await;
    browser.wait_text("#role", "read").await;
    browser.open(&format!("{}#/job/{hang}", demo.url)).await;
    browser.wait_text("#timeline", "enqueued").await;
    let (disabled, why) = browser.disabled("#cancel").await;
    assert!(disabled && why.contains("admin token"), "cancel: {why}");
    browser.screenshot("job-read-only").await;
}
