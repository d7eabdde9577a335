//! One MQTT connection on a non-blocking socket, for the event loops that serve many
//! connections from one thread: plain TCP or TLS (rustls driven without I/O of its own), with
//! its [`Frames`]. Reads take everything the socket has; writes take what the socket accepts
//! and keep the rest for the next writable event.

use std::io::{self, Read, Write};

use rumqttc::mqttbytes::v4::Packet;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::mqtt::frames::Frames;
use crate::mqtt::wire::{Wire, WireError};

/// An async stream an event loop can take over: its socket (out of tokio's reactor, still
/// non-blocking) and its TLS state.
pub trait Handover: AsyncRead + AsyncWrite + Unpin {
    /// Takes the stream apart.
    fn hand_over(self) -> io::Result<(mio::net::TcpStream, Option<rustls::Connection>)>;
}

impl Handover for tokio::net::TcpStream {
    fn hand_over(self) -> io::Result<(mio::net::TcpStream, Option<rustls::Connection>)> {
        Ok((mio::net::TcpStream::from_std(self.into_std()?), None))
    }
}

impl Handover for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn hand_over(self) -> io::Result<(mio::net::TcpStream, Option<rustls::Connection>)> {
        let (tcp, tls) = self.into_inner();
        let (sock, _) = tcp.hand_over()?;
        Ok((sock, Some(rustls::Connection::Server(tls))))
    }
}

impl Handover for tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    fn hand_over(self) -> io::Result<(mio::net::TcpStream, Option<rustls::Connection>)> {
        let (tcp, tls) = self.into_inner();
        let (sock, _) = tcp.hand_over()?;
        Ok((sock, Some(rustls::Connection::Client(tls))))
    }
}

/// A connection's socket, its TLS state if any, and its buffers.
pub struct Stream {
    sock: mio::net::TcpStream,
    tls: Option<Box<rustls::Connection>>,
    frames: Frames,
}

impl Stream {
    /// Serves `sock` (non-blocking) with `frames`, through `tls` if given. Bytes already in
    /// `frames` or buffered by `tls` are parsed first.
    pub(crate) fn new(
        sock: mio::net::TcpStream,
        tls: Option<rustls::Connection>,
        frames: Frames,
    ) -> Self {
        Stream {
            sock,
            tls: tls.map(Box::new),
            frames,
        }
    }

    /// Takes over a connection served by a [`Wire`] so far (handshakes done), with the bytes it
    /// has read and not parsed. What it had queued must have been flushed.
    pub(crate) fn from_wire<S: Handover>(wire: Wire<S>) -> io::Result<Self> {
        let (stream, frames) = wire.into_parts();
        let (sock, tls) = stream.hand_over()?;
        Ok(Stream::new(sock, tls, frames))
    }

    /// The socket, to register it with a poller.
    pub(crate) fn socket(&mut self) -> &mut mio::net::TcpStream {
        &mut self.sock
    }

    /// Reads everything available. `Err(Closed)` once the peer has closed and nothing is left.
    pub(crate) fn read(&mut self) -> Result<(), WireError> {
        match &mut self.tls {
            None => read_plain(&mut self.sock, &mut self.frames),
            Some(tls) => read_tls(&mut self.sock, tls, &mut self.frames),
        }
    }

    /// The next whole packet already read, if any.
    pub(crate) fn parse(&mut self) -> Result<Option<Packet>, WireError> {
        self.frames.parse()
    }

    /// Queues a packet for the next [`Stream::flush`].
    pub(crate) fn queue(&mut self, packet: &Packet) {
        self.frames.queue(packet);
    }

