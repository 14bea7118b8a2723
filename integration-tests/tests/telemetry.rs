//! OpenTelemetry traces through the real binary (`telemetry.traces`): a fake OTLP/HTTP
//! collector in the test receives the broker's spans (protobuf, decoded with the OTLP
//! messages): the request's span in the caller's trace (W3C `traceparent`), the
//! `/token` stages as its children, `service.name`, the configured headers, and no
//! token or claim value anywhere in what was sent. Without an endpoint nothing is sent;
//! `fedbroker check` refuses bad settings.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use integration_tests::fake_issuer::DEFAULT_SUBJECT;
use integration_tests::{Broker, BrokerConfig, FakeIssuer, eventually};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::json;

use crate::support::{TARGET, check_in, config_with_rules, default_rule};

/// What the fake collector was sent: each POST's headers and body.
#[derive(Clone, Default)]
struct Collector {
    port: u16,
    posts: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

impl Collector {
    /// A collector answering `POST /v1/traces` on a free loopback port.
    async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        let port = listener.local_addr().expect("addr").port();
        let collector = Collector {
            port,
            posts: Arc::default(),
        };
        let posts = collector.posts.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let posts = posts.clone();
                async move {
                    posts.lock().expect("posts").push((headers, body));
                    // An empty ExportTraceServiceResponse: everything accepted.
                    (
                        StatusCode::OK,
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        collector
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }

    fn posts(&self) -> Vec<(HeaderMap, Bytes)> {
        self.posts.lock().expect("posts").clone()
    }

    /// Every span received, with its resource's `service.name`.
    fn spans(&self) -> Vec<(String, Span)> {
        let mut out = Vec::new();
        for (_, body) in self.posts() {
            let request = ExportTraceServiceRequest::decode(body.as_ref()).expect("an OTLP protobuf body");
            for resource_spans in request.resource_spans {
                let service = resource_spans
                    .resource
                    .as_ref()
                    .and_then(|r| string_attr(&r.attributes, "service.name"))
                    .unwrap_or_default();
                for scope in resource_spans.scope_spans {
                    out.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
                }
            }
        }
        out
    }
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn string_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attr(attributes, key)? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attributes, key)? {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The request, its stages and their attributes, in what the collector was sent.
fn describe(spans: &[(String, Span)]) -> String {
    spans
        .iter()
        .map(|(service, s)| {
            format!(
                "{service} {} trace={} span={} parent={} {:?}",
                s.name,
                hex(&s.trace_id),
                hex(&s.span_id),
                hex(&s.parent_span_id),
                s.attributes
                    .iter()
                    .map(|kv| format!(
                        "{}={:?}",
                        kv.key,
                        kv.value.as_ref().and_then(|v| v.value.as_ref())
                    ))
                    .collect::<Vec<_>>()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn traced_config(fake: &FakeIssuer, traces: &str) -> String {
    config_with_rules(fake, &default_rule())
        .top_level(format!("telemetry:\n  traces:\n{traces}"))
        .render()
}

/// POST /token exchanging `token` for the default target, with `headers`.
async fn exchange_with(broker: &Broker, token: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token", token),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("audience", TARGET),
    ];
    let mut request = broker
        .client()
        .post(format!("{}/token", broker.url()))
        .form(&form);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("token request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_join_the_callers_trace_with_the_stages_and_no_token() {
    let collector = Collector::start().await;
    let fake = FakeIssuer::start();
    let mut broker = Broker::start(&traced_config(
        &fake,
        &format!(
            "    endpoint: {}\n    service_name: broker-under-test\n    sample_ratio: 0\n    headers:\n      x-api-key: collector-key\n",
            collector.endpoint()
        ),
    ))
    .await;

    // The caller's trace, sampled: with parent-based sampling it is kept whatever the
    // ratio says (0 here: no trace that starts at the broker is kept).
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let subject_token = fake.mint(json!({}));
    let resp = exchange_with(
        &broker,
        &subject_token,
        &[
            ("traceparent", &format!("00-{trace_id}-{caller_span}-01")),
            ("x-request-id", "otel-test-1"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let answer: serde_json::Value = resp.json().await.expect("JSON answer");
    let issued = answer["access_token"].as_str().expect("access_token").to_owned();
    // A refusal, in another trace of the caller's.
    let refused_trace = "0af7651916cd43dd8448eb211c80319c";
    let refused = exchange_with(
        &broker,
        "not-a-token",
        &[
            ("traceparent", &format!("00-{refused_trace}-b7ad6b7169203331-01")),
            ("x-request-id", "otel-test-2"),
        ],
    )
    .await;
    assert_eq!(refused.status(), 400);
    // Not kept: a trace the caller did not sample, and one that starts here (ratio 0).
    let unsampled = exchange_with(
        &broker,
        "not-a-token",
        &[
            (
                "traceparent",
                "00-11111111111111111111111111111111-2222222222222222-00",
            ),
            ("x-request-id", "otel-test-3"),
        ],
    )
    .await;
    assert_eq!(unsampled.status(), 400);
    let untraced = exchange_with(&broker, "not-a-token", &[("x-request-id", "otel-test-4")]).await;
    assert_eq!(untraced.status(), 400);

    // SIGTERM: what is queued is sent before the process exits.
    let status = broker.signal_and_wait("TERM").await;
    assert!(status.success(), "{status}\n{}", broker.stderr());
    let spans = collector.spans();
    let all = describe(&spans);

    let (service, request) = spans
        .iter()
        .find(|(_, s)| s.name == "POST /token" && hex(&s.trace_id) == trace_id)
        .unwrap_or_else(|| panic!("no POST /token span in the caller's trace:\n{all}"));
    assert_eq!(service, "broker-under-test");
    assert_eq!(hex(&request.parent_span_id), caller_span, "{all}");
    assert_eq!(request.kind, SpanKind::Server as i32, "{all}");
    let a = &request.attributes;
    assert_eq!(
        string_attr(a, "http.request.method").as_deref(),
        Some("POST"),
        "{all}"
    );
    assert_eq!(string_attr(a, "http.route").as_deref(), Some("/token"), "{all}");
    assert_eq!(int_attr(a, "http.response.status_code"), Some(200), "{all}");
    assert_eq!(
        string_attr(a, "fedbroker.request_id").as_deref(),
        Some("otel-test-1"),
        "{all}"
    );
    assert_eq!(
        string_attr(a, "fedbroker.outcome").as_deref(),
        Some("allow"),
        "{all}"
    );
    assert_eq!(
        string_attr(a, "fedbroker.issuer").as_deref(),
        Some("k8s"),
        "{all}"
    );
    assert_eq!(
        string_attr(a, "fedbroker.rule").as_deref(),
        Some("ci-deployer"),
        "{all}"
    );

    for stage in ["verify", "replay", "sign"] {
        let (_, span) = spans
            .iter()
            .find(|(_, s)| s.name == stage && s.trace_id == request.trace_id)
            .unwrap_or_else(|| panic!("no {stage} span in the request's trace:\n{all}"));
        assert_eq!(
            span.parent_span_id, request.span_id,
            "{stage} is the request's child:\n{all}"
        );
    }
    let (_, verify) = spans
        .iter()
        .find(|(_, s)| s.name == "verify" && s.trace_id == request.trace_id)
        .expect("verify span");
    assert_eq!(
        string_attr(&verify.attributes, "fedbroker.issuer").as_deref(),
        Some("k8s"),
        "{all}"
    );

    let (_, denied) = spans
        .iter()
        .find(|(_, s)| string_attr(&s.attributes, "fedbroker.request_id").as_deref() == Some("otel-test-2"))
        .unwrap_or_else(|| panic!("no span for the refused request:\n{all}"));
    assert_eq!(hex(&denied.trace_id), refused_trace, "{all}");
    assert_eq!(
        string_attr(&denied.attributes, "fedbroker.outcome").as_deref(),
        Some("deny"),
        "{all}"
    );
    assert_eq!(
        int_attr(&denied.attributes, "http.response.status_code"),
        Some(400),
        "{all}"
    );
    assert_eq!(
        string_attr(&denied.attributes, "fedbroker.error").as_deref(),
        Some("invalid_request"),
        "{all}"
    );
    for id in ["otel-test-3", "otel-test-4"] {
        assert!(
            !spans
                .iter()
                .any(|(_, s)| string_attr(&s.attributes, "fedbroker.request_id").as_deref() == Some(id)),
            "{id} is not sampled:\n{all}"
        );
    }
    assert!(!spans.iter().any(|(_, s)| s.name == "GET /healthz"), "{all}");

    // What went over the wire: the configured header, and not a token or a claim value
    // (the subject token's signature, its subject, the issued token).
    let posts = collector.posts();
    assert!(!posts.is_empty());
    for (headers, body) in &posts {
        assert_eq!(
            headers.get("x-api-key").map(|v| v.as_bytes()),
            Some(&b"collector-key"[..])
        );
        let raw = String::from_utf8_lossy(body);
        let signature = subject_token.rsplit('.').next().expect("signature");
        for secret in [
            subject_token.as_str(),
            signature,
            DEFAULT_SUBJECT,
            issued.as_str(),
            "not-a-token",
        ] {
            assert!(!raw.contains(secret), "an export holds `{secret}`:\n{all}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_sent_and_the_variable_turns_traces_on() {
    let collector = Collector::start().await;
    let fake = FakeIssuer::start();
    // A `telemetry.traces` block without an endpoint is off (and the variable empty).
    let mut broker = Broker::builder()
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
        .start(&traced_config(&fake, "    sample_ratio: 1\n"))
        .await;
    let resp = exchange_with(
        &broker,
        &fake.mint(json!({})),
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
    )
    .await;
    assert_eq!(resp.status(), 200);
    // Past the batch delay (2 s would be enough; the exit below also flushes).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = broker.signal_and_wait("TERM").await;
    assert!(status.success(), "{status}");
    assert_eq!(
        collector.posts().len(),
        0,
        "nothing is exported without an endpoint"
    );

    // The standard variable alone turns traces on.
    let broker = Broker::builder()
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &collector.endpoint())
        .start(&config_with_rules(&fake, &default_rule()).render())
        .await;
    assert_eq!(broker.get("/healthz").await.status, 200);
    let spans = eventually(Duration::from_secs(10), "spans exported", || {
        let spans = collector.spans();
        async move { (!spans.is_empty()).then_some(spans) }
    })
    .await;
    let all = describe(&spans);
    let (service, health) = spans
        .iter()
        .find(|(_, s)| s.name == "GET /healthz")
        .unwrap_or_else(|| panic!("no GET /healthz span:\n{all}"));
    assert_eq!(service, "fedbroker", "the default service.name");
    // Without a traceparent the trace starts here (kept: sample_ratio defaults to 1).
    assert!(health.parent_span_id.is_empty(), "{all}");
    assert_eq!(health.trace_id.len(), 16, "{all}");
}

#[test]
fn check_refuses_a_bad_sample_ratio_and_a_non_http_endpoint() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = BrokerConfig::new()
        .issuer(fake.issuer_yaml("k8s"))
        .rules(default_rule())
        .top_level(
            "telemetry:\n  traces:\n    endpoint: grpc://otel-collector:4317\n    sample_ratio: 1.5\n    timeout: 0s\n",
        )
        .write_to(dir.path());
    let out = check_in(dir.path(), &config, false);
    assert_eq!(out.code, Some(1), "{}", out.all());
    for field in [
        "telemetry.traces.endpoint: must be an http:// or https:// URL",
        "telemetry.traces.sample_ratio: must be a number from 0 to 1",
        "telemetry.traces.timeout",
    ] {
        assert!(out.stdout.contains(field), "missing `{field}` in:\n{}", out.all());
    }

    // Unknown keys are refused, as everywhere in the file.
    let config = BrokerConfig::new()
        .issuer(fake.issuer_yaml("k8s"))
        .rules(default_rule())
        .top_level(
            "telemetry:\n  traces:\n    endpoint: http://127.0.0.1:4318/v1/traces\n    protocol: grpc\n",
        )
        .write_to(dir.path());
    let out = check_in(dir.path(), &config, false);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stdout.contains("telemetry.traces"), "{}", out.all());
    assert!(out.stdout.contains("protocol"), "{}", out.all());
}
