//! The admin API's OpenAPI 3.1 document.

use serde_json::{Value, json};

pub fn openapi_document() -> Value {
    let item_ops = |what: &str, schema: &str| {
        json!({
            "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
            "get": {
                "summary": format!("One {what}"),
                "responses": {
                    "200": {"description": "The item", "headers": {"ETag": {"schema": {"type": "string"}}},
                            "content": {"application/json": {"schema": {"$ref": schema}}}},
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "404": {"$ref": "#/components/responses/Error"}
                }
            },
            "put": {
                "summary": format!("Create or replace a {what}"),
                "parameters": [
                    {"name": "If-Match", "in": "header", "schema": {"type": "string"}},
                    {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}
                ],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": schema}}}},
                "responses": {
                    "200": {"description": "Replaced", "headers": {"ETag": {"schema": {"type": "string"}}}},
                    "201": {"description": "Created", "headers": {"ETag": {"schema": {"type": "string"}}}},
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "409": {"$ref": "#/components/responses/Error"},
                    "412": {"$ref": "#/components/responses/Error"},
                    "413": {"$ref": "#/components/responses/Error"},
                    "422": {"$ref": "#/components/responses/Invalid"},
                    "503": {"$ref": "#/components/responses/Error"}
                }
            },
            "delete": {
                "summary": format!("Delete a {what}"),
                "parameters": [{"name": "If-Match", "in": "header", "schema": {"type": "string"}}],
                "responses": {
                    "204": {"description": "Deleted"},
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "404": {"$ref": "#/components/responses/Error"},
                    "409": {"$ref": "#/components/responses/Error"},
                    "412": {"$ref": "#/components/responses/Error"},
                    "503": {"$ref": "#/components/responses/Error"}
                }
            }
        })
    };
    let list_op = |what: &str, schema: &str| {
        json!({"get": {
            "summary": format!("Every {what} in force: the configuration file's (marked \"read_only\": true), then those made through the admin API"),
            "responses": {
                "200": {"description": "The list", "content": {"application/json": {"schema": {"type": "array", "items": {"anyOf": [
                    {"$ref": schema},
                    {"type": "object", "description": "An item of the configuration file: the same fields, plus read_only", "required": ["name", "read_only"], "properties": {"read_only": {"const": true}}}
                ]}}}}},
                "401": {"$ref": "#/components/responses/Unauthorized"}
            }
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
            "/admin/v1/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI"}}}}
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
