//! Unix sockets.
/// x
pub struct UnixStream;
/// x
pub struct UnixListener;
/// x
pub struct UnixDatagram;
