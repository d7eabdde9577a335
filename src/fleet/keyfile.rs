//! The device key file: CSV `deviceId,primaryKey,secondaryKey` under that header, as
//! `fleetsim keys` writes it. Any `deviceId,primaryKey[,secondaryKey]` CSV reads: a first
//! (non-blank) line whose first field is `deviceId` or `id` (any case) is a header, blank lines are skipped, fields
//! may be double-quoted as in RFC 4180 (a device id may contain a comma), keys are base64.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::ids::check_device_id;
use crate::sas::DeviceKeys;

/// The header line `fleetsim keys` writes.
pub const HEADER: &str = "deviceId,primaryKey,secondaryKey";

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file cannot be read.
    #[error("cannot read key file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not `deviceId,primaryKey[,secondaryKey]`.
    #[error("{}:{line}: {what}; expected deviceId,primaryKey[,secondaryKey] with base64 keys", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        what: String,
    },
}

/// The devices' primary keys read from a key file (devices sign with their primary key).
#[derive(Debug, Clone)]
pub struct KeyFile {
    path: PathBuf,
    primary: HashMap<String, String>,
}

impl KeyFile {
    /// Reads and checks the key file at `path`.
    pub fn load(path: &Path) -> Result<KeyFile, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        KeyFile::parse(&text, path)
    }

    /// Parses key file `text`; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<KeyFile, KeyFileError> {
        let mut primary = HashMap::new();
        let mut first_line = HashMap::new();
        let mut first = true;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (n, line) in text.lines().enumerate() {
            let bad = |what: String| KeyFileError::Line {
                path: path.to_owned(),
                line: n + 1,
                what,
            };
            if line.trim().is_empty() {
                continue;
            }
            let fields = fields(line).map_err(bad)?;
            let is_header = ["deviceid", "id"].contains(&fields[0].to_ascii_lowercase().as_str());
            if std::mem::take(&mut first) && is_header {
                continue;
            }
            let (id, keys) = match &fields[..] {
                [id, keys @ ..] if (1..=2).contains(&keys.len()) => (id, keys),
                _ => return Err(bad(format!("{} fields", fields.len()))),
            };
            check_device_id(id).map_err(|e| bad(e.to_string()))?;
            for (key, name) in keys.iter().zip(["primaryKey", "secondaryKey"]) {
                if key.is_empty() || B64.decode(key).is_err() {
                    return Err(bad(format!("{name} of '{id}' is not base64: '{key}'")));
                }
            }
            if let Some(earlier) = first_line.insert(id.clone(), n + 1) {
                return Err(bad(format!("device '{id}' is on line {earlier} already")));
            }
            primary.insert(id.clone(), keys[0].clone());
        }
        Ok(KeyFile {
            path: path.to_owned(),
            primary,
        })
    }

    /// The file it was read from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// How many devices it has keys for.
    pub fn len(&self) -> usize {
        self.primary.len()
    }

    /// Whether it has no keys at all.
    pub fn is_empty(&self) -> bool {
        self.primary.is_empty()
    }

    /// The primary key of `device_id`, if the file has it.
    pub(crate) fn primary_key(&self, device_id: &str) -> Option<&str> {
        self.primary.get(device_id).map(String::as_str)
    }
}

/// The key file line of `device_id` (without the line break).
pub fn line(device_id: &str, keys: &DeviceKeys) -> String {
    let id = if device_id.contains([',', '"']) {
        format!("\"{}\"", device_id.replace('"', "\"\""))
    } else {
        device_id.to_owned()
    };
    format!("{id},{},{}", keys.primary_key, keys.secondary_key)
}

/// Splits a CSV line into trimmed fields; double quotes enclose a field and `""` inside is one
/// quote.
fn fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' if quoted => quoted = false,
            '"' if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            ',' if !quoted => fields.push(std::mem::take(&mut field).trim().to_owned()),
            c => field.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    fields.push(field.trim().to_owned());
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KeyFile, KeyFileError> {
        KeyFile::parse(text, Path::new("keys.csv"))
    }

    #[test]
    fn reads_what_it_writes_and_plainer_files() {
        let keys = DeviceKeys {
            primary_key: "AAAA".into(),
            secondary_key: "BBBB".into(),
        };
        let text = format!(
            "{HEADER}\r\n{}\r\n{}\r\n\r\n",
            line("b43-0001", &keys),
            line("odd,id(1)", &keys)
        );
        let f = parse(&text).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f.primary_key("b43-0001"), Some("AAAA"));
        assert_eq!(f.primary_key("odd,id(1)"), Some("AAAA"));
        // No header, no secondary key, spaces around fields.
        let f = parse("d1, AAAA\nd2,CCCC,DDDD\n").unwrap();
        assert_eq!(
            (
                f.primary_key("d1"),
                f.primary_key("d2"),
                f.primary_key("d3")
            ),
            (Some("AAAA"), Some("CCCC"), None)
        );
        assert!(parse("id,key\n").unwrap().is_empty());
    }

    #[test]
    fn a_bad_line_is_named_with_what_is_wrong() {
        for (text, want) in [
            (
                "deviceId,primaryKey\nd1,AAAA\nd2,not base64!\n",
                "keys.csv:3: primaryKey of 'd2' is not base64: 'not base64!'",
            ),
            ("d1\n", "keys.csv:1: 1 fields"),
            ("d1,AAAA,BBBB,CCCC\n", "keys.csv:1: 4 fields"),
            (
                "d1,AAAA,\n",
                "keys.csv:1: secondaryKey of 'd1' is not base64: ''",
            ),
            (
                "d1,AAAA\n\nd1,BBBB\n",
                "keys.csv:3: device 'd1' is on line 1 already",
            ),
            ("a/b,AAAA\n", "keys.csv:1: invalid deviceId \"a/b\""),
            ("\"d1,AAAA\n", "keys.csv:1: a quoted field is not closed"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}\ndoes not start with\n{want}");
            assert!(e.ends_with("expected deviceId,primaryKey[,secondaryKey] with base64 keys"));
        }
    }
}
