//! What the host offers for per-function CPU and memory limits: those need
//! a cgroup v2 hierarchy with the `cpu` and `memory` controllers delegated
//! to the daemon's cgroup. The limits themselves are not implemented (the
//! development machines have only cgroup v1, so they could not be tested);
//! the daemon says at start what this host would allow.

use std::path::PathBuf;

/// cgroup support found on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// cgroup v2 is mounted; the daemon's cgroup directory and the
    /// controllers available in it.
    V2 {
        /// The daemon's cgroup directory.
        dir: PathBuf,
        /// Its `cgroup.controllers`.
        controllers: Vec<String>,
        /// cgroup v1 hierarchies are mounted too (a "hybrid" host, whose
        /// controllers are usually all bound to v1).
        hybrid: bool,
    },
    /// Only cgroup v1 hierarchies are mounted.
    V1Only,
    /// No cgroup filesystem at all.
    None,
}

/// Looks at this process's mounts and cgroup.
pub fn detect() -> Support {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let support = parse(&read("/proc/self/mountinfo"), &read("/proc/self/cgroup"));
    match support {
        Support::V2 { dir, hybrid, .. } => {
            let controllers = std::fs::read_to_string(dir.join("cgroup.controllers"))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            Support::V2 {
                dir,
                controllers,
                hybrid,
            }
        }
        other => other,
    }
}

/// Finds the cgroup2 mount in `mountinfo` and this process's v2 cgroup
/// (`0::/path`) in `cgroup` (controllers are left empty).
fn parse(mountinfo: &str, cgroup: &str) -> Support {
    let mut v2_mount = None;
    let mut v1 = false;
    for line in mountinfo.lines() {
        // `… mount-point options … - fstype source super-options`
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4);
        match right.split(' ').next() {
            Some("cgroup2") => v2_mount = v2_mount.or(mount_point.map(PathBuf::from)),
            Some("cgroup") => v1 = true,
            _ => {}
        }
    }
    match v2_mount {
        Some(mount) => {
            let path = cgroup
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or("/");
            Support::V2 {
                dir: mount.join(path.trim_start_matches('/')),
                controllers: Vec::new(),
                hybrid: v1,
            }
        }
        None if v1 => Support::V1Only,
        None => Support::None,
    }
}

/// Logs what per-function limits this host would support.
pub fn log_support(support: &Support) {
    match support {
        Support::V2 {
            dir,
            controllers,
            hybrid,
        } => {
            let has = |c: &str| controllers.iter().any(|x| x == c);
            if has("cpu") && has("memory") {
                tracing::info!(
                    cgroup = %dir.display(),
                    "cgroup v2 with the cpu and memory controllers is available; per-function CPU and memory limits are not implemented yet"
                );
            } else {
                let why = if *hybrid {
                    "this host mixes cgroup v1 and v2, and its v2 hierarchy lacks the cpu and memory controllers (bound to v1)"
                } else {
                    "the daemon's cgroup v2 lacks the cpu and memory controllers (delegate them to it)"
                };
                tracing::warn!(
                    cgroup = %dir.display(),
                    controllers = %controllers.join(" "),
                    "per-function CPU and memory limits are unavailable: {why}"
                );
            }
        }
        Support::V1Only => tracing::warn!(
            "per-function CPU and memory limits are unavailable: this host has only cgroup v1 hierarchies, and they need cgroup v2"
        ),
        Support::None => tracing::warn!(
            "per-function CPU and memory limits are unavailable: no cgroup filesystem is mounted"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_hybrid_hosts_are_recognised() {
        // This development machine's mounts.
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
";
        let cgroup = "9:name=systemd:/\n4:memory:/\n0::/\n";
        assert_eq!(parse(mountinfo, cgroup), Support::V1Only);
        // The same with the (controller-less) v2 hierarchy it also mounts.
        let hybrid = format!(
            "{mountinfo}41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
        );
        assert_eq!(
            parse(&hybrid, cgroup),
            Support::V2 {
                dir: PathBuf::from("/sys/fs/cgroup/unified/"),
                controllers: Vec::new(),
                hybrid: true,
            }
        );
    }

    #[test]
    fn a_v2_host_gives_the_daemons_cgroup() {
        let mountinfo = "\
25 1 0:23 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";
        let cgroup = "0::/system.slice/wisp.service\n";
        assert_eq!(
            parse(mountinfo, cgroup),
            Support::V2 {
                dir: PathBuf::from("/sys/fs/cgroup/system.slice/wisp.service"),
                controllers: Vec::new(),
                hybrid: false,
            }
        );
    }

    #[test]
    fn no_cgroups_at_all() {
        assert_eq!(parse("", ""), Support::None);
    }
}
