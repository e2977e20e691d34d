//! Headless Chromium for end-to-end tests of the dashboard, driven over W3C WebDriver by
//! Debian's `chromedriver` (packages `chromium` and `chromium-driver`).
//!
//! The WebDriver client is `fantoccini`, speaking plain HTTP to chromedriver on loopback
//! (no TLS: the driver is a local child process). It is async; [`Browser`] owns a
//! current-thread tokio runtime and runs each command to completion, so that the tests
//! stay plain sequential code. Two commands of Chromium's driver beyond the standard go
//! through fantoccini's extension point ([`WebDriverCompatibleCommand`]): the browser's
//! console log and a screenshot of the whole page.
//!
//! The browser trusts the collector's certificate precisely: Chromium is told the SHA-256
//! of that certificate's public key (`--ignore-certificate-errors-spki-list`, which it
//! honours only with its own `--user-data-dir`), so that exactly this key is accepted for
//! the test and every other certificate error still stops the page.

use crate::DEADLINE;
use anyhow::{Context as _, bail};
use base64::Engine as _;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
// The `http` crate of fantoccini's commands, which ureq re-exports.
use ureq::http::Method;

pub use fantoccini::elements::Element;

/// Where Debian installs the browser and its driver.
const CHROMIUM: &[&str] = &["/usr/bin/chromium", "/usr/bin/chromium-browser"];
const CHROMEDRIVER: &[&str] = &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"];

/// Chromium and chromedriver, when both are installed.
#[derive(Debug, Clone)]
pub struct Tools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

fn installed(candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

impl Tools {
    pub fn find() -> Option<Self> {
        Some(Self {
            chromium: installed(CHROMIUM)?,
            chromedriver: installed(CHROMEDRIVER)?,
        })
    }

    /// The tools, or `None` after saying why the test is skipped. Under CI (`CI=true`)
    /// a missing browser fails the test instead: CI installs them.
    pub fn or_skip(test: &str) -> Option<Self> {
        let found = Self::find();
        if found.is_none() {
            let message = format!(
                "{test}: needs Debian's `chromium` and `chromium-driver` \
                 (apt-get install chromium chromium-driver); looked for {CHROMIUM:?} and {CHROMEDRIVER:?}"
            );
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
            eprintln!("SKIPPED {message}");
        }
        found
    }
}

/// The base64 SHA-256 of a certificate's SubjectPublicKeyInfo, as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it.
pub fn spki_sha256_base64(certificate_der: &[u8]) -> anyhow::Result<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(certificate_der)
        .map_err(|error| anyhow::anyhow!("parse certificate: {error}"))?;
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        certificate.tbs_certificate.subject_pki.raw,
    );
    Ok(base64::engine::general_purpose::STANDARD.encode(digest.as_ref()))
}

/// The first (leaf) certificate of a PEM file.
pub fn first_certificate(pem_file: &Path) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let first = CertificateDer::pem_file_iter(pem_file)
        .with_context(|| format!("read {}", pem_file.display()))?
        .next()
        .with_context(|| format!("no certificate in {}", pem_file.display()))??;
    Ok(first.to_vec())
}

/// The workspace's folder for test artifacts (`target/test-artifacts/NAME`), emptied of
/// what an earlier run left.
pub fn artifacts_dir(name: &str) -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        // Relative to the workspace, as cargo reads it there.
        Some(dir) => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir),
        None => {
            // target/debug/deps/TEST-HASH
            let exe = std::env::current_exe().expect("test executable path");
            exe.ancestors()
                .nth(3)
                .expect("target directory above the test executable")
                .to_owned()
        }
    };
    let dir = target.join("test-artifacts").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("remove old artifacts");
    }
    std::fs::create_dir_all(&dir).expect("artifacts directory");
    dir
}

/// How the browser is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// Public keys (base64 SHA-256 of the SPKI) whose certificates are accepted although
    /// no trusted CA issued them.
    pub trusted_spki: Vec<String>,
    pub width: u32,
    pub height: u32,
}

/// A command of Chromium's driver that the W3C standard does not have: `POST` of `body`
/// to `/session/{id}/{path}`.
#[derive(Debug)]
struct ChromeCommand {
    path: &'static str,
    body: Value,
}

