//! The IoT Hub MQTT topic dialect (docs/iot-hub.md, "MQTT device dialect"), both ways: what a
//! device may publish and subscribe to, and the topics the hub publishes on. Pure string work,
//! shared by the hub's endpoint and the MQTT fleet.

use crate::link::OpId;

/// The prefix of method requests (hub to device).
pub(crate) const METHODS_POST: &str = "$iothub/methods/POST/";
/// The prefix of method answers (device to hub).
pub(crate) const METHODS_RES: &str = "$iothub/methods/res/";
/// The prefix of twin answers (hub to device).
pub(crate) const TWIN_RES: &str = "$iothub/twin/res/";
/// The twin GET request topic prefix (device to hub).
pub(crate) const TWIN_GET: &str = "$iothub/twin/GET/";
/// The reported-properties patch topic prefix (device to hub).
pub(crate) const REPORTED_PATCH: &str = "$iothub/twin/PATCH/properties/reported/";
/// The desired-properties notification topic prefix (hub to device).
pub(crate) const DESIRED_PATCH: &str = "$iothub/twin/PATCH/properties/desired/";

/// What a device publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DevicePublish<'a> {
    /// The answer to a method request.
    MethodResponse {
        /// The device's status.
        status: i32,
        /// The request id it answers.
        rid: &'a str,
    },
    /// A request for the whole twin.
    TwinGet {
        /// The request id.
        rid: &'a str,
    },
    /// A reported-properties patch.
    ReportedPatch {
        /// The request id.
        rid: &'a str,
    },
    /// Device-to-cloud telemetry on `devices/{id}/messages/events/...` (accepted, not stored).
    Telemetry,
}

/// Why a device's publish topic is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Not a topic of this device.
    #[error("topic '{0}' is not one this device may publish to")]
    Foreign(String),
    /// A request without its `$rid` property.
    #[error("topic '{0}' has no $rid property")]
    NoRid(String),
    /// A method answer whose status is not an integer.
    #[error("topic '{0}' has no integer status")]
    BadStatus(String),
}

/// Parses the topic of a device's publish; `device_id` is the connection's device.
pub(crate) fn parse_publish<'a>(
    topic: &'a str,
    device_id: &str,
) -> Result<DevicePublish<'a>, TopicError> {
    let foreign = || TopicError::Foreign(topic.to_owned());
    let rid = |props: &'a str| property(props, "$rid").ok_or(TopicError::NoRid(topic.to_owned()));
    if let Some(rest) = topic.strip_prefix(METHODS_RES) {
        let (status, props) = rest.split_once('/').unwrap_or((rest, ""));
        let status = status
            .parse()
            .map_err(|_| TopicError::BadStatus(topic.to_owned()))?;
        return Ok(DevicePublish::MethodResponse {
            status,
            rid: rid(props)?,
        });
    }
    if let Some(props) = topic.strip_prefix(TWIN_GET) {
        return Ok(DevicePublish::TwinGet { rid: rid(props)? });
    }
    if let Some(props) = topic.strip_prefix(REPORTED_PATCH) {
        return Ok(DevicePublish::ReportedPatch { rid: rid(props)? });
    }
    let own = topic
        .strip_prefix("devices/")
        .and_then(|t| t.strip_prefix(device_id))
        .and_then(|t| t.strip_prefix("/messages/events"));
    match own {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => Ok(DevicePublish::Telemetry),
        _ => Err(foreign()),
    }
}

/// A subscription a device may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subscription {
    /// `$iothub/methods/POST/#`.
    Methods,
    /// `$iothub/twin/res/#`.
    TwinResponses,
    /// `$iothub/twin/PATCH/properties/desired/#`.
    Desired,
    /// `devices/{id}/messages/devicebound/#` (accepted; the hub sends no cloud-to-device
    /// messages).
    CloudToDevice,
}

