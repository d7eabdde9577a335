//! The hub's state directory (`--state-dir`, default `.fleetsim/`): what must survive a restart
//! so that back ends and devices keep their credentials.
//!
//! - `keys.json`: the shared access policies and the device-key secret, made at first start.
//! - `devices.json`: keys of devices that brought their own (others derive theirs, see
//!   [`crate::hub::auth`]).
//! - `ca.pem`, `ca.key`, `server.pem`, `server.key`: TLS material (see [`crate::tls`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::hub::auth::{default_policies, Authority, Policy};
use crate::sas::{random_key, DeviceKeys};
use crate::tls::{self, TlsError, TlsMaterial};

/// The policy and secret file.
pub(crate) const KEYS_FILE: &str = "keys.json";
/// Devices with their own keys.
pub(crate) const DEVICES_FILE: &str = "devices.json";

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not what fleetsim wrote.
    #[error("{}: {source}; delete it to start with new keys", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// TLS material could not be made or loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeysFile {
    policies: Vec<Policy>,
    /// Base64 secret from which devices' keys are derived.
    device_secret: String,
}

/// An open state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
    /// One save of `devices.json` at a time (see [`StateDir::save_device_keys`]).
    saving: Arc<Mutex<()>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

impl StateDir {
    /// Opens `path`, creating it if needed.
    pub fn open(path: &Path) -> Result<StateDir, StateError> {
        std::fs::create_dir_all(path).map_err(io(path))?;
        Ok(StateDir {
            path: path.to_owned(),
            saving: Arc::default(),
        })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, StateError> {
        let path = self.path.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Format { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let path = self.path.join(name);
        let text = serde_json::to_string_pretty(value).map_err(|source| StateError::Format {
            path: path.clone(),
            source,
        })?;
        // Write beside, then rename: a crash never leaves half a key file.
        let tmp = self.path.join(format!(".{name}.tmp"));
        tls::write_private(&tmp, &text).map_err(|e| match e {
            TlsError::Io { path, source } => StateError::Io { path, source },
            other => StateError::Tls(other),
        })?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// The hub's authority for `hostnames`: policies and the device secret from `keys.json`
    /// (made now if missing), and the devices with their own keys.
    pub fn authority(&self, hostnames: Vec<String>) -> Result<Authority, StateError> {
        let keys = match self.read_json::<KeysFile>(KEYS_FILE)? {
            Some(k) => k,
            None => {
                let k = KeysFile {
                    policies: default_policies(),
                    device_secret: random_key(),
                };
                self.write_json(KEYS_FILE, &k)?;
                k
            }
        };
        let secret = B64
            .decode(&keys.device_secret)
            .map_err(|e| StateError::Format {
                path: self.path.join(KEYS_FILE),
                source: serde::de::Error::custom(format!("deviceSecret is not base64: {e}")),
            })?;
        let custom = self
            .read_json::<HashMap<String, DeviceKeys>>(DEVICES_FILE)?
            .unwrap_or_default();
        Ok(Authority::new(hostnames, keys.policies, secret, custom))
    }

    /// Saves the devices that have their own keys, as `change` leaves them. One save at a time,
    /// each with the keys as its own change left them: two REST calls at once neither write
    /// the same temporary file nor put an older set back over a newer one.
    pub(crate) fn save_device_keys(
        &self,
        change: impl FnOnce() -> HashMap<String, DeviceKeys>,
    ) -> Result<(), StateError> {
        let _one = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        self.write_json(DEVICES_FILE, &change())
    }

    /// TLS material: the user's own (`cert` and `key`), or the CA kept here and a server
    /// certificate issued now for `names`.
    pub fn tls(
        &self,
        own: Option<(&Path, &Path)>,
        names: &[String],
        now: OffsetDateTime,
    ) -> Result<TlsMaterial, StateError> {
        Ok(match own {
            Some((cert, key)) => tls::load(cert, key)?,
            None => tls::generate(&self.path, names, now)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("fleetsim-state-{}", std::process::id()));
        let state = StateDir::open(&dir).unwrap();
        let a = state.authority(vec!["localhost".into()]).unwrap();
        let owner = a
            .service_connection_string("localhost", "iothubowner")
            .unwrap();
        assert!(owner.starts_with("HostName=localhost;SharedAccessKeyName=iothubowner;"));
        state
            .save_device_keys(|| {
                a.set_device_keys(
                    "d1",
                    Some(DeviceKeys {
                        primary_key: "AAAA".into(),
                        secondary_key: "BBBB".into(),
                    }),
                )
            })
            .unwrap();
        let b = StateDir::open(&dir)
            .unwrap()
            .authority(vec!["localhost".into()])
            .unwrap();
        assert_eq!(
            b.service_connection_string("localhost", "iothubowner")
                .unwrap(),
            owner
        );
        assert_eq!(b.device_keys("d1").primary_key, "AAAA");
        assert_eq!(b.device_keys("d2"), a.device_keys("d2"));
        std::fs::write(dir.join(KEYS_FILE), "{").unwrap();
        let e = state.authority(vec![]).unwrap_err().to_string();
        assert!(e.contains("keys.json") && e.contains("delete it"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
