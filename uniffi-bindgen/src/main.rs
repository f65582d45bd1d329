//! `uniffi-bindgen`: generates the Kotlin, Swift and Python bindings of the `diemdanh`
//! library from its compiled cdylib (library mode). Run it through
//! `client-ffi/generate-bindings.sh OUTDIR`, which passes the right arguments.

fn main() {
    uniffi::uniffi_bindgen_main()
}
