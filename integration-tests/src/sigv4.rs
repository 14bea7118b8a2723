//! A small AWS SigV4 signer (AWS4-HMAC-SHA256, region us-east-1, service sts), as the
//! AWS SDKs sign a form POST to STS, for the tests that call moto directly and for the
//! signed `GetCallerIdentity` requests AWS workloads hand the broker as subject tokens
//! (contract §10: the URL-encoded JSON `{"url", "method", "headers", "body"}`).
//! Written from the SigV4 specification; moto (enforcing auth) checks what it signs.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::tokens::sha256_hex;

pub const REGION: &str = "us-east-1";
pub const GET_CALLER_IDENTITY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
pub const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// An access key (and a session token, for temporary credentials).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub key_id: String,
    pub secret: String,
    pub session_token: Option<String>,
}

impl Credentials {
    pub fn new(key_id: &str, secret: &str) -> Credentials {
        Credentials {
            key_id: key_id.to_owned(),
            secret: secret.to_owned(),
            session_token: None,
        }
    }
}

/// A POST to STS: URL, headers (as they will be sent) and form body.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    /// A form POST of `body` to `url`, with `Host` and `Content-Type`.
    pub fn post(url: &str, body: &str) -> Request {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let host = rest.split('/').next().unwrap_or(rest);
        Request {
            url: url.to_owned(),
            method: "POST".to_owned(),
            headers: vec![
                ("Host".to_owned(), host.to_owned()),
                ("Content-Type".to_owned(), CONTENT_TYPE.to_owned()),
            ],
            body: body.to_owned(),
        }
    }

    /// `GetCallerIdentity` to `url`, carrying `x-fedbroker-server-id: server_id`.
    pub fn get_caller_identity(url: &str, server_id: &str) -> Request {
        Request::post(url, GET_CALLER_IDENTITY).header("X-Fedbroker-Server-Id", server_id)
    }

    /// With one more header.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Signed at `at` by `creds`, covering every header present (plus `X-Amz-Date` and,
    /// for temporary credentials, `X-Amz-Security-Token`, which are added).
    pub fn sign(self, creds: &Credentials, at: SystemTime) -> Request {
        self.sign_except(creds, at, &[])
    }

    /// As [`Request::sign`], leaving the headers named in `unsigned` (lowercase) out of
    /// the signature.
    pub fn sign_except(mut self, creds: &Credentials, at: SystemTime, unsigned: &[&str]) -> Request {
        let amz_date = amz_date(at);
        self.headers.push(("X-Amz-Date".to_owned(), amz_date.clone()));
        if let Some(token) = &creds.session_token {
            self.headers
                .push(("X-Amz-Security-Token".to_owned(), token.clone()));
        }
        let mut signed: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
            .filter(|(k, _)| !unsigned.contains(&k.as_str()))
            .collect();
        signed.sort();
        let names: Vec<&str> = signed.iter().map(|(k, _)| k.as_str()).collect();
        let signed_headers = names.join(";");
        let canonical_headers: String = signed.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let rest = self.url.split_once("://").map_or(self.url.as_str(), |(_, r)| r);
        let path = rest.find('/').map_or("/", |i| &rest[i..]);
        let canonical = format!(
            "{}\n{path}\n\n{canonical_headers}\n{signed_headers}\n{}",
            self.method,
            sha256_hex(self.body.as_bytes())
        );
        let date = &amz_date[..8];
        let scope = format!("{date}/{REGION}/sts/aws4_request");
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            sha256_hex(canonical.as_bytes())
        );
        let mut key = format!("AWS4{}", creds.secret).into_bytes();
        for part in [date, REGION, "sts", "aws4_request", to_sign.as_str()] {
            let hmac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
            key = aws_lc_rs::hmac::sign(&hmac_key, part.as_bytes())
                .as_ref()
                .to_vec();
        }
        let signature: String = key.iter().map(|b| format!("{b:02x}")).collect();
        self.headers.push((
            "Authorization".to_owned(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                creds.key_id
            ),
        ));
        self
    }

    /// The JSON document Google's STS (and the broker) take: `{"url", "method",
    /// "headers": [{"key", "value"}...], "body"}`.
    pub fn to_json(&self) -> Value {
        let headers: Vec<Value> = self
            .headers
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        json!({"url": self.url, "method": self.method, "headers": headers, "body": self.body})
    }

    /// The subject token: [`Request::to_json`], URL-encoded.
    pub fn subject_token(&self) -> String {
        url_encode(&self.to_json().to_string())
    }

    /// Send it as is: `(status, body)`.
    pub async fn send(&self) -> (u16, String) {
        let mut builder = reqwest::Client::new().post(&self.url).body(self.body.clone());
        for (k, v) in &self.headers {
            builder = builder.header(k, v);
        }
        let response = builder.send().await.expect("POST to STS");
        let status = response.status().as_u16();
        (status, response.text().await.expect("STS's body"))
    }
}

/// Percent-encode everything but RFC 3986's unreserved characters.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `YYYYMMDDTHHMMSSZ` (UTC) of `at`: RFC 3339 without its separators.
pub fn amz_date(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    crate::cloud_fakes::rfc3339(i64::try_from(secs).expect("seconds")).replace(['-', ':'], "")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn amz_date_is_utc_basic_format() {
        assert_eq!(amz_date(UNIX_EPOCH), "19700101T000000Z");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_661);
        assert_eq!(amz_date(leap_day), "20000229T010101Z");
    }

    /// The Authorization header's shape; whether the signature is right is moto's to
    /// say (`moto_server.rs`, `aws_iam.rs`).
    #[test]
    fn authorization_names_the_scope_and_the_signed_headers_deterministically() {
        let at = UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 20150830T123600Z
        let creds = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let signed = Request::post("https://sts.amazonaws.com/", GET_CALLER_IDENTITY).sign(&creds, at);
        let auth = &signed.headers.last().expect("Authorization").1;
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/sts/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="),
            "{auth}"
        );
        // Signing is deterministic: the same request at the same time, the same signature.
        let again = Request::post("https://sts.amazonaws.com/", GET_CALLER_IDENTITY).sign(&creds, at);
        assert_eq!(signed, again);
    }
}
