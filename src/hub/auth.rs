//! The hub's side of shared access signatures: its shared access policies and their
//! permissions, and the [`Authority`] that checks the tokens devices and back ends present
//! (the token format, signing and device keys are in [`crate::sas`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::sas::{malformed, random_key, AuthError, DeviceKeys, Keyring, SasToken};

/// One permission a shared access policy may grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum Permission {
    /// Read the identity registry.
    RegistryRead,
    /// Write the identity registry.
    RegistryWrite,
    /// Service-side endpoints: twins, direct methods, queries, jobs.
    ServiceConnect,
    /// Device-side endpoints (connect on behalf of any device).
    DeviceConnect,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A service operation's need, checked against a policy's permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read twins, jobs and query results: RegistryRead or ServiceConnect.
    Read,
    /// Write twins: RegistryWrite or ServiceConnect.
    TwinWrite,
    /// Create or cancel jobs, invoke direct methods: ServiceConnect.
    Service,
    /// Read device identities (with their keys): RegistryRead.
    RegistryRead,
    /// Create or delete device identities: RegistryWrite.
    RegistryWrite,
}

impl Access {
    /// The permissions that each allow this access.
    pub(crate) fn any_of(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Access::Read => &[RegistryRead, ServiceConnect],
            Access::TwinWrite => &[RegistryWrite, ServiceConnect],
            Access::Service => &[ServiceConnect],
            Access::RegistryRead => &[RegistryRead],
            Access::RegistryWrite => &[RegistryWrite],
        }
    }

    fn needed(self) -> String {
        self.any_of()
            .iter()
            .map(Permission::to_string)
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

/// A shared access policy: a name, two keys and what they allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// The policy name (`skn`), e.g. `iothubowner`.
    pub(crate) key_name: String,
    /// Base64 primary key.
    pub primary_key: String,
    /// Base64 secondary key.
    pub secondary_key: String,
    /// What it allows.
    pub(crate) rights: Vec<Permission>,
}

/// The policies IoT Hub creates with every hub, with fresh random keys.
pub fn default_policies() -> Vec<Policy> {
    use Permission::*;
    [
        (
            "iothubowner",
            vec![RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect],
        ),
        ("service", vec![ServiceConnect]),
        ("device", vec![DeviceConnect]),
        ("registryRead", vec![RegistryRead]),
        ("registryReadWrite", vec![RegistryRead, RegistryWrite]),
    ]
    .into_iter()
    .map(|(name, rights)| Policy {
        key_name: name.to_owned(),
        primary_key: random_key(),
        secondary_key: random_key(),
        rights,
    })
    .collect()
}

/// The keys and names one hub trusts: its host names, its policies and its devices' keys.
/// Shared by the REST API and the MQTT endpoint.
#[derive(Debug)]
pub struct Authority {
    hostnames: Vec<String>,
    policies: Vec<Policy>,
    keys: Arc<Keyring>,
}

impl Authority {
    /// An authority for `hostnames` (the first is the one connection strings name), deriving
    /// device keys from `device_secret` except for the devices of `custom`.
    pub fn new(
        hostnames: Vec<String>,
        policies: Vec<Policy>,
        device_secret: Vec<u8>,
        custom: HashMap<String, DeviceKeys>,
    ) -> Self {
        Authority {
            hostnames: hostnames
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            policies,
            keys: Arc::new(Keyring::new(device_secret, custom)),
        }
    }

    /// The devices' keys, shared: a fleet signing for this hub's devices uses them.
    pub fn keyring(&self) -> Arc<Keyring> {
        self.keys.clone()
    }

    /// The host name connection strings use.
    pub(crate) fn hostname(&self) -> &str {
        self.hostnames.first().map_or("localhost", String::as_str)
    }

