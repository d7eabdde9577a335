//! The device registry: identities, connection state and twins, addressed by a dense index so
//! that a million devices are a `Vec`, plus the indexes that keep job queries from scanning every
//! twin (device ids always; equality on a tag or property path once a query has used it).
//!
//! Owned by the job engine task; nothing here locks.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::clock::{Clock, Micros};
use crate::hub::error::{ErrorCode, HubError};
use crate::hub::twin::{Object, Twin};
use crate::query::{Condition, Document, Plan};

use crate::ids::DeviceIdx;

/// One device identity with its twin.
#[derive(Debug, Clone)]
pub(crate) struct DeviceEntry {
    /// The device id.
    pub(crate) id: Arc<str>,
    /// `status`: enabled devices may connect.
    pub(crate) enabled: bool,
    /// The twin.
    pub(crate) twin: Twin,
}

/// A device's connection state, kept apart from its entry: it changes at every connect,
/// disconnect and message, and a million of these are 16 MB that stay in cache where the entries
/// (with their twins) would not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Presence {
    /// The device exists (false once deleted), so that this is all a connection event reads.
    live: bool,
    /// `connectionState`.
    pub(crate) connected: bool,
    /// `lastActivityTime`.
    pub(crate) last_activity_us: Micros,
}

/// A device seen through the query language.
pub(crate) struct TwinDoc<'a> {
    /// The device.
    pub(crate) entry: &'a DeviceEntry,
    /// Its connection state.
    pub(crate) presence: Presence,
    /// For the time fields.
    pub(crate) clock: &'a Clock,
}

fn walk<'a>(obj: &'a Object, path: &[&str]) -> Option<Cow<'a, Value>> {
    let (first, rest) = path.split_first()?;
    let mut cur = obj.get(*first)?;
    for key in rest {
        cur = cur.as_object()?.get(*key)?;
    }
    Some(Cow::Borrowed(cur))
}

impl Document for TwinDoc<'_> {
    fn resolve(&self, path: &[&str]) -> Option<Cow<'_, Value>> {
        let e = self.entry;
        match path {
            ["deviceId"] => Some(Cow::Owned(Value::String(e.id.to_string()))),
            ["status"] => Some(Cow::Owned(json!(if e.enabled {
                "enabled"
            } else {
                "disabled"
            }))),
            ["connectionState"] => {
                Some(Cow::Owned(json!(connection_state(self.presence.connected))))
            }
            ["version"] => Some(Cow::Owned(json!(e.twin.version))),
            ["etag"] => Some(Cow::Owned(json!(e.twin.etag()))),
            ["lastActivityTime"] => Some(Cow::Owned(json!(self
                .clock
                .iso_at(self.presence.last_activity_us)))),
            ["tags"] => Some(Cow::Owned(Value::Object((*e.twin.tags).clone()))),
            ["tags", rest @ ..] => walk(&e.twin.tags, rest),
            ["properties", "desired", "$version"] => {
                Some(Cow::Owned(json!(e.twin.desired.version)))
            }
            ["properties", "reported", "$version"] => {
                Some(Cow::Owned(json!(e.twin.reported.version)))
            }
            ["properties", "desired", rest @ ..] if !rest.is_empty() => {
                walk(&e.twin.desired.props, rest)
            }
            ["properties", "reported", rest @ ..] if !rest.is_empty() => {
                walk(&e.twin.reported.props, rest)
            }
            _ => {
                let whole = self.to_json();
                let mut cur = &whole;
                for key in path {
                    cur = cur.get(*key)?;
                }
                Some(Cow::Owned(cur.clone()))
            }
        }
    }

    fn to_json(&self) -> Value {
        let (e, presence, clock) = (self.entry, self.presence, self.clock);
        json!({
            "deviceId": &*e.id,
            "etag": e.twin.etag(),
            "deviceEtag": e.twin.etag(),
            "version": e.twin.version,
            "status": if e.enabled { "enabled" } else { "disabled" },
            "statusUpdateTime": "0001-01-01T00:00:00Z",
            "connectionState": connection_state(presence.connected),
            "lastActivityTime": clock.iso_at(presence.last_activity_us),
            "cloudToDeviceMessageCount": 0,
            "authenticationType": "sas",
            "capabilities": { "iotEdge": false },
            "tags": Value::Object((*e.twin.tags).clone()),
            "properties": {
                "desired": e.twin.desired.to_json(clock),
                "reported": e.twin.reported.to_json(clock),
            }
        })
    }
}

