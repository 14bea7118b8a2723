//! The moto harness (`integration_tests::moto`): a real `moto_server` answers
//! AssumeRoleWithWebIdentity and records what it received, checks SigV4 signatures when
//! enforcing, stalls when paused, and a missing `moto_server` is named with its fix.
//!
//! Without `moto_server` these tests fail naming it, unless `FEDBROKER_SKIP_AWS_TESTS=1`
//! (see `integration_tests::moto`); `scripts/test` installs it.

use std::ffi::OsStr;
use std::time::{Duration, SystemTime};

use integration_tests::moto::{self, Moto, enforcing_moto_or_skip, find_moto_server, moto_or_skip, xml_text};
use integration_tests::sigv4::{Credentials, GET_CALLER_IDENTITY, Request};

const TRUST_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Federated":"arn:aws:iam::123456789012:oidc-provider/fedbroker.test"},"Action":"sts:AssumeRoleWithWebIdentity"}]}"#;

async fn post_form(url: &str, form: &[(&str, &str)]) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(url)
        .form(form)
        .send()
        .await
        .expect("POST to moto");
    let status = response.status().as_u16();
    (status, response.text().await.expect("moto's body"))
}

#[tokio::test]
async fn assume_role_with_web_identity_answers_credentials_and_is_recorded() {
    let Some(moto) = moto_or_skip() else { return };
    let role_arn = moto.iam_role("fedbroker-reader", TRUST_POLICY).await;
    assert_eq!(
        role_arn,
        format!("arn:aws:iam::{}:role/fedbroker-reader", moto::ACCOUNT_ID)
    );
    moto.start_recording();

    let form = [
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", role_arn.as_str()),
        ("RoleSessionName", "build-42"),
        ("WebIdentityToken", "header.claims.signature"),
        ("DurationSeconds", "900"),
    ];
    let (status, body) = post_form(&moto.url(), &form).await;
    assert_eq!(status, 200, "{body}");
    for field in ["AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"] {
        assert!(
            xml_text(&body, field).is_some_and(|v| !v.is_empty()),
            "no {field} in the answer"
        );
    }
    let assumed = xml_text(&body, "Arn").expect("AssumedRoleUser Arn");
    assert_eq!(
        assumed,
        format!(
            "arn:aws:sts::{}:assumed-role/fedbroker-reader/build-42",
            moto::ACCOUNT_ID
        )
    );

    // Only the call after start_recording, none of the setup or of moto's own API.
    let recorded = moto.recorded();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let call = &recorded[0];
    assert_eq!((call.method.as_str(), call.path.as_str()), ("POST", "/"));
    let expected: Vec<(String, String)> = form.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(call.params, expected);
    assert_eq!(call.action(), Some("AssumeRoleWithWebIdentity"));
    assert_eq!(call.param("WebIdentityToken"), Some("header.claims.signature"));
    assert!(call.header("Authorization").is_none());
}

#[tokio::test]
async fn enforcing_server_accepts_only_correctly_signed_get_caller_identity() {
    let Some(moto) = enforcing_moto_or_skip() else {
        return;
    };
    assert!(moto.enforces_auth());
    // Enforcing from the first call: a key moto does not know is refused.
    let (status, body) = signed_get_caller_identity(&moto, "AKIAUNKNOWNKEY000000", "secret").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("InvalidClientTokenId"), "{body}");

    // Setup calls fit however many there are; enforcement is back on after them.
    let (key_id, secret, user_arn) = moto.iam_user_with_key("workload").await;
    let (_, _, other_arn) = moto.iam_user_with_key("other").await;
    assert_eq!(
        user_arn,
        format!("arn:aws:iam::{}:user/workload", moto::ACCOUNT_ID)
    );
    assert_ne!(user_arn, other_arn);

    let (status, body) = signed_get_caller_identity(&moto, &key_id, &secret).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(xml_text(&body, "Arn"), Some(user_arn.as_str()));

    let (status, body) = signed_get_caller_identity(&moto, &key_id, "not-the-secret").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("SignatureDoesNotMatch"), "{body}");

    let (status, body) = signed_get_caller_identity(&moto, "AKIAUNKNOWNKEY000000", &secret).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("InvalidClientTokenId"), "{body}");

    // Unsigned: moto cannot route or check it and answers with an error (a 500), never the identity.
    let (status, body) = post_form(
        &moto.url(),
        &[("Action", "GetCallerIdentity"), ("Version", "2011-06-15")],
    )
    .await;
    assert!(!(200..300).contains(&status), "{status}: {body}");
    assert!(xml_text(&body, "Arn").is_none(), "{body}");
}

