//! Several instances sharing one topic: a lease per partition ([`lease`]) and
//! a heartbeat per instance that sets each one's fair share ([`membership`]).

pub mod lease;
pub mod membership;
