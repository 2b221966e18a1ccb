//! Image commands: pull, import, images, rmi, gc.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use strata_driver::images::{Image, PullOptions};

use super::progress::PullProgress;
use super::{ago, human_size, print_table, Ctx};

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Image reference, e.g. 127.0.0.1:5000/busybox:latest.
    pub image: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print only the image id.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone, Default)]
pub struct RegistryArgs {
    /// Speak plain HTTP to this registry (loopback registries always are).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Registry credentials as USER:PASSWORD.
    #[arg(long, value_name = "USER:PASSWORD", env = "STRATA_REGISTRY_CREDS", hide_env_values = true)]
    pub creds: Option<String>,
}

impl RegistryArgs {
    pub fn options(&self) -> anyhow::Result<PullOptions> {
        let (username, password) = match &self.creds {
            Some(c) => {
                let (u, p) = c.split_once(':').context("--creds must be USER:PASSWORD")?;
                (Some(u.to_string()), Some(p.to_string()))
            }
            None => (None, None),
        };
        Ok(PullOptions { insecure_registries: self.insecure_registries.clone(), username, password, ..Default::default() })
    }
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only image ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate digests.
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove even if containers use the image (they keep running on their unpacked layers).
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Import an OCI layout (directory or tar) or a docker-archive tar.
    Import {
        path: PathBuf,
        /// Name the imported image (otherwise the names recorded in the archive).
        #[arg(long, short)]
        tag: Option<String>,
    },
    /// List images.
    Ls(ImagesArgs),
    /// Remove images.
    Rm(RmiArgs),
    /// Pull an image.
    Pull(PullArgs),
    /// Delete blobs and unpacked layers no image or container uses.
    Gc,
}

pub fn pull(ctx: &Ctx, a: PullArgs) -> anyhow::Result<()> {
    let img = pull_image(ctx, &a.image, &a.registry, a.quiet)?;
    if a.quiet {
        println!("{}", img.id);
    }
    Ok(())
}

/// Pull with progress; shared by `pull` and `run` (which pulls missing images).
pub fn pull_image(ctx: &Ctx, image: &str, registry: &RegistryArgs, quiet: bool) -> anyhow::Result<Image> {
    let store = ctx.images()?;
    let progress = PullProgress::new(quiet);
    let img = store.pull(image, &registry.options()?, &progress)?;
    if !quiet {
        eprintln!("Digest: {}", img.manifest_digest);
        eprintln!("Pulled {}", img.names.first().map(String::as_str).unwrap_or(image));
    }
    Ok(img)
}

pub fn images(ctx: &Ctx, a: ImagesArgs) -> anyhow::Result<()> {
    let mut list = ctx.images()?.list()?;
    list.sort_by(|a, b| b.created.cmp(&a.created));
    let short = |d: &str| -> String {
        let hex = d.trim_start_matches("sha256:");
        if a.no_trunc { d.to_string() } else { hex[..hex.len().min(12)].to_string() }
    };
    if a.quiet {
        for i in &list {
            println!("{}", short(&i.id));
        }
        return Ok(());
    }
    let mut rows = Vec::new();
    for i in &list {
        let created = i.created.as_deref().map(ago).unwrap_or_else(|| "N/A".into());
        let names: Vec<(String, String)> = if i.names.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            i.names.iter().map(|n| split_name(n)).collect()
        };
        for (repo, tag) in names {
            rows.push(vec![repo, tag, short(&i.manifest_digest), short(&i.id), human_size(i.size), created.clone()]);
        }
    }
    print_table(&["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "SIZE", "CREATED"], &rows);
    Ok(())
}

/// `host:5000/repo:tag` -> (`host:5000/repo`, `tag`); digests keep `<none>` as tag.
fn split_name(name: &str) -> (String, String) {
    if let Some((repo, _)) = name.split_once('@') {
        return (repo.to_string(), "<none>".into());
    }
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (name.to_string(), "<none>".into()),
    }
}

/// What something on this node uses: the images of containers (pods' included) and of
/// VM-isolated pods' containers, and VMs' base disks (a containerDisk's is a file in its image's
/// layers: its image is in use, and garbage collection keeps the file even once the image's
/// record is gone).
struct InUse {
    images: std::collections::HashSet<String>,
    disks: Vec<std::path::PathBuf>,
}

fn in_use(ctx: &Ctx, driver: &strata_driver::ContainerDriver) -> anyhow::Result<InUse> {
    let mut images = driver.image_ids_in_use()?;
    images.extend(strata_driver::MicroVmRuntime::image_ids_in_use(&ctx.root));
    let disks = strata_driver::VmDriver::disks_in_use(&ctx.root)?;
    images.extend(driver.images().images_holding(&disks)?);
    Ok(InUse { images, disks })
}

/// Garbage-collect the image store, keeping what [`in_use`] finds.
fn gc(ctx: &Ctx, driver: &strata_driver::ContainerDriver) -> anyhow::Result<strata_driver::images::GcReport> {
    let keep = in_use(ctx, driver)?;
    Ok(driver.images().gc_keeping(&keep.images, &keep.disks)?)
}

pub fn rmi(ctx: &Ctx, a: RmiArgs) -> anyhow::Result<()> {
    let driver = ctx.driver()?;
    let store = driver.images();
    let mut failed = None;
    for name in &a.images {
        let result = (|| -> anyhow::Result<()> {
            let img = store.get(name)?;
            if !a.force && in_use(ctx, &driver)?.images.contains(&img.id) {
                anyhow::bail!("image {name} is in use by a container or a VM; remove it first or use --force");
            }
            let removed = store.remove(name)?;
            println!("Untagged: {name}");
            if store.get(&removed.id).is_err() {
                println!("Deleted: {}", removed.id);
            }
            Ok(())
        })();
        if let Err(e) = result {
            eprintln!("strata: {e:#}");
            failed = Some(e);
        }
    }
    if failed.is_some() {
        return Err(super::ExitWith(1).into());
    }
    let report = gc(ctx, &driver)?;
    tracing::info!(blobs = report.blobs_removed, snapshots = report.snapshots_removed, "garbage collected");
    Ok(())
}

pub fn image(ctx: &Ctx, c: ImageCommand) -> anyhow::Result<()> {
    match c {
        ImageCommand::Import { path, tag } => {
            // The names this import gave (as `docker load` prints them), not the record's first
            // name: importing `--tag X:v2` over an image stored as `X:latest` loaded `X:v2`.
            for (image, names) in ctx.images()?.import_named(&path, tag.as_deref())? {
                if names.is_empty() {
                    println!("Loaded image ID: {}", image.id);
                }
                for name in names {
                    println!("Loaded image: {name} ({})", image.id);
                }
            }
            Ok(())
        }
        ImageCommand::Ls(a) => images(ctx, a),
        ImageCommand::Rm(a) => rmi(ctx, a),
        ImageCommand::Pull(a) => pull(ctx, a),
        ImageCommand::Gc => {
            let driver = ctx.driver()?;
            let r = gc(ctx, &driver)?;
            println!(
                "removed {} blobs and {} unpacked layers, {} freed",
                r.blobs_removed,
                r.snapshots_removed,
                human_size(r.bytes_freed)
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn split_names() {
        assert_eq!(super::split_name("127.0.0.1:5000/busybox:latest"), ("127.0.0.1:5000/busybox".into(), "latest".into()));
        assert_eq!(super::split_name("127.0.0.1:5000/busybox"), ("127.0.0.1:5000/busybox".into(), "<none>".into()));
        assert_eq!(super::split_name("r/x@sha256:ab"), ("r/x".into(), "<none>".into()));
    }
}
