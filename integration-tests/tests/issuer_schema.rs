//! One table of issuers, held against the three places that judge an issuer: the
//! broker's configuration (parsed in-process), the Terraform provider's plan-time check
//! and the issuer's JSON Schema in the admin API's OpenAPI document. They must agree on
//! every row: the same verdict, and the broker's and the provider's same messages.

use std::path::Path;

use serde_json::{Value, json};
use terraform_provider_fedbroker::issuer;

/// What every judge must say about a row.
enum Expect {
    Valid,
    /// Refused, the first problem at `field` with a message containing `words`.
    /// `shape`: the JSON Schema refuses it too (a type, an enum value, a missing field);
    /// otherwise the schema accepts its shape and only the checks refuse it.
    Invalid {
        field: &'static str,
        words: &'static str,
        shape: bool,
    },
}

use Expect::*;

fn table() -> Vec<(&'static str, Value, Expect)> {
    let aud = json!(["https://broker.example.com"]);
    vec![
        (
            "a platform kind with its default issuer",
            json!({"name": "gha", "kind": "github-actions", "audiences": aud}),
            Valid,
        ),
        (
            "a generic issuer with every optional field",
            json!({"name": "corp", "issuer": "https://idp.example.com", "audiences": aud,
                   "jwks_uri": "https://idp.example.com/keys", "algorithms": ["RS256", "ES256"],
                   "replay": "reusable", "max_token_lifetime": "1h", "allow_access_tokens": true}),
            Valid,
        ),
        (
            "a private address, allowed for development",
            json!({"name": "dev", "issuer": "http://127.0.0.1:9000", "audiences": aud,
                   "danger_allow_insecure": true}),
            Valid,
        ),
        (
            "a private address",
            json!({"name": "ci", "issuer": "https://10.0.0.7/realms/ci", "audiences": aud}),
            Invalid {
                field: "issuer",
                words: "names a loopback, private or link-local address",
                shape: false,
            },
        ),
        (
            "localhost",
            json!({"name": "ci", "issuer": "https://localhost:8443", "audiences": aud}),
            Invalid {
                field: "issuer",
                words: "names a loopback, private or link-local address",
                shape: false,
            },
        ),
        (
            "a private key URL",
            json!({"name": "corp", "issuer": "https://idp.example.com", "audiences": aud,
                   "jwks_uri": "https://192.168.1.10/keys"}),
            Invalid {
                field: "jwks_uri",
                words: "names a loopback, private or link-local address",
                shape: false,
            },
        ),
        (
            "http without the development opt-in",
            json!({"name": "corp", "issuer": "http://idp.example.com", "audiences": aud}),
            Invalid {
                field: "issuer",
                words: "must be https://",
                shape: false,
            },
        ),
        (
            "no audience",
            json!({"name": "corp", "issuer": "https://idp.example.com", "audiences": []}),
            Invalid {
                field: "audiences",
                words: "non-empty list of accepted `aud` values",
                shape: false,
            },
        ),
        (
            "an unknown kind",
            json!({"name": "corp", "issuer": "https://idp.example.com", "kind": "githab", "audiences": aud}),
            Invalid {
                field: "kind",
                words: "githab",
                shape: false,
            },
        ),
        (
            "a kind without a default issuer",
            json!({"name": "k8s", "kind": "kubernetes", "audiences": aud}),
            Invalid {
                field: "issuer",
                words: "required for kind kubernetes",
                shape: false,
            },
        ),
        (
            "an unknown replay value",
            json!({"name": "corp", "issuer": "https://idp.example.com", "audiences": aud, "replay": "twice"}),
            Invalid {
                field: "replay",
                words: "expected one_time or reusable",
                shape: true,
            },
        ),
        (
            "two key sources",
            json!({"name": "corp", "issuer": "https://idp.example.com", "audiences": aud,
                   "jwks_uri": "https://idp.example.com/keys", "jwks": {"keys": []}}),
            Invalid {
                field: "jwks_uri",
                words: "give at most one of",
                shape: false,
            },
        ),
        (
            "a key set without keys",
            json!({"name": "corp", "issuer": "https://idp.example.com", "audiences": aud, "jwks": {"keys": []}}),
            Invalid {
                field: "jwks",
                words: "key set",
                shape: false,
            },
        ),
        (
            "a symmetric algorithm",
            json!({"name": "corp", "issuer": "https://idp.example.com", "audiences": aud, "algorithms": ["HS256"]}),
            Invalid {
                field: "algorithms",
                words: "HS256",
                shape: false,
            },
        ),
        (
            "a lifetime that is not a duration",
            json!({"name": "corp", "issuer": "https://idp.example.com", "audiences": aud,
                   "max_token_lifetime": "forever"}),
            Invalid {
                field: "max_token_lifetime",
                words: "invalid duration",
                shape: false,
            },
        ),
        (
            "no audiences field (required for every kind but aws-iam)",
            json!({"name": "corp", "issuer": "https://idp.example.com"}),
            Invalid {
                field: "audiences",
                words: "non-empty list of accepted `aud` values",
                shape: false,
            },
        ),
        (
            "an aws-iam issuer",
            json!({"name": "aws", "kind": "aws-iam", "issuer": "aws-iam:prod",
                   "accounts": ["111122223333"], "server_id": "fedbroker.example.com",
                   "sts_endpoints": ["https://sts.amazonaws.com", "https://sts.us-east-1.amazonaws.com"],
                   "replay": "one_time"}),
            Valid,
        ),
        (
            "an aws-iam issuer with a local STS, allowed for development",
            json!({"name": "aws", "kind": "aws-iam", "issuer": "aws-iam:dev",
                   "accounts": ["111122223333"], "server_id": "dev",
                   "sts_endpoints": ["http://127.0.0.1:5000"], "danger_allow_insecure": true}),
            Valid,
        ),
        (
            "an aws-iam issuer with a local STS",
            json!({"name": "aws", "kind": "aws-iam", "issuer": "aws-iam:dev",
                   "accounts": ["111122223333"], "server_id": "dev",
                   "sts_endpoints": ["http://127.0.0.1:5000"]}),
            Invalid {
                field: "sts_endpoints",
                words: "must be https://",
                shape: false,
            },
        ),
        (
            "an aws-iam issuer named by a URL",
            json!({"name": "aws", "kind": "aws-iam", "issuer": "https://sts.amazonaws.com",
                   "accounts": ["111122223333"], "server_id": "s",
                   "sts_endpoints": ["https://sts.amazonaws.com"]}),
            Invalid {
                field: "issuer",
                words: "not a URL",
                shape: false,
            },
        ),
        (
            "an aws-iam issuer without accounts",
            json!({"name": "aws", "kind": "aws-iam", "issuer": "aws-iam:prod", "server_id": "s",
                   "sts_endpoints": ["https://sts.amazonaws.com"]}),
            Invalid {
                field: "accounts",
                words: "12-digit AWS account IDs",
                shape: false,
            },
        ),
        (
            "an aws-iam issuer with a short account ID",
            json!({"name": "aws", "kind": "aws-iam", "issuer": "aws-iam:prod", "server_id": "s",
                   "accounts": ["11112222333"], "sts_endpoints": ["https://sts.amazonaws.com"]}),
            Invalid {
                field: "accounts",
                words: "`11112222333` is not a 12-digit AWS account ID",
                shape: false,
            },
        ),
        (
            "an aws-iam issuer with token fields",
            json!({"name": "aws", "kind": "aws-iam", "issuer": "aws-iam:prod", "server_id": "s",
                   "accounts": ["111122223333"], "sts_endpoints": ["https://sts.amazonaws.com"],
                   "audiences": aud}),
            Invalid {
                field: "audiences",
                words: "not used by kind aws-iam",
                shape: false,
            },
        ),
        (
            "an aws-iam field on another kind",
            json!({"name": "gha", "kind": "github-actions", "audiences": aud, "server_id": "s"}),
            Invalid {
                field: "kind",
                words: "`server_id` is only for kind aws-iam",
                shape: false,
            },
        ),
        (
            "an empty name",
            json!({"name": "", "issuer": "https://idp.example.com", "audiences": aud}),
            Invalid {
                field: "name",
                words: "must not be empty",
                shape: false,
            },
        ),
    ]
}

