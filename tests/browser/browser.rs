//! Headless Chromium driven over WebDriver (Debian's `chromium-driver`) with fantoccini,
//! with axe-core injected into each page checked, and screenshots on request.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// What the suite needs on this machine.
pub struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
    /// axe-core's `axe.min.js`.
    axe: PathBuf,
    pub pdftotext: PathBuf,
}

impl Tools {
    /// The tools, or what is missing and how to get it.
    pub fn find() -> Result<Self, Vec<String>> {
        let axe = std::env::var_os("TOPUPD_TEST_AXE").map_or_else(
            || {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/browser/node_modules/axe-core/axe.min.js")
            },
            PathBuf::from,
        );
        let mut missing = Vec::new();
        let mut program = |name: &str, env: &str, hint: &str| {
            let found = std::env::var_os(env)
                .map(PathBuf::from)
                .or_else(|| which(name))
                .filter(|path| path.is_file());
            if found.is_none() {
                missing.push(format!("{name} ({hint})"));
            }
            found.unwrap_or_default()
        };
        let tools = Self {
            chromium: program(
                "chromium",
                "TOPUPD_TEST_CHROMIUM",
                "apt-get install chromium",
            ),
            chromedriver: program(
                "chromedriver",
                "TOPUPD_TEST_CHROMEDRIVER",
                "apt-get install chromium-driver",
            ),
            pdftotext: program(
                "pdftotext",
                "TOPUPD_TEST_PDFTOTEXT",
                "apt-get install poppler-utils",
            ),
            axe: axe.clone(),
        };
        if !axe.is_file() {
            missing.push(format!(
                "axe-core at {} (npm ci --prefix tests/browser)",
                axe.display()
            ));
        }
        if missing.is_empty() {
            Ok(tools)
        } else {
            Err(missing)
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// A running chromedriver, stopped when dropped.
pub struct Driver {
    _process: Child,
    url: String,
    chromium: PathBuf,
    axe: String,
}

impl Driver {
    pub async fn start(tools: &Tools) -> Self {
        let port = crate::helpers::unused_port();
        let process = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        for _ in 0..100 {
            if reqwest::get(&status)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            _process: process,
            url,
            chromium: tools.chromium.clone(),
            axe: std::fs::read_to_string(&tools.axe).expect("read axe-core"),
        }
    }

    /// A fresh browser: its own profile, so no cookie of another journey.
    pub async fn browser(&self, shots: Option<PathBuf>) -> Browser {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": self.chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,1000"],
            }),
        );
        // chromedriver listens on loopback: plain HTTP, no TLS stack.
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a WebDriver session");
        Browser {
            client,
            axe: self.axe.clone(),
            shots,
        }
    }
}

/// One browser window and what the journeys do with it.
pub struct Browser {
    pub client: Client,
    axe: String,
    shots: Option<PathBuf>,
}

impl Browser {
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// The path (and query) of the page shown.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("url");
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// The text of the page, as the customer reads it.
    pub async fn text(&self) -> String {
        let text = self
            .client
            .execute("return document.body.innerText;", vec![])
            .await
            .expect("page text");
        text.as_str().unwrap_or_default().to_owned()
    }

