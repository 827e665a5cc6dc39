//! Capabilities of RUN processes: Docker's default set, as BuildKit gives RUN steps.
//! pid 1 removes every other capability from the bounding set before starting the
//! command, so the command (root in the build's namespace) gets these and no more.

use std::io;

use rustix::thread::{remove_capability_from_bounding_set, CapabilitySet};

/// CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE,
/// NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP: `CapBnd: 00000000a80425fb`.
pub const DOCKER_DEFAULT: u64 = 0xa804_25fb;

/// Drops every capability outside `keep` from this process's bounding set.
pub fn restrict_bounding_set(keep: u64) -> io::Result<()> {
    for bit in 0..64 {
        if keep & (1 << bit) != 0 {
            continue;
        }
        match remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(1 << bit)) {
            Ok(()) => {}
            // Past the kernel's last capability.
            Err(rustix::io::Errno::INVAL) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
