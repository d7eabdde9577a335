//! How the fleet's devices sign their CONNECT passwords, SAS tokens (see [`crate::sas`]): with
//! the keys of a fleetsim hub (its [`Keyring`], from its state directory), with each device's
//! own keys from a key file (a real hub's registry: see `fleetsim keys`), or with a shared
//! access policy that grants DeviceConnect (`skn=` tokens, from a service connection string).

use std::path::PathBuf;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::fleet::keyfile::KeyFile;
use crate::sas::{generate_token, Keyring};

/// Why a device cannot sign, or a connection string is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The key file has no key for a device of the fleet.
    #[error("device '{device}' is not in key file {} ({count} devices); export the fleet's keys with `fleetsim keys --scenario ...`, or give a file that has them", path.display())]
    Missing {
        /// The device.
        device: String,
        /// The key file.
        path: PathBuf,
        /// Devices the file has.
        count: usize,
    },
    /// A key is not base64 (only keys from a fleetsim state directory are not checked earlier).
    #[error("the key of device '{0}' is not base64")]
    BadKey(String),
    /// `--connection-string` is not a shared access policy's connection string.
    #[error("bad connection string: {0}; expected HostName=...;SharedAccessKeyName=...;SharedAccessKey=... of a policy with DeviceConnect")]
    ConnectionString(String),
}

/// A shared access policy's key, from a service connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyKey {
    /// `HostName`: the hub, as devices name it in their username and token.
    pub host_name: String,
    /// `SharedAccessKeyName`: the policy (it must grant DeviceConnect).
    pub name: String,
    /// `SharedAccessKey`, base64.
    pub key: String,
}

impl std::str::FromStr for PolicyKey {
    type Err = CredentialsError;

    /// Parses `HostName=..;SharedAccessKeyName=..;SharedAccessKey=..` (any order, names in any
    /// case, other fields ignored).
    fn from_str(text: &str) -> Result<PolicyKey, CredentialsError> {
        let bad = |what: String| CredentialsError::ConnectionString(what);
        let (mut host_name, mut name, mut key) = (None, None, None);
        for part in text.trim().split(';').filter(|p| !p.trim().is_empty()) {
            let (field, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("'{part}' is not Name=value")))?;
            let slot =
                match field.trim().to_ascii_lowercase().as_str() {
                    "hostname" => &mut host_name,
                    "sharedaccesskeyname" => &mut name,
                    "sharedaccesskey" => &mut key,
                    "deviceid" => return Err(bad(
                        "it names a device (DeviceId); give the device keys with --keys instead"
                            .into(),
                    )),
                    _ => continue,
                };
            *slot = Some(value.trim().to_owned());
        }
        let need = |v: Option<String>, field: &str| {
            v.filter(|v| !v.is_empty())
                .ok_or_else(|| bad(format!("it has no {field}")))
        };
        let policy = PolicyKey {
            host_name: need(host_name, "HostName")?,
            name: need(name, "SharedAccessKeyName")?,
            key: need(key, "SharedAccessKey")?,
        };
        if B64.decode(&policy.key).is_err() {
            return Err(bad("SharedAccessKey is not base64".into()));
        }
        Ok(policy)
    }
}

/// What the fleet's devices sign their SAS tokens with.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A fleetsim hub's device keys (derived from its secret, or a device's own), read from its
    /// state directory or shared with the hub in process.
    Hub(Arc<Keyring>),
    /// Each device's own primary key, from a key file.
    Keys(Arc<KeyFile>),
    /// A shared access policy with DeviceConnect: every device signs with the policy's key.
    Policy(PolicyKey),
}

impl Credentials {
    /// The CONNECT password of `device_id` on hub `host`: a SAS token valid until `expiry`
    /// (epoch seconds), for resource `{host}/devices/{device_id}` (with `skn` for a policy).
    pub fn password(
        &self,
        host: &str,
        device_id: &str,
        expiry: u64,
    ) -> Result<String, CredentialsError> {
        let resource = format!("{host}/devices/{device_id}");
        let token = match self {
            Credentials::Hub(keys) => {
                let key = keys.device_keys(device_id).primary_key;
                generate_token(&resource, &key, None, expiry)
            }
            Credentials::Keys(file) => {
                let key = file
                    .primary_key(device_id)
                    .ok_or_else(|| missing(file, device_id))?;
                generate_token(&resource, key, None, expiry)
            }
            Credentials::Policy(p) => generate_token(&resource, &p.key, Some(&p.name), expiry),
        };
        token.ok_or_else(|| CredentialsError::BadKey(device_id.to_owned()))
    }

