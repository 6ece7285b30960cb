//! atproto identity (being written).

pub mod plc;
