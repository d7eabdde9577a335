//! The hub's end of the receipts side channel ([`crate::receipts`]): a TCP listener for fleets
//! in other processes (`fleetsim devices --receipts`), one task per fleet. A fleet signs in as
//! one of its devices (its SAS token, checked as an MQTT CONNECT's password is); the task then
//! measures the fleet's clock against the hub's every [`PING_EVERY`] and hands each batch of
//! receipts to the engine converted to the hub's clock, with the agreement measured at that
//! moment: the engine decides whether it is good enough to record
//! ([`judge`](crate::receipts::agreement::judge)).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::hub::auth::Authority;
use crate::link::{FromDevice, Receipt};
use crate::receipts::agreement::{Estimator, Exchange};
use crate::receipts::{Frame, FrameBuf, FrameError};

/// How often the hub asks a fleet for its clock.
pub(crate) const PING_EVERY: Duration = Duration::from_millis(250);
/// How long a fleet may take to sign in.
const HELLO_WAIT: Duration = Duration::from_secs(10);

/// What every fleet connection shares.
pub(crate) struct ReceiptsEndpoint {
    /// The hub's keys: a fleet signs in with a device's SAS token.
    pub(crate) auth: Arc<Authority>,
    /// The run's clock.
    pub(crate) clock: Clock,
    /// The engine's device channel.
    pub(crate) to_engine: mpsc::UnboundedSender<Vec<FromDevice>>,
}

/// Why a fleet's side channel ended.
#[derive(Debug, thiserror::Error)]
enum SideError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the fleet did not sign in")]
    NoHello,
}

/// Listens on `addr`; answers the bound address and the task serving fleets until `shutdown`.
pub(crate) async fn start(
    addr: SocketAddr,
    endpoint: Arc<ReceiptsEndpoint>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let tracker = TaskTracker::new();
        loop {
            let sock = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((sock, _)) => sock,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let _ = sock.set_nodelay(true);
            let (endpoint, stop) = (endpoint.clone(), shutdown.clone());
            // A fleet that breaks the protocol loses only its own channel.
            tracker.spawn(async move { serve(sock, &endpoint, &stop).await });
        }
        tracker.close();
        tracker.wait().await;
    });
    Ok((bound, task))
}

/// Reads the next frame into `buf` (None: the fleet closed the connection).
async fn next_frame(sock: &mut TcpStream, buf: &mut FrameBuf) -> Result<Option<Frame>, SideError> {
    loop {
        if let Some(frame) = buf.next_frame()? {
            return Ok(Some(frame));
        }
        if sock.read_buf(buf.room()).await? == 0 {
            return Ok(None);
        }
    }
}

/// Serves one fleet until it leaves or the hub stops.
async fn serve(
    mut sock: TcpStream,
    endpoint: &ReceiptsEndpoint,
    stop: &CancellationToken,
) -> Result<(), SideError> {
    let (mut buf, mut out) = (FrameBuf::default(), Vec::new());
    let hello = tokio::time::timeout(HELLO_WAIT, next_frame(&mut sock, &mut buf)).await;
    let Ok(Ok(Some(Frame::Hello { device, token }))) = hello else {
        return Err(SideError::NoHello);
    };
    let clock = &endpoint.clock;
    let auth = &endpoint.auth;
    let now = clock.wall_at(clock.now_us());
    if let Err(e) = auth.verify_device_token(&token, auth.hostname(), &device, now) {
        Frame::Refused(format!("device '{device}' cannot sign in: {e}")).encode(&mut out);
        sock.write_all(&out).await?;
        return Ok(());
    }
    Frame::Welcome.encode(&mut out);
    sock.write_all(&out).await?;
    let mut estimator = Estimator::default();
    // The ping in flight: its number and when it left (Unix µs by the hub's clock).
    let (mut seq, mut sent) = (0u64, None);
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = ping.tick() => {
                seq += 1;
                out.clear();
                Frame::Ping(seq).encode(&mut out);
                sent = Some(clock.unix_us_at(clock.now_us()));
                sock.write_all(&out).await?;
            }
            read = sock.read_buf(buf.room()) => {
                if read? == 0 {
                    return Ok(());
                }
                while let Some(frame) = buf.next_frame()? {
                    let now = clock.unix_us_at(clock.now_us());
                    match frame {
                        Frame::Pong { seq: answered, unix_us } if answered == seq => {
                            if let Some(sent) = sent.take() {
                                estimator.add(Exchange { sent, remote: unix_us, back: now });
                            }
                        }
                        Frame::Receipts(list) => {
                            let clock_agreement = estimator.agreement(now);
                            let receipts = list
                                .into_iter()
                                .filter_map(|(device, what, unix_us)| {
                                    let ours = unix_us.checked_sub(clock_agreement.offset_us)?;
                                    Some(Receipt { device, what, at_us: clock.at_unix_us(ours)? })
                                })
                                .collect();
                            let msg = FromDevice::Received { receipts, clock: Some(clock_agreement) };
                            if endpoint.to_engine.send(vec![msg]).is_err() {
                                return Ok(());
                            }
                        }
                        // A late pong, or a frame only the hub sends: nothing to do.
                        _ => {}
                    }
                }
            }
        }
    }
}
