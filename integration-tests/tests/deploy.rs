//! The deployment files under `deploy/` (docs/deployment.md): the Helm chart rendered by
//! Helm's own engine and linted by Helm's linter, its default rendering kept as the plain
//! manifests in `deploy/kubernetes/`, every manifest validated against the Kubernetes
//! schemas, the broker configuration the chart writes accepted by the real `fedbroker
//! check` and served by the real broker (against a real `redis-server`, with a key the
//! init container's own command copied), the pods' hardening, the Dockerfile (hadolint, and agreement with the chart),
//! and the systemd unit (`systemd-analyze verify` and `security`, the sysusers and
//! tmpfiles snippets applied to a scratch root). Tools: `integration_tests::deploy_tools`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use integration_tests::broker::fedbroker_bin;
use integration_tests::deploy_tools::{PyTools, run_tool, system_tool, workspace};
use integration_tests::redis_server::{RedisServer, redis_available};
use integration_tests::{Broker, eventually, run_cli_in};
use serde_json::{Value, json};
use yaml_rust2::{Yaml, YamlLoader};

/// The Kubernetes versions every manifest is validated against: the oldest the chart
/// supports (Chart.yaml `kubeVersion`) and the newest kubernetes-validate knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

/// Set to `1` to rewrite `deploy/kubernetes/` from the chart instead of comparing.
const UPDATE_ENV: &str = "FEDBROKER_UPDATE_MANIFESTS";

const MANIFEST_HEADER: &str = "\
# Rendered from deploy/helm/fedbroker with its default values (release name fedbroker).
# Do not edit: change the chart, then regenerate with
#   FEDBROKER_UPDATE_MANIFESTS=1 cargo test -p integration-tests --test main deploy::chart_renders_to_the_shipped_manifests
";

/// A set of values the chart is rendered with.
struct Variant {
    name: &'static str,
    values: Value,
    /// Whether `fedbroker check` runs on the configuration the chart writes for it.
    checked_by_broker: bool,
}

fn variants() -> Vec<Variant> {
    vec![
        Variant {
            name: "defaults",
            values: json!({}),
            checked_by_broker: true,
        },
        Variant {
            name: "external Redis with a password",
            values: json!({
                "redis": {
                    "bundled": false,
                    "url": "rediss://fedbroker:${REDIS_PASSWORD}@redis.internal:6380/0",
                    "passwordSecret": {"name": "fedbroker-redis"},
                },
                "networkPolicy": {"externalRedis": {"peers": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "port": 6380}},
            }),
            checked_by_broker: true,
        },
        Variant {
            name: "bundled Redis with a password",
            values: json!({"redis": {"passwordSecret": {"name": "fedbroker-redis"}}}),
            checked_by_broker: true,
        },
        Variant {
            name: "keys from the Secrets Store CSI driver",
            values: json!({"keys": {"source": "csi"}}),
            checked_by_broker: true,
        },
        Variant {
            name: "one replica, no PodDisruptionBudget, no NetworkPolicy",
            values: json!({"replicaCount": 1, "podDisruptionBudget": {"enabled": false}, "networkPolicy": {"enabled": false}}),
            checked_by_broker: true,
        },
        Variant {
            name: "issuers, rules and more config",
            values: json!({
                "config": {
                    "server": {"clock_skew": "30s", "max_issued_lifetime": "1h"},
                    "signing": {"algorithm": "RS256", "active_kid": "3kQ8dT0m8d2O7r1Yw5YbqkGQ2Yw3kQ8dT0m8d2O7r1Y"},
                    "replay": {"on_unavailable": "fail_closed", "command_timeout": "500ms"},
                    "issuers": [{
                        "name": "github-actions",
                        "kind": "github-actions",
                        "audiences": ["https://broker.example.com"],
                    }],
                    "rules": [{
                        "name": "gha-main-deploys-to-aws",
                        "match": {
                            "issuer": "github-actions",
                            "subject": "repo:acme/api:ref:refs/heads/main",
                            "audiences": ["sts.amazonaws.com"],
                        },
                        "issue": {"subject": "gha:{claims.repository}", "lifetime": "15m"},
                    }],
                    "audit": {"path": "/dev/stderr"},
                },
                "extraEnv": [{"name": "EXTRA", "value": "1"}],
            }),
            checked_by_broker: true,
        },
        Variant {
            name: "ServiceMonitor",
            values: json!({"serviceMonitor": {"enabled": true}}),
            checked_by_broker: true,
        },
        Variant {
            name: "TLS on the broker",
            values: json!({"tls": {"enabled": true}}),
            checked_by_broker: true,
        },
        Variant {
            name: "keys in AWS KMS",
            values: json!({
                "keys": {"source": "kms"},
                "config": {"signing": {"algorithm": "ES256", "kms": {
                    "provider": "aws",
                    "keys": ["alias/fedbroker-signing"],
                    "region": "eu-west-1",
                }}},
                "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/fedbroker"}},
            }),
            checked_by_broker: true,
        },
    ]
}

