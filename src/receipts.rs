//! The receipts side channel: how a fleet in another process (`fleetsim devices`) tells the hub
//! when its devices received method requests and desired notifications, without changing what
//! goes to the hub over MQTT (devices answer there exactly as the SDKs do). One TCP connection
//! of fleetsim's own, in length-prefixed frames:
//!
//! - the fleet opens with [`Frame::Hello`]: one of its devices' id and SAS token, checked as an
//!   MQTT CONNECT's password is; the hub answers [`Frame::Welcome`] or [`Frame::Refused`];
//! - the hub asks for the fleet's clock ([`Frame::Ping`]) now and then, and the fleet answers
//!   at once ([`Frame::Pong`]): the hub measures the clocks' offset from these
//!   ([`agreement`]);
//! - the fleet sends its receipts in batches ([`Frame::Receipts`]), each stamped in Unix
//!   microseconds by its clock's wall-clock mapping; the hub converts them to its clock.
//!
//! A frame: its length (u32, little-endian, counting what follows), a kind byte, the body.
//! A receipt is 21 bytes: device index (u32), what (0 method, 1 desired), the operation id or
//! `$version` (u64), the stamp (i64); device indexes are registry positions, so both sides must
//! build their registries from the same scenario.

pub(crate) mod agreement;

use crate::ids::DeviceIdx;
use crate::link::{OpId, Receipt, Received};

/// The largest frame accepted (a batch of about 50,000 receipts).
pub(crate) const MAX_FRAME: usize = 1 << 20;
/// The bytes of one receipt in a [`Frame::Receipts`] body.
const RECEIPT_LEN: usize = 21;

/// One message of the side channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// The fleet signs in with one of its devices.
    Hello {
        /// The device id.
        device: String,
        /// Its SAS token, as its MQTT CONNECT password.
        token: String,
    },
    /// The hub accepted the fleet.
    Welcome,
    /// The hub refused the fleet, and why (then closes).
    Refused(String),
    /// The hub asks for the fleet's clock.
    Ping(u64),
    /// The fleet's clock, answering ping `seq`.
    Pong {
        /// The ping answered.
        seq: u64,
        /// The fleet's clock, Unix µs.
        unix_us: i64,
    },
    /// Receipts, each stamped in Unix µs by the fleet's clock.
    Receipts(Vec<(DeviceIdx, Received, i64)>),
}

/// Why a frame cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// Longer than [`MAX_FRAME`].
    #[error("a side-channel frame of {0} bytes is larger than the {MAX_FRAME} allowed")]
    TooLarge(usize),
    /// Not a frame of this protocol.
    #[error("malformed side-channel frame (kind {0}): not a fleetsim receipts peer?")]
    Malformed(u8),
}

const HELLO: u8 = 1;
const WELCOME: u8 = 2;
const REFUSED: u8 = 3;
const PING: u8 = 4;
const PONG: u8 = 5;
const RECEIPTS: u8 = 6;

impl Frame {
    /// Appends the frame to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            Frame::Hello { device, token } => {
                out.push(HELLO);
                out.extend_from_slice(&(device.len() as u32).to_le_bytes());
                out.extend_from_slice(device.as_bytes());
                out.extend_from_slice(token.as_bytes());
            }
            Frame::Welcome => out.push(WELCOME),
            Frame::Refused(why) => {
                out.push(REFUSED);
                out.extend_from_slice(why.as_bytes());
            }
            Frame::Ping(seq) => {
                out.push(PING);
                out.extend_from_slice(&seq.to_le_bytes());
            }
            Frame::Pong { seq, unix_us } => {
                out.push(PONG);
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&unix_us.to_le_bytes());
            }
            Frame::Receipts(receipts) => {
                out.push(RECEIPTS);
                for &(device, what, unix_us) in receipts {
                    put_receipt(out, device, what, unix_us);
                }
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }
}

/// How much room a read of a side-channel socket is given.
const READ_CHUNK: usize = 64 * 1024;

/// The bytes read from a side-channel socket, frames taken off the front without moving the
/// rest (what is left moves once per read, in [`FrameBuf::room`]).
#[derive(Debug, Default)]
pub(crate) struct FrameBuf {
    bytes: Vec<u8>,
    start: usize,
}

impl FrameBuf {
    /// The buffer to read into, with room for a read.
    pub(crate) fn room(&mut self) -> &mut Vec<u8> {
        if self.start > 0 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        self.bytes.reserve(READ_CHUNK);
        &mut self.bytes
    }

    /// Takes the next whole frame: None if more bytes are needed.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let rest = &self.bytes[self.start..];
        let Some(len) = rest.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        let Some(body) = rest.get(4..4 + len) else {
            return Ok(None);
        };
        let frame = parse(body)?;
        self.start += 4 + len;
        Ok(Some(frame))
    }
}

/// Appends one receipt to a [`Frame::Receipts`] body (see [`receipts_frame`]).
fn put_receipt(out: &mut Vec<u8>, device: DeviceIdx, what: Received, unix_us: i64) {
    let (kind, key) = match what {
        Received::Method(op) => (0u8, op.0),
        Received::Desired(version) => (1, version),
    };
    out.extend_from_slice(&device.get().to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&unix_us.to_le_bytes());
}

