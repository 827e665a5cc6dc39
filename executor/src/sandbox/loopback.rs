//! Bringing `lo` up in a new network namespace (`RUN --network=none`), with one rtnetlink
//! request written by hand: no `ip` binary, no ioctl.
//!
//! The request is `RTM_NEWLINK` for interface index 1 (the loopback device is always the
//! first interface of a new network namespace) with `IFF_UP` set; the kernel answers with
//! an `NLMSG_ERROR` message whose error code is 0 on success.

use std::io;

use rustix::net::{
    recv, send, socket_with, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType,
};

const RTM_NEWLINK: u16 = 16;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const IFF_UP: u32 = 1;

/// The 32-byte request: `nlmsghdr` + `ifinfomsg`, in native byte order.
fn request() -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0..4].copy_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
    m[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes()); // nlmsg_type
    m[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes()); // nlmsg_flags
    m[8..12].copy_from_slice(&1u32.to_ne_bytes()); // nlmsg_seq
                                                   // nlmsg_pid 0; ifi_family 0, pad, ifi_type 0
    m[20..24].copy_from_slice(&1i32.to_ne_bytes()); // ifi_index: lo
    m[24..28].copy_from_slice(&IFF_UP.to_ne_bytes()); // ifi_flags
    m[28..32].copy_from_slice(&IFF_UP.to_ne_bytes()); // ifi_change
    m
}

/// Sets the loopback interface of this network namespace up.
pub fn up() -> io::Result<()> {
    let fd = socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        None,
    )?;
    send(&fd, &request(), SendFlags::empty())?;
    let mut buf = [0u8; 256];
    let (n, _) = recv(&fd, &mut buf[..], RecvFlags::empty())?;
    if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
        let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if code != 0 {
            return Err(io::Error::from_raw_os_error(-code));
        }
        return Ok(());
    }
    Err(io::Error::other("unexpected rtnetlink answer"))
}