fn yaml_docs(text: &str, what: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(text)
        .unwrap_or_else(|e| panic!("{what} is not YAML: {e}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn all_docs(rendered: &BTreeMap<String, String>) -> Vec<Yaml> {
    rendered
        .iter()
        .flat_map(|(name, text)| yaml_docs(text, name))
        .collect()
}

fn find<'a>(docs: &'a [Yaml], kind: &str, name: &str) -> Option<&'a Yaml> {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
}

fn string_map(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
        .collect()
}

/// Every pair of `selector` is in `labels`, and `selector` is not empty.
fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    let selector = string_map(selector);
    let labels = string_map(labels);
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The broker configuration the chart's ConfigMap holds.
fn broker_config(docs: &[Yaml]) -> String {
    let config_map = find(docs, "ConfigMap", "fedbroker-config").expect("a ConfigMap fedbroker-config");
    config_map["data"]["config.yaml"]
        .as_str()
        .expect("the ConfigMap holds config.yaml")
        .to_string()
}

fn render_or_panic(tools: &PyTools, variant: &Variant) -> BTreeMap<String, String> {
    tools
        .render(&variant.values)
        .unwrap_or_else(|e| panic!("the chart does not render with {}: {e}", variant.name))
}

#[test]
fn chart_renders_to_the_shipped_manifests() {
    let Some(tools) = PyTools::find() else { return };
    let rendered = render_or_panic(&tools, &variants()[0]);
    let dir = workspace().join("deploy/kubernetes");
    let expected: BTreeMap<String, String> = rendered
        .iter()
        .map(|(name, text)| (name.clone(), format!("{MANIFEST_HEADER}{text}")))
        .collect();
    if std::env::var(UPDATE_ENV).as_deref() == Ok("1") {
        for entry in fs::read_dir(&dir).expect("deploy/kubernetes") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                fs::remove_file(&path).expect("remove an old manifest");
            }
        }
        for (name, text) in &expected {
            fs::write(dir.join(name), text).expect("write a manifest");
        }
        return;
    }
    let shipped: BTreeMap<String, String> = fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, fs::read_to_string(&p).expect("read a manifest"))
        })
        .collect();
    assert_eq!(
        shipped.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "deploy/kubernetes/ does not hold one file per template the chart renders; regenerate with {UPDATE_ENV}=1"
    );
    for (name, text) in &expected {
        assert_eq!(
            &shipped[name], text,
            "deploy/kubernetes/{name} differs from the chart rendered with its defaults; regenerate with {UPDATE_ENV}=1"
        );
    }
}

#[test]
fn chart_passes_helm_lint_strict() {
    let Some(tools) = PyTools::find() else { return };
    for variant in variants() {
        for version in KUBERNETES_VERSIONS {
            let findings: Vec<String> = tools
                .lint(&variant.values, &format!("v{version}"))
                .into_iter()
                // Severity 1 is information (Chart.yaml has no icon).
                .filter(|(severity, _)| *severity != 1)
                .map(|(_, message)| message)
                .collect();
            assert!(
                findings.is_empty(),
                "helm lint --strict of the chart with {} for Kubernetes {version}:\n{}",
                variant.name,
                findings.join("\n")
            );
        }
    }
}

/// kubernetes-validate on `files`, for each pinned version: passes only when every
/// resource validated and nothing was warned about.
fn assert_valid_for_kubernetes(tools: &PyTools, files: &[PathBuf], what: &str) {
    assert!(!files.is_empty(), "nothing to validate for {what}");
    for version in KUBERNETES_VERSIONS {
        let out = tools.kubernetes_validate(version, files);
        let complaints: Vec<&str> = out
            .stdout
            .lines()
            .chain(out.stderr.lines())
            .filter(|l| !l.starts_with("INFO ") && !l.trim().is_empty())
            .collect();
        assert!(
            out.code == Some(0) && complaints.is_empty(),
            "kubernetes-validate --strict -k {version} refused {what}:\n{}",
            out.all()
        );
        let passed = out
            .stdout
            .lines()
            .filter(|l| l.contains(" passed for resource "))
            .count();
        assert!(
            passed > 0,
            "kubernetes-validate validated no resource of {what}:\n{}",
            out.all()
        );
    }
}

#[test]
fn shipped_manifests_pass_kubernetes_validate() {
    let Some(tools) = PyTools::find() else { return };
    let mut files: Vec<PathBuf> = fs::read_dir(workspace().join("deploy/kubernetes"))
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_valid_for_kubernetes(&tools, &files, "deploy/kubernetes/*.yaml");
}

