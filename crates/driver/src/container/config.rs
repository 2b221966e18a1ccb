//! Merging an image's config with what the user asked for, as Docker does: entrypoint and
//! cmd, environment, working directory, and the user resolved in the image's own
//! `/etc/passwd` and `/etc/group`.

use std::path::Path;

use crate::{ContainerSpec, Error};

/// The process to run, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// The parts of an image config that matter here (a subset of the OCI `config` object).
#[derive(Clone, Debug, Default)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
}

impl ImageDefaults {
    pub fn from_config(cfg: &oci_spec::image::ImageConfiguration) -> Self {
        let Some(c) = cfg.config() else { return Self::default() };
        Self {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            workdir: c.working_dir().clone().filter(|w| !w.is_empty()),
            user: c.user().clone().filter(|u| !u.is_empty()),
            stop_signal: c.stop_signal().clone(),
        }
    }
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Merge image defaults and the request into the process to run inside `rootfs`.
pub fn resolve(image: &ImageDefaults, spec: &ContainerSpec, hostname: &str, rootfs: &Path) -> Result<Process, Error> {
    let entrypoint = spec.entrypoint.clone().unwrap_or_else(|| image.entrypoint.clone());
    let cmd = if !spec.command.is_empty() {
        spec.command.clone()
    } else if spec.entrypoint.is_some() {
        Vec::new()
    } else {
        image.cmd.clone()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(Error::InvalidArgument(format!("no command specified for image {}", spec.image)));
    }

    let cwd = spec.workdir.clone().or_else(|| image.workdir.clone()).unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(Error::InvalidArgument(format!("working directory {cwd:?} is not an absolute path")));
    }

    let user = spec.user.clone().or_else(|| image.user.clone()).unwrap_or_else(|| "0".into());
    let resolved = resolve_user(&user, rootfs)?;

    let mut env: Vec<String> = Vec::new();
    for e in ["HOSTNAME=".to_string() + hostname]
        .into_iter()
        .chain(image.env.iter().cloned())
        .chain(spec.env.iter().cloned())
    {
        set_env(&mut env, e)?;
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.into());
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", resolved.home));
    }
    Ok(Process {
        args,
        env,
        cwd,
        uid: resolved.uid,
        gid: resolved.gid,
        additional_gids: resolved.groups,
    })
}

/// Add or replace `KEY=VALUE` in `env`.
pub fn set_env(env: &mut Vec<String>, entry: String) -> Result<(), Error> {
    let Some((key, _)) = entry.split_once('=') else {
        return Err(Error::InvalidArgument(format!("invalid environment variable {entry:?}: expected KEY=VALUE")));
    };
    if key.is_empty() {
        return Err(Error::InvalidArgument(format!("invalid environment variable {entry:?}: empty name")));
    }
    let prefix = format!("{key}=");
    match env.iter_mut().find(|e| e.starts_with(&prefix)) {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

/// Resolve `user[:group]` (names or numbers) against the image's passwd and group files.
pub fn resolve_user(user: &str, rootfs: &Path) -> Result<ResolvedUser, Error> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_image_file(rootfs, "etc/passwd");
    let groups = read_image_file(rootfs, "etc/group");
    // name:x:uid:gid:gecos:home:shell
    let entry = passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| {
        f.len() >= 7 && (f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u))
    });
    let (uid, mut gid, name, home) = match (&entry, u.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().map_err(|_| Error::InvalidArgument(format!("bad uid for user {u:?} in the image's /etc/passwd")))?,
            f[3].parse().unwrap_or(0),
            Some(f[0].to_string()),
            f[5].to_string(),
        ),
        (None, Ok(uid)) => (uid, 0, None, "/".to_string()),
        (None, Err(_)) => {
            return Err(Error::InvalidArgument(format!("unable to find user {u}: no matching entries in the image's /etc/passwd")))
        }
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| Error::InvalidArgument(format!("unable to find group {g}: no matching entries in the image's /etc/group")))?,
        };
    }
    let mut extra = Vec::new();
    if let Some(name) = name {
        for f in groups.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(id) = f[2].parse::<u32>() {
                    if id != gid && !extra.contains(&id) {
                        extra.push(id);
                    }
                }
            }
        }
    }
    Ok(ResolvedUser { uid, gid, groups: extra, home })
}

