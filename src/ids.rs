//! Indices and identifiers, with no dependency on the rest of the crate: a device's position in
//! the registry (hub and fleet share it), the job engine's job slot and record positions
//! (distinct types, so one cannot be passed for the other), and the rules of a device id.

use std::fmt;

/// A dense device handle: the device's position in the registry (the fleet holds its devices
/// in the same order, so the hub and the fleet name a device alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct DeviceIdx(u32);

impl DeviceIdx {
    /// The device at position `i`.
    pub const fn new(i: u32) -> Self {
        DeviceIdx(i)
    }

    /// The position as a number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The position, to index the registry or the fleet.
    pub(crate) const fn usize(self) -> usize {
        self.0 as usize
    }
}

/// A job's position in the job engine's job table (its slot), also the job's metrics slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub(crate) struct SlotIdx(u32);

impl SlotIdx {
    /// The slot at position `i`.
    pub(crate) const fn new(i: u32) -> Self {
        SlotIdx(i)
    }

    /// The position as a number.
    pub(crate) const fn get(self) -> u32 {
        self.0
    }

    /// The position, to index the job table.
    pub(crate) const fn usize(self) -> usize {
        self.0 as usize
    }
}

/// A device record's position within one job's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub(crate) struct RecordIdx(u32);

impl RecordIdx {
    /// The record at position `i`.
    pub(crate) const fn new(i: u32) -> Self {
        RecordIdx(i)
    }

    /// The position as a number.
    pub(crate) const fn get(self) -> u32 {
        self.0
    }

    /// The position, to index a job's records.
    pub(crate) const fn usize(self) -> usize {
        self.0 as usize
    }

    /// The records `0..len`.
    pub(crate) fn all(len: usize) -> impl Iterator<Item = RecordIdx> {
        (0..len as u32).map(RecordIdx)
    }
}

/// The characters a device id may hold besides ASCII letters and digits.
const DEVICE_ID_PUNCTUATION: &str = "-.+%_#*?!(),:=@$'";

/// A device id that breaks IoT Hub's rules; the message says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidDeviceId(String);

impl fmt::Display for InvalidDeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidDeviceId {}

/// Checks a device id as IoT Hub does: 1..=128 ASCII letters, digits and `-.+%_#*?!(),:=@$'`.
pub(crate) fn check_device_id(id: &str) -> Result<(), InvalidDeviceId> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || DEVICE_ID_PUNCTUATION.contains(c))
    {
        return Err(InvalidDeviceId(format!(
            "invalid deviceId {id:?}; expected 1 to 128 ASCII letters, digits or \
             {DEVICE_ID_PUNCTUATION}"
        )));
    }
    Ok(())
}

/// Hashes the engine's map keys: device indices and operation ids the hub assigns itself, never
/// chosen by a client, so one multiply mixes them enough and SipHash's resistance to chosen keys
/// buys nothing; a churn event costs several of these look-ups.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdxHasher(u64);

/// An odd constant with well-spread bits (2^64 / golden ratio).
const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

impl std::hash::Hasher for IdxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(MIX);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by hub-assigned indices (see [`IdxHasher`]).
pub(crate) type IdxMap<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<IdxHasher>>;

/// A set of hub-assigned indices (see [`IdxHasher`]).
pub(crate) type IdxSet<K> = std::collections::HashSet<K, std::hash::BuildHasherDefault<IdxHasher>>;

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::*;

    #[test]
    fn index_hashes_spread_over_a_table() {
        // A hash table picks a bucket by the low bits: a run of device indices must fill a table
        // of its size's power of two evenly (the multiply is a bijection on the low bits).
        let build = BuildHasherDefault::<IdxHasher>::default();
        let mut buckets = vec![0u32; 1 << 12];
        for i in 0..1u32 << 12 {
            buckets[(build.hash_one(DeviceIdx::new(i)) & 0xfff) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| n == 1));
        let ops: IdxSet<u64> = (0..10_000u64).map(|r| (3 << 32) | r).collect();
        assert_eq!(ops.len(), 10_000);
    }

    #[test]
    fn device_ids_are_checked() {
        assert!(check_device_id("b43-f3-0001").is_ok());
        assert!(check_device_id("a/b").is_err());
        assert!(check_device_id("").is_err());
        assert_eq!(
            check_device_id("a/b").unwrap_err().to_string(),
            "invalid deviceId \"a/b\"; expected 1 to 128 ASCII letters, digits or -.+%_#*?!(),:=@$'"
        );
    }

    #[test]
    fn indices_cost_nothing() {
        assert_eq!(std::mem::size_of::<SlotIdx>(), 4);
        assert_eq!(std::mem::size_of::<(u64, RecordIdx)>(), 16);
        assert_eq!(
            RecordIdx::all(3).map(RecordIdx::get).collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }
}