#[test]
fn kubernetes_validate_refuses_a_misspelt_field() {
    // The check above can fail: a field Kubernetes does not know is an error under --strict.
    let Some(tools) = PyTools::find() else { return };
    let rendered = render_or_panic(&tools, &variants()[0]);
    let bad = rendered["deployment.yaml"].replace("readOnlyRootFilesystem:", "readOnlyRootFilesytem:");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("deployment.yaml");
    fs::write(&file, bad).expect("write");
    let out = tools.kubernetes_validate(KUBERNETES_VERSIONS[0], &[file]);
    assert_ne!(out.code, Some(0), "a misspelt field passed:\n{}", out.all());
    assert!(out.all().contains("readOnlyRootFilesytem"), "{}", out.all());
}

#[test]
fn every_chart_variant_renders_manifests_kubernetes_and_the_broker_accept() {
    let Some(tools) = PyTools::find() else { return };
    for variant in variants() {
        let rendered = render_or_panic(&tools, &variant);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut files = Vec::new();
        for (name, text) in &rendered {
            let path = dir.path().join(name);
            fs::write(&path, text).expect("write a manifest");
            // A ServiceMonitor is a prometheus-operator CRD: kubernetes-validate has no
            // schema for it (checked by hand below).
            if name != "servicemonitor.yaml" {
                files.push(path);
            }
        }
        assert_valid_for_kubernetes(&tools, &files, variant.name);

        let docs = all_docs(&rendered);
        assert_pods_hardened(&docs, variant.name);
        assert_objects_agree(&docs, &variant);

        if variant.checked_by_broker {
            let config_dir = tempfile::tempdir().expect("tempdir");
            // `check` reads the TLS files: a certificate and key made here stand for the
            // Secret the chart mounts at /etc/fedbroker-tls.
            let tls_dir = config_dir.path().join("tls");
            fs::create_dir_all(&tls_dir).expect("tls dir");
            integration_tests::tls_issuer::make_ca(&tls_dir);
            integration_tests::tls_issuer::make_certificate(
                &tls_dir,
                "tls",
                "/CN=fedbroker",
                &["subjectAltName=DNS:fedbroker"],
            );
            fs::rename(tls_dir.join("tls.pem"), tls_dir.join("tls.crt")).expect("rename");
            let config =
                broker_config(&docs).replace("/etc/fedbroker-tls/", &format!("{}/", tls_dir.display()));
            fs::write(config_dir.path().join("config.yaml"), config).expect("write config");
            let out = run_cli_in(
                config_dir.path(),
                &["check", "--config", "config.yaml"],
                &[("REDIS_PASSWORD", "correct-horse-battery-staple")],
            );
            assert_eq!(
                out.code,
                Some(0),
                "fedbroker check refused the configuration the chart writes with {}:\n{}\n{}",
                variant.name,
                broker_config(&docs),
                out.all()
            );
        }
    }
}

#[test]
fn the_chart_refuses_values_it_cannot_serve() {
    let Some(tools) = PyTools::find() else { return };
    for (values, expected) in [
        (
            json!({"redis": {"bundled": false}, "networkPolicy": {"externalRedis": {"peers": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}}}),
            "redis.url is required",
        ),
        (
            json!({"keys": {"source": "vault"}}),
            "keys.source must be secret, csi or kms",
        ),
        (
            json!({"keys": {"source": "kms"}}),
            "keys.source kms needs config.signing.kms",
        ),
        (
            json!({"config": {"signing": {"kms": {"provider": "aws", "keys": ["alias/k"]}}}}),
            "config.signing.kms needs keys.source kms",
        ),
        (
            json!({"redis": {"bundled": false, "url": "redis://r:6379"}}),
            "networkPolicy.externalRedis.peers is required",
        ),
    ] {
        match tools.render(&values) {
            Ok(_) => panic!("the chart rendered with {values}"),
            Err(e) => assert!(
                e.contains(expected),
                "rendering {values}: expected {expected:?} in:\n{e}"
            ),
        }
    }
}

fn is_true(y: &Yaml) -> bool {
    y.as_bool() == Some(true)
}

fn is_false(y: &Yaml) -> bool {
    y.as_bool() == Some(false)
}

