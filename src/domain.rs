//! The domain, with no I/O: what an event is ([`event`]) and what a batch of
//! them means against what is stored ([`plan`]).

pub mod event;
pub mod plan;
