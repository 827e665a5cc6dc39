//! Writing tar entries the way OCI layers want them: ustar headers, with a PAX extended
//! header in front whenever a name, link target, size or id does not fit, and for
//! extended attributes (`SCHILY.xattr.<name>`). Written here because the `tar` crate's
//! builder uses GNU long-name entries and has no PAX writer.

use std::io::{self, Read, Write};

/// The fields of one entry.
pub(crate) struct EntryMeta<'a> {
    pub path: &'a [u8],
    pub kind: tar::EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    pub link: &'a [u8],
    pub dev: (u32, u32),
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

/// Appends PAX records and ustar entries to a writer.
pub(crate) struct TarWriter<W: Write> {
    out: W,
}

fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    // "<len> <key>=<value>\n", where len counts the whole record including its own digits.
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while len != base + len.to_string().len() {
        len = base + len.to_string().len();
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

const USTAR_MAX_ID: u64 = 0o7777777;
const USTAR_MAX_SIZE: u64 = 0o77777777777;

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    fn write_padded(&mut self, data: &mut dyn Read, size: u64) -> io::Result<()> {
        let n = io::copy(&mut data.take(size), &mut self.out)?;
        if n != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was being archived",
            ));
        }
        let pad = ((512 - size % 512) % 512) as usize;
        self.out.write_all(&[0u8; 512][..pad])
    }

    /// Writes one entry (and its PAX header when needed), then `size` bytes of `data`.
    pub fn append(&mut self, meta: &EntryMeta<'_>, data: &mut dyn Read) -> io::Result<()> {
        let mut pax = Vec::new();
        let name_fits = meta.path.len() <= 100 && meta.path.is_ascii();
        if !name_fits {
            pax.extend(pax_record(b"path", meta.path));
        }
        if meta.link.len() > 100 || !meta.link.is_ascii() {
            pax.extend(pax_record(b"linkpath", meta.link));
        }
        if meta.size > USTAR_MAX_SIZE {
            pax.extend(pax_record(b"size", meta.size.to_string().as_bytes()));
        }
        if meta.uid > USTAR_MAX_ID {
            pax.extend(pax_record(b"uid", meta.uid.to_string().as_bytes()));
        }
        if meta.gid > USTAR_MAX_ID {
            pax.extend(pax_record(b"gid", meta.gid.to_string().as_bytes()));
        }
        for (k, v) in meta.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax.extend(pax_record(&key, v));
        }
        if !pax.is_empty() {
            let mut h = tar::Header::new_ustar();
            let mut pname = b"PaxHeaders.0/".to_vec();
            let base = meta
                .path
                .rsplit(|b| *b == b'/')
                .find(|s| !s.is_empty())
                .unwrap_or(b"x");
            pname.extend(
                base.iter()
                    .take(80)
                    .map(|b| if b.is_ascii() { *b } else { b'_' }),
            );
            set_name(&mut h, &pname);
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_mode(0o644);
            h.set_size(pax.len() as u64);
            h.set_mtime(0);
            h.set_cksum();
            self.out.write_all(h.as_bytes())?;
            let len = pax.len() as u64;
            self.write_padded(&mut pax.as_slice(), len)?;
        }
        let mut h = tar::Header::new_ustar();
        let shown: Vec<u8> = meta
            .path
            .iter()
            .take(100)
            .map(|b| if b.is_ascii() { *b } else { b'_' })
            .collect();
        set_name(&mut h, &shown);
        if !meta.link.is_empty() {
            let shown: Vec<u8> = meta
                .link
                .iter()
                .take(100)
                .map(|b| if b.is_ascii() { *b } else { b'_' })
                .collect();
            if let Some(u) = h.as_ustar_mut() {
                u.linkname = [0; 100];
                u.linkname[..shown.len()].copy_from_slice(&shown);
            }
        }
        h.set_entry_type(meta.kind);
        h.set_mode(meta.mode);
        h.set_uid(meta.uid.min(USTAR_MAX_ID));
        h.set_gid(meta.gid.min(USTAR_MAX_ID));
        h.set_mtime(meta.mtime.min(0o77777777777));
        h.set_size(meta.size.min(USTAR_MAX_SIZE));
        if matches!(meta.kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(meta.dev.0)?;
            h.set_device_minor(meta.dev.1)?;
        }
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;
        self.write_padded(data, meta.size)
    }

    /// Writes the end-of-archive marker and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 1024])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn set_name(h: &mut tar::Header, name: &[u8]) {
    if let Some(u) = h.as_ustar_mut() {
        u.name = [0; 100];
        let n = name.len().min(100);
        u.name[..n].copy_from_slice(&name[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        assert_eq!(pax_record(b"path", b"a"), b"9 path=a\n");
        let r = pax_record(b"path", &[b'x'; 95]);
        assert_eq!(r.len(), 105);
        assert!(r.starts_with(b"105 path="));
    }
}