    /// Clicks `css`, which stays on the page (a radio button, a checkbox).
    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .expect("click");
    }

    /// Clicks `css`, which leads to another page, and waits for that page.
    pub async fn follow(&self, css: &str) {
        self.mark_page().await;
        self.click(css).await;
        self.wait_for_next_page().await;
    }

    /// Clicks the button or link whose text is `label` and waits for the page it leads to.
    pub async fn press(&self, label: &str) {
        let xpath = format!("//*[self::button or self::a][normalize-space()='{label}']");
        let target = self
            .client
            .find(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no \"{label}\": {e}"));
        self.mark_page().await;
        target.click().await.expect("click");
        self.wait_for_next_page().await;
    }

    /// Marks the page shown, so that the next one can be told apart.
    async fn mark_page(&self) {
        self.client
            .execute("window.__topupdOld = true;", vec![])
            .await
            .expect("mark the page");
    }

    /// Waits until another page than the marked one has loaded.
    async fn wait_for_next_page(&self) {
        for _ in 0..200 {
            let loaded = self
                .client
                .execute(
                    "return !window.__topupdOld && document.readyState === 'complete';",
                    vec![],
                )
                .await;
            if loaded.is_ok_and(|v| v == json!(true)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no new page after 10 s: still {}", self.path().await);
    }

    /// Types `value` into the field `css`, replacing what it held.
    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.client.find(Locator::Css(css)).await.expect("field");
        field.clear().await.expect("clear");
        field.send_keys(value).await.expect("type");
    }

    /// Ticks or unticks the checkbox `css`.
    pub async fn tick(&self, css: &str, on: bool) {
        let checked = self
            .client
            .execute(
                "return document.querySelector(arguments[0]).checked;",
                vec![json!(css)],
            )
            .await
            .expect("checked");
        if checked.as_bool() != Some(on) {
            self.click(css).await;
        }
    }

    pub async fn select(&self, css: &str, value: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .expect("select")
            .select_by_value(value)
            .await
            .expect("choose");
    }

    /// The `href` of the first link matching `css`.
    pub async fn href(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .attr("href")
            .await
            .expect("attribute")
            .expect("an href")
    }

    /// Sends the form of the button `css` as many times as `times` at once (a double or
    /// triple click that reaches the server), then once as the browser does, following
    /// its redirects.
    pub async fn send_form_repeatedly(&self, css: &str, times: usize) {
        let sent = self
            .client
            .execute_async(
                "const [css, times, done] = arguments;
                 const form = document.querySelector(css).form;
                 const send = () => fetch(form.action, { method: 'POST', body: new URLSearchParams(new FormData(form)), redirect: 'manual' });
                 Promise.all(Array.from({ length: times }, send)).then(() => done(true), e => done(String(e)));",
                vec![json!(css), json!(times)],
            )
            .await
            .expect("repeated sends");
        assert_eq!(sent, json!(true), "the repeated sends were answered");
        self.follow(css).await;
    }

    /// A file the page links to, fetched with the page's session, as downloaded.
    pub async fn download(&self, path: &str) -> Vec<u8> {
        let bytes = self
            .client
            .execute_async(
                "const [path, done] = arguments;
                 fetch(path, { credentials: 'same-origin' })
                   .then(r => r.arrayBuffer())
                   .then(b => done(Array.from(new Uint8Array(b))), e => done(String(e)));",
                vec![json!(path)],
            )
            .await
            .expect("download");
        bytes
            .as_array()
            .unwrap_or_else(|| panic!("{path} downloads: {bytes}"))
            .iter()
            .map(|b| u8::try_from(b.as_u64().expect("a byte")).expect("a byte"))
            .collect()
    }

    /// Checks the page shown at a desktop's width and a phone's: axe-core finds no serious
    /// or critical violation, and at the phone's width nothing makes the page wider than
    /// the screen (wide tables scroll on their own). Keeps the screenshots as `name`.png
    /// and `phone/name`.png when screenshots are asked for.
    pub async fn check(&self, name: &str) {
        for (width, height, folder) in [(1200, 1000, ""), (390, 844, "phone")] {
            self.client
                .set_window_size(width, height)
                .await
                .expect("resize the window");
            self.axe_check(name, width).await;
            if width < 600 {
                let overflow: Value = self
                    .client
                    .execute(
                        "return document.documentElement.scrollWidth - window.innerWidth;",
                        vec![],
                    )
                    .await
                    .expect("measure the page");
                assert!(
                    overflow.as_i64().is_some_and(|o| o <= 0),
                    "{name} ({}) is {overflow} px wider than a phone's screen",
                    self.path().await
                );
            }
            if let Some(shots) = &self.shots {
                let folder = shots.join(folder);
                std::fs::create_dir_all(&folder).expect("screenshot folder");
                let png = self.client.screenshot().await.expect("screenshot");
                std::fs::write(folder.join(format!("{name}.png")), png).expect("save screenshot");
            }
        }
        self.client
            .set_window_size(1200, 1000)
            .await
            .expect("resize the window");
    }

    async fn axe_check(&self, name: &str, width: u32) {
        self.client
            .execute(&self.axe, vec![])
            .await
            .expect("inject axe-core");
        let violations: Value = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] }).then(r => done(
                   r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                     .map(v => `${v.id} (${v.impact}): ${v.help}: ${v.nodes.map(n => n.target.join(' ')).join(', ')}`)
                 ), e => done([`axe failed: ${e}`]));",
                vec![],
            )
            .await
            .expect("run axe-core");
        let violations = violations.as_array().cloned().unwrap_or_default();
        assert!(
            violations.is_empty(),
            "{name} ({}, {width} px wide): accessibility violations: {violations:#?}",
            self.path().await
        );
    }

    pub async fn close(self) {
        self.client.close().await.expect("close the browser");
    }
}
