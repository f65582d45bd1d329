//! The device side for apps and terminals: the HTTP transport, the field command line
//! `diemdanh`, and (next) the uniffi bindings the tablet apps call.

pub mod cli;
pub mod transport;

pub use transport::HttpTransport;
