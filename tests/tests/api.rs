//! The OpenAPI description is kept true: it names exactly the routes the collector
//! serves, and every answer of a real collector (with real campaigns, incidents and
//! advisories made by real agents) validates against the schema it declares. The live
//! stream delivers a campaign as it opens.

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::BufRead;
use vedetta_common::{IndicatorType, Severity, Signal, Timestamp};
use vedetta_e2e::{Agent, Collector, wait_until};

fn attack(kind: &str, address: &str) -> Signal {
    Signal::new(kind, Severity::High, Timestamp::now()).with_indicator(IndicatorType::Ip, address)
}

/// Validates `instance` against `#/components/schemas/{name}` of `spec`.
fn check(spec: &Value, name: &str, instance: &Value, what: &str) {
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": spec["components"],
    });
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match {name}: {errors:#?}\n{instance:#}"
    );
}

/// The schema name a response of `operation` declares for `status`.
fn response_schema(operation: &Value, status: &str) -> Option<String> {
    operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .map(str::to_owned)
}

#[test]
fn the_openapi_description_is_exactly_what_the_collector_serves() {
    let mut collector = Collector::init();
    for org in ["bank", "city", "hospital"] {
        collector.add_org(org);
    }
    collector.start();
    let admin = collector.user("root", "admin", None);
    let api = collector.api();

    let spec = api.get("/api/v1/openapi.json", None);
    assert_eq!(spec.status, 200);
    let spec = spec.body;
    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, operations)| {
            operations
                .as_object()
                .expect("operations")
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = vedetta_collector::api::ROUTES
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(documented, served, "openapi.json and the router disagree");

    // The live stream, opened before anything happens.
    let mut stream = api.stream(&admin);

    // A campaign (one address at two organisations), an incident (a scan, then brute
    // force, from one address at one organisation) and an advisory.
    let mut agents = Vec::new();
    for (org, signals) in [
        ("bank", vec![attack("ssh_bruteforce", "203.0.113.7")]),
        (
            "city",
            vec![
                attack("port_scan", "203.0.113.7"),
                attack("port_scan", "192.0.2.44"),
                attack("ssh_bruteforce", "192.0.2.44"),
            ],
        ),
    ] {
        let mut agent = Agent::enrolled(&collector, org, "");
        agent.emit(&signals).expect("emit");
        agent.start();
        agents.push(agent);
    }
    // The stream tells of the campaign as it opens.
    let mut event = String::new();
    let mut data = Value::Null;
    for line in (&mut stream).lines() {
        let line = line.expect("stream line");
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_owned();
        } else if let Some(json) = line.strip_prefix("data: ")
            && event == "campaign_opened"
        {
            data = serde_json::from_str(json).expect("event data");
            break;
        }
    }
    assert_eq!(data["event"], "campaign_opened");
    check(
        &spec,
        "Campaign",
        &data["campaign"],
        "the streamed campaign",
    );
    let campaign_id = data["campaign"]["id"].as_str().expect("id").to_owned();
    wait_until("the incident", || {
        let answer = api.get("/api/v1/incidents", Some(&admin));
        answer.body["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
    });
    let published = api.post(
        "/api/v1/advisories",
        Some(&admin),
        &json!({"indicator": {"type": "sha256", "value": "AB".repeat(32)}, "severity": "high",
                "description": "dropper", "expires_at": "2099-01-01T00:00:00Z"}),
    );
    assert_eq!(published.status, 201, "{:?}", published.body);
    let post = &spec["paths"]["/api/v1/advisories"]["post"];
    check(
        &spec,
        &response_schema(post, "201").expect("declared"),
        &published.body,
        "POST /api/v1/advisories",
    );
    assert_eq!(
        published.body["indicator"]["value"],
        "ab".repeat(32),
        "normalised"
    );

    // Every documented GET answers as documented, with and without a token.
    for (method, path) in &documented {
        let operation = &spec["paths"][path][method.to_lowercase()];
        let concrete = path
            .replace("{id}", &campaign_id)
            .replace("{value}", "203.0.113.7");
        if method != "GET" || path == "/api/v1/stream" {
            continue;
        }
        let answer = api.get(&concrete, Some(&admin));
        assert_eq!(answer.status, 200, "GET {concrete}: {:?}", answer.body);
        if let Some(schema) = response_schema(operation, "200") {
            check(&spec, &schema, &answer.body, &format!("GET {concrete}"));
        }
        let public = operation["security"].as_array().is_some_and(Vec::is_empty);
        let anonymous = api.get(&concrete, None);
        if public {
            assert_eq!(anonymous.status, 200, "{path} is public");
        } else {
            assert_eq!(anonymous.status, 401, "{path} needs a token");
            check(&spec, "Error", &anonymous.body, &format!("401 of {path}"));
        }
    }
    // Lists have content, so the item schemas were exercised.
    for path in [
        "/api/v1/signals",
        "/api/v1/campaigns",
        "/api/v1/incidents",
        "/api/v1/advisories",
    ] {
        let answer = api.get(path, Some(&admin));
        assert!(
            answer.body["items"]
                .as_array()
                .is_some_and(|i| !i.is_empty()),
            "{path} is empty"
        );
    }
    let withdrawn = api.delete(
        &format!(
            "/api/v1/advisories/{}",
            published.body["id"].as_str().expect("id")
        ),
        Some(&admin),
    );
    assert_eq!(withdrawn.status, 204);
    let missing = api.get("/api/v1/campaigns/CMP-none", Some(&admin));
    assert_eq!(missing.status, 404);
    check(&spec, "Error", &missing.body, "404");
    assert_eq!(api.get("/api/v1/nothing", Some(&admin)).status, 404);
    drop(stream);
    for mut agent in agents {
        assert!(agent.stop(), "{}", agent.log());
    }
    collector.stop();
}
