//! The web dashboard, end to end in headless Chromium: real agents of three organisations
//! follow real sshd logs; a campaign forms at the real collector while an analyst has the
//! dashboard open, and appears there live; the analyst opens it, searches signals, and
//! publishes an advisory through the form; an auditor reads the audit trail; a member
//! sees only its own organisation. Screenshots of the main pages are kept in
//! `target/test-artifacts/dashboard/`.
//!
//! Needs Debian's `chromium` and `chromium-driver`; skipped without them, except under CI.

use serde_json::{Value, json};
use std::path::PathBuf;
use vedetta_e2e::browser::{self, Browser, Options, Tools};
use vedetta_e2e::{Agent, Collector, append_log, sshd_failures, sshd_log_agent};

/// The browser on the dashboard, with screenshots to a folder; on a failure it keeps a
/// picture of what the page showed.
struct Session {
    browser: Browser,
    base: String,
    artifacts: PathBuf,
}

impl Session {
    fn shot(&self, name: &str) {
        let path = self.artifacts.join(format!("{name}.png"));
        self.browser.screenshot(&path).expect("screenshot");
    }

    /// Opens `fragment` (`#/signals?…`) of the dashboard and waits for its page.
    fn open(&self, fragment: &str) {
        self.browser
            .goto(&format!("{}/ui/{fragment}", self.base))
            .expect("open page");
        self.wait_page();
    }

    /// Clicks what `selector` matches (a link to another page) and waits for the page.
    fn follow(&self, selector: &str) {
        self.browser
            .click(&self.browser.wait_for(selector))
            .unwrap_or_else(|error| panic!("click {selector}: {error}"));
        self.wait_page();
    }

    /// Waits until the page the address names is on screen, complete.
    fn wait_page(&self) {
        self.browser.wait_script(
            "the page to load",
            "const main = document.getElementById('main');
             return main.dataset.route === location.hash && main.getAttribute('aria-busy') === 'false';",
            &[],
        );
    }

    /// The `data-key` of every row of `table`.
    fn keys(&self, table: &str) -> Vec<String> {
        let keys = self
            .browser
            .execute(
                "return [...document.querySelectorAll(arguments[0] + ' tbody tr[data-key]')].map((tr) => tr.dataset.key);",
                &[json!(table)],
            )
            .expect("row keys");
        serde_json::from_value(keys).expect("keys")
    }

    /// Logs in with `token` and waits for the navigation of the token's role.
    fn log_in(&self, token: &str, name: &str) {
        let field = self.browser.wait_for("#token");
        self.browser.fill(&field, token).expect("type token");
        self.browser
            .click(&self.browser.wait_for("#login"))
            .expect("log in");
        self.browser.wait_text("#who", name);
    }

    fn log_out(&self) {
        self.browser
            .click(&self.browser.wait_for("#logout"))
            .expect("log out");
        self.browser.wait_for("#login-form");
    }

    fn nav(&self) -> Vec<String> {
        self.browser.texts("#nav a").expect("navigation")
    }

    /// The text of column `column` (counted from 0, the details toggle included) of
    /// every row of the table `table`.
    fn column(&self, table: &str, column: usize) -> Vec<String> {
        self.browser
            .texts(&format!(
                "{table} tbody tr:not(.empty):not(.detail-row) > td:nth-child({})",
                column + 1
            ))
            .expect("table column")
    }

    fn wait_rows(&self, table: &str) {
        self.browser
            .wait_for(&format!("{table} tbody tr:not(.empty):not(.detail-row)"));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.browser.screenshot(&self.artifacts.join("failure.png"));
        }
    }
}

