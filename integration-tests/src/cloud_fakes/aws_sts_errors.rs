//! An AWS STS endpoint that only refuses, for the error paths moto cannot take: moto's
//! `AssumeRoleWithWebIdentity` accepts every request (it checks neither the role's trust
//! policy nor the token). Every request gets one Query-API error answer, in the XML
//! shape AWS documents for STS errors
//! (<https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html>,
//! `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>`):
//! e.g. 403 `AccessDenied`, 400 `IDPCommunicationError`, 400 `Throttling`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Running;
use crate::fake_issuer::bind_loopback;

/// An STS that answers every request with one error.
pub struct StsErrors {
    url: String,
    requests: Arc<AtomicUsize>,
    _running: Running,
}

struct Answer {
    status: StatusCode,
    body: String,
    requests: Arc<AtomicUsize>,
}

impl StsErrors {
    /// Answer every request with `status` and the error `code` / `message`.
    pub fn start(status: u16, code: &str, message: &str) -> StsErrors {
        let (listener, addr) = bind_loopback("STS errors");
        let requests = Arc::new(AtomicUsize::new(0));
        let kind = if status >= 500 { "Receiver" } else { "Sender" };
        let answer = Arc::new(Answer {
            status: StatusCode::from_u16(status).expect("HTTP status"),
            body: format!(
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"
            ),
            requests: requests.clone(),
        });
        let app = Router::new().fallback(refuse).with_state(answer);
        StsErrors {
            url: format!("http://{addr}"),
            requests,
            _running: Running::serve("sts-errors", listener, app),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn refuse(State(answer): State<Arc<Answer>>) -> Response {
    answer.requests.fetch_add(1, Ordering::SeqCst);
    (
        answer.status,
        [(header::CONTENT_TYPE, "text/xml")],
        answer.body.clone(),
    )
        .into_response()
}
