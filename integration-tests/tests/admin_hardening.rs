//! The admin API's trust boundary (issue 9, §4 and parts of §5/§6), through the real
//! binary:
//!
//! - admin-API issuers may not set `danger_allow_insecure`, an internal `jwks_uri`,
//!   `jwks_file` or `tls_ca_file` unless the config file opts in; with the opt-in, a
//!   device or a FIFO named as a file is refused at once (no hang, no memory blow-up);
//! - `check` refuses a rules file that is a FIFO;
//! - the bearer token is checked before any body is read, and one body limit
//!   (`server.max_body_bytes`) holds for every admin route;
//! - deleting an issuer in use answers 409 naming the rules;
//! - removing a token from `admin.tokens_file` revokes it without a restart, even when
//!   the reload fails for another reason;
//! - the admin state in Redis is authenticated (HMAC): a hand-written state is not
//!   installed, and shows on `/readyz`;
//! - `admin.listen` also serves the public metadata and JWKS.

use std::time::Duration;

use integration_tests::broker::free_port;
use integration_tests::eventually;
use integration_tests::fake_issuer::{DEFAULT_AUDIENCE, DEFAULT_SUBJECT};
use integration_tests::{Broker, BrokerConfig, FakeIssuer, Reply, run_cli_with_timeout};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{STATE_KEY, hget, redis_or_skip, state_mac, tokens_file_broker};

const ADMIN_TOKEN: &str = "hardening-admin-token-0123456789";

/// How long an answer that must be prompt may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(30);

fn admin_config(extra: &str) -> String {
    let mut admin = format!("admin:\n  tokens: [\"{ADMIN_TOKEN}\"]\n");
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        admin.push_str(&format!("  {line}\n"));
    }
    BrokerConfig::new().top_level(admin).render()
}

async fn send(
    broker: &Broker,
    base: &str,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Vec<u8>>,
) -> Reply {
    let url = format!("{base}{path}");
    let mut request = broker
        .client()
        .request(method.clone(), &url)
        .timeout(HANG)
        .header("authorization", format!("Bearer {token}"));
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}\n{}", broker.stderr()));
    Reply::read(response).await
}

async fn put(broker: &Broker, path: &str, body: &Value) -> Reply {
    let body = serde_json::to_vec(body).expect("JSON");
    send(broker, broker.url(), Method::PUT, path, ADMIN_TOKEN, Some(body)).await
}

/// The `errors` of a 422 whose `field` is `field`, or a panic showing the answer.
fn problem<'a>(reply: &'a Reply, field: &str) -> &'a Value {
    assert_eq!(reply.status, 422, "{reply:?}");
    reply.json["errors"]
        .as_array()
        .and_then(|list| list.iter().find(|p| p["field"] == field))
        .unwrap_or_else(|| panic!("no problem for `{field}` in {}", reply.text))
}