fn items(answer: &Value) -> Vec<Value> {
    answer["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn analysts_auditors_and_members_use_the_dashboard_in_a_real_browser() {
    let Some(tools) = Tools::or_skip("dashboard") else {
        return;
    };
    let mut collector = Collector::init();
    for org in ["bank", "city", "hospital"] {
        collector.add_org(org);
    }
    collector.start();
    let analyst = collector.user("ana", "analyst", None);
    let auditor = collector.user("aud", "auditor", None);
    let member = collector.user("bank-it", "member", Some("bank"));
    let api = collector.api();
    let mut agents: Vec<(Agent, PathBuf)> = ["bank", "city", "hospital"]
        .iter()
        .map(|org| sshd_log_agent(&collector, org))
        .collect();
    for (agent, _) in &mut agents {
        agent.start();
    }

    // The browser trusts the key of the collector's HTTPS certificate, and nothing else.
    let certificate = browser::first_certificate(&collector.data_dir.join("https.crt"))
        .expect("the API certificate");
    let spki = browser::spki_sha256_base64(&certificate).expect("SPKI hash");
    let artifacts = browser::artifacts_dir("dashboard");
    // Precisely: a browser told to trust another key (an agent's) refuses the page.
    let other = browser::first_certificate(&agents[0].0.state_dir().join("agent.crt"))
        .expect("an agent's certificate");
    let untrusting = Browser::start(
        &tools,
        &Options {
            trusted_spki: vec![browser::spki_sha256_base64(&other).expect("SPKI hash")],
            width: 800,
            height: 600,
        },
    )
    .expect("headless Chromium");
    untrusting.goto(&api.url("/ui/")).expect("navigate");
    let page = untrusting.text("body").expect("page text");
    assert!(
        page.contains("ERR_CERT_AUTHORITY_INVALID")
            && untrusting.find("#token").expect("find").is_none(),
        "Chromium's certificate warning instead of the dashboard: {page}"
    );
    drop(untrusting);

    let session = Session {
        browser: Browser::start(
            &tools,
            &Options {
                trusted_spki: vec![spki],
                width: 1440,
                height: 900,
            },
        )
        .expect("headless Chromium"),
        base: api.url(""),
        artifacts,
    };
    let browser = &session.browser;

    // The collector's root leads to the dashboard's login page.
    browser.goto(&api.url("/")).expect("open the collector");
    browser.wait_for("#login-form");
    assert!(
        browser
            .current_url()
            .expect("url")
            .starts_with(&api.url("/ui/")),
        "redirected to the dashboard"
    );
    session.shot("login");
    // A wrong token is refused, plainly.
    session.log_in_attempt_fails("vdt_not_a_token");

    // An analyst: every page but the audit trail's.
    session.log_in(&analyst, "ana");
    assert_eq!(
        session.nav(),
        ["Campaigns", "Signals", "Agents", "Advisories"]
    );
    browser.wait_text("#campaign-results", "No open campaigns");
    browser.wait_for("#live:not([hidden])");

    // While the page is open, one address attacks all three organisations (and each
    // has an attacker of its own): the campaign appears without a reload.
    for (n, (_, log)) in agents.iter().enumerate() {
        append_log(log, &sshd_failures("203.0.113.7", 12));
        append_log(log, &sshd_failures(&format!("198.51.100.{}", 10 + n), 12));
    }
    browser.wait_script(
        "the campaign of three organisations on the open page",
        "const row = document.querySelector('#campaigns-table a[data-campaign]');
         return !!row && row.closest('tr').querySelectorAll('.pill-org').length === 3;",
        &[],
    );
    let campaigns = items(
        &api.get("/api/v1/campaigns?status=open", Some(&analyst))
            .body,
    );
    assert_eq!(campaigns.len(), 1, "{campaigns:#?}");
    let campaign_id = campaigns[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(session.column("#campaigns-table", 1), ["ip203.0.113.7"]);
    session.shot("campaigns");

    // The campaign's page: its timeline has a lane per organisation.
    session.follow(&format!("a[data-campaign=\"{campaign_id}\"]"));
    browser.wait_script(
        "three lanes with signals in the timeline",
        "const lanes = document.querySelectorAll('#timeline .tl-lane');
         return lanes.length === 3 && [...lanes].every((l) => l.querySelector('.tl-signal'));",
        &[],
    );
    let lanes = browser
        .execute(
            "return [...document.querySelectorAll('#timeline .tl-lane')].map((l) => l.dataset.org).sort();",
            &[],
        )
        .expect("lanes");
    assert_eq!(lanes, json!(["bank", "city", "hospital"]));
    assert!(
        browser
            .text("#page-title")
            .expect("title")
            .contains("203.0.113.7")
    );
    session.shot("campaign");

    // Signal search: by indicator, through the form.
    session.follow("#nav-signals");
    browser
        .fill(
            &browser.wait_for("#signal-filters input[name=indicator]"),
            "198.51.100.11",
        )
        .expect("indicator");
    browser
        .choose(
            &browser.wait_for("#signal-filters select[name=severity]"),
            "medium",
        )
        .expect("severity");
    session.follow("#search");
    assert!(
        browser
            .current_url()
            .expect("url")
            .contains("indicator=198.51.100.11"),
        "the search is in the address, to bookmark or share"
    );
    session.wait_rows("#signals-table");
    let orgs = session.column("#signals-table", 4);
    assert!(!orgs.is_empty());
    assert!(
        orgs.iter().all(|org| org == "city"),
        "the city's own attacker is the city's only: {orgs:?}"
    );
    let indicators = session.column("#signals-table", 5);
    assert!(
        indicators.iter().all(|i| i.contains("198.51.100.11")),
        "{indicators:?}"
    );
    // One page at a time, following the cursor.
    session.open("#/signals?limit=2");
    session.wait_rows("#signals-table");
    let first_page = session.keys("#signals-table");
    assert_eq!(first_page.len(), 2);
    session.follow("#next-page");
    browser.wait_text(".pager", "Page 2");
    let second_page = session.keys("#signals-table");
    assert_eq!(second_page.len(), 2);
    assert!(
        second_page.iter().all(|key| !first_page.contains(key)),
        "page 2 follows page 1: {first_page:?} then {second_page:?}"
    );
    session.open("#/signals");
    session.wait_rows("#signals-table");
    session.shot("signals");

    // Agents and their health.
    session.follow("#nav-agents");
    session.wait_rows("#agents-table");
    assert_eq!(
        session.column("#agents-table", 3),
        ["online", "online", "online"]
    );
    assert_eq!(
        session.column("#agents-table", 1),
        ["bank", "city", "hospital"]
    );
    session.shot("agents");

    // Publish an advisory through the form; the API has it.
    session.follow("#nav-advisories");
    browser
        .choose(
            &browser.wait_for("#publish-form select[name=type]"),
            "domain",
        )
        .expect("type");
    browser
        .fill(&browser.wait_for("#advisory-value"), "C2.Campaign.Example")
        .expect("value");
    browser
        .choose(
            &browser.wait_for("#publish-form select[name=severity]"),
            "critical",
        )
        .expect("severity");
    browser
        .fill(
            &browser.wait_for("#advisory-description"),
            "Command and control of the SSH campaign against bank, city and hospital",
        )
        .expect("description");
    browser
        .click(&browser.wait_for("#publish"))
        .expect("publish");
    browser.wait_for("#published-id");
    let published = browser.text("#published-id").expect("advisory id");
    let listed = items(&api.get("/api/v1/advisories", Some(&analyst)).body);
    let advisory = listed
        .iter()
        .find(|a| a["id"] == published.as_str())
        .unwrap_or_else(|| panic!("advisory {published} listed by the API: {listed:#?}"));
    assert_eq!(
        advisory["indicator"],
        json!({"type": "domain", "value": "c2.campaign.example"})
    );
    assert_eq!(advisory["severity"], "critical");
    assert_eq!(advisory["published_by"], "ana");
    browser.wait_text("#advisories-table", "c2.campaign.example");
    session.shot("advisories");
    session.log_out();

    // An auditor: the audit trail only.
    session.log_in(&auditor, "aud");
    assert_eq!(session.nav(), ["Audit"]);
    let audited = vedetta_collector::api::ROUTES.contains(&("GET", "/api/v1/audit"));
    if audited {
        browser.wait_text("#audit-verify", "Chain verified");
        session.wait_rows("#audit-table");
        session.shot("audit");
    } else {
        eprintln!("the collector serves no audit log yet: its page is not checked");
    }
    session.log_out();

    // A member: its own organisation's signals and the advisories, nothing else.
    session.log_in(&member, "bank-it");
    assert_eq!(session.nav(), ["Signals", "Advisories"]);
    session.open("#/signals");
    session.wait_rows("#signals-table");
    let orgs = session.column("#signals-table", 4);
    assert!(
        !orgs.is_empty() && orgs.iter().all(|org| org == "bank"),
        "a member sees only its organisation: {orgs:?}"
    );
    let org_field = browser.wait_for("#signal-filters input[name=org]");
    assert_eq!(
        browser
            .property(&org_field, "value")
            .expect("value")
            .as_deref(),
        Some("bank")
    );
    assert_eq!(
        browser
            .property(&org_field, "disabled")
            .expect("disabled")
            .as_deref(),
        Some("true")
    );
    session.shot("member-signals");
    session.open("#/campaigns");
    assert!(
        browser
            .text("main")
            .expect("text")
            .contains("The member role may not see this page")
    );
    session.open("#/advisories");
    browser.wait_text("#advisories-table", "c2.campaign.example");
    assert!(
        browser.find("#publish-form").expect("find").is_none(),
        "members do not publish"
    );

    // The Content-Security-Policy is in force: script and markup cannot be injected
    // through the DOM (Trusted Types). (Code made from text is refused too, but not
    // from a WebDriver script, which DevTools exempts.)
    let injected = browser
        .execute(
            "const outcome = [];
             for (const attempt of [
               () => { const s = document.createElement('script'); s.textContent = 'window.injected = true;'; document.body.append(s); },
               () => document.body.insertAdjacentHTML('beforeend', '<img src=x onerror=\"window.injected = true\">'),
               () => { document.body.innerHTML = '<b>x</b>'; },
             ]) {
               try { attempt(); outcome.push('done'); } catch (error) { outcome.push(error.name); }
             }
             return [window.injected === true, outcome];",
            &[],
        )
        .expect("inject");
    assert_eq!(
        injected,
        json!([false, ["TypeError", "TypeError", "TypeError"]]),
        "injection refused"
    );
    let console = browser.console().expect("browser console");
    let refused = |message: &str| message.contains("requires 'Trusted");
    assert!(
        console.iter().any(|(_, message)| refused(message)),
        "the refusal is reported: {console:#?}"
    );

    // The pages ran under their strict Content-Security-Policy without breaking it, and
    // threw nothing. (Failed requests, such as the wrong token's 401, are logged too.)
    let problems: Vec<&(String, String)> = console
        .iter()
        .filter(|(level, message)| {
            level == "SEVERE" && !message.contains("Failed to load resource") && !refused(message)
        })
        .collect();
    assert!(problems.is_empty(), "the console has errors: {problems:#?}");

    drop(session);
    for (agent, _) in &mut agents {
        assert!(agent.stop(), "agent exits cleanly; log: {}", agent.log());
    }
    collector.stop();
}

impl Session {
    fn log_in_attempt_fails(&self, token: &str) {
        let field = self.browser.wait_for("#token");
        self.browser.fill(&field, token).expect("type token");
        self.browser
            .click(&self.browser.wait_for("#login"))
            .expect("log in");
        self.browser
            .wait_text("#login-status", "This token is unknown or revoked");
    }
}
