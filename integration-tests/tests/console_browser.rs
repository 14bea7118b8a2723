//! The console in a real browser: headless Debian `chromium` driven by npm's
//! `playwright-core` (`integration-tests/browser/console.mjs`) against the real binary.
//! It logs in, explains an allowed and a refused token, refetches an issuer's keys,
//! reads the rules page, watches an exchange's decision appear in the live tail, reads
//! the keys page, checks that forms without the session or with a bad CSRF token are
//! refused, logs out, and lays the pages out on a phone. Screenshots of every page are
//! kept in `target/console-screenshots/`.
//!
//! Tools (installed by `scripts/test`): `node` (20 or later), Chromium at
//! `/usr/bin/chromium` (or `FEDBROKER_CHROMIUM`), and playwright-core in
//! `target/node/node_modules` (or `FEDBROKER_PLAYWRIGHT_CORE`, its directory). A missing
//! one fails the test naming it, unless `FEDBROKER_SKIP_BROWSER_TESTS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use integration_tests::broker::run_captured;
use integration_tests::{Broker, FakeIssuer};
use serde_json::{Value, json};

use crate::console::{ADMIN_TOKEN, ALLOW_RULE, console_config};
use crate::support::{ISSUER_NAME, TARGET};

const SKIP_ENV: &str = "FEDBROKER_SKIP_BROWSER_TESTS";

/// The workspace's root (this crate's parent).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// Node, Chromium and playwright-core, or why not.
fn tools() -> Result<(String, PathBuf, PathBuf), String> {
    let node = std::env::var("FEDBROKER_NODE").unwrap_or_else(|_| "node".into());
    let version = Command::new(&node)
        .arg("--version")
        .output()
        .map_err(|e| format!("`{node}` cannot run ({e}): install Node.js 20 or later (Debian: nodejs)"))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        return Err(format!(
            "`{node}` is {version}: playwright-core needs Node.js 20 or later"
        ));
    }
    let chromium = std::env::var_os("FEDBROKER_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!(
            "{} is missing: install Debian's chromium (apt-get install chromium) or set FEDBROKER_CHROMIUM",
            chromium.display()
        ));
    }
    let playwright = std::env::var_os("FEDBROKER_PLAYWRIGHT_CORE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/node/node_modules/playwright-core"));
    if !playwright.join("package.json").exists() {
        return Err(format!(
            "playwright-core is not in {}: run scripts/test (it runs `npm install --prefix target/node playwright-core`) \
             or set FEDBROKER_PLAYWRIGHT_CORE",
            playwright.display()
        ));
    }
    Ok((node, chromium, playwright))
}

#[tokio::test]
async fn the_console_works_in_a_real_browser() {
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        eprintln!("{SKIP_ENV}=1: the browser test is skipped");
        return;
    }
    let (node, chromium, playwright) = tools()
        .unwrap_or_else(|why| panic!("the console's browser test needs a tool: {why} (or set {SKIP_ENV}=1)"));

    let fake = FakeIssuer::start();
    let broker = Broker::start(&console_config(&fake).render()).await;
    let allowed = fake.mint(json!({}));
    let refused = fake.mint(json!({"sub": "someone-else"}));
    let exchanged = fake.mint(json!({}));
    // The reason the page must show: the admin API's explanation of the same token.
    let explained: Value = integration_tests::broker::client_builder()
        .build()
        .expect("client")
        .post(broker.endpoint("/admin/v1/explain"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"subject_token": refused, "audience": TARGET}))
        .send()
        .await
        .expect("explain")
        .json()
        .await
        .expect("JSON");
    let reason = explained["decision"]["reason"]
        .as_str()
        .expect("a reason")
        .to_owned();
    assert!(
        reason.contains("someone-else") || reason.contains("subject"),
        "{reason}"
    );

    let shots = workspace().join("target/console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let mut command = Command::new(&node);
    command
        .arg(workspace().join("integration-tests/browser/console.mjs"))
        .env("FEDBROKER_URL", broker.url())
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("ALLOWED_TOKEN", &allowed)
        .env("REFUSED_TOKEN", &refused)
        .env("REFUSED_REASON", &reason)
        .env("EXCHANGE_TOKEN", &exchanged)
        .env("TARGET", TARGET)
        .env("ALLOW_RULE", ALLOW_RULE)
        .env("ISSUER_NAME", ISSUER_NAME)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .env("PLAYWRIGHT_CORE", &playwright)
        .current_dir(workspace());
    let out = tokio::task::spawn_blocking(move || {
        run_captured(command, Duration::from_secs(240), "node console.mjs")
    })
    .await
    .expect("join");
    println!("{}", out.stdout);
    assert_eq!(
        out.code,
        Some(0),
        "the browser checks failed:\n{}\n--- broker stderr ---\n{}",
        out.all(),
        broker.stderr()
    );
    assert!(out.stdout.contains("all console checks passed"), "{}", out.all());
    let taken = std::fs::read_dir(&shots).map(|d| d.count()).unwrap_or(0);
    assert_eq!(taken, 11, "a screenshot of each page in {}", shots.display());
    // The exchange watched in the tail is in the audit log too, and no token is.
    let audit = broker.audit_text();
    for token in [&allowed, &refused, &exchanged] {
        assert!(!audit.contains(token.as_str()), "a token in the audit log");
    }
}
