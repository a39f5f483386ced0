//! The wire protocol as pure functions: bytes → lines ([`frame`]), lines → requests
//! ([`request`]), and the exact numbers and locations inside them ([`number`], [`location`]).
//! Nothing here does I/O, so all of it is unit-tested and fuzzable.

pub mod frame;
pub mod location;
pub mod number;
pub mod request;
