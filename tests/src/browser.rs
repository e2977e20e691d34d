//! Headless Chromium for end-to-end tests of the dashboard, driven over W3C WebDriver by
//! Debian's `chromedriver` (packages `chromium` and `chromium-driver`).
//!
//! The client is the few WebDriver commands the tests use, spoken as JSON over plain HTTP
//! to chromedriver on loopback with the `ureq` the harness already has: a WebDriver crate
//! would bring an async HTTP stack and Unicode segmentation tables to build on two cores
//! for what is here a few dozen lines.
//!
//! The browser trusts the collector's certificate precisely: Chromium is told the SHA-256
//! of that certificate's public key (`--ignore-certificate-errors-spki-list`, which it
//! honours only with its own `--user-data-dir`), so that exactly this key is accepted for
//! the test and every other certificate error still stops the page.

use crate::DEADLINE;
use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

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

/// An element of the page, by its WebDriver reference.
#[derive(Debug, Clone)]
pub struct Element(String);

/// A headless Chromium session behind its own chromedriver.
#[derive(Debug)]
pub struct Browser {
    http: ureq::Agent,
    base: String,
    driver: Child,
    /// The browser profile, deleted with the session.
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session.
    pub fn start(tools: &Tools, options: &Options) -> anyhow::Result<Self> {
        let mut driver = Command::new(&tools.chromedriver)
            .args(["--port=0", "--log-level=WARNING"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", tools.chromedriver.display()))?;
        let stdout = driver.stdout.take().context("chromedriver stdout")?;
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // "ChromeDriver was started successfully on port 38433."
                if let Some(rest) = line.split("successfully on port ").nth(1) {
                    let _ = sender.send(rest.trim_end_matches('.').trim().to_owned());
                }
            }
        });
        let port = match receiver.recv_timeout(DEADLINE) {
            Ok(port) => port,
            Err(_) => {
                let _ = driver.kill();
                let _ = driver.wait();
                bail!("chromedriver did not say which port it listens on");
            }
        };
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(DEADLINE * 2))
            .build()
            .new_agent();
        let profile = tempfile::tempdir().context("browser profile directory")?;
        let mut browser = Self {
            http,
            base: format!("http://127.0.0.1:{port}"),
            driver,
            profile,
        };
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
            format!("--user-data-dir={}", browser.profile.path().display()),
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
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "acceptInsecureCerts": false,
                    "pageLoadStrategy": "normal",
                    "goog:loggingPrefs": { "browser": "ALL" },
                    "goog:chromeOptions": {
                        "binary": tools.chromium.to_string_lossy(),
                        "args": args,
                    },
                },
            },
        });
        let session = browser.command("POST", "/session", Some(&capabilities))?;
        let id = session["sessionId"]
            .as_str()
            .context("no session id in the new session's answer")?;
        browser.base = format!("{}/session/{id}", browser.base);
        Ok(browser)
    }

    /// One WebDriver command; its `value`, or the driver's error.
    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = match (method, body) {
            ("GET", _) => self.http.get(&url).call(),
            ("DELETE", _) => self.http.delete(&url).call(),
            (_, Some(body)) => self.http.post(&url).send_json(body),
            (_, None) => self.http.post(&url).send_json(json!({})),
        };
        let mut response = response.with_context(|| format!("WebDriver {method} {path}"))?;
        let status = response.status().as_u16();
        let answer: Value = response
            .body_mut()
            .read_json()
            .with_context(|| format!("WebDriver {method} {path}: answer"))?;
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        if status >= 400 {
            bail!(
                "WebDriver {method} {path}: {} ({})",
                value["error"].as_str().unwrap_or("error"),
                value["message"]
                    .as_str()
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .unwrap_or_default()
            );
        }
        Ok(value)
    }

    fn element_command(
        &self,
        element: &Element,
        method: &str,
        what: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        self.command(method, &format!("/element/{}/{what}", element.0), body)
    }

    /// Opens `url` and waits for it to load.
    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command("POST", "/url", Some(&json!({ "url": url })))
            .map(drop)
    }

    pub fn current_url(&self) -> anyhow::Result<String> {
        Ok(self
            .command("GET", "/url", None)?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; its return value.
    pub fn execute(&self, script: &str, args: &[Value]) -> anyhow::Result<Value> {
        self.command(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// The first element matching the CSS `selector`, if there is one now.
    pub fn find(&self, selector: &str) -> anyhow::Result<Option<Element>> {
        let found = self.command(
            "POST",
            "/elements",
            Some(&json!({ "using": "css selector", "value": selector })),
        )?;
        Ok(found
            .as_array()
            .and_then(|all| all.first())
            .and_then(|element| element[ELEMENT].as_str())
            .map(|id| Element(id.to_owned())))
    }

    /// Waits until an element matches `selector`, and returns it.
    pub fn wait_for(&self, selector: &str) -> Element {
        let mut found = None;
        self.wait(&format!("an element matching {selector}"), || {
            found = self.find(selector).ok().flatten();
            found.is_some()
        });
        found.expect("found")
    }

    /// Waits until `script` (a function body) returns true in the page.
    pub fn wait_script(&self, what: &str, script: &str, args: &[Value]) {
        self.wait(what, || {
            self.execute(script, args)
                .is_ok_and(|value| value == Value::Bool(true))
        });
    }

    /// Waits until the text of the first element matching `selector` contains `text`.
    pub fn wait_text(&self, selector: &str, text: &str) {
        self.wait_script(
            &format!("{selector} to read {text:?}"),
            "const e = document.querySelector(arguments[0]); return !!e && e.textContent.includes(arguments[1]);",
            &[json!(selector), json!(text)],
        );
    }

    /// Polls `condition` like [`crate::wait_until`], and fails with the page's address and text.
    fn wait(&self, what: &str, mut condition: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(20);
        while !condition() {
            if start.elapsed() > DEADLINE {
                panic!(
                    "timed out waiting for {what}; page {} shows:\n{}",
                    self.current_url().unwrap_or_default(),
                    self.text("body").unwrap_or_default()
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(200));
        }
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
        Ok(value
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default())
    }

    pub fn click(&self, element: &Element) -> anyhow::Result<()> {
        self.element_command(element, "POST", "click", None)
            .map(drop)
    }

    /// Clears a field and types `text` into it.
    pub fn fill(&self, element: &Element, text: &str) -> anyhow::Result<()> {
        self.element_command(element, "POST", "clear", None)?;
        self.element_command(element, "POST", "value", Some(&json!({ "text": text })))
            .map(drop)
    }

    /// A property of an element (`value`, `disabled`, …).
    pub fn property(&self, element: &Element, name: &str) -> anyhow::Result<Value> {
        self.element_command(element, "GET", &format!("property/{name}"), None)
    }

    /// Chooses the option of a `<select>` whose value is `value`.
    pub fn choose(&self, select: &Element, value: &str) -> anyhow::Result<()> {
        let option = self.command(
            "POST",
            &format!("/element/{}/element", select.0),
            Some(
                &json!({ "using": "css selector", "value": format!("option[value=\"{value}\"]") }),
            ),
        )?;
        let id = option[ELEMENT]
            .as_str()
            .with_context(|| format!("no option {value:?}"))?;
        self.click(&Element(id.to_owned()))
    }

    /// What the pages logged to the console since the last call (Chromium's driver
    /// only): level and message, such as `SEVERE` and a Content-Security-Policy violation.
    pub fn console(&self) -> anyhow::Result<Vec<(String, String)>> {
        let entries = self.command("POST", "/se/log", Some(&json!({ "type": "browser" })))?;
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
        let whole = self.command(
            "POST",
            "/goog/cdp/execute",
            Some(&json!({
                "cmd": "Page.captureScreenshot",
                "params": { "format": "png", "captureBeyondViewport": true },
            })),
        );
        let data = match whole {
            Ok(value) => value["data"].as_str().unwrap_or_default().to_owned(),
            // Not Chromium's driver: the window is what can be had.
            Err(_) => self
                .command("GET", "/screenshot", None)?
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .context("screenshot is not base64")?;
        if !png.starts_with(b"\x89PNG") {
            bail!("the screenshot is not a PNG");
        }
        std::fs::write(path, png).with_context(|| format!("write {}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.command("DELETE", "", None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