fn connection_state(connected: bool) -> &'static str {
    if connected {
        "Connected"
    } else {
        "Disconnected"
    }
}

/// A primitive value as an index key (numbers compare by value, so `1` and `1.0` are one key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Str(Box<str>),
    Num(u64),
    Bool(bool),
    Null,
}

impl Key {
    fn of(v: &Value) -> Option<Key> {
        match v {
            Value::String(s) => Some(Key::Str(s.as_str().into())),
            Value::Number(n) => n.as_f64().map(|f| Key::Num((f + 0.0).to_bits())),
            Value::Bool(b) => Some(Key::Bool(*b)),
            Value::Null => Some(Key::Null),
            _ => None,
        }
    }
}

/// An equality index on one attribute path, kept current as twins change.
#[derive(Debug, Default)]
struct PathIndex {
    postings: HashMap<Key, HashSet<DeviceIdx>>,
}

/// The registry of devices.
#[derive(Debug)]
pub struct Registry {
    devices: Vec<Option<DeviceEntry>>,
    /// Each device's connection state, by index (the default once deleted).
    presence: Vec<Presence>,
    by_id: HashMap<Arc<str>, DeviceIdx>,
    indexes: HashMap<Vec<String>, PathIndex>,
    connected: u64,
    clock: Clock,
    /// With a store: what changed since [`Registry::take_changes`]; None without (nothing is
    /// noted).
    changes: Option<Changes>,
}

/// The devices changed and the ids deleted since the store last took them.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// Devices added or changed (in the order noted, maybe more than once).
    pub(crate) devices: Vec<DeviceIdx>,
    /// Ids of devices deleted.
    pub(crate) removed: Vec<Arc<str>>,
}

impl Registry {
    /// An empty registry.
    pub fn new(clock: Clock) -> Self {
        Registry {
            devices: Vec::new(),
            presence: Vec::new(),
            by_id: HashMap::new(),
            indexes: HashMap::new(),
            connected: 0,
            clock,
            changes: None,
        }
    }

    /// Notes every change from now on, for the store; answers the changes noted so far (to add
    /// devices the store does not hold yet).
    pub(crate) fn note_changes(&mut self) -> &mut Changes {
        self.changes.get_or_insert_with(Changes::default)
    }

    /// The changes noted since the last call (none unless [`Registry::note_changes`] was
    /// called).
    pub(crate) fn take_changes(&mut self) -> Option<Changes> {
        self.changes.as_mut().map(std::mem::take)
    }

    fn changed(&mut self, idx: DeviceIdx) {
        if let Some(c) = &mut self.changes {
            c.devices.push(idx);
        }
    }

    /// Gives device `idx` a saved twin and status (a store's, on restart).
    pub(crate) fn restore(&mut self, idx: DeviceIdx, twin: Twin, enabled: bool) {
        let old = self.snapshot_keys(idx);
        if let Some(Some(e)) = self.devices.get_mut(idx.usize()) {
            e.twin = twin;
            e.enabled = enabled;
            self.reindex(idx, Some(old));
        }
    }

    /// Adds a device; refuses an id in use (409001).
    pub fn add(&mut self, id: &str, twin: Twin) -> Result<DeviceIdx, HubError> {
        if self.by_id.contains_key(id) {
            return Err(HubError::new(
                ErrorCode::DeviceAlreadyExists,
                format!("a device with id '{id}' already exists"),
            ));
        }
        let idx = DeviceIdx::new(self.devices.len() as u32);
        let id: Arc<str> = id.into();
        self.by_id.insert(id.clone(), idx);
        self.devices.push(Some(DeviceEntry {
            id,
            enabled: true,
            twin,
        }));
        self.presence.push(Presence {
            live: true,
            ..Presence::default()
        });
        self.reindex(idx, None);
        self.changed(idx);
        Ok(idx)
    }

    /// Removes a device and answers its last twin; its index stays unused.
    pub(crate) fn remove(&mut self, id: &str) -> Result<Value, HubError> {
        let idx = self.lookup(id)?;
        let old = self.snapshot_keys(idx);
        let last = self.doc(idx).ok_or_else(|| not_found(id))?.to_json();
        if let (Some(Some(e)), Some(c)) = (self.devices.get(idx.usize()), &mut self.changes) {
            c.removed.push(e.id.clone());
        }
        self.devices[idx.usize()] = None;
        self.by_id.remove(id);
        if std::mem::take(&mut self.presence[idx.usize()]).connected {
            self.connected -= 1;
        }
        for (path, key) in old {
            if let Some(set) = self
                .indexes
                .get_mut(&path)
                .and_then(|i| i.postings.get_mut(&key))
            {
                set.remove(&idx);
            }
        }
        Ok(last)
    }

