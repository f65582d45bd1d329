//! The device side for apps and terminals: the HTTP transport, the field command line
//! `diemdanh`, and the uniffi bindings the tablet apps call ([`ffi::FieldClient`]).

// uniffi's generated FFI scaffolding (`setup_scaffolding!` and the code the export and
// derive macros write in `ffi`) is `unsafe extern "C"` code. No hand-written unsafe:
// the modules below that are not FFI deny it again.
#![allow(unsafe_code)]

uniffi::setup_scaffolding!();

#[deny(unsafe_code)]
pub mod cli;
pub mod ffi;
mod files;
#[deny(unsafe_code)]
pub mod transport;

pub use ffi::{FieldClient, FieldError};
pub use transport::HttpTransport;
