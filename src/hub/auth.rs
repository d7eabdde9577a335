//! Shared access signatures as IoT Hub checks them (spec §4): parsing and verifying
//! `SharedAccessSignature sr=..&sig=..&se=..[&skn=..]` tokens, the hub's shared access policies
//! and their permissions, device identity keys, and a token generator for tests and scripts.
//!
//! Device keys: a device created with its own keys (`PUT /devices/{id}` with
//! `authentication.symmetricKey`) keeps them; every other device (REST-created without keys, or a
//! scenario's device) has keys *derived* from the hub's device secret:
//! `base64(HMAC-SHA256(device_secret, "primary:" + deviceId))` (and `"secondary:"`). A fleet
//! process elsewhere that is given the secret (from the state directory) derives the same keys
//! without asking the hub, and a million scenario devices cost no storage.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;

type HmacSha256 = Hmac<Sha256>;

/// What `encodeURIComponent` leaves alone; the SDKs encode `sr`, `sig` and `skn` this way.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Why a token was refused. The REST layer answers 401 IotHubUnauthorizedAccess with this text;
/// the MQTT endpoint answers CONNACK "not authorized".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header (or MQTT password).
    #[error("no SharedAccessSignature was given")]
    Missing,
    /// The token does not parse.
    #[error("malformed SharedAccessSignature: {0}")]
    Malformed(String),
    /// `se` is in the past.
    #[error("the SharedAccessSignature expired at {expired} (epoch seconds); it is now {now}")]
    Expired {
        /// The token's `se`.
        expired: u64,
        /// The hub's wall-clock time, epoch seconds.
        now: u64,
    },
    /// `skn` names no policy of this hub.
    #[error("unknown shared access policy '{0}'")]
    UnknownPolicy(String),
    /// The signature matches no key.
    #[error("the signature does not match the key of {0}")]
    BadSignature(String),
    /// `sr` is not a resource this token may be used for.
    #[error("the token's resource '{resource}' does not cover '{wanted}'")]
    WrongResource {
        /// The decoded `sr`.
        resource: String,
        /// What the request needed.
        wanted: String,
    },
    /// The policy lacks the permission the operation needs.
    #[error("policy '{policy}' lacks the {needed} permission")]
    Forbidden {
        /// The policy name.
        policy: String,
        /// What the operation needs, e.g. `RegistryWrite`.
        needed: String,
    },
}

/// One permission a shared access policy may grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Permission {
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
pub enum Access {
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
    pub fn any_of(self) -> &'static [Permission] {
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
    pub key_name: String,
    /// Base64 primary key.
    pub primary_key: String,
    /// Base64 secondary key.
    pub secondary_key: String,
    /// What it allows.
    pub rights: Vec<Permission>,
}

/// A device's two symmetric keys (base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceKeys {
    /// Base64 primary key.
    pub primary_key: String,
    /// Base64 secondary key.
    pub secondary_key: String,
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

/// 32 random bytes, base64 (the size of IoT Hub's generated keys).
pub fn random_key() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    B64.encode(bytes)
}

/// A parsed SAS token. `sr` is kept exactly as received: the signature covers those bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasToken {
    /// `sr` as received (URL-encoded by the sender, however it chose to encode it).
    pub sr: String,
    /// The decoded signature bytes.
    pub sig: Vec<u8>,
    /// `se`: expiry, epoch seconds.
    pub se: u64,
    /// `skn`: the policy name, for policy-signed tokens.
    pub skn: Option<String>,
}

