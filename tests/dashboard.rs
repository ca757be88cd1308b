//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by
//! `playwright-core` (npm, in tests/dashboard/) against a real `serve` with real
//! backends and traffic — tests/dashboard/drive.mjs holds the steps.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::util::{Backend, Client, Dir, Proxy, ADMIN_TOKEN};

/// Without the token no data; with it the 3:1 split shown as 75/25 within 5 s; a
/// backend drained from the page shows 0%; markup in a finding renders as text; a
/// skewed apply is previewed (90%), applied, alarmed and rolled back by the guard on
/// the timeline; the rollback button asks, rolls back, and history shows it.
#[test]
fn the_dashboard_in_a_real_browser() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let config = format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n[[route]]\npool = \"web\"\n\n\
         [pool.web]\nalgorithm = \"weighted_round_robin\"\nbackends = [\n  \
         {{ address = \"{}\", weight = 3 }},\n  {{ address = \"{}\", weight = 1 }},\n  \
         {{ address = \"{}\", weight = 0 }},\n]\n\n\
         [guard]\nwatch = \"8s\"\nmin_requests = 40\n",
        a.address(),
        b.address(),
        c.address()
    );
    let proxy = Proxy::start_with_admin(&config, 1);
    let in_force = std::fs::read_to_string(proxy.dir().join("evenkeel.toml")).expect("config");
    let skewed = in_force
        .replace(
            &format!("\"{}\", weight = 3", a.address()),
            &format!("\"{}\", weight = 18", a.address()),
        )
        .replace(
            &format!("\"{}\", weight = 0", c.address()),
            &format!("\"{}\", weight = 1", c.address()),
        );
    assert_ne!(skewed, in_force);

    // Steady traffic, about 200 requests a second, until the browser is done.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, addr) = (Arc::clone(&stop), proxy.addr());
        std::thread::spawn(move || {
            let mut client = Client::connect(addr);
            while !stop.load(Ordering::Relaxed) {
                if client
                    .try_send(
                        crate::util::get("/")
                            .body(crate::util::empty())
                            .expect("request"),
                    )
                    .is_err()
                {
                    client = Client::connect(addr);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let shots = Dir::new();
    let root = env!("CARGO_MANIFEST_DIR");
    let admin = proxy.admin.expect("admin");
    let out = Command::new("node")
        .arg(format!("{root}/tests/dashboard/drive.mjs"))
        .current_dir(format!("{root}/tests/dashboard"))
        .env("ADMIN", format!("http://{admin}"))
        .env("TOKEN", ADMIN_TOKEN)
        .env("A", a.address())
        .env("B", b.address())
        .env("SKEWED", &skewed)
        .env("SHOTS", shots.path())
        .output()
        .expect("run node (apt install nodejs; npm ci --prefix tests/dashboard)");
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.join();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "the browser steps failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Screenshots for docs/: kept when asked for.
    if let Ok(keep) = std::env::var("EVENKEEL_KEEP_SCREENSHOTS") {
        for shot in ["dashboard.png", "dashboard-guard.png"] {
            let _ = std::fs::copy(
                shots.path().join(shot),
                std::path::Path::new(&keep).join(shot),
            );
        }
    }
}