/// Every pod runs as a non-root user with no service account token, the runtime's
/// seccomp profile, and containers without privilege escalation, capabilities or a
/// writable root filesystem, each with resource requests and limits.
fn assert_pods_hardened(docs: &[Yaml], what: &str) {
    let deployments: Vec<&Yaml> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("Deployment"))
        .collect();
    assert!(!deployments.is_empty(), "{what}: no Deployment");
    for deployment in deployments {
        let name = deployment["metadata"]["name"].as_str().unwrap_or("?");
        let pod = &deployment["spec"]["template"]["spec"];
        let at = format!("{what}: Deployment {name}");
        assert!(
            is_false(&pod["automountServiceAccountToken"]),
            "{at}: mounts a service account token"
        );
        assert!(
            is_true(&pod["securityContext"]["runAsNonRoot"]),
            "{at}: runAsNonRoot"
        );
        assert!(
            pod["securityContext"]["runAsUser"]
                .as_i64()
                .is_some_and(|u| u > 0),
            "{at}: runAsUser must be a non-root uid"
        );
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault"),
            "{at}: seccomp"
        );
        let containers = pod["containers"].as_vec().into_iter().flatten();
        let init = pod["initContainers"].as_vec().into_iter().flatten();
        for container in containers.chain(init) {
            let cname = container["name"].as_str().unwrap_or("?");
            let sc = &container["securityContext"];
            let at = format!("{at}, container {cname}");
            assert!(
                is_false(&sc["allowPrivilegeEscalation"]),
                "{at}: allowPrivilegeEscalation"
            );
            assert!(
                is_true(&sc["readOnlyRootFilesystem"]),
                "{at}: readOnlyRootFilesystem"
            );
            assert!(is_true(&sc["runAsNonRoot"]), "{at}: runAsNonRoot");
            assert!(
                is_false(&sc["privileged"]) || sc["privileged"].is_badvalue(),
                "{at}: privileged"
            );
            assert_eq!(
                sc["capabilities"]["drop"]
                    .as_vec()
                    .map(|v| v.iter().filter_map(Yaml::as_str).collect::<Vec<_>>()),
                Some(vec!["ALL"]),
                "{at}: capabilities must drop ALL"
            );
            assert!(sc["capabilities"]["add"].is_badvalue(), "{at}: adds capabilities");
            for key in ["cpu", "memory"] {
                assert!(
                    !container["resources"]["requests"][key].is_badvalue(),
                    "{at}: requests.{key}"
                );
                assert!(
                    !container["resources"]["limits"][key].is_badvalue(),
                    "{at}: limits.{key}"
                );
            }
        }
    }
}

