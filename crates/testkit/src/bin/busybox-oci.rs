//! `busybox-oci DIR [REF]`: write an OCI image layout holding a busybox image built from the
//! host's static busybox (Debian's `busybox-static`), for trying strata without a registry or
//! internet (`strata image import DIR`; `scripts/quickstart.sh` uses it).

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: busybox-oci DIR [REF]   (REF defaults to latest)");
        std::process::exit(2);
    };
    let reference = args.next().unwrap_or_else(|| "latest".to_string());
    let dir = std::path::Path::new(&dir);
    if dir.exists() {
        eprintln!("busybox-oci: {} already exists", dir.display());
        std::process::exit(1);
    }
    strata_testkit::write_oci_layout(&strata_testkit::busybox_image(), dir, &reference);
    println!("{}", dir.display());
}
