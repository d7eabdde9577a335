//! MQTT 3.1.1 packets over an async byte stream, framed by [`Frames`]: a read buffer that
//! starts small and shrinks back after a large packet, and a write buffer flushed in one write.

use rumqttc::mqttbytes::v4::Packet;
use rumqttc::mqttbytes::Error as CodecError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::mqtt::frames::Frames;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    /// The peer closed the connection.
    #[error("connection closed by the peer")]
    Closed,
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// Bytes that are not an MQTT 3.1.1 packet, or one larger than allowed.
    #[error("malformed packet: {0}")]
    Malformed(CodecError),
    /// The TLS layer failed (a bad record or alert).
    #[error("TLS error: {0}")]
    Tls(#[from] rustls::Error),
}

/// A stream with its read buffer and the packets waiting to be written.
pub(crate) struct Wire<S> {
    stream: S,
    frames: Frames,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    /// Frames `stream`, refusing incoming packets larger than `max_packet` bytes.
    pub(crate) fn new(stream: S, max_packet: usize) -> Self {
        Wire {
            stream,
            frames: Frames::new(max_packet),
        }
    }

    /// The next whole packet already read, if any.
    pub(crate) fn parse(&mut self) -> Result<Option<Packet>, WireError> {
        self.frames.parse()
    }

    /// Reads more bytes. Cancel-safe: a cancelled read loses nothing.
    pub(crate) async fn fill(&mut self) -> Result<(), WireError> {
        self.frames.before_read();
        match self.stream.read_buf(&mut self.frames.rbuf).await? {
            0 => Err(WireError::Closed),
            _ => Ok(()),
        }
    }

    /// Reads until a whole packet is there.
    pub(crate) async fn next_packet(&mut self) -> Result<Packet, WireError> {
        loop {
            if let Some(p) = self.parse()? {
                return Ok(p);
            }
            self.fill().await?;
        }
    }

    /// Queues a packet for the next [`Wire::flush`].
    pub(crate) fn queue(&mut self, packet: &Packet) {
        self.frames.queue(packet);
    }

    /// Writes everything queued.
    pub(crate) async fn flush(&mut self) -> Result<(), WireError> {
        if self.frames.wbuf.is_empty() {
            return Ok(());
        }
        self.stream.write_all(&self.frames.wbuf).await?;
        self.frames.written(usize::MAX);
        self.stream.flush().await?;
        Ok(())
    }

    /// The stream and its buffers, to go on serving the connection elsewhere.
    pub(crate) fn into_parts(self) -> (S, Frames) {
        (self.stream, self.frames)
    }

    /// Sends what is queued and closes the write side.
    pub(crate) async fn close(mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}
