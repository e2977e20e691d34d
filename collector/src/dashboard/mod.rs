//! The web dashboard for analysts and auditors, served by the collector on the API's
//! HTTPS listener (same origin, so the pages call `/api/v1` with the user's token and
//! nothing else).
//!
//! The pages are plain HTML, CSS and JavaScript modules in `assets/`, embedded in the
//! binary: no build step, no framework, nothing fetched from elsewhere. They hold no
//! data and no secret; everything they show comes from the API, which enforces the
//! roles. What this module adds is the strict headers a page that handles tokens needs:
//! a Content-Security-Policy that admits only this origin's scripts and styles (no
//! inline script, no `eval`, DOM sinks locked by Trusted Types), no sniffing, no
//! referrer, no framing; and validators (`ETag`) so that browsers revalidate the
//! assets cheaply and never keep a stale page after an upgrade.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use std::sync::LazyLock;
use vedetta_common::identity::sha256_hex;

/// The page of the dashboard; the rest of its addresses are `#/…` fragments.
pub const HOME: &str = "/ui/";

/// What the pages may load and do: only this origin's files and API.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; \
     require-trusted-types-for 'script'; trusted-types 'none'";

/// An embedded file of the dashboard.
#[derive(Debug)]
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("assets/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the dashboard serves, by its name under `/ui/`.
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("timeline.js", JS),
    asset!("campaigns.js", JS),
    asset!("signals.js", JS),
    asset!("agents.js", JS),
    asset!("advisories.js", JS),
    asset!("audit.js", JS),
];

/// Strong validators of the assets, computed once.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| format!("\"{}\"", &sha256_hex(asset.body)[..32]))
        .collect()
});

/// The dashboard's routes; merged into the API router, so they share its HTTPS listener.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to(HOME) }))
        .route("/ui", get(|| async { Redirect::to(HOME) }))
        .route("/ui/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route(
            "/ui/{*name}",
            get(|Path(name): Path<String>, headers: HeaderMap| async move {
                serve(&name, &headers)
            }),
        )
}

/// The headers every answer of the dashboard carries.
fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=()",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// One asset, or 304 when the browser holds the current version, or 404.
fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|asset| asset.name == name) else {
        return secure(
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "no such page\n",
            )
                .into_response(),
        );
    };
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == etag));
    // Revalidate every time: the check is one round trip with no body, and an upgraded
    // collector's pages are never mixed with cached ones of the version before.
    let cache = [
        (header::CACHE_CONTROL, "no-cache".to_owned()),
        (header::ETAG, etag.clone()),
    ];
    if fresh {
        return secure((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    secure(
        (
            cache,
            [(header::CONTENT_TYPE, asset.content_type.to_owned())],
            asset.body,
        )
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(name: &str, if_none_match: Option<&str>) -> Response {
        let mut headers = HeaderMap::new();
        if let Some(tag) = if_none_match {
            headers.insert(
                header::IF_NONE_MATCH,
                HeaderValue::from_str(tag).expect("header"),
            );
        }
        serve(name, &headers)
    }

    #[test]
    fn assets_are_served_with_strict_headers_and_revalidated_by_etag() {
        let page = get("index.html", None);
        assert_eq!(page.status(), StatusCode::OK);
        let headers = page.headers();
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        let etag = headers[header::ETAG].to_str().expect("etag").to_owned();
        assert_eq!(
            get("index.html", Some(&etag)).status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            get("index.html", Some("\"other\"")).status(),
            StatusCode::OK
        );
        assert_eq!(
            get("app.js", None).headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let missing = get("../Cargo.toml", None);
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(missing.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[test]
    fn the_pages_load_nothing_from_elsewhere_and_run_no_inline_script() {
        for asset in ASSETS {
            let text = String::from_utf8_lossy(asset.body);
            for forbidden in ["http://", "https://", "innerHTML", "outerHTML", "eval("] {
                // SVG namespaces are names, not addresses that are fetched.
                let hits = text
                    .match_indices(forbidden)
                    .filter(|(at, _)| !text[*at..].starts_with("http://www.w3.org/"))
                    .count();
                assert_eq!(hits, 0, "{} contains {forbidden}", asset.name);
            }
        }
        let index = String::from_utf8_lossy(ASSETS[0].body);
        assert!(!index.contains("<script>"), "no inline script");
        assert!(!index.contains(" style="), "no inline style");
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let reference = format!("./{}", asset.name);
            let referenced = asset.name == "app.js"
                || ASSETS
                    .iter()
                    .any(|other| String::from_utf8_lossy(other.body).contains(&reference));
            assert!(referenced, "{} is embedded but never imported", asset.name);
        }
    }
}