impl SasToken {
    /// Parses `SharedAccessSignature sr=..&sig=..&se=..[&skn=..]`, fields in any order.
    pub fn parse(text: &str) -> Result<SasToken, AuthError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AuthError::Missing);
        }
        let fields = text
            .strip_prefix("SharedAccessSignature ")
            .ok_or_else(|| malformed("it does not start with 'SharedAccessSignature '"))?;
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for part in fields.trim().split('&') {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| malformed(format!("field '{part}' has no '='")))?;
            let slot = match key {
                "sr" => &mut sr,
                "sig" => &mut sig,
                "se" => &mut se,
                "skn" => &mut skn,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(malformed(format!("field '{key}' appears twice")));
            }
        }
        let sr = sr.ok_or_else(|| malformed("no sr field"))?;
        let sig = sig.ok_or_else(|| malformed("no sig field"))?;
        let se = se.ok_or_else(|| malformed("no se field"))?;
        let sig = B64
            .decode(decode(sig)?.as_bytes())
            .map_err(|_| malformed("sig is not base64"))?;
        let se = se
            .parse()
            .map_err(|_| malformed(format!("se '{se}' is not an epoch time in seconds")))?;
        Ok(SasToken {
            sr: sr.to_owned(),
            sig,
            se,
            skn: skn.map(decode).transpose()?,
        })
    }

    /// The resource, URL-decoded and lowercased, without a trailing `/`.
    pub fn resource(&self) -> Result<String, AuthError> {
        Ok(decode(&self.sr)?.trim_end_matches('/').to_ascii_lowercase())
    }

    fn check_expiry(&self, now: OffsetDateTime) -> Result<(), AuthError> {
        let now = now.unix_timestamp().max(0) as u64;
        if self.se <= now {
            return Err(AuthError::Expired {
                expired: self.se,
                now,
            });
        }
        Ok(())
    }

    /// Whether the signature is HMAC-SHA256 of `sr + "\n" + se` under one of `keys` (base64).
    fn signed_by<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> bool {
        let message = format!("{}\n{}", self.sr, self.se);
        keys.into_iter().any(|key| {
            let Ok(key) = B64.decode(key) else {
                return false;
            };
            let Ok(mut mac) = HmacSha256::new_from_slice(&key) else {
                return false;
            };
            mac.update(message.as_bytes());
            mac.verify_slice(&self.sig).is_ok()
        })
    }
}

fn malformed(why: impl Into<String>) -> AuthError {
    AuthError::Malformed(why.into())
}

fn decode(text: &str) -> Result<String, AuthError> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| malformed(format!("'{text}' is not UTF-8 once URL-decoded")))
}

/// `encodeURIComponent`, as the SDKs apply it to token fields.
pub fn encode_component(text: &str) -> String {
    utf8_percent_encode(text, URI_COMPONENT).to_string()
}

/// `base64(HMAC-SHA256(base64decode(key), sr + "\n" + se))`; `None` if the key is not base64.
pub fn sign(key_b64: &str, sr: &str, se: u64) -> Option<String> {
    let key = B64.decode(key_b64).ok()?;
    let mut mac = HmacSha256::new_from_slice(&key).ok()?;
    mac.update(format!("{sr}\n{se}").as_bytes());
    Some(B64.encode(mac.finalize().into_bytes()))
}

/// Builds a token for `resource` (not yet encoded) valid until `expiry` (epoch seconds), the
/// way the SDKs do; `policy` adds `skn`. `None` if the key is not base64.
pub fn generate_token(
    resource: &str,
    key_b64: &str,
    policy: Option<&str>,
    expiry: u64,
) -> Option<String> {
    let sr = encode_component(resource);
    let sig = sign(key_b64, &sr, expiry)?;
    let mut token = format!(
        "SharedAccessSignature sr={sr}&sig={}&se={expiry}",
        encode_component(&sig)
    );
    if let Some(p) = policy {
        token.push_str("&skn=");
        token.push_str(&encode_component(p));
    }
    Some(token)
}

/// The keys and names one hub trusts: its host names, its policies, the device-key secret and
/// the devices that brought their own keys. Shared by the REST API and the MQTT endpoint.
#[derive(Debug)]
pub struct Authority {
    hostnames: Vec<String>,
    policies: Vec<Policy>,
    device_secret: Vec<u8>,
    /// Devices created with their own keys. A std mutex: held for a lookup or insert only,
    /// never across an `.await`.
    custom: Mutex<HashMap<String, DeviceKeys>>,
}