/// The objects fit together: what the ConfigMap's configuration names is what the pod
/// mounts and exposes, the probes hit the broker's health endpoints, and every selector
/// picks the broker's pods.
fn assert_objects_agree(docs: &[Yaml], variant: &Variant) {
    let what = variant.name;
    let config_text = broker_config(docs);
    let config = &yaml_docs(&config_text, "the broker's config.yaml")[0];
    let deployment = find(docs, "Deployment", "fedbroker").expect("Deployment fedbroker");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let pod = &deployment["spec"]["template"]["spec"];
    let broker = pod["containers"]
        .as_vec()
        .into_iter()
        .flatten()
        .find(|c| c["name"].as_str() == Some("fedbroker"))
        .expect("container fedbroker");

    assert_eq!(
        deployment["spec"]["replicas"].as_i64(),
        config["replay"]["replicas"].as_i64(),
        "{what}: replay.replicas must be the Deployment's replicas"
    );
    assert_eq!(
        config["replay"]["backend"].as_str(),
        Some("redis"),
        "{what}: replicas share Redis"
    );

    let listen = config["server"]["listen"].as_str().expect("server.listen");
    let port: i64 = listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("listen port");
    let http = broker["ports"]
        .as_vec()
        .into_iter()
        .flatten()
        .find(|p| p["name"].as_str() == Some("http"))
        .expect("port http");
    assert_eq!(
        http["containerPort"].as_i64(),
        Some(port),
        "{what}: containerPort is server.listen's port"
    );
    let scheme = if variant.values["tls"]["enabled"] == json!(true) {
        "HTTPS"
    } else {
        "HTTP"
    };
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &broker[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{what}: {probe}");
        assert_eq!(get["port"].as_str(), Some("http"), "{what}: {probe} port");
        assert_eq!(get["scheme"].as_str(), Some(scheme), "{what}: {probe} scheme");
    }

    let mounts: Vec<&Yaml> = broker["volumeMounts"].as_vec().into_iter().flatten().collect();
    let kms = variant.values["keys"]["source"] == json!("kms");
    if kms {
        // No key anywhere in the pod: no key directory, no key volume, no copy.
        assert!(
            config["signing"]["key_dir"].is_badvalue(),
            "{what}: signing.key_dir with KMS"
        );
        assert!(
            config["signing"]["kms"]["keys"].as_vec().is_some(),
            "{what}: signing.kms"
        );
        assert!(
            pod["initContainers"].is_badvalue(),
            "{what}: an init container with KMS"
        );
        let volumes: Vec<&str> = pod["volumes"]
            .as_vec()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert!(
            !volumes.contains(&"keys") && !volumes.contains(&"signing-source"),
            "{what}: key volumes with KMS: {volumes:?}"
        );
    } else {
        let key_dir = config["signing"]["key_dir"].as_str().expect("signing.key_dir");
        let keys = mounts
            .iter()
            .find(|m| m["mountPath"].as_str() == Some(key_dir))
            .unwrap_or_else(|| panic!("{what}: nothing mounted at signing.key_dir {key_dir}"));
        assert!(
            is_true(&keys["readOnly"]),
            "{what}: the key directory must be mounted read-only"
        );
    }
    for mount in &mounts {
        assert!(
            is_true(&mount["readOnly"]),
            "{what}: the broker writes to no volume: {mount:?}"
        );
    }
    let config_mount = mounts
        .iter()
        .find(|m| m["name"].as_str() == Some("config"))
        .expect("config mount");
    assert_eq!(
        format!("{}/config.yaml", config_mount["mountPath"].as_str().unwrap_or("")),
        image_config_path(),
        "{what}: the image's ENTRYPOINT reads the config where the chart mounts it"
    );
    if variant.values["tls"]["enabled"] == json!(true) {
        let cert = config["server"]["tls"]["cert_file"]
            .as_str()
            .expect("server.tls.cert_file");
        assert!(
            mounts
                .iter()
                .any(|m| m["mountPath"].as_str().is_some_and(|p| cert.starts_with(p))),
            "{what}: the certificate file is not in a mounted volume"
        );
    }
    // The keys' source: copied by the init container from the Secret or CSI volume.
    let sources: Vec<&Yaml> = pod["volumes"].as_vec().into_iter().flatten().collect();
    let source = sources
        .iter()
        .find(|v| v["name"].as_str() == Some("signing-source"));
    if kms {
        assert!(source.is_none(), "{what}");
    } else if variant.values["keys"]["source"] == json!("csi") {
        let source = source.expect("volume signing-source");
        assert_eq!(
            source["csi"]["driver"].as_str(),
            Some("secrets-store.csi.k8s.io"),
            "{what}"
        );
        assert!(
            is_true(&source["csi"]["readOnly"]),
            "{what}: CSI volume read-only"
        );
    } else {
        let source = source.expect("volume signing-source");
        assert!(
            source["secret"]["secretName"].as_str().is_some(),
            "{what}: keys from a Secret"
        );
    }

    let service = find(docs, "Service", "fedbroker").expect("Service fedbroker");
    assert!(
        selects(&service["spec"]["selector"], pod_labels),
        "{what}: the Service selects the pods"
    );
    let account = find(docs, "ServiceAccount", "fedbroker").expect("ServiceAccount");
    assert!(
        is_false(&account["automountServiceAccountToken"]),
        "{what}: ServiceAccount token"
    );
    assert_eq!(pod["serviceAccountName"].as_str(), Some("fedbroker"), "{what}");

    match find(docs, "PodDisruptionBudget", "fedbroker") {
        Some(pdb) => {
            assert!(
                selects(&pdb["spec"]["selector"]["matchLabels"], pod_labels),
                "{what}: PDB selector"
            );
            assert!(
                pdb["spec"]["minAvailable"].as_i64().unwrap_or(0) >= 1,
                "{what}: the PDB keeps a broker up"
            );
        }
        None => assert_eq!(
            variant.values["podDisruptionBudget"]["enabled"],
            json!(false),
            "{what}: no PDB"
        ),
    }
    match find(docs, "NetworkPolicy", "fedbroker") {
        Some(policy) => {
            assert!(
                selects(&policy["spec"]["podSelector"]["matchLabels"], pod_labels),
                "{what}: policy"
            );
            let egress_ports: Vec<(i64, String)> = policy["spec"]["egress"]
                .as_vec()
                .into_iter()
                .flatten()
                .flat_map(|rule| rule["ports"].as_vec().into_iter().flatten())
                .filter_map(|p| Some((p["port"].as_i64()?, p["protocol"].as_str()?.to_string())))
                .collect();
            let redis_port = if variant.values["redis"]["bundled"] == json!(false) {
                6380
            } else {
                6379
            };
            for needed in [(53, "UDP"), (53, "TCP"), (443, "TCP"), (redis_port, "TCP")] {
                assert!(
                    egress_ports.contains(&(needed.0, needed.1.to_string())),
                    "{what}: the NetworkPolicy does not let the broker reach port {}/{}: {egress_ports:?}",
                    needed.0,
                    needed.1
                );
            }
            let ingress_ports: Vec<&str> = policy["spec"]["ingress"]
                .as_vec()
                .into_iter()
                .flatten()
                .flat_map(|rule| rule["ports"].as_vec().into_iter().flatten())
                .filter_map(|p| p["port"].as_str())
                .collect();
            assert_eq!(
                ingress_ports,
                vec!["http"],
                "{what}: ingress only to the broker's port"
            );
        }
        None => assert_eq!(
            variant.values["networkPolicy"]["enabled"],
            json!(false),
            "{what}: no policy"
        ),
    }
    if variant.values["redis"]["bundled"] != json!(false) {
        let redis = find(docs, "Deployment", "fedbroker-redis").expect("the bundled Redis");
        let redis_service = find(docs, "Service", "fedbroker-redis").expect("its Service");
        assert!(
            selects(
                &redis_service["spec"]["selector"],
                &redis["spec"]["template"]["metadata"]["labels"]
            ),
            "{what}: the Redis Service selects the Redis pod"
        );
        let url = config["replay"]["redis_url"].as_str().expect("redis_url");
        assert!(
            url.contains("@fedbroker-redis:6379/") || url.starts_with("redis://fedbroker-redis:6379/"),
            "{what}: {url}"
        );
    }
    if let Some(monitor) = find(docs, "ServiceMonitor", "fedbroker") {
        assert!(
            selects(
                &monitor["spec"]["selector"]["matchLabels"],
                &service["metadata"]["labels"]
            ),
            "{what}: the ServiceMonitor selects the Service"
        );
        let endpoint = &monitor["spec"]["endpoints"][0];
        assert_eq!(
            endpoint["port"].as_str(),
            Some("http"),
            "{what}: ServiceMonitor port"
        );
        assert_eq!(
            endpoint["path"].as_str(),
            Some("/metrics"),
            "{what}: ServiceMonitor path"
        );
    }
}

