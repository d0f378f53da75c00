//! Rebuild when anything under `cards/` changes: the content is embedded with `include_dir!`, which cargo
//! does not track on its own (new files would otherwise be missed).
fn main() {
    println!("cargo:rerun-if-changed=cards");
}
