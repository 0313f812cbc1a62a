//! Agent ↔ collector transport: the frame codec, TLS, and both ends of a
//! connection.

pub mod client;
pub mod protocol;
pub mod server;
pub mod syslog;
pub mod tls;