    /// The index of a device id, or 404001.
    pub(crate) fn lookup(&self, id: &str) -> Result<DeviceIdx, HubError> {
        self.by_id.get(id).copied().ok_or_else(|| not_found(id))
    }

    /// A device by index (None once deleted).
    pub(crate) fn get(&self, idx: DeviceIdx) -> Option<&DeviceEntry> {
        self.devices.get(idx.usize()).and_then(Option::as_ref)
    }

    /// The number of live devices.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Devices connected now.
    pub(crate) fn connected(&self) -> u64 {
        self.connected
    }

    /// All live devices in index order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (DeviceIdx, &DeviceEntry)> {
        self.devices
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (DeviceIdx::new(i as u32), e)))
    }

    /// A query view of a device.
    pub(crate) fn doc(&self, idx: DeviceIdx) -> Option<TwinDoc<'_>> {
        self.get(idx).map(|entry| TwinDoc {
            entry,
            presence: self.presence[idx.usize()],
            clock: &self.clock,
        })
    }

    /// Whether a device is connected now (false for a deleted or unknown one).
    pub(crate) fn is_connected(&self, idx: DeviceIdx) -> bool {
        self.presence.get(idx.usize()).is_some_and(|p| p.connected)
    }

    /// Marks a device connected or not; returns whether the state changed.
    pub(crate) fn set_connected(&mut self, idx: DeviceIdx, connected: bool, now: Micros) -> bool {
        let Some(p) = self.presence.get_mut(idx.usize()).filter(|p| p.live) else {
            return false;
        };
        p.last_activity_us = now;
        if p.connected == connected {
            return false;
        }
        p.connected = connected;
        if connected {
            self.connected += 1;
        } else {
            self.connected -= 1;
        }
        true
    }

    /// Records device activity (a message from it).
    pub(crate) fn touch(&mut self, idx: DeviceIdx, now: Micros) {
        if let Some(p) = self.presence.get_mut(idx.usize()).filter(|p| p.live) {
            p.last_activity_us = now;
        }
    }

    /// Changes a twin through `change`, keeping the indexes current. On error nothing changes.
    pub(crate) fn update_twin<T>(
        &mut self,
        idx: DeviceIdx,
        change: impl FnOnce(&mut Twin) -> Result<T, HubError>,
    ) -> Result<T, HubError> {
        let old = self.snapshot_keys(idx);
        let Some(Some(e)) = self.devices.get_mut(idx.usize()) else {
            return Err(HubError::new(
                ErrorCode::DeviceNotFound,
                format!("no device at index {}", idx.get()),
            ));
        };
        let mut twin = e.twin.clone();
        let out = change(&mut twin)?;
        e.twin = twin;
        self.reindex(idx, Some(old));
        self.changed(idx);
        Ok(out)
    }

    /// The devices a condition selects, in registry order. Uses the id map for `deviceId`
    /// predicates and an equality index (built on first use, then kept current) for other paths.
    pub fn select(&mut self, cond: &Condition) -> Vec<DeviceIdx> {
        let mut candidates: Vec<DeviceIdx> = match cond.plan() {
            Plan::All => (0..self.devices.len() as u32).map(DeviceIdx::new).collect(),
            Plan::DeviceIds(ids) => {
                let mut v: Vec<_> = ids
                    .iter()
                    .filter_map(|id| self.by_id.get(id.as_str()).copied())
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            }
            Plan::Equals { path, value } => match Key::of(&value) {
                Some(key) => {
                    self.ensure_index(&path);
                    let mut v: Vec<_> = self.indexes[&path]
                        .postings
                        .get(&key)
                        .map(|s| s.iter().copied().collect())
                        .unwrap_or_default();
                    v.sort_unstable();
                    v
                }
                None => (0..self.devices.len() as u32).map(DeviceIdx::new).collect(),
            },
        };
        candidates.retain(|&i| self.doc(i).is_some_and(|d| cond.matches(&d)));
        candidates
    }

    fn ensure_index(&mut self, path: &[String]) {
        if self.indexes.contains_key(path) {
            return;
        }
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        let mut index = PathIndex::default();
        for (idx, _) in self.iter() {
            let Some(doc) = self.doc(idx) else { continue };
            if let Some(key) = doc.resolve(&parts).and_then(|v| Key::of(&v)) {
                index.postings.entry(key).or_default().insert(idx);
            }
        }
        self.indexes.insert(path.to_vec(), index);
    }

    fn snapshot_keys(&self, idx: DeviceIdx) -> Vec<(Vec<String>, Key)> {
        let Some(doc) = self.doc(idx) else {
            return Vec::new();
        };
        self.indexes
            .keys()
            .filter_map(|path| {
                let parts: Vec<&str> = path.iter().map(String::as_str).collect();
                doc.resolve(&parts)
                    .and_then(|v| Key::of(&v))
                    .map(|k| (path.clone(), k))
            })
            .collect()
    }

    fn reindex(&mut self, idx: DeviceIdx, old: Option<Vec<(Vec<String>, Key)>>) {
        if self.indexes.is_empty() {
            return;
        }
        let new = self.snapshot_keys(idx);
        if old.as_ref() == Some(&new) {
            return;
        }
        for (path, key) in old.unwrap_or_default() {
            if let Some(set) = self
                .indexes
                .get_mut(&path)
                .and_then(|i| i.postings.get_mut(&key))
            {
                set.remove(&idx);
            }
        }
        for (path, key) in new {
            if let Some(index) = self.indexes.get_mut(&path) {
                index.postings.entry(key).or_default().insert(idx);
            }
        }
    }
}

