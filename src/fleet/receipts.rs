//! The fleet's end of the receipts side channel ([`crate::receipts`]): one TCP connection to a
//! fleetsim hub, signed in as one of the fleet's devices. The MQTT pump hands its receipts over
//! through a [`ReceiptSink`] (a channel send, never blocking the pump); a task writes them as
//! frames, stamped in Unix microseconds by this process's clock, and answers the hub's clock
//! pings at once.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::fleet::mqtt::ReceiptSink;
use crate::link::Receipt;
use crate::receipts::{receipts_frame, Frame, FrameBuf, FrameError};

/// Why the side channel failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SideChannelError {
    /// The socket failed.
    #[error("receipts side channel to {addr}: {source}")]
    Io {
        /// The hub's side channel.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
    /// The hub sent something that is not a frame of the protocol.
    #[error("receipts side channel to {addr}: {source}")]
    Frame {
        /// The hub's side channel.
        addr: SocketAddr,
        /// What was wrong.
        source: FrameError,
    },
    /// The hub refused the fleet's credentials.
    #[error("the hub at {addr} refused the receipts side channel: {why}")]
    Refused {
        /// The hub's side channel.
        addr: SocketAddr,
        /// Its reason.
        why: String,
    },
    /// The hub closed the connection, or answered the sign-in with something else.
    #[error("the hub at {addr} closed the receipts side channel (it stopped, or it is not a fleetsim hub with --receipts there)")]
    Closed {
        /// The hub's side channel.
        addr: SocketAddr,
    },
}

/// A connected side channel: the sink for the fleet's pump, and what to run until the sink and
/// its clones are gone (the fleet ended).
pub(crate) struct SideChannel {
    /// Where the pump puts receipts.
    pub(crate) sink: ReceiptSink,
    sock: TcpStream,
    receipts: mpsc::UnboundedReceiver<Vec<Receipt>>,
    addr: SocketAddr,
    clock: Clock,
    buf: FrameBuf,
}

/// Connects to the hub's side channel at `addr` and signs in as `device` with `token` (its
/// MQTT password).
pub(crate) async fn connect(
    addr: SocketAddr,
    device: String,
    token: String,
    clock: Clock,
) -> Result<SideChannel, SideChannelError> {
    let io = |source| SideChannelError::Io { addr, source };
    let mut sock = TcpStream::connect(addr).await.map_err(io)?;
    let _ = sock.set_nodelay(true);
    let mut out = Vec::new();
    Frame::Hello { device, token }.encode(&mut out);
    sock.write_all(&out).await.map_err(io)?;
    let mut buf = FrameBuf::default();
    match next_frame(&mut sock, &mut buf, addr).await? {
        Some(Frame::Welcome) => {}
        Some(Frame::Refused(why)) => return Err(SideChannelError::Refused { addr, why }),
        _ => return Err(SideChannelError::Closed { addr }),
    }
    let (tx, receipts) = mpsc::unbounded_channel();
    let sink: ReceiptSink = Arc::new(move |batch| {
        let _ = tx.send(batch);
    });
    Ok(SideChannel {
        sink,
        sock,
        receipts,
        addr,
        clock,
        buf,
    })
}

/// Reads the next frame into `buf` (None: the hub closed the connection).
async fn next_frame(
    sock: &mut TcpStream,
    buf: &mut FrameBuf,
    addr: SocketAddr,
) -> Result<Option<Frame>, SideChannelError> {
    loop {
        if let Some(frame) = buf
            .next_frame()
            .map_err(|source| SideChannelError::Frame { addr, source })?
        {
            return Ok(Some(frame));
        }
        let read = sock
            .read_buf(buf.room())
            .await
            .map_err(|source| SideChannelError::Io { addr, source })?;
        if read == 0 {
            return Ok(None);
        }
    }
}

impl SideChannel {
    /// Sends the receipts and answers the hub's pings until every sink is dropped (then the
    /// last receipts are written) or the hub closes the connection.
    pub(crate) async fn run(self) -> Result<(), SideChannelError> {
        let SideChannel {
            sink,
            mut sock,
            mut receipts,
            addr,
            clock,
            mut buf,
        } = self;
        // Only the fleet's clones keep the channel open.
        drop(sink);
        let io = |source| SideChannelError::Io { addr, source };
        let mut out = Vec::new();
        loop {
            tokio::select! {
                batch = receipts.recv() => {
                    let Some(batch) = batch else {
                        return Ok(());
                    };
                    out.clear();
                    receipts_frame(&mut out, &batch, |us| clock.unix_us_at(us));
                    // Whatever else is waiting goes in the same write.
                    while let Ok(batch) = receipts.try_recv() {
                        receipts_frame(&mut out, &batch, |us| clock.unix_us_at(us));
                    }
                    sock.write_all(&out).await.map_err(io)?;
                }
                read = sock.read_buf(buf.room()) => {
                    if read.map_err(io)? == 0 {
                        return Err(SideChannelError::Closed { addr });
                    }
                    while let Some(frame) = buf
                        .next_frame()
                        .map_err(|source| SideChannelError::Frame { addr, source })?
                    {
                        if let Frame::Ping(seq) = frame {
                            let unix_us = clock.unix_us_at(clock.now_us());
                            out.clear();
                            Frame::Pong { seq, unix_us }.encode(&mut out);
                            sock.write_all(&out).await.map_err(io)?;
                        }
                    }
                }
            }
        }
    }
}
