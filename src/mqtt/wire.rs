//! MQTT 3.1.1 packets over a byte stream, framed with rumqttc's codec (`mqttbytes::v4`): a read
//! buffer that starts small and shrinks back after a large packet, and a write buffer flushed in
//! one write.

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::Packet;
use rumqttc::mqttbytes::Error as CodecError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Read buffer a connection starts with (and returns to once a large packet is consumed).
const READ_BUF: usize = 512;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer closed the connection.
    #[error("connection closed by the peer")]
    Closed,
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// Bytes that are not an MQTT 3.1.1 packet, or one larger than allowed.
    #[error("malformed packet: {0}")]
    Malformed(CodecError),
}

/// A stream with its read buffer and the packets waiting to be written.
pub struct Wire<S> {
    stream: S,
    max_packet: usize,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    /// Frames `stream`, refusing incoming packets larger than `max_packet` bytes.
    pub fn new(stream: S, max_packet: usize) -> Self {
        Wire {
            stream,
            max_packet,
            rbuf: BytesMut::with_capacity(READ_BUF),
            wbuf: BytesMut::new(),
        }
    }

    /// The next whole packet already read, if any.
    pub fn parse(&mut self) -> Result<Option<Packet>, WireError> {
        match Packet::read(&mut self.rbuf, self.max_packet) {
            Ok(p) => Ok(Some(p)),
            Err(CodecError::InsufficientBytes(n)) => {
                self.rbuf.reserve(n);
                Ok(None)
            }
            Err(e) => Err(WireError::Malformed(e)),
        }
    }

    /// Reads more bytes. Cancel-safe: a cancelled read loses nothing.
    pub async fn fill(&mut self) -> Result<(), WireError> {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 8 * READ_BUF {
            self.rbuf = BytesMut::with_capacity(READ_BUF);
        }
        match self.stream.read_buf(&mut self.rbuf).await? {
            0 => Err(WireError::Closed),
            _ => Ok(()),
        }
    }

    /// Reads until a whole packet is there.
    pub async fn next_packet(&mut self) -> Result<Packet, WireError> {
        loop {
            if let Some(p) = self.parse()? {
                return Ok(p);
            }
            self.fill().await?;
        }
    }

    /// Queues a packet for the next [`Wire::flush`].
    pub fn queue(&mut self, packet: &Packet) {
        // Outgoing sizes are bounded by the callers' own limits: nothing to refuse here.
        let _ = packet.write(&mut self.wbuf, usize::MAX);
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), WireError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        if self.wbuf.capacity() > 8 * READ_BUF {
            self.wbuf = BytesMut::new();
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends what is queued and closes the write side.
    pub async fn close(mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}