/// Classifies a subscription filter; `None` for filters a device may not hold.
pub(crate) fn parse_filter(filter: &str, device_id: &str) -> Option<Subscription> {
    match filter {
        "$iothub/methods/POST/#" => Some(Subscription::Methods),
        "$iothub/twin/res/#" => Some(Subscription::TwinResponses),
        "$iothub/twin/PATCH/properties/desired/#" => Some(Subscription::Desired),
        _ => {
            let rest = filter.strip_prefix("devices/")?.strip_prefix(device_id)?;
            (rest == "/messages/devicebound/#").then_some(Subscription::CloudToDevice)
        }
    }
}

/// The value of `key` in a `?k=v&k=v` property bag (the leading `?` is optional).
pub(crate) fn property<'a>(props: &'a str, key: &str) -> Option<&'a str> {
    props
        .strip_prefix('?')
        .unwrap_or(props)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// The request id the hub gives a method call: the operation id in hex.
pub(crate) fn method_rid(op: OpId) -> String {
    format!("{:x}", op.0)
}

/// The operation a method answer's request id names.
pub(crate) fn op_of_rid(rid: &str) -> Option<OpId> {
    u64::from_str_radix(rid, 16).ok().map(OpId)
}

/// `$iothub/methods/POST/{method}/?$rid={rid}`.
pub(crate) fn method_request(method: &str, rid: &str) -> String {
    format!("{METHODS_POST}{method}/?$rid={rid}")
}

/// `$iothub/methods/res/{status}/?$rid={rid}` (the engine's answers use
/// [`write_method_response`]; tests build expected topics with this).
#[cfg(test)]
pub(crate) fn method_response(status: i32, rid: &str) -> String {
    let mut topic = String::new();
    write_method_response(&mut topic, status, rid);
    topic
}

/// [`method_response`] written into `topic` (replacing what it held): no allocation once
/// `topic` has the room, for answers sent one after another from a reused packet.
pub(crate) fn write_method_response(topic: &mut String, status: i32, rid: &str) {
    use std::fmt::Write;
    topic.clear();
    // Writing into a String cannot fail.
    let _ = write!(topic, "{METHODS_RES}{status}/?$rid={rid}");
}

/// `$iothub/twin/res/{status}/?$rid={rid}[&$version={version}]`.
pub(crate) fn twin_response(status: u16, rid: &str, version: Option<u64>) -> String {
    match version {
        Some(v) => format!("{TWIN_RES}{status}/?$rid={rid}&$version={v}"),
        None => format!("{TWIN_RES}{status}/?$rid={rid}"),
    }
}

/// `$iothub/twin/PATCH/properties/desired/?$version={version}`.
pub(crate) fn desired_patch(version: u64) -> String {
    format!("{DESIRED_PATCH}?$version={version}")
}

/// `$iothub/twin/PATCH/properties/reported/?$rid={rid}`.
pub(crate) fn reported_patch(rid: &str) -> String {
    format!("{REPORTED_PATCH}?$rid={rid}")
}

/// What the hub publishes to a device, seen from the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HubPublish<'a> {
    /// A method request.
    Method {
        /// The method name.
        name: &'a str,
        /// The request id to echo.
        rid: &'a str,
    },
    /// A desired-properties notification.
    Desired {
        /// Its `$version` property (None: missing or not a number).
        version: Option<u64>,
    },
    /// An answer to a twin request.
    TwinResponse {
        /// The status.
        status: u16,
        /// The request id.
        rid: &'a str,
    },
}

