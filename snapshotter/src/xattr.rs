//! Reading extended attributes whatever their size: every list and value read in the
//! crate goes through here, with a buffer that grows when the kernel says `ERANGE`, so a
//! long list (more than a page of names) or a large value is never cut short or dropped.
//!
//! Links are never followed (`l*xattr`); the `*_fd` forms read an open file.

use std::os::fd::AsFd;
use std::path::Path;

use rustix::io::Errno;

/// First buffer size: most lists and values fit, and one call is enough.
const FIRST: usize = 256;
/// Beyond this the kernel itself refuses (lists and values are at most 64 KiB); a buffer
/// that keeps being too small past it means the attributes change under us.
const LIMIT: usize = 1 << 20;

/// Calls `read` with a buffer large enough for its answer: on `ERANGE`, asks for the size
/// (an empty buffer) and tries again, since the list may grow between the two calls.
fn read_grown(mut read: impl FnMut(&mut [u8]) -> Result<usize, Errno>) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; FIRST];
    loop {
        match read(&mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) if buf.len() < LIMIT => {
                let need = read(&mut [])?;
                buf.resize(need.max(buf.len() * 2).min(LIMIT), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Splits a NUL-separated name list.
fn names(list: &[u8]) -> Vec<Vec<u8>> {
    list.split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The names of `path`'s xattrs; none where the filesystem has no xattrs (`ENOTSUP`).
pub(crate) fn list(path: &Path) -> Result<Vec<Vec<u8>>, Errno> {
    match read_grown(|b| rustix::fs::llistxattr(path, b)) {
        Ok(l) => Ok(names(&l)),
        Err(Errno::NOTSUP) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The value of xattr `name` of `path`; `None` when it has none by that name.
pub(crate) fn get(path: &Path, name: &[u8]) -> Result<Option<Vec<u8>>, Errno> {
    match read_grown(|b| rustix::fs::lgetxattr(path, name, b)) {
        Ok(v) => Ok(Some(v)),
        Err(Errno::NODATA | Errno::NOTSUP) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The value of xattr `name` of the open file `fd`; `None` when it has none.
pub(crate) fn get_fd(fd: impl AsFd, name: &[u8]) -> Result<Option<Vec<u8>>, Errno> {
    let fd = fd.as_fd();
    match read_grown(|b| rustix::fs::fgetxattr(fd, name, b)) {
        Ok(v) => Ok(Some(v)),
        Err(Errno::NODATA | Errno::NOTSUP) => Ok(None),
        Err(e) => Err(e),
    }
}

/// An xattr's name and value.
pub(crate) type Xattr = (Vec<u8>, Vec<u8>);

/// Every xattr of `path` whose name `keep` accepts, as (name, value), in list order.
/// Attributes removed between listing and reading are left out.
pub(crate) fn read_all(path: &Path, keep: impl Fn(&[u8]) -> bool) -> Result<Vec<Xattr>, Errno> {
    let mut out = Vec::new();
    for name in list(path)?.into_iter().filter(|n| keep(n)) {
        if let Some(v) = get(path, &name)? {
            out.push((name, v));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More than a 4 KiB page of names and a value larger than the first buffer: nothing
    /// is dropped. user.* xattrs work on the caller's own files, root or not; on tmpfs
    /// (Linux 6.6+) a file holds that many, ext4 keeps them in one block.
    #[test]
    fn long_lists_and_values_are_read_whole() {
        let t = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let mut want = Vec::new();
        for i in 0..120 {
            let name = format!("user.kiln-test-{i:03}-{}", "n".repeat(40));
            let value = vec![b'a' + (i % 26) as u8; 10 + i];
            match rustix::fs::lsetxattr(&f, name.as_str(), &value, rustix::fs::XattrFlags::empty())
            {
                Ok(()) => want.push((name.into_bytes(), value)),
                // tmpfs before 6.6 has no user.* xattrs; ext4 limits a block of them.
                Err(Errno::NOTSUP) => return,
                Err(Errno::NOSPC) => break,
                Err(e) => panic!("setxattr: {e}"),
            }
        }
        let listed: usize = list(&f).unwrap().iter().map(|n| n.len() + 1).sum();
        if listed <= 4096 {
            eprintln!("skipped: this filesystem holds only {listed} bytes of xattr names");
            return;
        }
        let big = vec![b'v'; 3000];
        rustix::fs::lsetxattr(&f, "user.big", &big, rustix::fs::XattrFlags::empty()).unwrap();
        assert_eq!(get(&f, b"user.big").unwrap(), Some(big.clone()));
        want.push((b"user.big".to_vec(), big));
        let mut got = read_all(&f, |n| n.starts_with(b"user.")).unwrap();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(get(&f, b"user.absent").unwrap(), None);
    }
}
