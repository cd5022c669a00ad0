//! The migrations are embedded at compile time (refinery's `embed_migrations!`): rebuild
//! when one is added or changed, not only when this crate's code is.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
