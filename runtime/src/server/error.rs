//! The server's one error type, answered with OpenAI's error JSON on every route (llama.cpp's
//! server answers its own endpoints' errors the same way).

use serde_json::{json, Value};

use crate::jobs::Refusal;

/// An error answered with OpenAI's error JSON: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Invalid(message) => ApiError::bad_request(message),
            Refusal::Busy(message) => ApiError::unavailable(message),
        }
    }
}

impl ApiError {
    fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            401,
            "authentication_error",
            "invalid or missing API key: send the header `Authorization: Bearer KEY`",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "permission_error", message)
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(404, "not_found_error", format!("no such endpoint: {path}"))
    }

    pub fn not_found_model(id: &str) -> Self {
        Self::new(
            404,
            "not_found_error",
            format!("the model {id:?} does not exist; this server runs one, listed by /v1/models"),
        )
    }

    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(501, "not_supported_error", message)
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            "invalid_request_error",
            format!("{method} is not allowed on {path}"),
        )
    }

    pub fn timeout() -> Self {
        Self::new(
            408,
            "invalid_request_error",
            "the request body did not arrive in time",
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "invalid_request_error",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "unavailable_error", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "server_error", message)
    }

    pub fn to_json(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": self.status}})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_openais_shape() {
        let err = ApiError::bad_request("nope").to_json();
        assert_eq!(err["error"]["message"], "nope");
        assert_eq!(err["error"]["code"], 400);
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
}
