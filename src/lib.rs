//! herd: an application server herd for mobile clients, as a library.
//!
//! The layout is the design: [`protocol`] turns bytes into requests and back; [`report`] is a
//! stamped location report; [`herd`] decides, without I/O, what to store and whom to tell;
//! [`store`] keeps records durably in sled; [`places`] answers WHATSAT; [`peer`] runs the
//! authenticated links between servers; [`server`] and [`connection`] serve clients, and
//! [`membership`] applies a reloaded config to a running node.
//! Around them: [`telemetry`] counts what the node does and [`admin`] serves it over HTTP;
//! [`client`], [`up`], [`bench`](mod@bench), [`check`], [`inspect`], [`compare`] and
//! [`backup`] are the operator's commands.

pub mod admin;
pub mod backup;
pub mod bench;
pub mod check;
pub mod client;
pub mod cmd;
pub mod compare;
pub mod config;
pub mod connection;
pub mod error;
pub mod fdlimit;
pub mod fsync;
pub mod herd;
pub mod inspect;
pub mod logging;
pub mod membership;
pub mod node;
pub mod peer;
pub mod places;
pub mod private_files;
pub mod protocol;
pub mod refusals;
pub mod report;
pub mod server;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod up;
