//! The issuer's fields as a table, and the JSON Schema the admin API's OpenAPI document
//! shows for them (`components.schemas.Issuer`).

use serde_json::{Map, Value, json};

/// A field's JSON type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    StringList,
    Boolean,
    /// A JSON object (`jwks`: a key set).
    Object,
    /// A string that takes one of these values.
    OneOf(&'static [&'static str]),
}

/// One field of [`crate::RawIssuer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuerField {
    pub name: &'static str,
    pub ty: FieldType,
    pub required: bool,
}

const fn field(name: &'static str, ty: FieldType, required: bool) -> IssuerField {
    IssuerField { name, ty, required }
}

/// Every field, in the OpenAPI document's order. A unit test holds it to the serde
/// struct, so that the two cannot drift.
pub const FIELDS: &[IssuerField] = &[
    field("name", FieldType::String, true),
    field("issuer", FieldType::String, false),
    field("kind", FieldType::String, false),
    field("audiences", FieldType::StringList, false),
    field("jwks_uri", FieldType::String, false),
    field("jwks", FieldType::Object, false),
    field("jwks_file", FieldType::String, false),
    field("algorithms", FieldType::StringList, false),
    field("replay", FieldType::OneOf(&["one_time", "reusable"]), false),
    field("max_token_lifetime", FieldType::String, false),
    field("danger_allow_insecure", FieldType::Boolean, false),
    field("tenant", FieldType::String, false),
    field("entra_version", FieldType::OneOf(&["v1", "v2"]), false),
    field("trust_domain", FieldType::String, false),
    field("allow_access_tokens", FieldType::Boolean, false),
    field("tls_ca_file", FieldType::String, false),
    field("accounts", FieldType::StringList, false),
    field("server_id", FieldType::String, false),
    field("sts_endpoints", FieldType::StringList, false),
    field("extra_claims", FieldType::StringList, false),
];

fn type_schema(ty: FieldType) -> Value {
    match ty {
        FieldType::String => json!({"type": "string"}),
        FieldType::StringList => json!({"type": "array", "items": {"type": "string"}}),
        FieldType::Boolean => json!({"type": "boolean"}),
        FieldType::Object => json!({"type": "object"}),
        FieldType::OneOf(values) => json!({ "enum": values }),
    }
}

/// The JSON Schema of an issuer (the admin API's request and response bodies).
pub fn json_schema() -> Value {
    let required: Vec<&str> = FIELDS.iter().filter(|f| f.required).map(|f| f.name).collect();
    let properties: Map<String, Value> = FIELDS
        .iter()
        .map(|f| (f.name.to_string(), type_schema(f.ty)))
        .collect();
    json!({
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": false
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RawIssuer;

    /// Every field of the serde struct, with a value of its type.
    fn full_issuer() -> Value {
        serde_json::to_value(RawIssuer {
            kind: Some(String::new()),
            tenant: Some(String::new()),
            entra_version: Some(String::new()),
            trust_domain: Some(String::new()),
            tls_ca_file: Some(String::new()),
            accounts: Some(Vec::new()),
            server_id: Some(String::new()),
            sts_endpoints: Some(Vec::new()),
            extra_claims: Some(Vec::new()),
            jwks_uri: Some(String::new()),
            jwks: Some(json!({})),
            jwks_file: Some(String::new()),
            algorithms: Some(Vec::new()),
            replay: Some(String::new()),
            max_token_lifetime: Some(String::new()),
            ..RawIssuer::default()
        })
        .expect("serializes")
    }

    #[test]
    fn the_table_names_every_field_of_the_raw_form_with_its_type() {
        let full = full_issuer();
        let object = full.as_object().expect("object");
        let mut names: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut table: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        table.sort_unstable();
        assert_eq!(names, table);
        for f in FIELDS {
            let value = &object[f.name];
            let fits = match f.ty {
                FieldType::String | FieldType::OneOf(_) => value.is_string(),
                FieldType::StringList => value.is_array(),
                FieldType::Boolean => value.is_boolean(),
                FieldType::Object => value.is_object(),
            };
            assert!(fits, "{}: {value} is not a {:?}", f.name, f.ty);
        }
    }

    #[test]
    fn required_fields_are_the_ones_serde_cannot_leave_out() {
        let full = full_issuer();
        for f in FIELDS {
            let mut without = full.clone();
            without.as_object_mut().expect("object").remove(f.name);
            let parsed = serde_json::from_value::<RawIssuer>(without);
            let parser_requires = parsed.is_err();
            assert_eq!(parser_requires, f.required, "{}", f.name);
        }
    }

    #[test]
    fn the_schema_is_the_openapi_documents() {
        let schema = json_schema();
        // `audiences`: the check requires it for every kind but aws-iam.
        assert_eq!(schema["required"], json!(["name"]));
        assert_eq!(
            schema["properties"]["replay"],
            json!({"enum": ["one_time", "reusable"]})
        );
        assert_eq!(schema["additionalProperties"], json!(false));
    }
}
