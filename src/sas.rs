//! Shared access signatures (SAS), the tokens devices and back ends sign their requests with:
//! `SharedAccessSignature sr=..&sig=..&se=..[&skn=..]`, where `sig` is
//! `base64(HMAC-SHA256(base64decode(key), sr + "\n" + se))` and `sr` is the URL-encoded resource
//! (`{host}/devices/{id}` for a device, `{host}` for a policy), `se` the expiry in epoch seconds
//! and `skn` the shared access policy's name when a policy's key signed it. Parsing, signing and
//! generating tokens, and the keys of devices.
//!
//! Device keys: a device created with its own keys keeps them; every other device has keys
//! *derived* from its hub's device secret: `base64(HMAC-SHA256(device_secret, "primary:" +
//! deviceId))` (and `"secondary:"`). A fleet process elsewhere that is given the secret derives
//! the same keys without asking the hub, and a million scenario devices cost no storage. The
//! [`Keyring`] holds the secret and the devices' own keys, for the hub and a fleet alike.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

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

/// A device's two symmetric keys (base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceKeys {
    /// Base64 primary key.
    pub primary_key: String,
    /// Base64 secondary key.
    pub secondary_key: String,
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
pub(crate) struct SasToken {
    /// `sr` as received (URL-encoded by the sender, however it chose to encode it).
    pub(crate) sr: String,
    /// The decoded signature bytes.
    pub(crate) sig: Vec<u8>,
    /// `se`: expiry, epoch seconds.
    pub(crate) se: u64,
    /// `skn`: the policy name, for policy-signed tokens.
    pub(crate) skn: Option<String>,
}

impl SasToken {
    /// Parses `SharedAccessSignature sr=..&sig=..&se=..[&skn=..]`, fields in any order.
    pub(crate) fn parse(text: &str) -> Result<SasToken, AuthError> {
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
    pub(crate) fn resource(&self) -> Result<String, AuthError> {
        Ok(decode(&self.sr)?.trim_end_matches('/').to_ascii_lowercase())
    }

    /// Fails with [`AuthError::Expired`] unless `se` is after `now`.
    pub(crate) fn check_expiry(&self, now: OffsetDateTime) -> Result<(), AuthError> {
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
    pub(crate) fn signed_by<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> bool {
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

/// A [`AuthError::Malformed`] saying `why`.
pub(crate) fn malformed(why: impl Into<String>) -> AuthError {
    AuthError::Malformed(why.into())
}

fn decode(text: &str) -> Result<String, AuthError> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| malformed(format!("'{text}' is not UTF-8 once URL-decoded")))
}

/// `encodeURIComponent`, as the SDKs apply it to token fields.
pub(crate) fn encode_component(text: &str) -> String {
    utf8_percent_encode(text, URI_COMPONENT).to_string()
}

/// `base64(HMAC-SHA256(base64decode(key), sr + "\n" + se))`; `None` if the key is not base64.
pub(crate) fn sign(key_b64: &str, sr: &str, se: u64) -> Option<String> {
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

/// The device keys of one hub: the device secret every device's derived keys come from, and the
/// devices that brought their own keys. Shared by the hub's authority and a fleet that signs
/// for the hub's devices, so keys a device is given later reach both.
#[derive(Debug)]
pub struct Keyring {
    device_secret: Vec<u8>,
    /// Devices created with their own keys. A std mutex: held for a lookup or insert only,
    /// never across an `.await`.
    custom: Mutex<HashMap<String, DeviceKeys>>,
}

impl Keyring {
    /// A keyring deriving keys from `device_secret`, with the devices of `custom` keeping their
    /// own.
    pub(crate) fn new(device_secret: Vec<u8>, custom: HashMap<String, DeviceKeys>) -> Self {
        Keyring {
            device_secret,
            custom: Mutex::new(custom),
        }
    }

    /// The keys derived for `device_id` from the device secret.
    pub(crate) fn derived_keys(&self, device_id: &str) -> DeviceKeys {
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
    pub(crate) fn device_keys(&self, device_id: &str) -> DeviceKeys {
        self.custom_keys()
            .get(device_id)
            .cloned()
            .unwrap_or_else(|| self.derived_keys(device_id))
    }

    /// Records keys a device brought (`None`: it uses derived keys again). Answers the devices
    /// with their own keys now, for the caller to persist.
    pub(crate) fn set_device_keys(
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

    fn custom_keys(&self) -> MutexGuard<'_, HashMap<String, DeviceKeys>> {
        // A poisoned map is still a valid map: every write is a single insert or remove.
        self.custom.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
