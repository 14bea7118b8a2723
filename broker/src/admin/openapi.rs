//! The admin API's OpenAPI 3.1 document.

use serde_json::{Map, Value, json};

/// An operation's `responses`: its own answers (`own`, an object), then `(status, name)`
/// pairs that refer to `#/components/responses/<name>`.
fn responses(own: Value, refs: &[(&str, &str)]) -> Value {
    let mut map = match own {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    for (status, name) in refs {
        map.insert(
            (*status).to_owned(),
            json!({"$ref": format!("#/components/responses/{name}")}),
        );
    }
    Value::Object(map)
}

pub fn openapi_document() -> Value {
    let etag = json!({"ETag": {"schema": {"type": "string"}}});
    let item_ops = |what: &str, schema: &str| {
        json!({
            "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
            "get": {
                "summary": format!("One {what}"),
                "responses": responses(
                    json!({"200": {"description": "The item", "headers": etag,
                                   "content": {"application/json": {"schema": {"$ref": schema}}}}}),
                    &[("401", "Unauthorized"), ("404", "Error")],
                )
            },
            "put": {
                "summary": format!("Create or replace a {what}"),
                "parameters": [
                    {"name": "If-Match", "in": "header", "schema": {"type": "string"}},
                    {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}
                ],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": schema}}}},
                "responses": responses(
                    json!({"200": {"description": "Replaced", "headers": etag},
                           "201": {"description": "Created", "headers": etag}}),
                    &[("401", "Unauthorized"), ("409", "Error"), ("412", "Error"), ("413", "Error"),
                      ("422", "Invalid"), ("503", "Error")],
                )
            },
            "delete": {
                "summary": format!("Delete a {what}"),
                "parameters": [{"name": "If-Match", "in": "header", "schema": {"type": "string"}}],
                "responses": responses(
                    json!({"204": {"description": "Deleted"}}),
                    &[("401", "Unauthorized"), ("404", "Error"), ("409", "Error"), ("412", "Error"),
                      ("503", "Error")],
                )
            }
        })
    };
    let list_op = |what: &str, schema: &str| {
        json!({"get": {
            "summary": format!("Every {what} in force: the configuration file's (marked \"read_only\": true), then those made through the admin API"),
            "responses": responses(
                json!({"200": {"description": "The list", "content": {"application/json": {"schema": {"type": "array", "items": {"anyOf": [
                    {"$ref": schema},
                    {"type": "object", "description": "An item of the configuration file: the same fields, plus read_only", "required": ["name", "read_only"], "properties": {"read_only": {"const": true}}}
                ]}}}}}}),
                &[("401", "Unauthorized")],
            )
        }})
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "fedbroker admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Issuers and rules in the same schema as the YAML configuration (see the README). Changes are validated like `fedbroker check`, take effect for the next request and survive a restart."
        },
        "security": [{"bearer": []}],
        "paths": {
            "/admin/v1/issuers": list_op("issuer", "#/components/schemas/Issuer"),
            "/admin/v1/issuers/{name}": item_ops("issuer", "#/components/schemas/Issuer"),
            "/admin/v1/rules": list_op("rule", "#/components/schemas/Rule"),
            "/admin/v1/rules/{name}": item_ops("rule", "#/components/schemas/Rule"),
            "/admin/v1/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI"}}}},
            "/admin/v1/explain": {"post": {
                "summary": "Explain one exchange against the policy in force, as `fedbroker explain --json` does: nothing is issued, no replay is recorded, the token is not kept",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExplainRequest"}}}},
                "responses": responses(
                    json!({"200": {"description": "The explanation (the document `fedbroker explain --json` prints)", "content": {"application/json": {"schema": {"type": "object", "required": ["decision", "rules", "targets"]}}}}}),
                    &[("401", "Unauthorized"), ("413", "Error"), ("422", "Invalid"), ("503", "Error")],
                )
            }},
            "/admin/v1/status/issuers": {"get": {
                "summary": "Every issuer in force with its key cache: source, cached kids and algorithms, last fetch and result, next refresh",
                "responses": responses(json!({"200": {"description": "The issuers", "content": {"application/json": {"schema": {"type": "object", "properties": {"issuers": {"type": "array", "items": {"type": "object"}}}}}}}}), &[("401", "Unauthorized")])
            }},
            "/admin/v1/status/issuers/{name}/refetch": {"post": {
                "summary": "Fetch an issuer's keys now; answers its state after the fetch",
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": responses(json!({"200": {"description": "The issuer after the fetch", "content": {"application/json": {"schema": {"type": "object"}}}}}), &[("401", "Unauthorized"), ("404", "Error")])
            }},
            "/admin/v1/status/rules": {"get": {
                "summary": "The rules in force, in order, with file, line and allow/deny hit counts since start; the reload generation and last reload error",
                "responses": responses(json!({"200": {"description": "The rules", "content": {"application/json": {"schema": {"type": "object"}}}}}), &[("401", "Unauthorized")])
            }},
            "/admin/v1/status/keys": {"get": {
                "summary": "The signing keys and their state in the rotation schedule",
                "responses": responses(json!({"200": {"description": "The keys", "content": {"application/json": {"schema": {"type": "object"}}}}}), &[("401", "Unauthorized"), ("503", "Error")])
            }}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Issuer": issuer_schema::json_schema(),
                "Rule": {
                    "type": "object",
                    "required": ["name", "match"],
                    "properties": {
                        "name": {"type": "string"}, "effect": {"enum": ["allow", "deny"]}, "description": {"type": "string"},
                        "match": {"type": "object"}, "issue": {"type": "object"}
                    },
                    "additionalProperties": false
                },
                "ExplainRequest": {
                    "type": "object",
                    "description": "A subject token (or a claims document and an issuer) and the targets",
                    "properties": {
                        "subject_token": {"type": "string"}, "subject_token_type": {"type": "string"},
                        "claims": {"type": "object"}, "issuer": {"type": "string", "description": "The issuer's name, for claims without iss"},
                        "actor_token": {"type": "string"},
                        "actor": {"type": "object", "description": "An actor as a claims document instead of actor_token", "properties": {"issuer": {"type": "string"}, "claims": {"type": "object"}}, "required": ["claims"]},
                        "audience": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                        "resource": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                        "scope": {"type": "string"}, "requested_token_type": {"type": "string"}, "dpop": {"type": "boolean"}
                    }
                },
                "Error": {"type": "object", "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}}},
                "Problem": {"type": "object", "properties": {"source": {"type": "string"}, "line": {"type": ["integer", "null"]}, "field": {"type": "string"}, "message": {"type": "string"}}}
            },
            "responses": {
                "Unauthorized": {"description": "No or wrong bearer token", "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Error": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Invalid": {"description": "Every problem with the body", "content": {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}, "errors": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}}}}}}}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pinned document, `src/admin/openapi.json`: the admin API's OpenAPI document,
    /// pretty-printed with one trailing newline.
    const PINNED: &str = include_str!("openapi.json");
    const PINNED_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/admin/openapi.json");
    const UPDATE: &str = "FEDBROKER_UPDATE_OPENAPI";

    fn pretty(doc: &Value) -> String {
        let mut text = serde_json::to_string_pretty(doc).expect("a JSON value serialises");
        text.push('\n');
        text
    }

    /// The generated document is, byte for byte, the pinned one. Whatever changes the
    /// document (this file, the package version, `issuer_schema::json_schema()`) fails
    /// this test until the pinned file is regenerated, on purpose, with
    ///
    /// ```text
    /// FEDBROKER_UPDATE_OPENAPI=1 cargo test -p broker --lib openapi
    /// ```
    ///
    /// which rewrites `src/admin/openapi.json` (the tests built next compare against the
    /// new file); review its diff and commit it with the change.
    #[test]
    fn the_openapi_document_is_pinned() {
        let generated = pretty(&openapi_document());
        if std::env::var(UPDATE).as_deref() == Ok("1") {
            if generated != PINNED {
                std::fs::write(PINNED_PATH, &generated).expect("rewrite the pinned document");
                eprintln!("{UPDATE}=1: rewrote {PINNED_PATH}");
            }
            return;
        }
        if generated != PINNED {
            let (line, pinned, now) = PINNED
                .lines()
                .map(Some)
                .chain(std::iter::repeat(None))
                .zip(generated.lines().map(Some).chain(std::iter::repeat(None)))
                .enumerate()
                .find(|(_, (a, b))| a != b)
                .map(|(i, (a, b))| (i + 1, a.unwrap_or("(end)"), b.unwrap_or("(end)")))
                .unwrap_or((0, "", ""));
            panic!(
                "the admin API's OpenAPI document is not the pinned src/admin/openapi.json \
                 (first difference on line {line}: pinned `{pinned}`, generated `{now}`).\n\
                 If the change is meant, regenerate the file with \
                 `{UPDATE}=1 cargo test -p broker --lib openapi`, review its diff and commit it."
            );
        }
    }

    /// `GET /admin/v1/openapi.json` answers the pinned document, byte for byte (compact,
    /// as the handler serialises it).
    #[tokio::test]
    async fn the_served_document_is_the_pinned_one() {
        let pinned: Value = serde_json::from_str(PINNED).expect("the pinned document is JSON");
        let response = super::super::routes::openapi().await;
        assert_eq!(response.status(), axum::http::StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let expected = serde_json::to_vec(&pinned).expect("a JSON value serialises");
        assert!(
            body == expected,
            "GET /admin/v1/openapi.json does not serve the pinned document (compact); \
             the_openapi_document_is_pinned shows where they differ"
        );
    }

    #[test]
    fn the_pinned_document_is_json_naming_the_issuer_schema() {
        let doc: Value = serde_json::from_str(PINNED).expect("the pinned document is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["components"]["schemas"]["Issuer"],
            issuer_schema::json_schema(),
            "the Issuer schema is issuer_schema::json_schema()"
        );
        let item = &doc["paths"]["/admin/v1/issuers/{name}"];
        for schema in [
            &item["get"]["responses"]["200"]["content"]["application/json"]["schema"],
            &item["put"]["requestBody"]["content"]["application/json"]["schema"],
        ] {
            assert_eq!(schema["$ref"], "#/components/schemas/Issuer");
        }
    }

    #[test]
    fn the_openapi_document_names_every_path() {
        let doc = openapi_document();
        for p in [
            "/admin/v1/issuers",
            "/admin/v1/issuers/{name}",
            "/admin/v1/rules",
            "/admin/v1/rules/{name}",
        ] {
            assert!(doc["paths"].get(p).is_some(), "{p}");
        }
    }
}
