//! The one place where domain errors become [`tonic::Status`].
//!
//! Every error status clawdo sends carries a `google.rpc.ErrorInfo` detail whose `reason` is a
//! stable, machine-readable `UPPER_SNAKE` constant (for example `INSTANCE_BUSY`) and whose
//! `domain` is [`ERROR_DOMAIN`], so clients branch on the reason instead of parsing messages.
//! Conversions from each layer's `Error` are added here as those layers appear.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// The `google.rpc.ErrorInfo.domain` of every error clawdo reports.
pub const ERROR_DOMAIN: &str = "clawdo.dev";

/// A status with `code` and `message` whose details hold a `google.rpc.ErrorInfo` with
/// `reason`, domain [`ERROR_DOMAIN`] and `metadata` (structured context such as the id the
/// error is about; keys should match `[a-zA-Z0-9-_]{1,64}`).
pub fn status_with_reason(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    metadata: HashMap<String, String>,
) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn error_info_round_trips_through_status_details() {
        let metadata = HashMap::from([("instance_id".to_owned(), "i-42".to_owned())]);
        let status = status_with_reason(
            Code::FailedPrecondition,
            "instance i-42 is restarting",
            "INSTANCE_BUSY",
            metadata.clone(),
        );

        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "instance i-42 is restarting");
        let info = status
            .get_details_error_info()
            .expect("status details carry an ErrorInfo");
        assert_eq!(info.reason, "INSTANCE_BUSY");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata, metadata);
    }

    #[test]
    fn error_info_survives_the_wire_encoding() {
        let status = status_with_reason(
            Code::ResourceExhausted,
            "the fleet's scheduled-work slots are full",
            "CAPACITY_FULL",
            HashMap::new(),
        );

        // What a server sends as trailers and a client rebuilds from them.
        let response = status.into_http::<()>();
        let received =
            Status::from_header_map(response.headers()).expect("the headers hold a status");

        assert_eq!(received.code(), Code::ResourceExhausted);
        assert_eq!(
            received.message(),
            "the fleet's scheduled-work slots are full"
        );
        let info = received
            .get_details_error_info()
            .expect("received details carry an ErrorInfo");
        assert_eq!(info.reason, "CAPACITY_FULL");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert!(info.metadata.is_empty());
    }

    #[test]
    fn a_status_without_details_has_no_error_info() {
        assert!(Status::internal("boom").get_details_error_info().is_none());
    }
}