/// Appends [`Frame::Receipts`] of `receipts` to `out` (as many frames as [`MAX_FRAME`]
/// needs), each stamp converted to Unix µs by `unix_us`: the fleet's path, without building
/// the frame's vector.
pub(crate) fn receipts_frame(
    out: &mut Vec<u8>,
    receipts: &[Receipt],
    unix_us: impl Fn(crate::clock::Micros) -> i64,
) {
    for chunk in receipts.chunks((MAX_FRAME - 1) / RECEIPT_LEN) {
        let len = 1 + chunk.len() * RECEIPT_LEN;
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.push(RECEIPTS);
        for r in chunk {
            put_receipt(out, r.device, r.what, unix_us(r.at_us));
        }
    }
}

fn parse(body: &[u8]) -> Result<Frame, FrameError> {
    let (&kind, rest) = body.split_first().ok_or(FrameError::Malformed(0))?;
    let bad = || FrameError::Malformed(kind);
    let u64_at = |at: usize| -> Result<u64, FrameError> {
        let b: [u8; 8] = rest
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        Ok(u64::from_le_bytes(b))
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| bad());
    Ok(match kind {
        HELLO => {
            let n: [u8; 4] = rest
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(bad)?;
            let n = u32::from_le_bytes(n) as usize;
            let device = rest.get(4..4 + n).ok_or_else(bad)?;
            Frame::Hello {
                device: text(device)?,
                token: text(&rest[4 + n..])?,
            }
        }
        WELCOME => Frame::Welcome,
        REFUSED => Frame::Refused(text(rest)?),
        PING => Frame::Ping(u64_at(0)?),
        PONG => Frame::Pong {
            seq: u64_at(0)?,
            unix_us: u64_at(8)? as i64,
        },
        RECEIPTS => {
            if rest.len() % RECEIPT_LEN != 0 {
                return Err(bad());
            }
            let receipts = rest
                .chunks_exact(RECEIPT_LEN)
                .map(|r| {
                    let device = DeviceIdx::new(u32::from_le_bytes([r[0], r[1], r[2], r[3]]));
                    let key = u64::from_le_bytes(r[5..13].try_into().unwrap_or_default());
                    let unix_us = i64::from_le_bytes(r[13..21].try_into().unwrap_or_default());
                    let what = match r[4] {
                        0 => Received::Method(OpId(key)),
                        1 => Received::Desired(key),
                        _ => return Err(bad()),
                    };
                    Ok((device, what, unix_us))
                })
                .collect::<Result<_, _>>()?;
            Frame::Receipts(receipts)
        }
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_whole_and_in_pieces() {
        let frames = [
            Frame::Hello {
                device: "d-1".into(),
                token: "SharedAccessSignature sr=x".into(),
            },
            Frame::Welcome,
            Frame::Refused("no".into()),
            Frame::Ping(7),
            Frame::Pong {
                seq: 7,
                unix_us: -5,
            },
            Frame::Receipts(vec![
                (DeviceIdx::new(3), Received::Method(OpId::new(1, 2)), 10),
                (DeviceIdx::new(4), Received::Desired(9), 11),
            ]),
        ];
        let mut bytes = Vec::new();
        for f in &frames {
            f.encode(&mut bytes);
        }
        // Fed a byte at a time, every frame comes out once it is whole.
        let (mut buf, mut got) = (FrameBuf::default(), Vec::new());
        for b in bytes {
            buf.room().push(b);
            while let Some(f) = buf.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        assert!(buf.room().is_empty());
    }

    #[test]
    fn the_fleets_receipts_frame_is_a_receipts_frame() {
        let receipts = [Receipt {
            device: DeviceIdx::new(1),
            what: Received::Desired(2),
            at_us: 30,
        }];
        let mut buf = FrameBuf::default();
        receipts_frame(buf.room(), &receipts, |us| us as i64 + 1_000);
        assert_eq!(
            buf.next_frame().unwrap(),
            Some(Frame::Receipts(vec![(
                DeviceIdx::new(1),
                Received::Desired(2),
                1_030
            )]))
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let decode = |bytes: &[u8]| {
            let mut buf = FrameBuf::default();
            buf.room().extend_from_slice(bytes);
            buf.next_frame()
        };
        assert_eq!(
            decode(&[3, 0, 0, 0, RECEIPTS, 1, 2]),
            Err(FrameError::Malformed(RECEIPTS))
        );
        assert_eq!(
            decode(&[2, 0, 0, 0, HELLO, 9]),
            Err(FrameError::Malformed(HELLO))
        );
        assert!(matches!(
            decode(&[255, 255, 255, 255]),
            Err(FrameError::TooLarge(_))
        ));
        assert_eq!(decode(&[1, 0, 0, 0, 99]), Err(FrameError::Malformed(99)));
        assert_eq!(decode(&[1, 0, 0]), Ok(None));
    }
}
