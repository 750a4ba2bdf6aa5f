//! Tests of the crate across its modules: the wire formats byte for byte
//! (golden requests, captured replies, codec round trips) and the service
//! clients against fake Postfix servers.

mod clients;
mod protocol;
