//! Subordinate id ranges: `/etc/subuid` and `/etc/subgid` lines `user:start:count`, where
//! `user` is a name or a numeric uid, and the setuid helpers that may map them.

use std::path::{Path, PathBuf};

/// A range of subordinate ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubIdRange {
    pub start: u32,
    pub count: u32,
}

/// The ranges `text` (a subuid/subgid file) grants to the user `name` / `id`.
pub fn ranges_for(text: &str, name: Option<&str>, id: u32) -> Vec<SubIdRange> {
    let id = id.to_string();
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (who, start, count) = (f.next()?, f.next()?, f.next()?);
            if who != id && Some(who) != name {
                return None;
            }
            Some(SubIdRange {
                start: start.trim().parse().ok()?,
                count: count.trim().parse().ok()?,
            })
        })
        .filter(|r| r.count > 0)
        .collect()
}

/// The user name of `uid` from `/etc/passwd` text.
pub fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
    })
}

/// `newuidmap`/`newgidmap` on the standard paths.
pub fn find_helper(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// What the caller can map in a user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubIds {
    pub user: Option<String>,
    pub uid_ranges: Vec<SubIdRange>,
    pub gid_ranges: Vec<SubIdRange>,
    pub newuidmap: Option<PathBuf>,
    pub newgidmap: Option<PathBuf>,
}

impl SubIds {
    /// Reads this machine's files for user `uid`.
    pub fn for_user(uid: u32) -> SubIds {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let user = user_name(&read("/etc/passwd"), uid);
        SubIds {
            uid_ranges: ranges_for(&read("/etc/subuid"), user.as_deref(), uid),
            gid_ranges: ranges_for(&read("/etc/subgid"), user.as_deref(), uid),
            newuidmap: find_helper("newuidmap"),
            newgidmap: find_helper("newgidmap"),
            user,
        }
    }

    /// Whether a full mapping (caller + a subordinate range) can be set up.
    pub fn full_mapping_possible(&self) -> bool {
        !self.uid_ranges.is_empty()
            && !self.gid_ranges.is_empty()
            && self.newuidmap.is_some()
            && self.newgidmap.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_by_name_or_uid() {
        let text = "alice:100000:65536\n1001:200000:1000\nbob:300000:0\n# junk\nalice:400000:10\n";
        assert_eq!(
            ranges_for(text, Some("alice"), 1000),
            [
                SubIdRange {
                    start: 100000,
                    count: 65536
                },
                SubIdRange {
                    start: 400000,
                    count: 10
                }
            ]
        );
        assert_eq!(
            ranges_for(text, None, 1001),
            [SubIdRange {
                start: 200000,
                count: 1000
            }]
        );
        assert!(
            ranges_for(text, Some("bob"), 7).is_empty(),
            "zero-sized ranges are no ranges"
        );
        assert_eq!(
            user_name(
                "root:x:0:0::/root:/bin/sh\nkiln:x:1000:1000::/h:/bin/sh\n",
                1000
            )
            .as_deref(),
            Some("kiln")
        );
    }
}