    /// Checks, before any connection, that every device of `ids` has a key.
    pub(crate) fn check<'a>(
        &self,
        mut ids: impl Iterator<Item = &'a str>,
    ) -> Result<(), CredentialsError> {
        match self {
            Credentials::Keys(file) => match ids.find(|id| file.primary_key(id).is_none()) {
                Some(id) => Err(missing(file, id)),
                None => Ok(()),
            },
            Credentials::Hub(_) | Credentials::Policy(_) => Ok(()),
        }
    }
}

fn missing(file: &KeyFile, device: &str) -> CredentialsError {
    CredentialsError::Missing {
        device: device.to_owned(),
        path: file.path().to_owned(),
        count: file.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sas::{random_key, SasToken};
    use std::collections::HashMap;
    use std::path::Path;

    #[test]
    fn policy_connection_strings_parse_or_say_what_is_missing() {
        let p: PolicyKey =
            "HostName=myhub.azure-devices.net;SharedAccessKeyName=device;SharedAccessKey=AAAA"
                .parse()
                .unwrap();
        assert_eq!(
            (p.host_name.as_str(), p.name.as_str(), p.key.as_str()),
            ("myhub.azure-devices.net", "device", "AAAA")
        );
        for (text, why) in [
            ("HostName=h;SharedAccessKey=AAAA", "no SharedAccessKeyName"),
            ("HostName=h;DeviceId=d;SharedAccessKey=AAAA", "--keys"),
            (
                "HostName=h;SharedAccessKeyName=p;SharedAccessKey=!!",
                "not base64",
            ),
            ("junk", "'junk' is not Name=value"),
        ] {
            let e = text.parse::<PolicyKey>().unwrap_err().to_string();
            assert!(e.contains(why), "{e} lacks {why}");
        }
    }

    #[test]
    fn each_source_signs_a_token_for_its_device() {
        // What the hub checks of a device's password (the hub's own test of these tokens is in
        // tests/mqtt.rs): the resource is the device, the key signed it, it has not expired.
        let hub = Arc::new(Keyring::new(b"secret".to_vec(), HashMap::new()));
        let now = time::OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        let own = hub.derived_keys("d1").primary_key;
        let file = KeyFile::parse(&format!("d1,{own}\n"), Path::new("k.csv")).unwrap();
        let device = random_key();
        let policy = PolicyKey {
            host_name: "localhost".into(),
            name: "device".into(),
            key: device.clone(),
        };
        for (credentials, key, skn) in [
            (Credentials::Hub(hub.clone()), &own, None),
            (Credentials::Keys(Arc::new(file.clone())), &own, None),
            (Credentials::Policy(policy), &device, Some("device")),
        ] {
            let token = credentials.password("localhost", "d1", 2_000).unwrap();
            let token = SasToken::parse(&token).unwrap();
            assert_eq!(token.resource(), Ok("localhost/devices/d1".into()));
            assert!(token.signed_by([key.as_str()]), "{credentials:?}");
            assert_eq!(token.skn.as_deref(), skn);
            assert_eq!(token.check_expiry(now), Ok(()));
        }
        let t = Credentials::Policy(PolicyKey {
            host_name: "localhost".into(),
            name: "device".into(),
            key: "AAAA".into(),
        })
        .password("localhost", "d1", 2_000)
        .unwrap();
        assert_eq!(SasToken::parse(&t).unwrap().skn.as_deref(), Some("device"));

        let keys = Credentials::Keys(Arc::new(file));
        assert_eq!(keys.check(["d1"].into_iter()), Ok(()));
        let e = keys.check(["d1", "d2"].into_iter()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "device 'd2' is not in key file k.csv (1 devices); export the fleet's keys with \
             `fleetsim keys --scenario ...`, or give a file that has them"
        );
        assert_eq!(keys.password("localhost", "d2", 2_000), Err(e));
    }
}
