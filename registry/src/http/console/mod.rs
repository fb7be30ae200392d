//! The web console: static files (HTML, CSS, JavaScript modules in `assets/`) compiled into the binary and served
//! at `/console/`, with `/` and `/console` redirecting there. It holds no data and makes no access decision: the
//! browser calls the public APIs (the image stream API, the OCI API, `tributary.dev/v1` for the namespaces) with
//! the user's API token, so a user sees exactly what those APIs allow. Only `http::configure` calls this.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse};

/// One embedded file: its name under `/console/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset { name: "", content_type: "text/html; charset=utf-8", body: include_str!("assets/index.html") },
    Asset { name: "console.css", content_type: "text/css; charset=utf-8", body: include_str!("assets/console.css") },
    Asset { name: "api.js", content_type: "text/javascript; charset=utf-8", body: include_str!("assets/api.js") },
    Asset { name: "ui.js", content_type: "text/javascript; charset=utf-8", body: include_str!("assets/ui.js") },
    Asset { name: "main.js", content_type: "text/javascript; charset=utf-8", body: include_str!("assets/main.js") },
    Asset { name: "lists.js", content_type: "text/javascript; charset=utf-8", body: include_str!("assets/lists.js") },
    Asset { name: "stream.js", content_type: "text/javascript; charset=utf-8", body: include_str!("assets/stream.js") },
    Asset { name: "image.js", content_type: "text/javascript; charset=utf-8", body: include_str!("assets/image.js") },
];

/// Nothing but this origin: no CDN, no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(to_console))
        .route("/console", web::get().to(to_console))
        .route("/console/{file:.*}", web::get().to(asset));
}

async fn to_console() -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header((header::LOCATION, "/console/")).finish()
}

async fn asset(file: web::Path<String>) -> HttpResponse {
    let Some(a) = ASSETS.iter().find(|a| a.name == file.as_str()) else {
        return HttpResponse::NotFound().content_type("text/plain; charset=utf-8").body("no such console file\n");
    };
    let mut resp = HttpResponse::Ok();
    resp.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(a.content_type)))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        // The files change with the binary only; revalidating is cheap and avoids a stale console after upgrades.
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    resp.body(a.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_loads_is_served() {
        let index = ASSETS[0].body;
        for a in &ASSETS[1..] {
            let used = index.contains(a.name) || ASSETS.iter().any(|b| b.body.contains(&format!("./{}", a.name)));
            assert!(used, "{} is embedded but nothing loads it", a.name);
        }
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for import in a.body.lines().filter_map(|l| l.split("from \"./").nth(1)) {
                let name = import.split('"').next().unwrap_or_default();
                assert!(ASSETS.iter().any(|b| b.name == name), "{} imports {name}, which is not served", a.name);
            }
        }
        assert!(
            !ASSETS.iter().any(|a| a.body.contains("http://") || a.body.contains("https://")),
            "the console loads nothing from another host"
        );
    }
}