/// The broker's verdict: (field, message) of every problem of the one issuer in a
/// configuration file parsed in-process.
fn broker_problems(issuer: &Value) -> Vec<(String, String)> {
    let file = Path::new("/etc/fedbroker/config.yaml");
    // JSON is YAML: the issuer goes in as a flow mapping.
    let text =
        format!("version: 1\nserver:\n  public_url: https://broker.example.com\nissuers:\n  - {issuer}\n");
    let no_files = |_: &Path| Err(std::io::Error::other("no files in this test"));
    let result = broker::config::parse_config(file, &text, &|_| None)
        .and_then(|draft| broker::config::assemble(draft, Vec::new(), &no_files));
    match result {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .0
            .into_iter()
            .map(|e| {
                let field = e
                    .field
                    .strip_prefix("issuers[0].")
                    .unwrap_or(&e.field)
                    .to_string();
                (field, e.message)
            })
            .collect(),
    }
}

/// The provider's verdict at plan time: every message, as Terraform shows it.
fn provider_problems(issuer: &Value) -> Vec<String> {
    let state = issuer::from_json(issuer);
    issuer::plan_problems(&state)
        .unwrap_or_else(|_| panic!("every value of {issuer} is known"))
        .into_iter()
        .map(|(_, message)| message)
        .collect()
}

