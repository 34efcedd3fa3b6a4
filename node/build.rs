//! The web app (`web/dist`, built by `npm run build` in `web/`) is embedded
//! into the binary. Without a build the folder is made empty, so that the
//! binary still builds, and serves a clear error at `/` instead of the app.

fn main() {
    let dist = std::path::Path::new("web/dist");
    if let Err(error) = std::fs::create_dir_all(dist) {
        println!("cargo::warning=cannot create {}: {error}", dist.display());
    }
    println!("cargo::rerun-if-changed=web/dist");
}
