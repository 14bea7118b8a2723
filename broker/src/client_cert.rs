//! The verified client certificate of a mutual-TLS connection, as the listener hands it
//! to requests (an `Arc<ClientCert>` in the request's extensions) and as rules see it
//! (`request.client_cert`).

/// What rules and the issued token's `cnf` use of a client certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientCert {
    /// The URI subject alternative names (a SPIFFE ID is one), in certificate order.
    pub uri_sans: Vec<String>,
    /// The subject distinguished name, RFC 4514 string form (`CN=api,O=Example`).
    pub subject: String,
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub sha256: String,
    /// SHA-256 of the certificate's DER, base64url without padding: RFC 8705's `x5t#S256`.
    #[serde(skip)]
    pub x5t_s256: String,
}
