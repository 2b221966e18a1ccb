//! Manual interop check: `cargo run -p strata-image --example import_check -- STORE PATH [TAG]`
//! imports an OCI layout / docker-archive made by other tools and unpacks its layers.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: import_check STORE PATH [TAG]".into());
    }
    let store = strata_image::ImageStore::open(&args[1])?;
    for image in store.import(std::path::Path::new(&args[2]), args.get(3).map(String::as_str))? {
        println!("{} {:?} {} bytes", image.id, image.names, image.size);
        for l in store.layers(&image)? {
            println!("  {}", l.display());
        }
    }
    Ok(())
}
