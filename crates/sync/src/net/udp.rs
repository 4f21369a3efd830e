//! `UdpSocket`.
/// A UDP socket.
pub struct UdpSocket;
