//! Rebuild when a change file is added or removed (`include_str!` already
//! covers edits of existing files).
fn main() {
    println!("cargo:rerun-if-changed=changes");
}