fn not_found(id: &str) -> HubError {
    HubError::new(
        ErrorCode::DeviceNotFound,
        format!("no device with id '{id}'"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::parse_condition;
    use serde_json::Map;

    fn obj(v: Value) -> Object {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::new(Clock::start());
        let b43 = Arc::new(obj(json!({"building": "43"})));
        let b44 = Arc::new(obj(json!({"building": "44"})));
        for i in 0..10 {
            let tags = if i < 6 { b43.clone() } else { b44.clone() };
            r.add(
                &format!("d{i}"),
                Twin::new(tags, Arc::new(Map::new()), Arc::new(Map::new())),
            )
            .unwrap();
        }
        r
    }

    #[test]
    fn ids_are_unique_and_removal_frees_them() {
        let mut r = registry();
        let e = r.add(
            "d1",
            Twin::new(Default::default(), Default::default(), Default::default()),
        );
        assert_eq!(e.unwrap_err().code, ErrorCode::DeviceAlreadyExists);
        r.remove("d1").unwrap();
        assert_eq!(r.lookup("d1").unwrap_err().code, ErrorCode::DeviceNotFound);
        assert_eq!(r.len(), 9);
    }

    fn devices(idx: &[u32]) -> Vec<DeviceIdx> {
        idx.iter().copied().map(DeviceIdx::new).collect()
    }

    #[test]
    fn index_follows_twin_changes() {
        let mut r = registry();
        let cond = parse_condition("tags.building = '44'").unwrap();
        assert_eq!(r.select(&cond), devices(&[6, 7, 8, 9]));
        r.update_twin(DeviceIdx::new(0), |t| {
            t.patch_tags(&obj(json!({"building": "44"})), 1)
        })
        .unwrap();
        r.remove("d7").unwrap();
        assert_eq!(r.select(&cond), devices(&[0, 6, 8, 9]));
        let by_id = parse_condition("deviceId = 'd3'").unwrap();
        assert_eq!(r.select(&by_id), devices(&[3]));
    }

    #[test]
    fn connection_count_tracks_changes() {
        let mut r = registry();
        assert!(r.set_connected(DeviceIdx::new(1), true, 5));
        assert!(!r.set_connected(DeviceIdx::new(1), true, 6));
        assert!(r.set_connected(DeviceIdx::new(2), true, 6));
        assert!(r.set_connected(DeviceIdx::new(1), false, 7));
        assert_eq!(r.connected(), 1);
        assert_eq!(r.presence[1].last_activity_us, 7);
        let doc = r.doc(DeviceIdx::new(2)).unwrap().to_json();
        assert_eq!(doc["connectionState"], "Connected");
        // A deleted device leaves the count and hears nothing more.
        assert_eq!(r.remove("d2").unwrap()["connectionState"], "Connected");
        assert_eq!(r.connected(), 0);
        assert!(!r.is_connected(DeviceIdx::new(2)));
        assert!(!r.set_connected(DeviceIdx::new(2), true, 8));
        assert_eq!(r.connected(), 0);
    }
}
