//! A real browser for the web UI's tests: Debian's `chromium`, headless, driven through
//! `chromedriver` (started on a free port for each browser) with `fantoccini`.
//!
//! `scripts/test` installs both (`chromium`, `chromium-driver`). With `FLINGER_UI_SCREENSHOTS`
//! set to a directory, [`Browser::screenshot`] saves PNGs there (`docs/web-ui/` is made so).

use crate::proc::Proc;
use crate::{eventually, free_port};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::time::Duration;

/// How long a condition is waited for before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

pub struct Browser {
    pub client: Client,
    /// chromedriver; killed when the browser is dropped.
    _driver: Proc,
    _profile: tempfile::TempDir,
}

fn find_command(names: &[&str]) -> String {
    for n in names {
        for dir in ["/usr/bin", "/usr/lib/chromium", "/usr/local/bin"] {
            let p = std::path::Path::new(dir).join(n);
            if p.exists() {
                return p.display().to_string();
            }
        }
    }
    panic!("none of {names:?} is installed: scripts/test installs chromium and chromium-driver")
}

impl Browser {
    /// A fresh headless chromium (its own profile: no cookies) at phone-or-desktop `width`.
    pub async fn start(width: u32, height: u32) -> Browser {
        let driver_bin = find_command(&["chromedriver"]);
        let chromium = find_command(&["chromium", "chromium-browser"]);
        let port = free_port();
        let profile = tempfile::Builder::new()
            .prefix("flinger-chromium-")
            .tempdir()
            .expect("profile dir");
        let driver = Proc::spawn(
            "chromedriver",
            std::path::Path::new(&driver_bin),
            &[format!("--port={port}")],
            &[],
            profile.path(),
        );
        let url = format!("http://127.0.0.1:{port}");
        eventually(WAIT, "chromedriver to answer", || async {
            reqwest::get(format!("{url}/status"))
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await;
        let user_data = profile.path().join("chromium");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", user_data.display()),
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a chromium session");
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Runs `script` (a function body; `arguments` as given) and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.expect("script")
    }

    /// The text of the first element matching `css`, if there is one.
    pub async fn text(&self, css: &str) -> Option<String> {
        let el = self.client.find(Locator::Css(css)).await.ok()?;
        el.text().await.ok()
    }

    /// Waits until `css`'s text satisfies `ok`, then returns it.
    pub async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        eventually(WAIT, what, || async {
            let t = self.text(css).await?;
            ok(&t).then_some(t)
        })
        .await
    }

    /// Whether an element matches `css` now.
    pub async fn has(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    /// Clicks the element matching `css`. A live region may be rendered again between finding
    /// the element and clicking it (the element is then stale): it is found again.
    pub async fn click(&self, css: &str) {
        eventually(WAIT, &format!("a click on {css}"), || async {
            let el = self.client.find(Locator::Css(css)).await.ok()?;
            el.click().await.ok()
        })
        .await;
    }

    /// Types `text` into the input matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        el.clear().await.expect("clear");
        el.send_keys(text).await.expect("type");
    }

    /// A marker that survives only as long as the page is not reloaded: a test sets it, waits for
    /// a change, and checks it is still there (the change came without a reload).
    pub async fn mark_page(&self) {
        self.js("window.__flingerMark = 'not reloaded';").await;
    }

    pub async fn page_marked(&self) -> bool {
        self.js("return window.__flingerMark === 'not reloaded';").await == Value::Bool(true)
    }

    /// Saves the window as `<FLINGER_UI_SCREENSHOTS>/<name>.png` when that variable is set.
    pub async fn screenshot(&self, name: &str) {
        let Ok(dir) = std::env::var("FLINGER_UI_SCREENSHOTS") else {
            return;
        };
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).expect("save screenshot");
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