    /// Writes what the socket accepts; `Ok(false)` when some is left for the next writable
    /// event.
    pub(crate) fn flush(&mut self) -> Result<bool, WireError> {
        match &mut self.tls {
            None => {
                while !self.frames.wbuf.is_empty() {
                    match self.sock.write(&self.frames.wbuf) {
                        Ok(0) => return Err(WireError::Closed),
                        Ok(n) => self.frames.written(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(true)
            }
            Some(tls) => {
                if !self.frames.wbuf.is_empty() {
                    tls.writer().write_all(&self.frames.wbuf)?;
                    self.frames.written(usize::MAX);
                }
                write_tls(&mut self.sock, tls)
            }
        }
    }

    /// Sends what is queued (as far as the socket takes it now) and closes the connection.
    pub(crate) fn close(mut self) {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
        }
        let _ = self.flush();
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

fn read_plain(sock: &mut mio::net::TcpStream, frames: &mut Frames) -> Result<(), WireError> {
    loop {
        frames.before_read();
        let buf = &mut frames.rbuf;
        let len = buf.len();
        let spare = buf.capacity() - len;
        // Read into the spare capacity through a zeroed extension: the codec's buffer is a
        // BytesMut, and `resize` keeps this safe at the cost of zeroing a few hundred bytes.
        buf.resize(len + spare, 0);
        match sock.read(&mut buf[len..]) {
            Ok(0) => {
                buf.truncate(len);
                return Err(WireError::Closed);
            }
            Ok(n) => {
                buf.truncate(len + n);
                // A short read drained the socket (edge-triggered readiness fires again when
                // more arrives).
                if n < spare {
                    return Ok(());
                }
            }
            Err(e) => {
                buf.truncate(len);
                match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(()),
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(e.into()),
                }
            }
        }
    }
}

fn read_tls(
    sock: &mut mio::net::TcpStream,
    tls: &mut rustls::Connection,
    frames: &mut Frames,
) -> Result<(), WireError> {
    let mut closed = false;
    loop {
        match tls.read_tls(sock) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
        let state = tls.process_new_packets()?;
        take_plaintext(tls, frames, state.plaintext_bytes_to_read())?;
        if state.peer_has_closed() {
            closed = true;
            break;
        }
    }
    // Alerts and key updates the TLS layer wants to send go out with the next flush.
    if closed && frames.rbuf.is_empty() {
        return Err(WireError::Closed);
    }
    Ok(())
}

fn take_plaintext(
    tls: &mut rustls::Connection,
    frames: &mut Frames,
    available: usize,
) -> Result<(), WireError> {
    if available == 0 {
        return Ok(());
    }
    let buf = &mut frames.rbuf;
    let len = buf.len();
    buf.resize(len + available, 0);
    match tls.reader().read(&mut buf[len..]) {
        Ok(n) => {
            buf.truncate(len + n);
            Ok(())
        }
        Err(e) => {
            buf.truncate(len);
            Err(e.into())
        }
    }
}

fn write_tls(
    sock: &mut mio::net::TcpStream,
    tls: &mut rustls::Connection,
) -> Result<bool, WireError> {
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(0) => return Err(WireError::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::Publish;
    use rumqttc::mqttbytes::QoS;

    impl Stream {
        /// Whether packets are queued and not yet written.
        fn pending(&self) -> bool {
            !self.frames.wbuf.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write())
        }
    }

    #[test]
    fn a_full_socket_keeps_the_rest_until_writable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        client.set_nonblocking(true).unwrap();
        let mut stream = Stream::new(
            mio::net::TcpStream::from_std(client),
            None,
            Frames::new(1024),
        );
        // 8 MB of publishes, each tagged with its number.
        const N: u8 = 128;
        for i in 0..N {
            let body = vec![i; 64 * 1024];
            stream.queue(&Packet::Publish(Publish::new("t", QoS::AtMostOnce, body)));
        }
        assert!(!stream.flush().unwrap(), "8 MB do not fit in the socket");
        assert!(stream.pending());

        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            peer.read_to_end(&mut all).unwrap();
            all
        });
        let mut poll = mio::Poll::new().unwrap();
        poll.registry()
            .register(stream.socket(), mio::Token(0), mio::Interest::WRITABLE)
            .unwrap();
        let mut events = mio::Events::with_capacity(4);
        while !stream.flush().unwrap() {
            poll.poll(&mut events, None).unwrap();
        }
        assert!(!stream.pending());
        stream.close();

        let mut got = bytes::BytesMut::from(&reader.join().unwrap()[..]);
        for i in 0..N {
            match Packet::read(&mut got, 1 << 20).unwrap() {
                Packet::Publish(p) => {
                    assert_eq!(p.payload.len(), 64 * 1024);
                    assert!(p.payload.iter().all(|&b| b == i), "publish {i} intact");
                }
                other => panic!("expected a publish, got {other:?}"),
            }
        }
        assert!(got.is_empty(), "nothing more");
    }
}