fn dockerfile() -> PathBuf {
    workspace().join("deploy/container/Dockerfile")
}

/// The config file the image's ENTRYPOINT serves.
fn image_config_path() -> String {
    let text = fs::read_to_string(dockerfile()).expect("Dockerfile");
    let entrypoint = text
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    let argv: Vec<String> = serde_json::from_str(entrypoint).expect("ENTRYPOINT in exec form");
    assert_eq!(
        argv[..3],
        ["/fedbroker", "serve", "--config"],
        "ENTRYPOINT {argv:?}"
    );
    argv[3].clone()
}

#[test]
fn dockerfile_passes_hadolint() {
    let Some(tools) = PyTools::find() else { return };
    let out = tools.hadolint(&dockerfile());
    assert!(
        out.code == Some(0) && out.stdout.trim().is_empty(),
        "hadolint deploy/container/Dockerfile:\n{}",
        out.all()
    );
    // hadolint can fail: a shell-form ENTRYPOINT and an unpinned base image are findings.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("Dockerfile");
    fs::write(&bad, "FROM debian:latest\nENTRYPOINT /fedbroker serve\n").expect("write");
    let out = tools.hadolint(&bad);
    assert!(
        out.code != Some(0) && out.stdout.contains("DL3007"),
        "{}",
        out.all()
    );
}

#[test]
fn image_runs_as_the_chart_expects() {
    let text = fs::read_to_string(dockerfile()).expect("Dockerfile");
    let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage: {stages:?}");
    assert!(
        stages[1].contains("distroless") && stages[1].ends_with(":nonroot"),
        "{}",
        stages[1]
    );
    assert!(
        text.contains("cargo build --release --locked -p broker"),
        "the release build of docs/operations.md"
    );
    let user = text.lines().find_map(|l| l.strip_prefix("USER ")).expect("USER");
    assert_eq!(user, "65532:65532", "the chart's runAsUser and runAsGroup");
    let exposed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .collect();
    assert!(
        exposed.contains(&"8080"),
        "EXPOSE 8080 (server.listen in the chart): {exposed:?}"
    );
    assert_eq!(image_config_path(), "/etc/fedbroker/config.yaml");

    // The build context keeps every workspace member and leaves out the build output.
    let ignore = fs::read_to_string(workspace().join(".dockerignore")).expect(".dockerignore");
    let ignored: Vec<&str> = ignore
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(
        ignored.contains(&"**/target") && ignored.contains(&".git"),
        "{ignored:?}"
    );
    let manifest = fs::read_to_string(workspace().join("Cargo.toml")).expect("Cargo.toml");
    let members = manifest
        .lines()
        .find_map(|l| l.strip_prefix("members = "))
        .expect("workspace members");
    for member in members.trim_matches(|c| c == '[' || c == ']').split(',') {
        let member = member.trim().trim_matches('"');
        let top = member.split('/').next().unwrap_or(member);
        assert!(
            !ignored.contains(&member) && !ignored.contains(&top),
            ".dockerignore drops member {member}"
        );
    }
}

