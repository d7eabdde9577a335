//! MQTT 3.1.1 framing with rumqttc's codec (`mqttbytes::v4`), without I/O: the bytes read and
//! not yet parsed, and the packets queued and not yet written. [`super::wire`] drives it over
//! an async stream, [`super::stream`] over a non-blocking socket.

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::Packet;
use rumqttc::mqttbytes::Error as CodecError;

use crate::mqtt::wire::WireError;

/// Read buffer a connection starts with (and returns to once a large packet is consumed).
pub(crate) const READ_BUF: usize = 512;

/// A connection's read and write buffers.
pub(crate) struct Frames {
    max_packet: usize,
    /// Bytes read and not yet parsed.
    pub(crate) rbuf: BytesMut,
    /// Packets queued and not yet written.
    pub(crate) wbuf: BytesMut,
}

impl Frames {
    /// Empty buffers, refusing incoming packets larger than `max_packet` bytes.
    pub(crate) fn new(max_packet: usize) -> Self {
        Frames {
            max_packet,
            rbuf: BytesMut::with_capacity(READ_BUF),
            wbuf: BytesMut::new(),
        }
    }

    /// The next whole packet already read, if any.
    pub(crate) fn parse(&mut self) -> Result<Option<Packet>, WireError> {
        match Packet::read(&mut self.rbuf, self.max_packet) {
            Ok(p) => Ok(Some(p)),
            Err(CodecError::InsufficientBytes(n)) => {
                self.rbuf.reserve(n);
                Ok(None)
            }
            Err(e) => Err(WireError::Malformed(e)),
        }
    }

    /// Makes room for the next read: a large read buffer that has been drained goes back to
    /// its small size.
    pub(crate) fn before_read(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 8 * READ_BUF {
            self.rbuf = BytesMut::with_capacity(READ_BUF);
        } else if self.rbuf.capacity() == self.rbuf.len() {
            self.rbuf.reserve(READ_BUF);
        }
    }

    /// Queues a packet for the next write.
    pub(crate) fn queue(&mut self, packet: &Packet) {
        // Outgoing sizes are bounded by the callers' own limits: nothing to refuse here.
        let _ = packet.write(&mut self.wbuf, usize::MAX);
    }

    /// Forgets the first `n` queued bytes (written), keeping the buffer small when it empties.
    pub(crate) fn written(&mut self, n: usize) {
        if n >= self.wbuf.len() {
            self.wbuf.clear();
            if self.wbuf.capacity() > 8 * READ_BUF {
                self.wbuf = BytesMut::new();
            }
        } else {
            let _ = self.wbuf.split_to(n);
        }
    }
}
