//! Id mapping between the ids a layer records (container ids) and the ids files have on
//! the host disk (host ids), through the user namespace kiln builds in.
//!
//! With a single mapping (`0 → caller`) only container id 0 exists on disk; any other
//! container id has no host id. [`IdMap::identity`] is used when no namespace applies.

/// One contiguous range: container ids `container..container+len` are host ids
/// `host..host+len` (the lines of `/proc/self/uid_map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub len: u32,
}

/// A uid or gid mapping: a list of ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    ranges: Vec<IdRange>,
}

impl IdMap {
    /// Every id maps to itself.
    pub fn identity() -> Self {
        IdMap {
            ranges: vec![IdRange {
                container: 0,
                host: 0,
                len: u32::MAX,
            }],
        }
    }

    pub fn new(ranges: Vec<IdRange>) -> Self {
        IdMap { ranges }
    }

    /// Parses the text of `/proc/<pid>/uid_map` (`inside outside count` per line).
    pub fn parse_proc(text: &str) -> Option<Self> {
        let mut ranges = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut it = line.split_whitespace().map(str::parse::<u32>);
            let (Some(Ok(container)), Some(Ok(host)), Some(Ok(len))) =
                (it.next(), it.next(), it.next())
            else {
                return None;
            };
            ranges.push(IdRange {
                container,
                host,
                len,
            });
        }
        Some(IdMap { ranges })
    }

    pub fn ranges(&self) -> &[IdRange] {
        &self.ranges
    }

    /// Container id → host id, if the mapping covers it.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        self.ranges.iter().find_map(|r| {
            let off = id.checked_sub(r.container)?;
            (off < r.len).then(|| r.host + off)
        })
    }

    /// Host id → container id, if the mapping covers it.
    pub fn to_container(&self, id: u32) -> Option<u32> {
        self.ranges.iter().find_map(|r| {
            let off = id.checked_sub(r.host)?;
            (off < r.len).then(|| r.container + off)
        })
    }
}

/// Whether this process runs in the initial user namespace (its uid map is the identity
/// over all ids), where real root may use `trusted.*` xattrs and device nodes.
pub fn in_initial_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
        .unwrap_or(true)
}

/// Whether this process is real root: uid 0 in the initial user namespace, with
/// `CAP_SYS_ADMIN` (mounts and namespaces without a user namespace of its own). Root of
/// a container that is not privileged (podman or Docker as root, a Kubernetes pod) is
/// uid 0 in the initial user namespace without `CAP_SYS_ADMIN`: it builds as an
/// unprivileged user does, in a user namespace of its own.
pub fn is_real_root() -> bool {
    rustix::process::geteuid().is_root() && in_initial_user_namespace() && has_sys_admin()
}

/// Whether `CAP_SYS_ADMIN` is in this process's effective set.
fn has_sys_admin() -> bool {
    match rustix::thread::capabilities(None) {
        Ok(sets) => sets
            .effective
            .contains(rustix::thread::CapabilitySet::SYS_ADMIN),
        Err(e) => {
            tracing::debug!("reading this process's capabilities: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_both_ways() {
        let m = IdMap::parse_proc(
            "         0       1000          1\n         1     100000      65536\n",
        )
        .unwrap();
        assert_eq!(m.to_host(0), Some(1000));
        assert_eq!(m.to_host(1), Some(100000));
        assert_eq!(m.to_host(65536), Some(165535));
        assert_eq!(m.to_host(65537), None);
        assert_eq!(m.to_container(1000), Some(0));
        assert_eq!(m.to_container(100005), Some(6));
        assert_eq!(m.to_container(5), None);
        assert_eq!(IdMap::identity().to_host(42), Some(42));
    }
}