/// The shipped unit with its `/usr/local/bin/fedbroker` replaced by the binary under
/// test, in `dir` (systemd-analyze verify checks that ExecStart's program exists).
fn unit_with_built_binary(dir: &Path, unit: &str) -> PathBuf {
    let text = unit.replace("/usr/local/bin/fedbroker", &fedbroker_bin().to_string_lossy());
    let path = dir.join("fedbroker.service");
    fs::write(&path, text).expect("write the unit");
    path
}

fn shipped_unit() -> String {
    fs::read_to_string(workspace().join("deploy/systemd/fedbroker.service")).expect("fedbroker.service")
}

/// `systemd-analyze verify` of `unit`: its output when it exits non-zero or says
/// anything at all (an unknown key or a value it cannot parse is only a warning).
fn verify_complaints(analyze: &Path, unit: &str) -> Option<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = unit_with_built_binary(dir.path(), unit);
    let out = run_tool(analyze, &["verify", "--man=no", &path.to_string_lossy()]);
    (out.code != Some(0) || !out.stdout.trim().is_empty() || !out.stderr.trim().is_empty()).then(|| out.all())
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = system_tool("systemd-analyze", "systemd") else {
        return;
    };
    assert!(
        shipped_unit()
            .contains("\nExecStart=/usr/local/bin/fedbroker serve --config /etc/fedbroker/config.yaml\n"),
        "the unit serves /etc/fedbroker/config.yaml with /usr/local/bin/fedbroker"
    );
    if let Some(complaints) = verify_complaints(&analyze, &shipped_unit()) {
        panic!("systemd-analyze verify deploy/systemd/fedbroker.service:\n{complaints}");
    }
    // ... and it can fail: a misspelt option, a bad value, a missing program.
    for (from, to) in [
        ("ProtectSystem=strict", "ProtectSytem=strict"),
        (
            "RestrictAddressFamilies=AF_INET",
            "RestrictAddressFamilies=AF_INTE",
        ),
        (
            "ExecStart=/usr/local/bin/fedbroker",
            "ExecStart=/nonexistent/fedbroker",
        ),
    ] {
        let broken = shipped_unit().replacen(from, to, 1);
        assert!(
            verify_complaints(&analyze, &broken).is_some(),
            "verify passed with {to}"
        );
    }
}

#[test]
fn systemd_unit_exposure_is_low() {
    let Some(analyze) = system_tool("systemd-analyze", "systemd") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = unit_with_built_binary(dir.path(), &shipped_unit());
    // --offline reads the unit file alone (no running systemd); --threshold=15 fails
    // above an overall exposure of 1.5 out of 10 (docs/deployment.md gives the figure).
    let out = run_tool(
        &analyze,
        &[
            "security",
            "--offline=yes",
            "--threshold=15",
            "--no-pager",
            &path.to_string_lossy(),
        ],
    );
    let level = out
        .all()
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        out.code == Some(0) && !level.is_empty(),
        "systemd-analyze security:\n{}",
        out.all()
    );
    eprintln!("{level}");
}

#[test]
fn sysusers_and_tmpfiles_snippets_make_the_user_and_the_config_directory() {
    let Some(sysusers) = system_tool("systemd-sysusers", "systemd") else {
        return;
    };
    let Some(tmpfiles) = system_tool("systemd-tmpfiles", "systemd") else {
        return;
    };
    let root = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(root.path().join("etc")).expect("etc");
    let root_arg = format!("--root={}", root.path().display());
    let snippets = workspace().join("deploy/systemd");
    let out = run_tool(
        &sysusers,
        &[&root_arg, &snippets.join("fedbroker.sysusers").to_string_lossy()],
    );
    assert_eq!(out.code, Some(0), "systemd-sysusers:\n{}", out.all());
    let passwd = fs::read_to_string(root.path().join("etc/passwd")).expect("passwd");
    let entry: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("fedbroker:"))
        .expect("a fedbroker user")
        .split(':')
        .collect();
    assert_eq!(entry[5], "/var/lib/fedbroker", "home: the unit's StateDirectory");
    assert!(entry[6].ends_with("nologin"), "no login shell: {}", entry[6]);
    assert!(
        shipped_unit().contains("\nUser=fedbroker\n"),
        "the unit runs as that user"
    );
    let group = fs::read_to_string(root.path().join("etc/group")).expect("group");
    let gid: u32 = group
        .lines()
        .find(|l| l.starts_with("fedbroker:"))
        .and_then(|l| l.split(':').nth(2)?.parse().ok())
        .expect("a fedbroker group");

    if fs::metadata(root.path()).expect("tempdir").uid() != 0 {
        eprintln!(
            "not root: systemd-tmpfiles cannot give /etc/fedbroker its owner; its check runs as root only (as in CI)"
        );
        return;
    }
    let out = run_tool(
        &tmpfiles,
        &[
            &root_arg,
            "--create",
            &snippets.join("fedbroker.tmpfiles").to_string_lossy(),
        ],
    );
    assert_eq!(out.code, Some(0), "systemd-tmpfiles --create:\n{}", out.all());
    let meta = fs::metadata(root.path().join("etc/fedbroker")).expect("/etc/fedbroker made");
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o7777, 0o750, "/etc/fedbroker mode");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (0, gid),
        "/etc/fedbroker is root:fedbroker"
    );
}