    /// The policies.
    pub(crate) fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// A policy by name (case-sensitive, as IoT Hub's).
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.key_name == name)
    }

    /// The keys derived for `device_id` from the hub's device secret.
    pub fn derived_keys(&self, device_id: &str) -> DeviceKeys {
        self.keys.derived_keys(device_id)
    }

    /// A device's keys: its own if it brought them, else the derived ones.
    pub fn device_keys(&self, device_id: &str) -> DeviceKeys {
        self.keys.device_keys(device_id)
    }

    /// Records keys a device brought (`None`: it uses derived keys again). Answers the devices
    /// with their own keys now, for the caller to persist.
    pub(crate) fn set_device_keys(
        &self,
        device_id: &str,
        keys: Option<DeviceKeys>,
    ) -> HashMap<String, DeviceKeys> {
        self.keys.set_device_keys(device_id, keys)
    }

    /// Whether `host` (a resource's host part, maybe with a port) names this hub.
    fn is_our_host(&self, host: &str) -> bool {
        let host = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        self.hostnames.iter().any(|h| h == host)
    }

    /// Checks a token a device presents (MQTT password): signed by the device's key for
    /// `{host}/devices/{device_id}`, or by a policy with DeviceConnect; not expired.
    pub fn verify_device_token(
        &self,
        token: &str,
        host: &str,
        device_id: &str,
        now_wall: OffsetDateTime,
    ) -> Result<(), AuthError> {
        let token = SasToken::parse(token)?;
        let resource = token.resource()?;
        let (res_host, path) = resource.split_once('/').unwrap_or((&resource, ""));
        let wanted = format!("{host}/devices/{device_id}");
        let covers = (self.is_our_host(res_host) || res_host == host.to_ascii_lowercase())
            && (path.is_empty()
                || path == "devices"
                || path == format!("devices/{}", device_id.to_ascii_lowercase()));
        if !covers {
            return Err(AuthError::WrongResource { resource, wanted });
        }
        match &token.skn {
            Some(name) => {
                let policy = self.signed_policy(&token, name)?;
                if !policy.rights.contains(&Permission::DeviceConnect) {
                    return Err(AuthError::Forbidden {
                        policy: name.clone(),
                        needed: Permission::DeviceConnect.to_string(),
                    });
                }
            }
            None => {
                if path.is_empty() || path == "devices" {
                    return Err(AuthError::WrongResource { resource, wanted });
                }
                let keys = self.device_keys(device_id);
                if !token.signed_by([keys.primary_key.as_str(), keys.secondary_key.as_str()]) {
                    return Err(AuthError::BadSignature(format!("device '{device_id}'")));
                }
            }
        }
        token.check_expiry(now_wall)
    }

    /// Checks a token a back end presents (`Authorization` header) for an operation needing
    /// `access`: signed by a policy of this hub for this hub's host, not expired, and the
    /// policy grants the access. Answers the policy name.
    pub(crate) fn verify_service_token(
        &self,
        token: &str,
        access: Access,
        now_wall: OffsetDateTime,
    ) -> Result<&str, AuthError> {
        let token = SasToken::parse(token)?;
        let resource = token.resource()?;
        let res_host = resource.split('/').next().unwrap_or_default();
        if !self.is_our_host(res_host) {
            return Err(AuthError::WrongResource {
                resource,
                wanted: self.hostname().to_owned(),
            });
        }
        let name = token.skn.as_deref().ok_or_else(|| {
            malformed("a service token needs skn (the shared access policy name)")
        })?;
        let policy = self.signed_policy(&token, name)?;
        token.check_expiry(now_wall)?;
        if !access.any_of().iter().any(|p| policy.rights.contains(p)) {
            return Err(AuthError::Forbidden {
                policy: policy.key_name.clone(),
                needed: access.needed(),
            });
        }
        Ok(&policy.key_name)
    }

    fn signed_policy(&self, token: &SasToken, name: &str) -> Result<&Policy, AuthError> {
        let policy = self
            .policy(name)
            .ok_or_else(|| AuthError::UnknownPolicy(name.to_owned()))?;
        if !token.signed_by([policy.primary_key.as_str(), policy.secondary_key.as_str()]) {
            return Err(AuthError::BadSignature(format!("policy '{name}'")));
        }
        Ok(policy)
    }

    /// `HostName={host};SharedAccessKeyName=..;SharedAccessKey=..` for a policy.
    pub(crate) fn service_connection_string(&self, host: &str, policy: &str) -> Option<String> {
        self.policy(policy).map(|p| {
            format!(
                "HostName={host};SharedAccessKeyName={};SharedAccessKey={}",
                p.key_name, p.primary_key
            )
        })
    }

    /// `HostName={host};DeviceId=..;SharedAccessKey=..` for a device.
    pub(crate) fn device_connection_string(&self, host: &str, device_id: &str) -> String {
        format!(
            "HostName={host};DeviceId={device_id};SharedAccessKey={}",
            self.device_keys(device_id).primary_key
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sas::{encode_component, generate_token, sign};

    fn authority() -> Authority {
        Authority::new(
            vec!["Hub.Example".into(), "localhost".into()],
            default_policies(),
            b"secret".to_vec(),
            HashMap::new(),
        )
    }

    fn at(epoch: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(epoch).unwrap()
    }

    #[test]
    fn service_tokens_check_policy_signature_expiry_and_rights() {
        let a = authority();
        let owner = a.policy("iothubowner").unwrap().primary_key.clone();
        let t = generate_token("hub.example", &owner, Some("iothubowner"), 2000).unwrap();
        assert_eq!(
            a.verify_service_token(&t, Access::RegistryWrite, at(1000)),
            Ok("iothubowner")
        );
        assert!(matches!(
            a.verify_service_token(&t, Access::Read, at(2000)),
            Err(AuthError::Expired { .. })
        ));
        // Signed with the wrong key.
        let forged = generate_token("hub.example", &random_key(), Some("iothubowner"), 2000);
        assert!(matches!(
            a.verify_service_token(&forged.unwrap(), Access::Read, at(1000)),
            Err(AuthError::BadSignature(_))
        ));
        // registryRead may read the registry but not write it nor invoke methods.
        let rr = a.policy("registryRead").unwrap().secondary_key.clone();
        let t = generate_token("localhost:443", &rr, Some("registryRead"), 2000).unwrap();
        assert!(a
            .verify_service_token(&t, Access::RegistryRead, at(1000))
            .is_ok());
        let e = a
            .verify_service_token(&t, Access::Service, at(1000))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "policy 'registryRead' lacks the ServiceConnect permission"
        );
        let other = generate_token("elsewhere", &rr, Some("registryRead"), 2000).unwrap();
        assert!(matches!(
            a.verify_service_token(&other, Access::Read, at(1000)),
            Err(AuthError::WrongResource { .. })
        ));
    }

    #[test]
    fn signature_covers_sr_exactly_as_received() {
        let a = authority();
        let key = a.derived_keys("dev 1").primary_key;
        // Python quotes with safe="" (spaces as %20), like us; a sender that leaves '/' alone
        // signs a different string, and its token must still verify.
        let sr = "hub.example/devices/dev%201";
        let sig = sign(&key, sr, 50).unwrap();
        let token = format!(
            "SharedAccessSignature sig={}&se=50&sr={sr}",
            encode_component(&sig)
        );
        assert_eq!(
            a.verify_device_token(&token, "hub.example", "dev 1", at(10)),
            Ok(())
        );
        assert!(a
            .verify_device_token(&token, "hub.example", "dev 2", at(10))
            .is_err());
    }

    #[test]
    fn device_tokens_use_own_or_derived_keys_or_a_device_policy() {
        let a = authority();
        let derived = a.derived_keys("d1");
        assert_eq!(derived, a.derived_keys("d1"));
        assert_ne!(derived, a.derived_keys("d2"));
        let t = generate_token("hub.example/devices/d1", &derived.secondary_key, None, 99).unwrap();
        assert!(a
            .verify_device_token(&t, "hub.example", "d1", at(1))
            .is_ok());
        let own = DeviceKeys {
            primary_key: random_key(),
            secondary_key: random_key(),
        };
        a.set_device_keys("d1", Some(own.clone()));
        assert!(matches!(
            a.verify_device_token(&t, "hub.example", "d1", at(1)),
            Err(AuthError::BadSignature(_))
        ));
        let t = generate_token("hub.example/devices/d1", &own.primary_key, None, 99).unwrap();
        assert!(a
            .verify_device_token(&t, "hub.example", "d1", at(1))
            .is_ok());
        let dev = a.policy("device").unwrap().primary_key.clone();
        let t = generate_token("hub.example", &dev, Some("device"), 99).unwrap();
        assert!(a
            .verify_device_token(&t, "hub.example", "d9", at(1))
            .is_ok());
        let svc = a.policy("service").unwrap().primary_key.clone();
        let t = generate_token("hub.example", &svc, Some("service"), 99).unwrap();
        assert!(matches!(
            a.verify_device_token(&t, "hub.example", "d9", at(1)),
            Err(AuthError::Forbidden { .. })
        ));
        assert!(a
            .device_connection_string("hub.example", "d1")
            .contains(&own.primary_key));
    }
}