#[tokio::test]
async fn paused_moto_stalls_resumed_answers_killed_refuses() {
    let Some(mut moto) = moto_or_skip() else { return };
    let client = reqwest::Client::new();
    let url = moto.url();
    let call = |timeout: Duration| {
        client
            .post(&url)
            .timeout(timeout)
            .form(&[
                ("Action", "AssumeRoleWithWebIdentity"),
                ("Version", "2011-06-15"),
                ("RoleArn", "arn:aws:iam::123456789012:role/r"),
                ("RoleSessionName", "s"),
                ("WebIdentityToken", "t"),
            ])
            .send()
    };
    let short = Duration::from_millis(500);
    let long = Duration::from_secs(30);
    assert_eq!(call(long).await.expect("answer").status(), 200);

    moto.pause();
    let stalled = call(short).await.expect_err("a paused moto does not answer");
    assert!(stalled.is_timeout(), "{stalled:?}");

    moto.resume();
    let answer = call(long).await.expect("a resumed moto answers");
    assert_eq!(answer.status(), 200);

    moto.kill();
    let refused = call(long).await.expect_err("a killed moto refuses connections");
    assert!(refused.is_connect(), "{refused:?}");
}

#[test]
fn a_missing_moto_server_is_named_with_the_test_command_and_the_opt_out() {
    let empty = tempfile::tempdir().expect("tempdir");
    let why = find_moto_server(None, Some(empty.path().as_os_str())).expect_err("nothing to find");
    for needle in [
        "moto_server",
        "moto[server]",
        "scripts/test",
        "FEDBROKER_MOTO_SERVER",
        "FEDBROKER_SKIP_AWS_TESTS=1",
    ] {
        assert!(why.contains(needle), "{needle} not in: {why}");
    }

    let absent = empty.path().join("venv/bin/moto_server");
    let why = find_moto_server(Some(absent.as_os_str()), None).expect_err("not a file");
    assert!(
        why.contains(&format!("FEDBROKER_MOTO_SERVER={}", absent.display())),
        "{why}"
    );
    assert!(why.contains("FEDBROKER_SKIP_AWS_TESTS=1"), "{why}");
}

#[test]
fn the_variable_wins_over_path() {
    let on_path = tempfile::tempdir().expect("tempdir");
    let venv = tempfile::tempdir().expect("tempdir");
    std::fs::write(on_path.path().join("moto_server"), "").expect("file");
    let named = venv.path().join("moto_server");
    std::fs::write(&named, "").expect("file");
    let path = std::env::join_paths([empty_dir_name(), on_path.path().as_os_str()]).expect("PATH");

    assert_eq!(
        find_moto_server(None, Some(&path)),
        Ok(on_path.path().join("moto_server"))
    );
    assert_eq!(
        find_moto_server(Some(named.as_os_str()), Some(&path)),
        Ok(named.clone())
    );
    // An empty variable counts as unset.
    assert_eq!(
        find_moto_server(Some(OsStr::new("")), Some(&path)),
        Ok(on_path.path().join("moto_server"))
    );
}

fn empty_dir_name() -> &'static OsStr {
    OsStr::new("/nonexistent-fedbroker-test-dir")
}

/// `GetCallerIdentity` signed with SigV4 (region us-east-1, service sts) by
/// `key_id`/`secret`, as the AWS SDKs sign it: `(status, body)`.
async fn signed_get_caller_identity(moto: &Moto, key_id: &str, secret: &str) -> (u16, String) {
    Request::post(&moto.url(), GET_CALLER_IDENTITY)
        .sign(&Credentials::new(key_id, secret), SystemTime::now())
        .send()
        .await
}