impl Authority {
    /// An authority for `hostnames` (the first is the one connection strings name).
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
            device_secret,
            custom: Mutex::new(custom),
        }
    }

    /// The host name connection strings use.
    pub fn hostname(&self) -> &str {
        self.hostnames.first().map_or("localhost", String::as_str)
    }

    /// The policies.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// A policy by name (case-sensitive, as IoT Hub's).
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.key_name == name)
    }

    /// The keys derived for `device_id` from the hub's device secret.
    pub fn derived_keys(&self, device_id: &str) -> DeviceKeys {
        let derive = |which: &str| {
            let mut mac = HmacSha256::new_from_slice(&self.device_secret)
                .expect("HMAC accepts keys of any length");
            mac.update(which.as_bytes());
            mac.update(device_id.as_bytes());
            B64.encode(mac.finalize().into_bytes())
        };
        DeviceKeys {
            primary_key: derive("primary:"),
            secondary_key: derive("secondary:"),
        }
    }

    /// A device's keys: its own if it brought them, else the derived ones.
    pub fn device_keys(&self, device_id: &str) -> DeviceKeys {
        self.custom_keys()
            .get(device_id)
            .cloned()
            .unwrap_or_else(|| self.derived_keys(device_id))
    }

    /// Records keys a device brought (`None`: it uses derived keys again). Answers the devices
    /// with their own keys now, for the caller to persist.
    pub fn set_device_keys(
        &self,
        device_id: &str,
        keys: Option<DeviceKeys>,
    ) -> HashMap<String, DeviceKeys> {
        let mut custom = self.custom_keys();
        match keys {
            Some(k) => custom.insert(device_id.to_owned(), k),
            None => custom.remove(device_id),
        };
        custom.clone()
    }

    fn custom_keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, DeviceKeys>> {
        // A poisoned map is still a valid map: every write is a single insert or remove.
        self.custom.lock().unwrap_or_else(|e| e.into_inner())
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
    pub fn verify_service_token(
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
    pub fn service_connection_string(&self, host: &str, policy: &str) -> Option<String> {
        self.policy(policy).map(|p| {
            format!(
                "HostName={host};SharedAccessKeyName={};SharedAccessKey={}",
                p.key_name, p.primary_key
            )
        })
    }

    /// `HostName={host};DeviceId=..;SharedAccessKey=..` for a device.
    pub fn device_connection_string(&self, host: &str, device_id: &str) -> String {
        format!(
            "HostName={host};DeviceId={device_id};SharedAccessKey={}",
            self.device_keys(device_id).primary_key
        )
    }
}

/// A shared, cheaply cloned authority.
pub type SharedAuthority = Arc<Authority>;

#[cfg(test)]
mod tests {
    use super::*;

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
    fn signature_matches_the_documented_formula() {
        // key "c2VjcmV0" is base64("secret"); HMAC-SHA256("secret", "myhub%2Fdevices%2Fd1\n1700000000").
        let sig = sign("c2VjcmV0", "myhub%2Fdevices%2Fd1", 1_700_000_000).unwrap();
        let mut mac = HmacSha256::new_from_slice(b"secret").unwrap();
        mac.update(b"myhub%2Fdevices%2Fd1\n1700000000");
        assert_eq!(sig, B64.encode(mac.finalize().into_bytes()));
        assert_eq!(sign("not base64!", "x", 1), None);
    }

    #[test]
    fn parses_fields_in_any_order() {
        let t =
            SasToken::parse("SharedAccessSignature se=10&skn=iothubowner&sr=h&sig=AAAA").unwrap();
        assert_eq!(
            (t.sr.as_str(), t.se, t.skn.as_deref()),
            ("h", 10, Some("iothubowner"))
        );
        assert_eq!(t.sig, vec![0, 0, 0]);
        for (bad, why) in [
            ("", "no SharedAccessSignature"),
            ("Bearer x", "does not start"),
            ("SharedAccessSignature sr=h&se=1", "no sig"),
            ("SharedAccessSignature sr=h&sig=AAAA&se=soon", "se 'soon'"),
            (
                "SharedAccessSignature sr=h&sr=h&sig=AAAA&se=1",
                "appears twice",
            ),
            ("SharedAccessSignature sr=h&sig=%%%&se=1", "not base64"),
        ] {
            let e = SasToken::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{e} lacks {why}");
        }
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