/// A small JSON Schema check, enough for the issuer's schema: an object with
/// `required`, `properties` (`type` string/boolean/object/array of strings, or `enum`)
/// and `additionalProperties: false`. Returns the first field it refuses.
fn schema_refuses(schema: &Value, value: &Value) -> Option<String> {
    assert_eq!(schema["type"], "object");
    let object = value.as_object()?;
    let properties = schema["properties"].as_object().expect("properties");
    for required in schema["required"].as_array().expect("required") {
        let name = required.as_str().expect("a name");
        if !object.contains_key(name) {
            return Some(name.to_string());
        }
    }
    for (name, v) in object {
        let Some(property) = properties.get(name) else {
            assert_eq!(schema["additionalProperties"], false);
            return Some(name.clone());
        };
        let fits = match (property.get("enum"), property["type"].as_str()) {
            (Some(values), _) => values.as_array().expect("enum").contains(v),
            (None, Some("string")) => v.is_string(),
            (None, Some("boolean")) => v.is_boolean(),
            (None, Some("object")) => v.is_object(),
            (None, Some("array")) => {
                assert_eq!(property["items"]["type"], "string");
                v.as_array()
                    .is_some_and(|items| items.iter().all(Value::is_string))
            }
            other => panic!("{name}: a schema this check does not know: {other:?}"),
        };
        if !fits {
            return Some(name.clone());
        }
    }
    None
}

#[test]
fn the_broker_the_provider_and_the_schema_agree_on_every_issuer() {
    let schema = issuer_schema::json_schema();
    for (what, issuer, expect) in table() {
        let broker = broker_problems(&issuer);
        let provider = provider_problems(&issuer);
        let refused_shape = schema_refuses(&schema, &issuer);
        // The provider says what the broker says, word for word, field first.
        let broker_as_provider: Vec<String> = broker
            .iter()
            .map(|(field, message)| {
                let attribute = if field == "jwks" {
                    "jwks_json"
                } else {
                    field.as_str()
                };
                format!("{attribute}: {message}")
            })
            .collect();
        assert_eq!(
            provider, broker_as_provider,
            "{what}: the provider and the broker disagree"
        );
        match expect {
            Valid => {
                assert_eq!(broker, vec![], "{what}: the broker refuses it");
                assert_eq!(refused_shape, None, "{what}: the schema refuses it");
            }
            Invalid { field, words, shape } => {
                let (first_field, first_message) =
                    broker.first().unwrap_or_else(|| panic!("{what}: accepted"));
                assert_eq!(first_field, field, "{what}: {broker:?}");
                assert!(first_message.contains(words), "{what}: {first_message}");
                let want_shape = shape.then(|| field.to_string());
                assert_eq!(refused_shape, want_shape, "{what}: the schema's verdict");
            }
        }
    }
}

#[test]
fn the_schema_the_raw_form_and_the_terraform_resource_name_the_same_fields() {
    let schema = issuer_schema::json_schema();
    let properties = schema["properties"].as_object().expect("properties");
    let table: Vec<&str> = issuer_schema::FIELDS.iter().map(|f| f.name).collect();
    assert_eq!(properties.keys().map(String::as_str).collect::<Vec<_>>(), table);
    let required: Vec<&str> = issuer_schema::FIELDS
        .iter()
        .filter(|f| f.required)
        .map(|f| f.name)
        .collect();
    assert_eq!(schema["required"], json!(required));

    // The resource: the same fields (`jwks` is the JSON string `jwks_json`), plus `id`;
    // the same ones required.
    let resource = issuer::issuer_schema();
    let mut attributes: Vec<String> = resource
        .block
        .attributes
        .keys()
        .filter(|k| k.as_str() != "id")
        .map(|k| {
            if k == "jwks_json" {
                "jwks".to_string()
            } else {
                k.clone()
            }
        })
        .collect();
    attributes.sort();
    let mut names: Vec<String> = table.iter().map(|s| s.to_string()).collect();
    names.sort();
    assert_eq!(attributes, names);
    for f in issuer_schema::FIELDS {
        let name = if f.name == "jwks" { "jwks_json" } else { f.name };
        let constraint = format!("{:?}", resource.block.attributes[name].constraint);
        assert_eq!(constraint == "Required", f.required, "{name}: {constraint}");
    }
}
