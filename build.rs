//! The migrations are embedded in the binary (`embed_migrations!`), which only sees the files
//! that existed when it last compiled: a new migration directory must rebuild the crate.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
