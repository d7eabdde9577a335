//! IoT Hub's error vocabulary: the codes the service API answers with, and the error type every
//! hub operation returns. The REST layer turns a [`HubError`] into a status, an
//! `iothub-errorcode` header and the IoT Hub error body.

use std::fmt;

/// The IoT Hub error codes fleetsim answers with: the six-digit `iothub-errorcode`, whose
/// first three digits are the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400001: missing or unknown `api-version`.
    InvalidProtocolVersion,
    /// 400004: a malformed or invalid argument.
    ArgumentInvalid,
    /// 401002: missing, forged or expired credentials.
    IotHubUnauthorizedAccess,
    /// 403002: a quota was exceeded.
    IotHubQuotaExceeded,
    /// 404001: no such device.
    DeviceNotFound,
    /// 404002: no such job.
    JobNotFound,
    /// 404103: the device is not online (or not subscribed) within the connect timeout.
    DeviceNotOnline,
    /// 409001: a device with this id exists already.
    DeviceAlreadyExists,
    /// 409104: a job with this id exists already.
    JobAlreadyExists,
    /// 412001: the `If-Match` etag does not match.
    PreconditionFailed,
    /// 413: the request or payload is over the size limit.
    MessageTooLarge,
    /// 429001: over a rate limit of the hub's tier.
    ThrottlingException,
    /// 429002: traffic shaping's backlog of waiting calls is full.
    ThrottleBacklogLimitExceeded,
    /// 429003: a call waited in traffic shaping's backlog too long.
    ThrottlingBacklogTimeout,
    /// 429004: over the tier's concurrent-job limit.
    ThrottlingMaxActiveJobCountExceeded,
    /// 500001: the hub failed on its side (its store could not save a change).
    ServerError,
    /// 504101: the device did not answer within the response timeout.
    GatewayTimeout,
}

impl ErrorCode {
    /// The numeric IoT Hub code (six digits, the first three are the HTTP status).
    pub fn number(self) -> u32 {
        match self {
            ErrorCode::InvalidProtocolVersion => 400001,
            ErrorCode::ArgumentInvalid => 400004,
            ErrorCode::IotHubUnauthorizedAccess => 401002,
            ErrorCode::IotHubQuotaExceeded => 403002,
            ErrorCode::DeviceNotFound => 404001,
            ErrorCode::JobNotFound => 404002,
            ErrorCode::DeviceNotOnline => 404103,
            ErrorCode::DeviceAlreadyExists => 409001,
            ErrorCode::JobAlreadyExists => 409104,
            ErrorCode::PreconditionFailed => 412001,
            ErrorCode::MessageTooLarge => 413002,
            ErrorCode::ThrottlingException => 429001,
            ErrorCode::ThrottleBacklogLimitExceeded => 429002,
            ErrorCode::ThrottlingBacklogTimeout => 429003,
            ErrorCode::ThrottlingMaxActiveJobCountExceeded => 429004,
            ErrorCode::ServerError => 500001,
            ErrorCode::GatewayTimeout => 504101,
        }
    }

    /// The HTTP status that carries this code.
    pub(crate) fn http_status(self) -> u16 {
        (self.number() / 1000) as u16
    }

    /// The PascalCase name sent in `iothub-errorcode`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidProtocolVersion => "InvalidProtocolVersion",
            ErrorCode::ArgumentInvalid => "ArgumentInvalid",
            ErrorCode::IotHubUnauthorizedAccess => "IotHubUnauthorizedAccess",
            ErrorCode::IotHubQuotaExceeded => "IotHubQuotaExceeded",
            ErrorCode::DeviceNotFound => "DeviceNotFound",
            ErrorCode::JobNotFound => "JobNotFound",
            ErrorCode::DeviceNotOnline => "DeviceNotOnline",
            ErrorCode::DeviceAlreadyExists => "DeviceAlreadyExists",
            ErrorCode::JobAlreadyExists => "JobAlreadyExists",
            ErrorCode::PreconditionFailed => "PreconditionFailed",
            ErrorCode::MessageTooLarge => "MessageTooLarge",
            ErrorCode::ThrottlingException => "ThrottlingException",
            ErrorCode::ThrottleBacklogLimitExceeded => "ThrottleBacklogLimitExceeded",
            ErrorCode::ThrottlingBacklogTimeout => "ThrottlingBacklogTimeout",
            ErrorCode::ThrottlingMaxActiveJobCountExceeded => "ThrottlingMaxActiveJobCountExceeded",
            ErrorCode::ServerError => "ServerError",
            ErrorCode::GatewayTimeout => "GatewayTimeout",
        }
    }
}

/// A failed hub operation: an IoT Hub code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubError {
    /// What kind of failure, as IoT Hub names it.
    pub code: ErrorCode,
    /// What went wrong, naming the offending value and what would be accepted.
    pub(crate) message: String,
}

impl HubError {
    /// An error with `code` and `message`.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HubError {
            code,
            message: message.into(),
        }
    }

    /// 400004 ArgumentInvalid.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        HubError::new(ErrorCode::ArgumentInvalid, message)
    }
}

impl From<crate::ids::InvalidDeviceId> for HubError {
    fn from(e: crate::ids::InvalidDeviceId) -> Self {
        HubError::invalid(e.to_string())
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.name(),
            self.code.number(),
            self.message
        )
    }
}

impl std::error::Error for HubError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_carry_their_http_status() {
        assert_eq!(ErrorCode::DeviceNotOnline.http_status(), 404);
        assert_eq!(
            ErrorCode::ThrottlingMaxActiveJobCountExceeded.number(),
            429004
        );
        assert_eq!(ErrorCode::GatewayTimeout.http_status(), 504);
        let e = HubError::new(ErrorCode::JobNotFound, "no job 'x'");
        assert_eq!(e.to_string(), "JobNotFound (404002): no job 'x'");
    }
}