fn mkfifo(path: &std::path::Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mkfifo {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_issuers_may_not_reach_the_host_or_internal_addresses_without_an_opt_in() {
    let broker = Broker::start(&admin_config("")).await;
    let https = |extra: Value| {
        let mut body = json!({"issuer": "https://issuer.example.com", "audiences": ["a"]});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };

    let reply = put(
        &broker,
        "/admin/v1/issuers/insecure",
        &json!({"issuer": "http://127.0.0.1:9/", "audiences": ["a"], "danger_allow_insecure": true}),
    )
    .await;
    let p = problem(&reply, "issuer `insecure`.danger_allow_insecure");
    assert!(
        p["message"]
            .as_str()
            .is_some_and(|m| m.contains("admin.allow_insecure_issuers: true")),
        "{p}"
    );

    for uri in [
        "https://127.0.0.1/jwks",
        "https://169.254.169.254/latest/meta-data",
        "https://localhost/jwks",
    ] {
        let reply = put(
            &broker,
            "/admin/v1/issuers/internal",
            &https(json!({"jwks_uri": uri})),
        )
        .await;
        problem(&reply, "issuer `internal`.jwks_uri");
    }

    for field in ["jwks_file", "tls_ca_file"] {
        let reply = put(
            &broker,
            "/admin/v1/issuers/files",
            &https(json!({field: "/etc/passwd"})),
        )
        .await;
        let p = problem(&reply, &format!("issuer `files`.{field}"));
        assert!(
            p["message"]
                .as_str()
                .is_some_and(|m| m.contains("admin.allow_file_paths: true")),
            "{p}"
        );
        assert!(!reply.text.contains("root:"), "the file was read: {}", reply.text);
    }

    // Nothing was stored.
    let list = send(
        &broker,
        broker.url(),
        Method::GET,
        "/admin/v1/issuers",
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(list.json, json!([]), "{list:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_file_paths_allowed_a_device_or_a_fifo_is_refused_at_once() {
    let broker = Broker::start(&admin_config("allow_file_paths: true")).await;
    let fifo = broker.dir().join("keys.fifo");
    mkfifo(&fifo);
    let fifo = fifo.display().to_string();
    for (field, path, what) in [
        ("jwks_file", "/dev/zero", "a device"),
        ("jwks_file", fifo.as_str(), "a FIFO"),
        ("tls_ca_file", fifo.as_str(), "a FIFO"),
        ("jwks_file", "/", "a directory"),
    ] {
        let body = json!({"issuer": "https://issuer.example.com", "audiences": ["a"], field: path});
        let reply = put(&broker, "/admin/v1/issuers/files", &body).await;
        let p = problem(&reply, &format!("issuer `files`.{field}"));
        assert!(
            p["message"]
                .as_str()
                .is_some_and(|m| m.contains(what) && m.contains("only regular files")),
            "{field} = {path}: {p}"
        );
    }
    // A regular file is still accepted, and the write lock is free.
    let fake = FakeIssuer::start();
    std::fs::write(broker.dir().join("jwks.json"), fake.jwks().to_string()).expect("write");
    let body = json!({"issuer": "https://issuer.example.com", "audiences": ["a"],
                      "jwks_file": broker.dir().join("jwks.json").display().to_string()});
    let reply = put(&broker, "/admin/v1/issuers/files", &body).await;
    assert_eq!(reply.status, 201, "{reply:?}");
}

#[test]
fn check_refuses_a_rules_file_that_is_a_fifo() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("rules")).expect("mkdir");
    std::fs::write(dir.path().join("rules/ok.yaml"), "[]\n").expect("write");
    mkfifo(&dir.path().join("rules/pipe.yaml"));
    std::fs::write(
        dir.path().join("config.yaml"),
        "version: 1\nrules_files: [./rules/*.yaml]\n",
    )
    .expect("write");
    let out = run_cli_with_timeout(dir.path(), &["check", "--config", "config.yaml"], &[], HANG);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.all().contains("pipe.yaml"), "{}", out.all());
    assert!(out.all().contains("a FIFO"), "{}", out.all());
}

/// Send `head` (request line and headers, declaring a body) and nothing more; the
/// status line of the answer.
async fn status_without_sending_the_body(broker: &Broker, head: &str) -> String {
    let answer = raw_answer(broker, head.as_bytes()).await;
    answer.lines().next().unwrap_or_default().to_owned()
}

/// Send `request` as is on a new connection, then wait (without sending more) for the
/// whole answer: headers and a body of its `Content-Length`.
async fn raw_answer(broker: &Broker, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", broker.port()))
        .await
        .expect("connect");
    stream.write_all(request).await.expect("send the request");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let complete = |answer: &[u8]| {
        let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        answer.len() >= end + 4 + length
    };
    let read = tokio::time::timeout(HANG, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if complete(&answer) {
                break;
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer while the body was withheld: the broker waits for it"
    );
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_checked_before_the_body_and_one_body_limit_holds() {
    let broker = Broker::start(&admin_config("")).await;
    let head = |auth: &str| {
        format!(
            "PUT /admin/v1/issuers/big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: 1000000\r\n{auth}\r\n"
        )
    };
    // Anonymous, or a wrong token: 401 at once, the declared megabyte never read.
    let line = status_without_sending_the_body(&broker, &head("")).await;
    assert!(line.starts_with("HTTP/1.1 401"), "{line}");
    let line =
        status_without_sending_the_body(&broker, &head("Authorization: Bearer wrong-token-0123456789\r\n"))
            .await;
    assert!(line.starts_with("HTTP/1.1 401"), "{line}");
    // Authenticated, declared over server.max_body_bytes (65536 by default): 413 at once.
    let line = status_without_sending_the_body(
        &broker,
        &head(&format!("Authorization: Bearer {ADMIN_TOKEN}\r\n")),
    )
    .await;
    assert!(line.starts_with("HTTP/1.1 413"), "{line}");
    // Authenticated, a body sent without a declared length (chunked) one byte over the
    // limit: read, and refused with 413. (Exactly one byte over, so the broker has read
    // everything sent when it answers, and the connection closes cleanly.)
    let mut chunked = format!(
        "PUT /admin/v1/issuers/big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {ADMIN_TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        65537
    )
    .into_bytes();
    chunked.extend(std::iter::repeat_n(b' ', 65537));
    let answer = raw_answer(&broker, &chunked).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""error":"invalid_request""#), "{answer}");
    // Under the limit: the body is read and judged.
    let reply = put(&broker, "/admin/v1/issuers/big", &json!({"audiences": []})).await;
    assert_eq!(reply.status, 422, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_issuer_in_use_names_the_rules_that_use_it() {
    let broker = Broker::start(&admin_config("")).await;
    let fake = FakeIssuer::start();
    let issuer = json!({"issuer": "https://issuer.example.com", "audiences": [DEFAULT_AUDIENCE],
                        "jwks": fake.jwks()});
    assert_eq!(
        put(&broker, "/admin/v1/issuers/shared", &issuer).await.status,
        201
    );
    for i in 0..22 {
        let rule = json!({"match": {"issuer": "shared", "subject": DEFAULT_SUBJECT, "audiences": [format!("t{i}")]}});
        let reply = put(&broker, &format!("/admin/v1/rules/uses-{i:02}"), &rule).await;
        assert_eq!(reply.status, 201, "{reply:?}");
    }
    let reply = send(
        &broker,
        broker.url(),
        Method::DELETE,
        "/admin/v1/issuers/shared",
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(reply.status, 409, "{reply:?}");
    assert_eq!(reply.json["error"], "conflict");
    assert_eq!(reply.json["rule_count"], 22);
    let named = reply.json["rules"].as_array().expect("rules");
    assert_eq!(named.len(), 20);
    assert_eq!(named[0], "uses-00");
    let text = reply.json["error_description"].as_str().expect("description");
    assert!(text.contains("22 rule(s): `uses-00`, `uses-01`"), "{text}");
    assert!(text.contains("and 2 more"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_removed_from_the_tokens_file_is_revoked_without_a_restart() {
    let first = "file-token-0123456789abcdef-first";
    let second = "file-token-0123456789abcdef-second";
    let third = "file-token-0123456789abcdef-third";
    let broker = tokens_file_broker(&format!("{first}\n{second}\n")).await;
    let status = |token: &'static str| {
        let broker = &broker;
        async move {
            send(broker, broker.url(), Method::GET, "/admin/v1/rules", token, None)
                .await
                .status
        }
    };
    assert_eq!(status(first).await, 200);
    assert_eq!(status(second).await, 200);
    let file = broker.dir().join("admin-tokens");

    // Saved without the first token: revoked; a new one works.
    std::fs::write(&file, format!("{second}\n{third}\n")).expect("write");
    eventually(HANG, "the removed token is refused", || async {
        (status(first).await == 401).then_some(())
    })
    .await;
    eventually(HANG, "the added token is accepted", || async {
        (status(third).await == 200).then_some(())
    })
    .await;
    assert_eq!(status(second).await, 200);

    // A file the reload refuses (a token too short): the reload fails, yet the token
    // no longer in the file is revoked, and the one still there keeps working.
    std::fs::write(&file, format!("{third}\nshort\n")).expect("write");
    eventually(
        HANG,
        "the token removed by a failing reload is refused",
        || async { (status(second).await == 401).then_some(()) },
    )
    .await;
    assert_eq!(status(third).await, 200);
    let readyz = broker.get("/readyz").await;
    assert!(
        readyz.json["rules"]["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("admin.tokens_file")),
        "{readyz:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_serves_the_public_metadata_and_keys() {
    let admin_port = free_port();
    let broker = Broker::start(&admin_config(&format!("listen: 127.0.0.1:{admin_port}"))).await;
    let admin = format!("http://127.0.0.1:{admin_port}");
    let main_doc = broker.get("/.well-known/openid-configuration").await;
    assert_eq!(main_doc.status, 200);
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let reply = send(&broker, &admin, Method::GET, path, "", None).await;
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        assert_eq!(
            reply.json, main_doc.json,
            "{path}: the same document as the public listener"
        );
        assert_eq!(reply.json["issuer"], broker.url());
    }
    let keys = send(&broker, &admin, Method::GET, "/jwks.json", "", None).await;
    assert_eq!(keys.status, 200, "{keys:?}");
    assert_eq!(keys.json, broker.get("/jwks.json").await.json);
    // Still not the exchange itself.
    let token = send(&broker, &admin, Method::POST, "/token", "", None).await;
    assert_eq!(token.status, 404, "{token:?}");
}

const HMAC_KEY: &str = "hardening-hmac-key-0123456789abcdef0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_state_written_to_redis_without_the_hmac_key_is_not_installed() {
    let Some(redis) = redis_or_skip() else {
        return;
    };
    let fake = FakeIssuer::start();
    let config = BrokerConfig::new()
        .top_level(format!(
            "replay:\n  backend: redis\n  redis_url: {}\nadmin:\n  tokens: [\"{ADMIN_TOKEN}\"]\n  \
             allow_insecure_issuers: true\n  state_hmac_key: ${{FEDBROKER_ADMIN_HMAC_KEY}}\n",
            redis.url()
        ))
        .render();
    let broker = Broker::builder()
        .env("FEDBROKER_ADMIN_HMAC_KEY", HMAC_KEY)
        .start(&config)
        .await;
    eventually(HANG, "ready", || async {
        (broker.get("/readyz").await.status == 200).then_some(())
    })
    .await;
    let issuer = json!({"issuer": fake.issuer(), "audiences": [DEFAULT_AUDIENCE], "algorithms": ["RS256"],
                        "replay": "reusable", "danger_allow_insecure": true});
    let rule = |target: &str| json!({"match": {"issuer": "fake", "subject": DEFAULT_SUBJECT, "audiences": [target]}});
    assert_eq!(put(&broker, "/admin/v1/issuers/fake", &issuer).await.status, 201);
    assert_eq!(
        put(&broker, "/admin/v1/rules/good", &rule("target-good"))
            .await
            .status,
        201
    );
    let exchange = |target: &'static str| {
        let (broker, fake) = (&broker, &fake);
        async move { broker.exchange(&fake.mint(json!({})), target).await.status }
    };
    assert_eq!(exchange("target-good").await, 200);
    assert!(hget(&redis, "mac").len() == 64, "the broker writes a MAC");

    // Someone with write access to Redis, without the key: an allow rule of their own.
    let version: u64 = redis
        .cli(&["HGET", STATE_KEY, "version"])
        .trim()
        .parse()
        .expect("version");
    let mut fake_issuer = issuer.clone();
    fake_issuer["name"] = json!("fake");
    let evil = json!({"name": "evil", "match": {"issuer": "fake", "subject": DEFAULT_SUBJECT, "audiences": ["target-evil"]}});
    let forged = json!({"issuers": {"fake": fake_issuer}, "rules": {"evil": evil}}).to_string();
    for (v, mac) in [
        (version + 1, None),
        (
            version + 2,
            Some(state_mac(
                "a-guessed-key-that-is-not-the-right-one",
                version + 2,
                &forged,
            )),
        ),
        (version + 3, Some(state_mac(HMAC_KEY, version + 2, &forged))), // right key, other version
    ] {
        let v = v.to_string();
        // Written in the earlier release's layout (no epoch: the v1 MAC input).
        redis.cli(&["HDEL", STATE_KEY, "mac", "epoch", "changes"]);
        let mut args = vec!["HSET", STATE_KEY, "version", v.as_str(), "state", forged.as_str()];
        if let Some(mac) = &mac {
            args.extend(["mac", mac.as_str()]);
        }
        redis.cli(&args);
        let seen = format!("version {v}) is refused");
        let readyz = eventually(HANG, "/readyz shows the refused state", || async {
            let r = broker.get("/readyz").await;
            r.json["admin"]["error"]
                .as_str()
                .is_some_and(|e| e.contains(&seen))
                .then_some(r)
        })
        .await;
        assert_eq!(readyz.json["admin"]["version"], version, "{}", readyz.text);
        assert_eq!(
            exchange("target-evil").await,
            400,
            "the forged rule was installed"
        );
        assert_eq!(
            exchange("target-good").await,
            200,
            "the verified state keeps serving"
        );
    }
    let stderr = broker.wait_for_stderr("fails authentication").await;
    assert!(stderr.contains("fails authentication"), "{stderr}");
    // A change is refused while the state does not verify.
    let reply = put(&broker, "/admin/v1/rules/other", &rule("target-other")).await;
    assert_eq!(reply.status, 503, "{reply:?}");

    // The same hand-written state with the right MAC is installed: only the MAC decided.
    let v = (version + 4).to_string();
    let good_mac = state_mac(HMAC_KEY, version + 4, &forged);
    redis.cli(&["HDEL", STATE_KEY, "epoch", "changes"]);
    redis.cli(&[
        "HSET",
        STATE_KEY,
        "version",
        v.as_str(),
        "state",
        forged.as_str(),
        "mac",
        good_mac.as_str(),
    ]);
    eventually(HANG, "the authenticated state is installed", || async {
        (exchange("target-evil").await == 200).then_some(())
    })
    .await;
    let readyz = broker.get("/readyz").await;
    assert!(readyz.json["admin"].get("error").is_none(), "{}", readyz.text);
}

/// An admin-API rule's credentials block may not send tokens to internal addresses or
/// over plain HTTP, nor name a file on the broker's host, without the config file's
/// opt-ins: the same line as for issuers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_rules_credentials_may_not_reach_the_host_or_internal_addresses_without_an_opt_in() {
    let broker = Broker::start(&admin_config("")).await;
    let rule = |aws: Value| {
        let mut block = json!({"role_arn": "arn:aws:iam::111122223333:role/r", "session_name": "fixed"});
        if let (Some(b), Some(e)) = (block.as_object_mut(), aws.as_object()) {
            b.extend(e.clone());
        }
        json!({"match": {"issuer": "nobody", "allow_any_subject": true, "audiences": ["a"]},
               "issue": {"credentials": {"aws": block}}})
    };
    let cases = [
        (
            json!({"endpoint": "https://169.254.169.254/latest"}),
            "aws.endpoint",
            "admin.allow_insecure_issuers",
        ),
        (
            json!({"endpoint": "https://localhost:9"}),
            "aws.endpoint",
            "admin.allow_insecure_issuers",
        ),
        (
            json!({"endpoint": "http://127.0.0.1:9", "danger_allow_insecure_endpoint": true}),
            "aws.danger_allow_insecure_endpoint",
            "admin.allow_insecure_issuers",
        ),
        (
            json!({"ca_file": "/etc/passwd"}),
            "aws.ca_file",
            "admin.allow_file_paths",
        ),
    ];
    for (aws, field, setting) in cases {
        let reply = put(&broker, "/admin/v1/rules/r", &rule(aws)).await;
        let p = problem(&reply, &format!("rule `r`.issue.credentials.{field}"));
        assert!(p["message"].as_str().is_some_and(|m| m.contains(setting)), "{p}");
    }
}