/// Parses a topic the hub publishes on (`None`: not one of the dialect).
pub(crate) fn parse_hub_publish(topic: &str) -> Option<HubPublish<'_>> {
    if let Some(rest) = topic.strip_prefix(METHODS_POST) {
        let (name, props) = rest.split_once('/')?;
        return Some(HubPublish::Method {
            name,
            rid: property(props, "$rid")?,
        });
    }
    if let Some(props) = topic.strip_prefix(DESIRED_PATCH) {
        let version = property(props, "$version").and_then(|v| v.parse().ok());
        return Some(HubPublish::Desired { version });
    }
    let rest = topic.strip_prefix(TWIN_RES)?;
    let (status, props) = rest.split_once('/')?;
    Some(HubPublish::TwinResponse {
        status: status.parse().ok()?,
        rid: property(props, "$rid")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_publishes_parse() {
        assert_eq!(
            parse_publish("$iothub/methods/res/200/?$rid=1f", "d1"),
            Ok(DevicePublish::MethodResponse {
                status: 200,
                rid: "1f"
            })
        );
        assert_eq!(
            parse_publish("$iothub/twin/GET/?$rid=abc-1", "d1"),
            Ok(DevicePublish::TwinGet { rid: "abc-1" })
        );
        assert_eq!(
            parse_publish(
                "$iothub/twin/PATCH/properties/reported/?$rid=7&$version=3",
                "d1"
            ),
            Ok(DevicePublish::ReportedPatch { rid: "7" })
        );
        assert_eq!(
            parse_publish("devices/d1/messages/events/a=b", "d1"),
            Ok(DevicePublish::Telemetry)
        );
    }

    #[test]
    fn foreign_and_broken_topics_are_refused() {
        assert!(matches!(
            parse_publish("devices/d2/messages/events/", "d1"),
            Err(TopicError::Foreign(_))
        ));
        assert!(matches!(
            parse_publish("devices/d1x/messages/events/", "d1"),
            Err(TopicError::Foreign(_))
        ));
        assert!(matches!(
            parse_publish("$iothub/twin/GET/", "d1"),
            Err(TopicError::NoRid(_))
        ));
        assert!(matches!(
            parse_publish("$iothub/methods/res/ok/?$rid=1", "d1"),
            Err(TopicError::BadStatus(_))
        ));
        assert!(matches!(
            parse_publish("anything", "d1"),
            Err(TopicError::Foreign(_))
        ));
    }

    #[test]
    fn filters() {
        assert_eq!(
            parse_filter("$iothub/methods/POST/#", "d"),
            Some(Subscription::Methods)
        );
        assert_eq!(
            parse_filter("devices/d/messages/devicebound/#", "d"),
            Some(Subscription::CloudToDevice)
        );
        assert_eq!(parse_filter("devices/e/messages/devicebound/#", "d"), None);
        assert_eq!(parse_filter("#", "d"), None);
    }

    #[test]
    fn method_responses_are_written_in_place() {
        let mut topic = String::from("left over");
        for status in [200, 0, -1, 504101, i32::MIN, i32::MAX] {
            write_method_response(&mut topic, status, "1f");
            assert_eq!(topic, format!("$iothub/methods/res/{status}/?$rid=1f"));
            assert_eq!(topic, method_response(status, "1f"));
            assert_eq!(
                parse_publish(&topic, "d"),
                Ok(DevicePublish::MethodResponse { status, rid: "1f" })
            );
        }
    }

    #[test]
    fn hub_topics_round_trip() {
        let rid = method_rid(OpId::new(3, 9));
        let t = method_request("reboot", &rid);
        assert_eq!(t, format!("$iothub/methods/POST/reboot/?$rid={rid}"));
        assert_eq!(
            parse_hub_publish(&t),
            Some(HubPublish::Method {
                name: "reboot",
                rid: &rid
            })
        );
        assert_eq!(op_of_rid(&rid), Some(OpId::new(3, 9)));
        assert_eq!(
            twin_response(204, "5", Some(8)),
            "$iothub/twin/res/204/?$rid=5&$version=8"
        );
        assert_eq!(
            parse_hub_publish("$iothub/twin/res/204/?$rid=5&$version=8"),
            Some(HubPublish::TwinResponse {
                status: 204,
                rid: "5"
            })
        );
        assert_eq!(
            parse_hub_publish(&desired_patch(4)),
            Some(HubPublish::Desired { version: Some(4) })
        );
        assert_eq!(property("?$rid=1&$version=2", "$version"), Some("2"));
    }
}