/// `config` with `from` replaced by `to`; panics when `from` is not in it.
fn replaced(config: &str, from: &str, to: &str) -> String {
    assert!(config.contains(from), "{from:?} is not in:\n{config}");
    config.replace(from, to)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_config_serves_with_the_keys_its_init_container_copies() {
    let Some(tools) = PyTools::find() else { return };
    if !redis_available() {
        return;
    }
    let rendered = render_or_panic(&tools, &variants()[0]);
    let docs = all_docs(&rendered);
    let config = broker_config(&docs);
    let deployment = find(&docs, "Deployment", "fedbroker").expect("Deployment fedbroker");
    let init = &deployment["spec"]["template"]["spec"]["initContainers"][0];
    let command: Vec<&str> = init["command"]
        .as_vec()
        .expect("command")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(
        command[..2],
        ["sh", "-c"],
        "the init container runs a shell command: {command:?}"
    );
    let mount_of = |volume: &str| {
        init["volumeMounts"]
            .as_vec()
            .into_iter()
            .flatten()
            .find(|m| m["name"].as_str() == Some(volume))
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("the init container mounts {volume}"))
            .to_string()
    };
    let (source_mount, keys_mount) = (mount_of("signing-source"), mount_of("keys"));

    // The Secret volume as the kubelet leaves it with fsGroup: key files mode 0440.
    let root = tempfile::tempdir().expect("tempdir");
    let source = root.path().join("signing-source");
    let keys = root.path().join("keys");
    let scratch = root.path().join("scratch");
    for dir in [&source, &keys, &scratch] {
        fs::create_dir(dir).expect("mkdir");
    }
    // An emptyDir is world-writable (the broker only warns about that).
    fs::set_permissions(&keys, fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = run_cli_in(
        root.path(),
        &[
            "keys",
            "generate",
            "--dir",
            &scratch.to_string_lossy(),
            "--algorithm",
            "ES256",
        ],
        &[],
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    let generated = PathBuf::from(out.stdout.trim());
    let kid = generated
        .file_stem()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let secret_file = source.join(generated.file_name().expect("name"));
    fs::copy(&generated, &secret_file).expect("copy");
    fs::set_permissions(&secret_file, fs::Permissions::from_mode(0o440)).expect("chmod");

    // Served from the Secret volume directly, the key is refused.
    let local = |key_dir: &Path, redis_url: &str| {
        let text = replaced(&config, "0.0.0.0:8080", "127.0.0.1:@PORT@");
        let text = replaced(&text, "https://broker.example.com", "http://127.0.0.1:@PORT@");
        let text = replaced(&text, "redis://fedbroker-redis:6379/0", redis_url);
        replaced(&text, "/var/lib/fedbroker/keys", &key_dir.to_string_lossy())
    };
    let direct = root.path().join("direct.yaml");
    fs::write(
        &direct,
        local(&source, "redis://127.0.0.1:1").replace("@PORT@", "0"),
    )
    .expect("write");
    let out = run_cli_in(
        root.path(),
        &["serve", "--config", &direct.to_string_lossy()],
        &[],
    );
    assert!(
        out.code.is_some_and(|c| c != 0) && out.stderr.contains("too open"),
        "the broker served keys mode 0440:\n{}",
        out.all()
    );

    // The init container's own command, with the pod's paths mapped into the tempdir.
    let script = command[2]
        .replace(&source_mount, &source.to_string_lossy())
        .replace(&keys_mount, &keys.to_string_lossy());
    let out = run_tool(Path::new("sh"), &["-c", &script]);
    assert_eq!(
        out.code,
        Some(0),
        "the init container's command: {script}\n{}",
        out.all()
    );
    let copied = keys.join(generated.file_name().expect("name"));
    assert_eq!(fs::metadata(&copied).expect("copied key").mode() & 0o777, 0o600);

    // The chart's configuration, its cluster addresses made local, serves with them.
    let redis = RedisServer::start();
    let broker = Broker::builder().start(&local(&keys, &redis.url())).await;
    let ready = eventually(Duration::from_secs(15), "/readyz 200", || async {
        let reply = broker.get("/readyz").await;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert_eq!(
        ready.json["signing_key"].as_str(),
        Some(kid.as_str()),
        "{}",
        ready.text
    );
    let jwks = broker.get("/jwks.json").await;
    assert!(jwks.text.contains(&kid), "{}", jwks.text);
}
