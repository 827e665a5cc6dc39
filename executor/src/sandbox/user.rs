//! `USER name[:group]`: resolving the step's user in the root's `/etc/passwd` and
//! `/etc/group` as BuildKit does, and switching to it in the command's process.
//!
//! - `name` or `uid`: uid, primary gid from passwd (a uid passwd does not know runs with
//!   gid 0), supplementary groups: every group of /etc/group listing the user, plus the
//!   primary group;
//! - `user:group`: that group (name or number), and only that group.

use std::path::Path;
use std::process::Command;

/// A `USER` that the root's `/etc` files do not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
}

/// The ids a step runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// The home directory of the user's passwd entry, if it has one.
    pub home: Option<String>,
}

/// The `HOME` a step's user gets when the environment sets none, as runc gives it: the
/// passwd entry's home, `/` without one.
pub fn home_of(user: &str, etc: &Path) -> String {
    let user = if user.is_empty() { "root" } else { user };
    resolve(user, etc)
        .ok()
        .and_then(|ids| ids.home)
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into())
}

/// Resolves `user` with the passwd/group files under `etc`.
pub fn resolve(user: &str, etc: &Path) -> Result<UserIds, UserError> {
    let passwd = std::fs::read_to_string(etc.join("passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(etc.join("group")).unwrap_or_default();
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && (f[0] == u || f[2] == u)).then(|| {
            (
                f[0].to_string(),
                f[2].parse::<u32>().ok(),
                f[3].parse::<u32>().ok(),
                f.get(5).map(|h| h.to_string()),
            )
        })
    });
    let (name, uid, primary, home) = match (entry, u.parse::<u32>()) {
        (Some((name, Some(uid), gid, home)), _) => (Some(name), uid, gid.unwrap_or(0), home),
        (_, Ok(uid)) => (None, uid, 0, None),
        _ => return Err(UserError::UnknownUser(u.to_string())),
    };
    if let Some(g) = g {
        let gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() >= 3 && f[0] == g)
                        .then(|| f[2].parse::<u32>().ok())
                        .flatten()
                })
                .ok_or_else(|| UserError::UnknownGroup(g.to_string()))?,
        };
        return Ok(UserIds {
            uid,
            gid,
            groups: vec![gid],
            home,
        });
    }
    let mut groups = vec![primary];
    if let Some(name) = name {
        for l in group.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m.trim() == name) {
                if let Ok(gid) = f[2].parse::<u32>() {
                    if !groups.contains(&gid) {
                        groups.push(gid);
                    }
                }
            }
        }
    }
    Ok(UserIds {
        uid,
        gid: primary,
        groups,
        home,
    })
}

/// Makes `cmd` start as `ids` (supplementary groups, then gid, then uid).
pub fn switch_to(cmd: &mut Command, ids: UserIds) {
    super::child::switch_ids(cmd, ids.groups, ids.gid, ids.uid);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etc() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("group"),
            "root:x:0:\napp:x:1000:\nextra:x:2000:app,other\nstaff:x:50:\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn resolves_like_buildkit() {
        let e = etc();
        let ids = |u: &str| resolve(u, e.path());
        assert_eq!(
            ids("app"),
            Ok(UserIds {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 2000],
                home: Some("/home/app".into())
            })
        );
        assert_eq!(
            ids("1000"),
            Ok(UserIds {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 2000],
                home: Some("/home/app".into())
            })
        );
        assert_eq!(
            ids("4242"),
            Ok(UserIds {
                uid: 4242,
                gid: 0,
                groups: vec![0],
                home: None
            })
        );
        assert_eq!(
            ids("app:staff"),
            Ok(UserIds {
                uid: 1000,
                gid: 50,
                groups: vec![50],
                home: Some("/home/app".into())
            })
        );
        assert_eq!(
            ids("1000:77"),
            Ok(UserIds {
                uid: 1000,
                gid: 77,
                groups: vec![77],
                home: Some("/home/app".into())
            })
        );
        assert_eq!(home_of("", e.path()), "/root");
        assert_eq!(home_of("app", e.path()), "/home/app");
        assert_eq!(home_of("4242", e.path()), "/");
        assert!(ids("nobody")
            .unwrap_err()
            .to_string()
            .contains("unable to find user nobody"));
        assert!(ids("app:nogroup")
            .unwrap_err()
            .to_string()
            .contains("unable to find group nogroup"));
    }
}
