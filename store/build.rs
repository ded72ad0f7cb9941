//! The migrations are embedded at compile time (`sqlx::migrate!`): rebuild when one is added or
//! changed, or a binary would silently carry the old set.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