/// The name of `uid` in the container's /etc/passwd.
pub fn user_name(uid: u32, rootfs: &Path) -> Option<String> {
    let uid = uid.to_string();
    read_image_file(rootfs, "etc/passwd")
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[2] == uid)
        .map(|f| f[0].to_string())
}

/// Read a small file of the image without following symlinks out of the rootfs: a symlinked
/// `/etc` or `/etc/passwd` in an image could otherwise make strata read a host file.
fn read_image_file(rootfs: &Path, rel: &str) -> String {
    let mut p = rootfs.to_path_buf();
    for part in rel.split('/') {
        p.push(part);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if !m.file_type().is_symlink() => {}
            _ => return String::new(),
        }
    }
    std::fs::read_to_string(&p).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(d.path().join("etc")).expect("etc");
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(d.path().join("etc/group"), "root:x:0:\napp:x:1000:\nwheel:x:10:app\n").expect("group");
        d
    }

    fn spec(f: impl FnOnce(&mut ContainerSpec)) -> ContainerSpec {
        let mut s = ContainerSpec { image: "img".into(), ..Default::default() };
        f(&mut s);
        s
    }

    #[test]
    fn docker_merge_rules() {
        let d = rootfs();
        let image = ImageDefaults {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            env: vec!["A=image".into(), "PATH=/bin".into()],
            workdir: Some("/srv".into()),
            user: None,
            stop_signal: None,
        };
        let p = resolve(&image, &spec(|_| {}), "h", d.path()).expect("merge");
        assert_eq!(p.args, ["/entry", "default"]);
        assert_eq!(p.cwd, "/srv");
        assert!(p.env.contains(&"A=image".to_string()) && p.env.contains(&"HOME=/root".to_string()));
        let p = resolve(&image, &spec(|s| s.command = vec!["x".into()]), "h", d.path()).expect("cmd");
        assert_eq!(p.args, ["/entry", "x"]);
        let p = resolve(&image, &spec(|s| s.entrypoint = Some(vec!["/other".into()])), "h", d.path()).expect("ep");
        assert_eq!(p.args, ["/other"], "a new entrypoint drops the image's cmd");
        let p = resolve(&image, &spec(|s| s.env = vec!["A=user".into()]), "h", d.path()).expect("env");
        assert!(p.env.contains(&"A=user".to_string()) && !p.env.contains(&"A=image".to_string()));
        let empty = ImageDefaults::default();
        assert!(resolve(&empty, &spec(|_| {}), "h", d.path()).is_err());
        assert!(resolve(&image, &spec(|s| s.workdir = Some("rel".into())), "h", d.path()).is_err());
    }

    #[test]
    fn users() {
        let d = rootfs();
        let u = resolve_user("app", d.path()).expect("app");
        assert_eq!((u.uid, u.gid, u.groups.clone(), u.home.as_str()), (1000, 1000, vec![10], "/home/app"));
        assert_eq!(resolve_user("1000", d.path()).expect("uid").home, "/home/app");
        let u = resolve_user("4242:99", d.path()).expect("numeric");
        assert_eq!((u.uid, u.gid), (4242, 99));
        assert_eq!(resolve_user("app:wheel", d.path()).expect("group").gid, 10);
        assert!(resolve_user("nobody-here", d.path()).is_err());
        assert!(resolve_user("app:nogroup", d.path()).is_err());
        assert_eq!(user_name(1000, d.path()).as_deref(), Some("app"));
        assert_eq!(user_name(4242, d.path()), None);
    }

    #[test]
    fn symlinked_passwd_is_not_followed() {
        let d = tempfile::tempdir().expect("tmp");
        std::os::unix::fs::symlink("/etc", d.path().join("etc")).expect("link");
        // The host has a root user; through the symlink strata must not see it by name.
        assert!(resolve_user("root", d.path()).is_err());
    }
}
