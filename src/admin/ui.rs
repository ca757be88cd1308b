//! The dashboard: `GET /ui` on the admin listener — one page, its assets compiled into
//! the binary (no CDN: it works offline), plain JavaScript with no build step
//! (`src/admin/ui/`). The page and its assets hold no data, so they are served without
//! the token (the one exception beside `/healthz` and `/metrics`, DESIGN "Admin API");
//! every call the page makes for data sends the token like any client. A
//! Content-Security-Policy lets the page load only its own script and style and talk
//! only to its own origin, and the page writes every text from the server as text, so
//! a name or message holding markup cannot run in it. See docs/dashboard.md.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

const INDEX: &str = include_str!("ui/index.html");
const APP: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");
const ICON: &str = include_str!("ui/favicon.svg");

/// Only the page's own script and style, calls to its own origin, no frames, no forms
/// posted elsewhere, no plugins.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The asset at `path` (`/ui`, `/ui/`, `/ui/app.js`, `/ui/style.css`,
/// `/ui/favicon.svg`), if it is one.
pub fn asset(path: &str) -> Option<Response<Full<Bytes>>> {
    let (body, kind) = match path {
        "/ui" | "/ui/" | "/ui/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/ui/app.js" => (APP, "text/javascript; charset=utf-8"),
        "/ui/style.css" => (STYLE, "text/css; charset=utf-8"),
        "/ui/favicon.svg" => (ICON, "image/svg+xml"),
        _ => return None,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // A new binary may bring a new page: the browser asks again each time.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}
