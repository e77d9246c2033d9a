//! Builds the vendored libzmq (../zeromq-src) with CURVE, linked against the libsodium that
//! `libsodium-sys-stable` builds (the only change from upstream zmq-sys 0.12, which passes
//! `None` and so builds libzmq without CURVE).

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build/main.rs");
    println!("cargo:rerun-if-env-changed=PROFILE");
    let include = env::var("DEP_SODIUM_INCLUDE").expect("libsodium-sys-stable exports its include dir");
    let lib = env::var("DEP_SODIUM_LIB").expect("libsodium-sys-stable exports its lib dir");
    zeromq_src::Build::new()
        .with_libsodium(Some(zeromq_src::LibLocation::new(lib, include)))
        .build();
}