impl WebDriverCompatibleCommand for ChromeCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session_id.unwrap_or_default();
        base_url.join(&format!("session/{session}/{}", self.path))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (Method, Option<String>) {
        (Method::POST, Some(self.body.to_string()))
    }
}

/// chromedriver, stopped when dropped.
#[derive(Debug)]
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A headless Chromium session behind its own chromedriver.
#[derive(Debug)]
pub struct Browser {
    client: Client,
    /// Runs the client's futures, and its connection to the driver between them.
    runtime: tokio::runtime::Runtime,
    _driver: Driver,
    /// The browser profile, deleted after the browser quit.
    _profile: tempfile::TempDir,
}

/// Runs `future` on `runtime`, for at most twice the deadline: a driver that stops
/// answering fails the test instead of hanging it.
fn run<T, E: std::error::Error + Send + Sync + 'static>(
    runtime: &tokio::runtime::Runtime,
    what: &str,
    future: impl Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    runtime
        // The timer is made inside the runtime, which it needs.
        .block_on(async { tokio::time::timeout(DEADLINE * 2, future).await })
        .with_context(|| format!("WebDriver {what}: no answer"))?
        .with_context(|| format!("WebDriver {what}"))
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session.
    pub fn start(tools: &Tools, options: &Options) -> anyhow::Result<Self> {
        let mut driver = Driver(
            Command::new(&tools.chromedriver)
                .args(["--port=0", "--log-level=WARNING"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("start {}", tools.chromedriver.display()))?,
        );
        let stdout = driver.0.stdout.take().context("chromedriver stdout")?;
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // "ChromeDriver was started successfully on port 38433."
                if let Some(rest) = line.split("successfully on port ").nth(1) {
                    let _ = sender.send(rest.trim_end_matches('.').trim().to_owned());
                }
            }
        });
        let port = receiver
            .recv_timeout(DEADLINE)
            .context("chromedriver did not say which port it listens on")?;
        let profile = tempfile::tempdir().context("browser profile directory")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime for the WebDriver client")?;
        let mut args = vec![
            "--headless=new".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--force-device-scale-factor=1".to_owned(),
            "--lang=en-GB".to_owned(),
            format!("--window-size={},{}", options.width, options.height),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        if !options.trusted_spki.is_empty() {
            args.push(format!(
                "--ignore-certificate-errors-spki-list={}",
                options.trusted_spki.join(",")
            ));
        }
        // Chromium's sandbox refuses to run as root; the browser visits only loopback.
        if nix::unistd::geteuid().is_root() {
            args.push("--no-sandbox".to_owned());
        }
        let Value::Object(capabilities) = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": false,
            "pageLoadStrategy": "normal",
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": {
                "binary": tools.chromium.to_string_lossy(),
                "args": args,
            },
        }) else {
            unreachable!("capabilities are an object")
        };
        let client = run(
            &runtime,
            "new session",
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{port}")),
        )?;
        Ok(Self {
            client,
            runtime,
            _driver: driver,
            _profile: profile,
        })
    }

    /// Opens `url` and waits for it to load.
    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        run(&self.runtime, "navigate", self.client.goto(url))
    }

    pub fn current_url(&self) -> anyhow::Result<String> {
        run(&self.runtime, "current url", self.client.current_url()).map(String::from)
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; its return value.
    pub fn execute(&self, script: &str, args: &[Value]) -> anyhow::Result<Value> {
        run(
            &self.runtime,
            "execute script",
            self.client.execute(script, args.to_vec()),
        )
    }

    /// The first element matching the CSS `selector`, if there is one now.
    pub fn find(&self, selector: &str) -> anyhow::Result<Option<Element>> {
        let all = run(
            &self.runtime,
            "find elements",
            self.client.find_all(Locator::Css(selector)),
        )?;
        Ok(all.into_iter().next())
    }

    /// Waits until an element matches `selector`, and returns it.
    pub fn wait_for(&self, selector: &str) -> Element {
        let waited = run(
            &self.runtime,
            "wait for an element",
            self.client
                .wait()
                .at_most(DEADLINE)
                .every(Duration::from_millis(50))
                .for_element(Locator::Css(selector)),
        );
        waited.unwrap_or_else(|error| {
            self.fail(&format!("an element matching {selector} ({error:#})"))
        })
    }

    /// Waits until `script` (a function body) returns true in the page.
    pub fn wait_script(&self, what: &str, script: &str, args: &[Value]) {
        let start = Instant::now();
        let mut pause = Duration::from_millis(20);
        while !self
            .execute(script, args)
            .is_ok_and(|value| value == Value::Bool(true))
        {
            if start.elapsed() > DEADLINE {
                self.fail(what);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Waits until the text of the first element matching `selector` contains `text`.
    pub fn wait_text(&self, selector: &str, text: &str) {
        self.wait_script(
            &format!("{selector} to read {text:?}"),
            "const e = document.querySelector(arguments[0]); return !!e && e.textContent.includes(arguments[1]);",
            &[json!(selector), json!(text)],
        );
    }

    /// Fails the test after waiting in vain for `what`, with the page's address and text.
    fn fail(&self, what: &str) -> ! {
        panic!(
            "timed out waiting for {what}; page {} shows:\n{}",
            self.current_url().unwrap_or_default(),
            self.text("body").unwrap_or_default()
        );
    }

    /// The text of the first element matching `selector` ("" when there is none).
    pub fn text(&self, selector: &str) -> anyhow::Result<String> {
        let value = self.execute(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            &[json!(selector)],
        )?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// The texts of every element matching `selector`, in document order.
    pub fn texts(&self, selector: &str) -> anyhow::Result<Vec<String>> {
        let value = self.execute(
            "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent.trim());",
            &[json!(selector)],
        )?;
        serde_json::from_value(value).context("texts of the elements")
    }

    pub fn click(&self, element: &Element) -> anyhow::Result<()> {
        run(&self.runtime, "click", element.click())
    }

    /// Clears a field and types `text` into it.
    pub fn fill(&self, element: &Element, text: &str) -> anyhow::Result<()> {
        run(&self.runtime, "clear", element.clear())?;
        run(&self.runtime, "type", element.send_keys(text))
    }

    /// A property of an element (`value`, `disabled`, …) as text (`"true"` for a set
    /// boolean), or `None` when the element has no such property.
    pub fn property(&self, element: &Element, name: &str) -> anyhow::Result<Option<String>> {
        run(&self.runtime, "property", element.prop(name))
    }

    /// Chooses the option of a `<select>` whose value is `value`.
    pub fn choose(&self, select: &Element, value: &str) -> anyhow::Result<()> {
        run(&self.runtime, "choose", select.select_by_value(value))
            .with_context(|| format!("option {value:?}"))
    }

    /// A command of Chromium's driver beyond the standard; its `value`.
    fn chrome(&self, path: &'static str, body: Value) -> anyhow::Result<Value> {
        run(
            &self.runtime,
            path,
            self.client.issue_cmd(ChromeCommand { path, body }),
        )
    }

    /// What the pages logged to the console since the last call (Chromium's driver
    /// only): level and message, such as `SEVERE` and a Content-Security-Policy violation.
    pub fn console(&self) -> anyhow::Result<Vec<(String, String)>> {
        let entries = self.chrome("se/log", json!({ "type": "browser" }))?;
        Ok(entries
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|entry| {
                        (
                            entry["level"].as_str().unwrap_or_default().to_owned(),
                            entry["message"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Saves a PNG of the whole page (beyond the window's height) to `path`.
    pub fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let whole = self.chrome(
            "goog/cdp/execute",
            json!({
                "cmd": "Page.captureScreenshot",
                "params": { "format": "png", "captureBeyondViewport": true },
            }),
        );
        let png = match whole {
            Ok(value) => base64::engine::general_purpose::STANDARD
                .decode(value["data"].as_str().unwrap_or_default())
                .context("screenshot is not base64")?,
            // Not Chromium's driver: the window is what can be had.
            Err(_) => run(&self.runtime, "screenshot", self.client.screenshot())?,
        };
        if !png.starts_with(b"\x89PNG") {
            bail!("the screenshot is not a PNG");
        }
        std::fs::write(path, png).with_context(|| format!("write {}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session, so that the browser quits; then the driver is stopped.
        let _ = run(&self.runtime, "end session", self.client.clone().close());
    }
}
